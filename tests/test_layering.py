"""Import rules between the layers (ARCHITECTURE.md section 1).

``model/`` and ``embodiments/`` never import rclpy, a ROS message package or the ROS layer;
``embodiments/`` never imports torch or the model. Checked on the source with ``ast``, so the rule
holds for imports inside functions and for ``importlib.import_module("...")`` with a literal name.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

ROS_MODULES = {"rclpy", "rcl_interfaces", "rosidl_runtime_py", "rosidl_parser", "ament_index_python",
               "launch", "launch_ros", "builtin_interfaces", "message_filters", "cv_bridge",
               "dreamzero_policy"}
ROS_SUFFIXES = ("_msgs", "_srvs", "_interfaces")
FORBIDDEN = {
    "model": lambda top: top in ROS_MODULES or top.endswith(ROS_SUFFIXES),
    "embodiments": lambda top: top in ROS_MODULES or top.endswith(ROS_SUFFIXES)
    or top in {"torch", "dreamzero_model"},
}


def imported_modules(source: str) -> set[str]:
    """Top-level names of every module ``source`` imports, statically or through importlib."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in {"import_module", "__import__"}):
            names.add(node.args[0].value)
    return {name.split(".")[0] for name in names}


def layering_violations(root: Path) -> list[str]:
    """``path: module`` for every forbidden import under the layer folders of ``root``."""
    violations = []
    for folder, forbidden in FORBIDDEN.items():
        for path in sorted((root / folder).rglob("*.py")):
            for module in sorted(imported_modules(path.read_text())):
                if forbidden(module):
                    violations.append(f"{path.relative_to(root)}: {module}")
    return violations


def test_model_and_embodiments_do_not_import_ros_and_embodiments_not_torch() -> None:
    assert all(any((ROOT / folder).rglob("*.py")) for folder in FORBIDDEN), "layer folders must hold code"
    assert layering_violations(ROOT) == []


@pytest.mark.parametrize(("folder", "line", "offender"), [
    ("model", "import rclpy", "rclpy"),
    ("model", "from sensor_msgs.msg import Image", "sensor_msgs"),
    ("model", "from dreamzero_policy import cli", "dreamzero_policy"),
    ("embodiments", "def f():\n    import torch.nn", "torch"),
    ("embodiments", "import importlib\nimportlib.import_module('std_srvs.srv')", "std_srvs"),
    ("embodiments", "from dreamzero_model import x", "dreamzero_model"),
])
def test_checker_reports_each_kind_of_forbidden_import(tmp_path: Path, folder: str, line: str, offender: str) -> None:
    package = tmp_path / folder / "pkg"
    package.mkdir(parents=True)
    (package / "mod.py").write_text(f"import numpy\n{line}\n")
    assert layering_violations(tmp_path) == [f"{folder}/pkg/mod.py: {offender}"]


def test_checker_allows_the_permitted_imports(tmp_path: Path) -> None:
    for folder in FORBIDDEN:
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "ok.py").write_text("import numpy, scipy.signal, yaml\nfrom . import sibling\n")
    (tmp_path / "model" / "torch_ok.py").write_text("import torch\nfrom safetensors.torch import load_file\n")
    assert layering_violations(tmp_path) == []
