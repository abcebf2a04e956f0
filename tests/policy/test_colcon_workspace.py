"""ros2_ws/ built with colcon as on a robot (issue 13): both install modes, executables where ros2 run and
launch_ros look, a node started from the install space, and source edits seen through --symlink-install.

colcon (pinned in requirements/app.txt) builds against the venv's ROS wheels, which are laid out as a robot's
/opt/ros would be (AMENT_PREFIX_PATH). One clean copy of the repository is built once per module:
``dreamzero_msgs`` (CMake, the slow part) once, then ``dreamzero_policy`` plain and, in a second build,
with ``--symlink-install``. What still needs a full ROS install (ros2cli's ``ros2 run``/``ros2 launch``,
launch_ros, robot_state_publisher: not on PyPI) is resolved the way launch_ros does it instead.
"""
from __future__ import annotations

import ast
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node

from policy.test_launch_files import LAUNCH, LAUNCH_FILES, _constants, _keyword, _string, _tree
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "dreamzero_policy"
BUILD_TIMEOUT_S = 900  # dreamzero_msgs' CMake build: about 1 min alone on 2 cores, several under load
# What a repository copy leaves out: the venv, git data and anything built or run in the checkout.
IGNORED = shutil.ignore_patterns(".venv", ".git", "__pycache__", ".pytest_cache", "build", "install", "log",
                                 "runs", "eval", "*.egg-info")


def _colcon(workspace: Path, *args: str) -> None:
    environment = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([str(Path(sys.executable).parent / "colcon"), "--log-base", "log", "build", *args],
                            cwd=workspace, env=environment, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    assert result.returncode == 0, f"colcon build {' '.join(args)} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}"


def _in_install_space(workspace: Path, command: str, **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    """Run ``command`` in bash after sourcing the install space's own local_setup.bash, as a robot shell does."""
    script = f"source {workspace / 'install' / 'local_setup.bash'} && {command}"
    # from the workspace (not the repository: python -c puts the current folder first on sys.path), with no
    # PYTHONPATH but what the install space sets
    kwargs.update(cwd=workspace, env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    if kwargs.pop("background", False):
        return subprocess.Popen(["bash", "-c", script], **kwargs)
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=PATIENCE_S, **kwargs)


def _python(workspace: Path, code: str) -> str:
    result = _in_install_space(workspace, f"{sys.executable} -c {code!r}")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def _launched_executables() -> set[str]:
    """Every ``executable=`` of this package's ``Node``/``LifecycleNode`` calls in every launch file."""
    executables = set()
    for name in LAUNCH_FILES:
        tree = _tree(name)
        constants = _constants(tree)
        for call in (c for c in ast.walk(tree) if isinstance(c, ast.Call) and _keyword(c, "executable")):
            if _string(_keyword(call, "package"), constants) == PACKAGE:
                executables.add(_string(_keyword(call, "executable"), constants))
    return executables


def _assert_executables_where_launch_ros_looks(workspace: Path) -> None:
    """launch_ros: package prefix from the ament index (get_package_prefix), then <prefix>/lib/<package>/<exe>."""
    prefix = Path(_python(workspace, f"from ament_index_python.packages import get_package_prefix; "
                                     f"print(get_package_prefix({PACKAGE!r}))"))
    assert prefix == workspace / "install" / PACKAGE
    launched = _launched_executables()
    assert {"policy_node", "adapter_node", "control_mux", "sim_droid"} <= launched
    for executable in launched | {"dreamzero"}:
        path = prefix / "lib" / PACKAGE / executable
        assert path.is_file() and os.access(path, os.X_OK), f"{path} is missing or not executable"
    share = prefix / "share" / PACKAGE
    for relative in ["package.xml", *(f"launch/{n}" for n in LAUNCH_FILES),
                     *(str(p.relative_to(ROOT)) for p in (LAUNCH / "params").glob("*.yaml")),
                     *(f"urdf/{p.name}" for p in (ROOT / "urdf").glob("*.xacro")),
                     *(f"embodiments/{p.name}" for p in (ROOT / "embodiments/dreamzero_embodiments/robots").glob("*.yaml"))]:
        assert (share / relative).is_file(), f"{relative} is not installed under {share}"
    assert (prefix / "share" / "ament_index" / "resource_index" / "packages" / PACKAGE).is_file()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Iterator[Path]:
    """A clean copy of the repository with its ros2_ws/ built plain (both packages)."""
    copy = tmp_path_factory.mktemp("colcon") / "repo"
    shutil.copytree(ROOT, copy, symlinks=True, ignore=IGNORED)
    workspace = copy / "ros2_ws"
    _colcon(workspace)
    yield workspace


def test_plain_build_installs_executables_where_ros2_run_and_launch_look(workspace: Path) -> None:
    _assert_executables_where_launch_ros_looks(workspace)
    module = _python(workspace, f"import {PACKAGE}, dreamzero_model, dreamzero_embodiments; "
                                f"print({PACKAGE}.__file__, dreamzero_model.__file__, dreamzero_embodiments.__file__)")
    assert all(path.startswith(str(workspace / "install" / PACKAGE)) for path in module.split()), module


def test_policy_node_starts_from_the_install_space_and_publishes_diagnostics(workspace: Path, ros_context,
                                                                               unique_name: str) -> None:
    executable = workspace / "install" / PACKAGE / "lib" / PACKAGE / "policy_node"
    node = _in_install_space(workspace, f"exec {executable} --ros-args -r __ns:=/{unique_name} "
                                        f"-p autostart:=true -p checkpoint:=tiny", background=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    listener = Node("colcon_listener", namespace=unique_name)
    try:
        diagnostics = MessageCollector(listener, DiagnosticArray, "diagnostics", 10)
        with spinning([listener]):
            wait_until(lambda: any("policy_node" in s.name for m in diagnostics.messages for s in m.status),
                       "diagnostics of the installed policy_node")
    finally:
        node.send_signal(signal.SIGTERM)  # the ordered shutdown: exit code 0
        output, _ = node.communicate(timeout=PATIENCE_S)
        listener.destroy_node()
    assert node.returncode == 0, output[-3000:]
    assert "configured" in output, output[-3000:]


def test_symlink_install_sees_source_edits_without_rebuilding(workspace: Path) -> None:
    shutil.rmtree(workspace / "build" / PACKAGE)
    shutil.rmtree(workspace / "install" / PACKAGE)
    _colcon(workspace, "--symlink-install", "--packages-select", PACKAGE)
    _assert_executables_where_launch_ros_looks(workspace)
    source = workspace / "src" / PACKAGE  # the link to the repository copy
    for package, folder in ((PACKAGE, PACKAGE), ("dreamzero_model", "model/dreamzero_model"),
                            ("dreamzero_embodiments", "embodiments/dreamzero_embodiments")):
        with (source / folder / "__init__.py").open("a") as init:
            init.write(f"\nSYMLINK_INSTALL_PROBE = {package!r}\n")
        assert _python(workspace, f"import {package}; print({package}.SYMLINK_INSTALL_PROBE)") == package
