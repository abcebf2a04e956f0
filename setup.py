"""Install the ament_python package ``dreamzero_policy`` and its two ROS-free Python packages.

One distribution carries three import packages (ARCHITECTURE.md section 1):
``dreamzero_policy`` (ROS layer, ``dreamzero_policy/``), ``dreamzero_model`` (PyTorch, ``model/``)
and ``dreamzero_embodiments`` (numpy/scipy, ``embodiments/``). ``data_files`` registers the package
in the ament index and installs package.xml, launch files, robot descriptions, embodiment YAMLs and
the shipped trained checkpoint (``checkpoints/``) under ``share/dreamzero_policy`` so
``get_package_share_directory`` and ``ros2 launch`` find them.
Works with ``pip install .`` (development machine: console scripts in ``bin/``) and ``colcon build``
with or without ``--symlink-install`` (robots: ``setup.cfg`` puts them in ``lib/dreamzero_policy/``, where
``ros2 run`` and launch_ros look).
"""
from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "dreamzero_policy"
ROOT = Path(__file__).resolve().parent
SOURCE_ROOTS = {PACKAGE: ".", "dreamzero_model": "model", "dreamzero_embodiments": "embodiments"}


def _packages() -> tuple[list[str], dict[str, str]]:
    """All import packages and the folder each lives in (setuptools ``package_dir``)."""
    packages: list[str] = []
    package_dir: dict[str, str] = {}
    for top, root in SOURCE_ROOTS.items():
        for name in find_packages(where=root, include=[top, f"{top}.*"]):
            packages.append(name)
            if root != ".":  # no identity entries: colcon's --symlink-install refuses a package mapped onto itself
                package_dir[name] = str(Path(root, *name.split(".")))
    return packages, package_dir


def _share_tree(folder: str, patterns: tuple[str, ...]) -> list[tuple[str, list[str]]]:
    """``data_files`` entries that mirror ``folder`` under ``share/<package>/<folder>``."""
    by_dir: dict[str, list[str]] = {}
    for pattern in patterns:
        for path in sorted((ROOT / folder).rglob(pattern)):
            rel = path.relative_to(ROOT)
            by_dir.setdefault(str(Path("share", PACKAGE, rel.parent)), []).append(str(rel))
    return sorted(by_dir.items())


def _embodiment_yamls() -> list[tuple[str, list[str]]]:
    """``share/<package>/embodiments``: the YAMLs of ``embodiments/dreamzero_embodiments/robots``.

    ``colcon build --symlink-install`` runs ``setup.py develop`` in its build folder, where each package lives
    as a link named after it (``dreamzero_embodiments -> <source>/embodiments/dreamzero_embodiments``); the
    link at the source path exists only during the build, so the installed links must go through the name.
    """
    robots = Path("embodiments", "dreamzero_embodiments", "robots")
    files = sorted(p.relative_to(ROOT) for p in (ROOT / robots).glob("*.yaml"))
    if "develop" in sys.argv:
        files = [path.relative_to("embodiments") for path in files]
    return [(str(Path("share", PACKAGE, "embodiments")), [str(f) for f in files])] if files else []


packages, package_dir = _packages()
version = ET.parse(ROOT / "package.xml").getroot().findtext("version")  # package.xml is the one home

setup(
    name=PACKAGE,
    version=version,
    packages=packages,
    package_dir=package_dir,
    package_data={"dreamzero_embodiments": ["robots/*.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        *_share_tree("launch", ("*.py", "*.yaml")),
        *_share_tree("urdf", ("*.xacro", "*.urdf", "*.md")),
        *_share_tree("checkpoints", ("*.safetensors", "*.json", "*.jsonl", "*.yaml", "*.md", "*.png")),
        *_embodiment_yamls(),
    ],
    install_requires=["setuptools"],
    zip_safe=False,
    maintainer="dreamzero-ros developers",
    maintainer_email="dev@dreamzero-ros.invalid",
    description="ROS 2 stack for the DreamZero World Action Model.",
    license="Apache-2.0",
    python_requires=">=3.10",
    entry_points={
        "console_scripts": [
            "dreamzero = dreamzero_policy.cli:main",
            "policy_node = dreamzero_policy.policy_node:main",
            "adapter_node = dreamzero_policy.adapter_node:main",
            "control_mux = dreamzero_policy.control_mux:main",
            "sim_droid = dreamzero_policy.sim_droid:main",
        ],
    },
)
