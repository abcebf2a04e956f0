"""``dreamzero bringup``: the node graph of ``dreamzero.launch.py`` composed in one process.

For machines without launch_ros (this development machine, a laptop) and for the demo: the same
nodes (policy_node, adapter_node, control_mux, optionally sim_droid) with the same parameter files
(``launch/params/<embodiment>.yaml`` from the package share, or ``--params-file``), on one
``OrderlyExecutor`` (a MultiThreadedExecutor that stops in order), with the lifecycle transitions
(configure, activate) done here. The local model still runs in its own child process (``backends/process.py``).
SIGINT, SIGTERM or the end of ``--duration`` shut the graph down in order (deactivate policy_node,
adapter_node, control_mux; stop the executor; shutdown transitions; destroy) and exit with status 0.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rclpy.lifecycle import LifecycleNode, TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter

from dreamzero_policy.executor import OrderlyExecutor
from dreamzero_policy.lifecycle import ros_main, serving
from dreamzero_policy.paths import share_dir


@dataclass(frozen=True)
class GraphOptions:
    """What ``dreamzero.launch.py``'s arguments choose, plus per-node parameter overrides."""

    embodiment: str = "droid"
    backend: str = "local"
    checkpoint: str = "tiny"
    server_url: str = "ws://127.0.0.1:8000"
    prompt: str = ""
    with_mux: bool = True
    with_sim: bool = False
    namespace: str = ""
    params_file: str = ""
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


def node_parameters(params_file: Path | None, node_name: str) -> dict[str, Any]:
    """The ``ros__parameters`` for ``node_name`` in a ROS 2 parameter file (``/**`` or the node's own key)."""
    if params_file is None or not params_file.is_file():
        return {}
    document = yaml.safe_load(params_file.read_text()) or {}
    wildcard = document.get("/**", {})
    values: dict[str, Any] = {**wildcard.get("ros__parameters", {}),
                              **wildcard.get(node_name, {}).get("ros__parameters", {})}
    for key in (node_name, f"/{node_name}"):
        values.update(document.get(key, {}).get("ros__parameters", {}))
    return values


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested parameter dicts ({smoothing: {window: 5}}) to dotted names (smoothing.window)."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def params_path(params_file: str, embodiment: str) -> Path:
    """``params_file``, or when empty the shipped ``launch/params/<embodiment>.yaml`` of the package share."""
    return Path(params_file) if params_file else share_dir() / "launch" / "params" / f"{embodiment}.yaml"


def node_values(params_file: Path | None, node_name: str, *layers: dict[str, Any]) -> dict[str, Any]:
    """``node_name``'s parameters in ``params_file`` (dotted names, :func:`_flatten`), each of ``layers`` over
    them in turn."""
    values = _flatten(node_parameters(params_file, node_name))
    for layer in layers:
        values.update(layer)
    return values


def parameter_overrides(values: dict[str, Any]) -> list[Parameter]:
    """``values`` as a node's ``parameter_overrides``."""
    return [Parameter(name, value=value) for name, value in values.items()]


def build_graph(options: GraphOptions, backend_factory: Callable | None = None) -> list[Node]:
    """The nodes of the graph with their parameters (file first, then options, then overrides);
    ``backend_factory``: the policy node's (default its own, ``policy_node.make_backend``)."""
    from dreamzero_policy.adapter_node import AdapterNode
    from dreamzero_policy.control_mux import ControlMux
    from dreamzero_policy.policy_node import PolicyNode

    params_file = params_path(options.params_file, options.embodiment)
    chosen = {
        "policy_node": {"embodiment": options.embodiment, "backend": options.backend, "checkpoint": options.checkpoint,
                        "server_url": options.server_url, "prompt": options.prompt},
        "adapter_node": {"embodiment": options.embodiment},
        "control_mux": {"embodiment": options.embodiment},
        "sim_droid": {},
    }
    policy_node = (PolicyNode if backend_factory is None
                   else functools.partial(PolicyNode, backend_factory=backend_factory))
    classes: dict[str, Callable[..., Node]] = {"policy_node": policy_node, "adapter_node": AdapterNode}
    if options.with_mux:
        classes["control_mux"] = ControlMux
    if options.with_sim:
        from dreamzero_policy.sim_droid import SimDroid

        classes["sim_droid"] = SimDroid
    nodes = []
    for name, cls in classes.items():
        values = node_values(params_file, name, chosen[name], options.overrides.get(name, {}))
        nodes.append(cls(namespace=options.namespace, parameter_overrides=parameter_overrides(values)))
    return nodes


def activate(nodes: list[Node]) -> None:
    """Configure and activate every lifecycle node; raises RuntimeError naming the node that failed."""
    for node in nodes:
        if isinstance(node, LifecycleNode):
            for transition in (node.trigger_configure, node.trigger_activate):
                if transition() != TransitionCallbackReturn.SUCCESS:
                    raise RuntimeError(f"{node.get_name()}: {transition.__name__} failed (see its log above)")


@contextmanager
def running(options: GraphOptions, threads: int = 4) -> Iterator[tuple[list[Node], OrderlyExecutor]]:
    """The graph spinning in the background and active; on exit, however the block ends, shut down in
    order (:func:`dreamzero_policy.lifecycle.serving`: deactivated, executor stopped, shutdown, destroyed)."""
    nodes = build_graph(options)
    with serving(nodes, "bringup-executor", threads) as executor:
        activate(nodes)
        yield nodes, executor


def run_bringup(options: GraphOptions, duration_s: float | None) -> int:
    """Entry of ``dreamzero bringup``: run the graph until SIGINT, SIGTERM or ``duration_s``, then shut it
    down in order (:func:`running`); returns the exit status, 0."""
    with ros_main() as stop, running(options):
        stop.wait(duration_s)
    return 0
