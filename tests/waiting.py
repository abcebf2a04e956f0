"""Waiting in tests: for a condition, never for a fixed time (ISSUE: the suite must pass on a loaded machine).

CI runs the suite on 2 shared cores next to rendering, model processes and DDS, sometimes beside a
second suite, so how long anything takes there says nothing about whether it works. A test waits
for the condition it needs with :func:`wait_until`; its timeout is :data:`PATIENCE_S`, generous on
purpose: a passing test returns as soon as the condition holds, so only a failing test pays for it.
No rclpy here, so tests without ROS use it too.
"""
from __future__ import annotations

import time
from collections.abc import Callable

# How long a test waits for something that must happen. Not a performance bound (bench/ measures speed).
PATIENCE_S = 120.0


def wait_until(condition: Callable[[], object], what: str, timeout_s: float = PATIENCE_S, poll_s: float = 0.01) -> None:
    """Poll ``condition`` until it is truthy; raise TimeoutError naming ``what`` after ``timeout_s`` seconds."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(poll_s)
