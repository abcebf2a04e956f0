"""Where the installed package keeps its files: the ament index and ``share/dreamzero_policy``.

On robots ``source install/setup.bash`` sets ``AMENT_PREFIX_PATH``. On the development machine the
package is pip-installed into the virtual environment, which registers it in the venv's ament index
(reference/environment.md section 2), but nothing sets the variable; the helpers here add the
interpreter's prefix when it holds our index entry, so console scripts work without sourcing.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

PACKAGE = "dreamzero_policy"
_INDEX_ENTRY = Path("share", "ament_index", "resource_index", "packages", PACKAGE)


def ensure_ament_prefix_path() -> None:
    """Append ``sys.prefix`` to ``AMENT_PREFIX_PATH`` if our ament index entry lives there."""
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if (Path(sys.prefix) / _INDEX_ENTRY).is_file() and sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([*prefixes, sys.prefix])


def share_dir() -> Path:
    """The installed ``share/dreamzero_policy`` folder (launch/, urdf/, embodiments/, package.xml).

    Raises:
        ament_index_python.packages.PackageNotFoundError: the package is not in the ament index
            (not installed, or ``AMENT_PREFIX_PATH`` does not name its prefix).
    """
    from ament_index_python.packages import get_package_share_directory

    ensure_ament_prefix_path()
    return Path(get_package_share_directory(PACKAGE))


SHIPPED_CHECKPOINT = "sim_touch"  # the trained tiny model of the simulated touch task (checkpoints/sim_touch/README.md)


def shipped_checkpoint() -> Path:
    """The installed trained tiny checkpoint ``share/dreamzero_policy/checkpoints/sim_touch`` (its model card is
    the README.md inside): the default of ``dreamzero demo``."""
    return share_dir() / "checkpoints" / SHIPPED_CHECKPOINT


def resolve_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` as the backends take it: the name :data:`SHIPPED_CHECKPOINT` becomes its installed folder;
    a folder, ``tiny`` (random weights) and anything else are returned unchanged."""
    return str(shipped_checkpoint()) if checkpoint == SHIPPED_CHECKPOINT else checkpoint
