"""The installed package: ament index entry, share/ files, console scripts, robot workspace links.

What ``pip install .`` (make setup) and ``colcon build`` (robots) must both provide, checked on the
installed copy in the virtual environment.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from ament_index_python.packages import get_package_share_directory

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _source_files(folder: str) -> list[Path]:
    return sorted(p.relative_to(ROOT) for p in (ROOT / folder).rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts)


def test_share_directory_holds_every_launch_and_urdf_file() -> None:
    share = Path(get_package_share_directory("dreamzero_policy"))
    expected = _source_files("launch") + _source_files("urdf")
    assert {"launch/robot_description.launch.py", "urdf/droid.urdf.xacro", "urdf/agibot_g1.urdf.xacro",
            "urdf/yam.urdf.xacro"} <= {str(p) for p in expected}
    for relative in expected:
        installed = share / relative
        assert installed.is_file(), f"{relative} is not installed under {share}"
        assert installed.read_bytes() == (ROOT / relative).read_bytes(), f"{installed} is stale: run make setup"
    assert (share / "package.xml").read_bytes() == (ROOT / "package.xml").read_bytes()


def test_installed_xacro_renders_with_its_includes() -> None:
    import xacro

    share = Path(get_package_share_directory("dreamzero_policy"))
    urdf = xacro.process_file(str(share / "urdf" / "droid.urdf.xacro")).toxml()
    joints = {j.get("name") for j in ET.fromstring(urdf).iter("joint")}
    assert {f"panda_joint{i}" for i in range(1, 8)} <= joints


def test_package_xml_declares_the_ros_dependencies() -> None:
    manifest = ET.parse(ROOT / "package.xml").getroot()
    assert manifest.get("format") == "3"
    assert manifest.findtext("name") == "dreamzero_policy"
    assert manifest.find("export/build_type").text == "ament_python"
    declared = {e.text for e in manifest if e.tag in {"depend", "exec_depend"}}
    required = {"rclpy", "sensor_msgs", "trajectory_msgs", "std_msgs", "std_srvs", "geometry_msgs",
                "diagnostic_msgs", "lifecycle_msgs", "dreamzero_msgs", "launch_ros", "xacro",
                "robot_state_publisher", "python3-numpy", "python3-scipy"}
    assert required <= declared, f"missing: {sorted(required - declared)}"


def test_dreamzero_console_script_reports_a_complete_installation() -> None:
    script = BIN / "dreamzero"
    assert script.is_file() and os.access(script, os.X_OK), f"{script} is not installed"
    environment = {k: v for k, v in os.environ.items() if k != "AMENT_PREFIX_PATH"}  # found without sourcing
    result = subprocess.run([str(script), "info", "--json"], capture_output=True, text=True, timeout=120,
                            env=environment, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["problems"] == []
    assert Path(report["share_dir"]) == Path(sys.prefix, "share", "dreamzero_policy")
    assert "launch/robot_description.launch.py" in report["files"]["launch"]
    assert report["rmw"] == "rmw_fastrtps_cpp"


def test_dreamzero_info_fails_when_the_package_is_not_indexed(tmp_path: Path) -> None:
    environment = dict(os.environ, AMENT_PREFIX_PATH=str(tmp_path))
    code = ("import sys; from dreamzero_policy import paths, cli; paths.ensure_ament_prefix_path = lambda: None; "
            "sys.exit(cli.main(['info', '--json']))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env=environment, stdin=subprocess.DEVNULL)
    assert result.returncode == 1
    assert "share_dir" in json.loads(result.stdout)["problems"]


def test_robot_workspace_links_to_both_packages() -> None:
    src = ROOT / "ros2_ws" / "src"
    for link, package in (("dreamzero_policy", "dreamzero_policy"), ("dreamzero_msgs", "dreamzero_msgs")):
        path = src / link
        assert path.is_symlink(), f"{path} must be a link into the repository"
        assert ET.parse(path / "package.xml").getroot().findtext("name") == package


def test_every_node_parameter_is_documented_in_the_readme() -> None:
    from dreamzero_policy.params import ADAPTER_NODE_PARAMS, CONTROL_MUX_PARAMS, POLICY_NODE_PARAMS, SIM_DROID_PARAMS

    readme = (ROOT / "README.md").read_text()
    every = POLICY_NODE_PARAMS + ADAPTER_NODE_PARAMS + CONTROL_MUX_PARAMS + SIM_DROID_PARAMS
    assert [p.name for p in every if f"`{p.name}`" not in readme] == []
