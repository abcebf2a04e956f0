"""A fixed-capacity history of stamped values, kept in stamp order (ARCHITECTURE.md §3).

One buffer per camera (frames keyed by header stamp) and one for joint states. ROS callbacks push
while the inference worker reads, so every method takes the buffer's lock; a reader that needs several
lookups against one consistent history takes a :meth:`StampedRingBuffer.snapshot` first.

Stamps are integer nanoseconds (``t_ns``); floats are refused because float seconds lose the
nanoseconds of a ROS stamp. Nothing here reads a clock. Imports the standard library only.
"""
from __future__ import annotations

import bisect
import operator
import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class StampedRingBuffer(Generic[T]):
    """The ``capacity`` newest-stamped values, oldest first.

    * A push older than what is held is inserted in stamp order (cameras and joint states can arrive
      out of order over DDS); a push with a stamp already held replaces that value.
    * Over capacity the OLDEST stamp is dropped, so a late push older than everything in a full buffer
      is not kept (:meth:`push` returns False).
    """

    def __init__(self, capacity: int) -> None:
        """Args: capacity: the most values held, >= 1.

        Raises:
            ValueError: capacity below 1.
        """
        capacity = operator.index(capacity)
        if capacity < 1:
            raise ValueError(f"StampedRingBuffer: capacity must be >= 1, got {capacity}")
        self._capacity = capacity
        self._stamps: list[int] = []  # ascending, unique
        self._values: list[T] = []
        self._lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self._capacity

    def __len__(self) -> int:
        with self._lock:
            return len(self._stamps)

    def push(self, stamp_ns: int, value: T) -> bool:
        """Insert ``value`` at ``stamp_ns`` (integer ns); returns whether it is held afterwards.

        Raises:
            TypeError: ``stamp_ns`` is not an integer (e.g. float seconds).
        """
        stamp_ns = operator.index(stamp_ns)
        with self._lock:
            index = bisect.bisect_left(self._stamps, stamp_ns)
            if index < len(self._stamps) and self._stamps[index] == stamp_ns:
                self._values[index] = value
                return True
            if len(self._stamps) == self._capacity and index == 0:
                return False  # older than everything in a full buffer: it would be dropped at once
            self._stamps.insert(index, stamp_ns)
            self._values.insert(index, value)
            if len(self._stamps) > self._capacity:
                del self._stamps[0], self._values[0]
            return True

    def latest(self) -> tuple[int, T] | None:
        """(stamp_ns, value) with the newest stamp, or None when empty."""
        with self._lock:
            return (self._stamps[-1], self._values[-1]) if self._stamps else None

    def nearest(self, t_ns: int, tolerance_ns: int) -> tuple[int, T] | None:
        """(stamp_ns, value) nearest to ``t_ns`` if within ``tolerance_ns`` (inclusive), else None.

        Of two equally near stamps the older wins, so the choice never depends on push order.

        Raises:
            ValueError: negative tolerance.
        """
        t_ns, tolerance_ns = operator.index(t_ns), operator.index(tolerance_ns)
        if tolerance_ns < 0:
            raise ValueError(f"StampedRingBuffer.nearest: tolerance_ns must be >= 0, got {tolerance_ns}")
        with self._lock:
            index = nearest_index(self._stamps, t_ns)
            if index is None or abs(self._stamps[index] - t_ns) > tolerance_ns:
                return None
            return self._stamps[index], self._values[index]

    @property
    def oldest_stamp(self) -> int | None:
        """Oldest stamp held (ns), or None when empty."""
        with self._lock:
            return self._stamps[0] if self._stamps else None

    @property
    def newest_stamp(self) -> int | None:
        """Newest stamp held (ns), or None when empty."""
        with self._lock:
            return self._stamps[-1] if self._stamps else None

    def snapshot(self) -> tuple[tuple[int, ...], tuple[T, ...]]:
        """(stamps ascending, values) copied under the lock: one consistent history for many lookups."""
        with self._lock:
            return tuple(self._stamps), tuple(self._values)

    def clear(self) -> None:
        """Drop everything (e.g. on a new session); the capacity stays."""
        with self._lock:
            self._stamps.clear()
            self._values.clear()


def nearest_index(stamps: list[int] | tuple[int, ...], t_ns: int) -> int | None:
    """Index of the stamp nearest ``t_ns`` in ascending ``stamps`` (older wins a tie); None when empty."""
    if not stamps:
        return None
    index = bisect.bisect_left(stamps, t_ns)
    if index == 0:
        return 0
    if index == len(stamps):
        return index - 1
    before, after = stamps[index - 1], stamps[index]
    return index - 1 if t_ns - before <= after - t_ns else index
