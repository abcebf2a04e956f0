"""glibc malloc settings for a server that receives multi-megabyte requests call after call.

A 9-frame DROID request is 4.7 MB (27 uint8 frames of 180x320). Receiving one allocates several
buffers of that size in turn: websockets' read buffer, the frame's payload, its unmasked copy, the
msgpack arrays. With glibc's defaults each is handed back to the kernel when freed (a block above the
mmap threshold is unmapped; a heap top above the trim threshold is trimmed), so the next request
faults every page of them in again. On the development machine that is about half of the transport of
such a call: 12.5-15.5 ms with the defaults, 6.4-7.0 ms with the settings below (bench/RESULTS.md,
"Model server").

:func:`keep_freed_buffers` fixes both thresholds: blocks up to 32 MiB come from the heap (glibc's own
ceiling for its dynamic mmap threshold on 64-bit systems) and up to 64 MiB of free heap is kept
(twice that, the ratio glibc's dynamic rule keeps). The cost is memory: a process keeps up to 64 MiB
it has freed. A user who tunes malloc in the environment (``MALLOC_*_`` variables or
``glibc.malloc`` tunables) keeps their settings; on a C library other than glibc nothing is changed.
Imports ctypes only.
"""
from __future__ import annotations

import ctypes
import os

MMAP_THRESHOLD_BYTES = 32 << 20
TRIM_THRESHOLD_BYTES = 64 << 20
_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers, glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_ENVIRONMENT_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_")


def keep_freed_buffers() -> str:
    """Set glibc's mmap and trim thresholds for this process (module docstring); what was done, in one line."""
    if any(name in os.environ for name in _ENVIRONMENT_SETTINGS) or "glibc.malloc." in os.environ.get(
            "GLIBC_TUNABLES", ""):
        return "malloc: the environment's settings kept"
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "gnu_get_libc_version") or not hasattr(libc, "mallopt"):
        return "malloc: not glibc, its defaults kept"
    for parameter, value, name in ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES, "mmap"),
                                   (_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES, "trim")):
        if not libc.mallopt(parameter, value):
            return f"malloc: glibc refused the {name} threshold of {value >> 20} MiB"
    return (f"malloc: blocks up to {MMAP_THRESHOLD_BYTES >> 20} MiB from the heap, up to "
            f"{TRIM_THRESHOLD_BYTES >> 20} MiB of freed memory kept (request buffers are reused, not faulted in "
            "again)")
