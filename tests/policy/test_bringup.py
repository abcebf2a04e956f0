"""dreamzero bringup: the launch graph in one process, chunks flowing policy -> adapter -> mux -> controller,
and shut down in order on SIGTERM or SIGINT.

The signal tests run the ``dreamzero`` console script, i.e. the package installed in the virtual
environment; set PYTHONPATH to the source tree (as for pytest itself) to test the sources instead.
"""
from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.bringup import GraphOptions, node_parameters, running
from policy.fake_dreamzero_server import FakeDreamZeroServer
from policy.synthetic_sensors import SyntheticSensors
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until

RATES = {"exterior_image_1_left": 10.0, "exterior_image_2_left": 10.0, "wrist_image_left": 10.0}
DREAMZERO = str(Path(sys.executable).parent / "dreamzero")
GRAPH = ("policy_node", "adapter_node", "control_mux")
# "[INFO] [<time>] [<namespace>.adapter_node]: deactivated", logged by ManagedNode's transitions
LIFECYCLE_LOG = re.compile(r"\[(?:[\w.]*\.)?(\w+)\]: (activated|deactivated|shut down)$", re.MULTILINE)


def test_params_file_values_reach_the_named_node(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters: {use_sim_time: false}\n  adapter_node:\n    ros__parameters:\n"
                    "      command_rate_hz: 50.0\n      smoothing: {window: 7}\npolicy_node:\n  ros__parameters:\n"
                    "    execute_steps: 8\n")
    assert node_parameters(path, "adapter_node") == {"use_sim_time": False, "command_rate_hz": 50.0,
                                                     "smoothing": {"window": 7}}
    assert node_parameters(path, "policy_node") == {"use_sim_time": False, "execute_steps": 8}


def test_graph_drives_the_arm_controller_through_adapter_and_mux(ros_context, unique_name) -> None:
    spec = load_embodiment("droid")
    with FakeDreamZeroServer() as server:
        options = GraphOptions(embodiment="droid", backend="remote", server_url=server.url, prompt="Wave.",
                               namespace=unique_name,
                               overrides={"policy_node": {"frame_mode": "official", "execute_steps": 8},
                                          "adapter_node": {"command_rate_hz": 20.0},
                                          "control_mux": {"initial_mode": "policy", "command_rate_hz": 20.0}})
        sensors = SyntheticSensors("sensors", spec, RATES, namespace=unique_name)
        listener = Node("listener", namespace=unique_name)
        commands = MessageCollector(listener, Float64MultiArray, "arm_controller/commands", 100)
        try:
            with spinning([sensors, listener], threads=2), running(options) as (nodes, _):
                assert {n.get_name() for n in nodes} == {"policy_node", "adapter_node", "control_mux"}
                received = commands.wait_for(5)
        finally:
            sensors.destroy_node()
            listener.destroy_node()
    assert all(len(m.data) == 7 and np.all(np.isfinite(m.data)) for m in received)
    assert any(r.get("endpoint") == "infer" for r in server.requests)


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_deactivates_the_graph_in_order_then_exits_0(stop_signal, tmp_path, unique_name) -> None:
    """Issue 12 item 9: SIGTERM was ignored. Both signals deactivate every node (policy_node stops, the adapter
    holds) before any is shut down, and the process exits with status 0. Prints how long that took."""
    log_path = tmp_path / "bringup.log"

    def transitions() -> list[tuple[str, str]]:
        return LIFECYCLE_LOG.findall(log_path.read_text())

    with FakeDreamZeroServer() as server, log_path.open("w") as log:
        process = subprocess.Popen([DREAMZERO, "bringup", "--backend", "remote", "--server-url", server.url,
                                    "--namespace", unique_name], stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)
        try:
            wait_until(lambda: len(transitions()) >= len(GRAPH) or process.poll() is not None, "the graph active")
            assert transitions() == [(name, "activated") for name in GRAPH], log_path.read_text()
            sent = time.monotonic()
            process.send_signal(stop_signal)
            returncode = process.wait(timeout=PATIENCE_S)
            print(f"{stop_signal.name}: exit status {returncode} after {time.monotonic() - sent:.2f} s")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert returncode == 0, log_path.read_text()
    assert transitions()[len(GRAPH):] == ([(name, "deactivated") for name in GRAPH] +
                                          [(name, "shut down") for name in GRAPH]), log_path.read_text()
