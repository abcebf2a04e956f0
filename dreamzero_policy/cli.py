"""The ``dreamzero`` command line (ARCHITECTURE.md section 6).

One entry point with sub-commands. ``info`` reports what is installed and where, and exits non-zero
when a part the nodes need is missing, so it doubles as an installation check on a new machine.
The other sub-commands of the design (demo, bringup, replay, record, eval-bag, serve, bench) are
added by the issues that build them.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import sys
from typing import Any

from dreamzero_policy.paths import PACKAGE, share_dir

_ROS_ENVIRONMENT = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                    "AMENT_PREFIX_PATH", "ROS_LOG_DIR")


def _probe(report: dict[str, Any], problems: list[str], key: str, probe) -> None:
    """Store ``probe()`` under ``key``; on failure store the error and remember the problem."""
    try:
        report[key] = probe()
    except Exception as error:  # noqa: BLE001 - a diagnostic command reports every failure
        report[key] = f"MISSING: {type(error).__name__}: {error}"
        problems.append(key)


def _installed_files() -> dict[str, list[str]]:
    share = share_dir()
    return {folder: sorted(str(p.relative_to(share)) for p in (share / folder).rglob("*") if p.is_file())
            for folder in ("launch", "urdf", "embodiments")}


def _rmw() -> str:
    from rclpy.utilities import get_rmw_implementation_identifier

    return get_rmw_implementation_identifier()


def _torch() -> str:
    torch = importlib.import_module("torch")
    return f"{torch.__version__} (cuda available: {torch.cuda.is_available()})"


def run_info(args: argparse.Namespace) -> int:
    """Print the installation report; return 1 if a required part is missing."""
    report: dict[str, Any] = {"python": sys.version.split()[0], "prefix": sys.prefix}
    problems: list[str] = []
    _probe(report, problems, "version", lambda: importlib.metadata.version(PACKAGE))
    _probe(report, problems, "share_dir", lambda: str(share_dir()))
    _probe(report, problems, "files", _installed_files)
    _probe(report, problems, "rmw", _rmw)
    _probe(report, problems, "dreamzero_msgs",
           lambda: importlib.import_module("dreamzero_msgs.msg").ActionChunk.__module__)
    _probe(report, problems, "torch", _torch)
    report["environment"] = {name: os.environ.get(name) for name in _ROS_ENVIRONMENT}
    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>16}: {value}")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="dreamzero", description="DreamZero World Action Model on ROS 2.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="show what is installed and where; non-zero exit if a part is missing")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(func=run_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamzero`` console script."""
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
