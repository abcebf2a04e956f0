"""The server's malloc settings (``dreamzero_model.serving.allocator``): freed request-sized buffers stay in the
process for the next request, and a user's own malloc settings win.

Each case runs in a fresh interpreter (the settings are process-wide and cannot be undone) and reads glibc's
``mallinfo2``: bytes in mmapped blocks while three 8 MiB buffers (about two DROID requests) are held, and free heap
bytes once they are freed.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from dreamzero_model.serving.allocator import TRIM_THRESHOLD_BYTES

PROBE = """
import ctypes, json, sys
import numpy as np
from dreamzero_model.serving.allocator import keep_freed_buffers

class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]

libc = ctypes.CDLL(None)
libc.mallinfo2.restype = MallInfo2
line = keep_freed_buffers() if sys.argv[1] == "keep-freed" else "defaults"
buffers = [np.ones(8 << 20, np.uint8) for _ in range(3)]
mapped_while_held = libc.mallinfo2().hblkhd
del buffers
print(json.dumps({"line": line, "mapped_while_held": mapped_while_held, "free_heap_after": libc.mallinfo2().fordblks}))
"""
BUFFERS_BYTES = 3 * (8 << 20)

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")


def probe(setting: str, **environment: str) -> dict:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MALLOC_")}
    completed = subprocess.run([sys.executable, "-c", PROBE, setting], env={**env, **environment}, capture_output=True,
                               text=True, timeout=120, check=True)
    return json.loads(completed.stdout)


def test_defaults_map_and_unmap_each_request_sized_buffer() -> None:
    """The behaviour the settings change: each big buffer is its own mapping, returned to the kernel on free."""
    result = probe("defaults")
    assert result["mapped_while_held"] >= BUFFERS_BYTES
    assert result["free_heap_after"] < BUFFERS_BYTES


def test_freed_request_buffers_stay_in_the_heap_for_the_next_request() -> None:
    result = probe("keep-freed")
    assert result["line"].startswith("malloc: blocks up to 32 MiB from the heap"), result["line"]
    assert result["mapped_while_held"] < 8 << 20
    assert BUFFERS_BYTES <= result["free_heap_after"] <= TRIM_THRESHOLD_BYTES + (8 << 20)


@pytest.mark.parametrize("environment", [{"MALLOC_TRIM_THRESHOLD_": "131072"},
                                         {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=131072"}])
def test_malloc_settings_in_the_environment_are_kept(environment: dict[str, str]) -> None:
    result = probe("keep-freed", **environment)
    assert result["line"] == "malloc: the environment's settings kept"
    assert result["mapped_while_held"] >= BUFFERS_BYTES
