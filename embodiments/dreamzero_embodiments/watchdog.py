"""The adapter's chunk watchdog: hold when the policy stops sending chunks.

Chunks arrive at the policy's cadence (``execute_steps`` steps apart, ARCHITECTURE §3). If the next
one is overdue by more than ``periods`` action periods, the robot holds instead of playing out the
rest of an old plan: with a median inter-arrival time P, the watchdog expires at last arrival +
P + periods * dt. Until two chunks have arrived P is unknown, and the first chunk plays to its end.
Pure: times are arguments. Imports the standard library only.
"""
from __future__ import annotations

import statistics
from collections import deque


class ChunkWatchdog:
    """Expires when the next chunk is overdue (see module docstring)."""

    def __init__(self, dt_s: float, periods: float = 2.0, window: int = 8) -> None:
        self.grace_ns = round(periods * dt_s * 1e9)
        self._arrivals: deque[int] = deque(maxlen=window + 1)

    def on_chunk(self, arrival_ns: int) -> None:
        self._arrivals.append(arrival_ns)

    def reset(self) -> None:
        self._arrivals.clear()

    @property
    def period_ns(self) -> int | None:
        """Median time between chunk arrivals, or None before the second chunk."""
        if len(self._arrivals) < 2:
            return None
        arrivals = list(self._arrivals)
        return round(statistics.median(b - a for a, b in zip(arrivals, arrivals[1:])))

    def expired(self, now_ns: int) -> bool:
        period = self.period_ns
        return period is not None and now_ns > self._arrivals[-1] + period + self.grace_ns
