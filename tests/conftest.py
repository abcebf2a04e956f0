"""Test environment for the whole suite (environment.md G6, G11; STYLE.md item 23).

Before anything imports rclpy, this sets for this process and every process a test starts:
* ``ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST``: DDS discovery stays on loopback
  (``ROS_LOCALHOST_ONLY`` is ignored by Kilted).
* ``ROS_DOMAIN_ID``: one that no other test process on this machine holds. Each process (a run, or
  one pytest-xdist worker) takes an exclusive file lock on one id and keeps it until it exits, so
  concurrent runs and workers never hear each other.
* ``ROS_LOG_DIR``: a temporary folder, removed at exit.
* ``AMENT_PREFIX_PATH``: the virtual environment, where the project and dreamzero_msgs are indexed.
* ``OMP_NUM_THREADS=1`` (unless set): one torch/OpenMP thread per process. CI's 2 cores are shared by
  model processes, renderers, DDS and sometimes a second suite; OpenMP threads wait for each other at
  every operator, which a descheduled thread stalls. With three suites at once a tiny-model call took
  5-16 s instead of 0.25-0.5 s and a 30 s training test overran its 300 s timeout.

Fixtures: ``ros_context`` (rclpy initialised once per session; only tests that ask for it load
rclpy) and ``unique_name`` (topic/node names that do not collide between tests).
"""
from __future__ import annotations

import atexit
import fcntl
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Fast DDS domain ids 0..101 keep their ports clear of the ephemeral range (environment.md G6);
# 0 is left to whatever else runs ROS on the machine.
_DOMAIN_IDS = range(1, 102)
_LOCK_DIR = Path(tempfile.gettempdir()) / "dreamzero-ros-test-domains"


def _claim_domain_id() -> int:
    """Lock and return a ROS domain id no other live test process holds."""
    _LOCK_DIR.mkdir(exist_ok=True)
    start = os.getpid() % len(_DOMAIN_IDS)
    for offset in range(len(_DOMAIN_IDS)):
        domain = _DOMAIN_IDS[(start + offset) % len(_DOMAIN_IDS)]
        handle = open(_LOCK_DIR / f"{domain}.lock", "w")  # noqa: SIM115 - held until exit
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            continue
        atexit.register(handle.close)
        return domain
    raise RuntimeError(f"all ROS domain ids {_DOMAIN_IDS.start}..{_DOMAIN_IDS.stop - 1} are taken "
                       f"by other test processes (locks in {_LOCK_DIR})")


def _set_ros_environment() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported anywhere (see module docstring)
    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(_claim_domain_id())
    log_dir = tempfile.mkdtemp(prefix="dreamzero-ros-log-")
    atexit.register(shutil.rmtree, log_dir, ignore_errors=True)
    os.environ["ROS_LOG_DIR"] = log_dir
    prefixes = [p for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    if sys.prefix not in prefixes:
        os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join([sys.prefix, *prefixes])


_set_ros_environment()


@pytest.fixture(scope="session")
def ros_context() -> Iterator[None]:
    """rclpy initialised for the whole session (one context, as rclpy's own tests do)."""
    import rclpy

    rclpy.init()
    yield
    rclpy.shutdown()


_names = itertools.count()


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> str:
    """A ROS-legal name unique to this test in this process, e.g. for topics and nodes."""
    stem = "".join(c if c.isalnum() else "_" for c in request.node.name)[:40].strip("_")
    return f"t{next(_names)}_{stem}"
