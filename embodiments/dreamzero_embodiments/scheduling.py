"""When the policy node queries the model next (ARCHITECTURE.md §3; issue "policy node", item 5).

A chunk anchored at t_obs covers steps t_obs + k dt. The next query is due when the previous chunk
has ``execute_steps`` steps executed minus the measured latency, so that its successor arrives just
as those steps run out: due at t_obs_prev + execute_steps * dt - latency. ``execute_steps = 24``
queries once per chunk, the official cadence. The latency estimate is the median of the last
``window`` latencies (robust to one slow call). Never reads a clock: times are arguments.
Imports the standard library only.
"""
from __future__ import annotations

import statistics
from collections import deque


class QueryScheduler:
    """Decides whether a query is due at ``now_ns`` (see module docstring)."""

    def __init__(self, execute_steps: int, dt_s: float, window: int = 8) -> None:
        if execute_steps < 1:
            raise ValueError(f"execute_steps must be >= 1, got {execute_steps}")
        self.execute_steps = execute_steps
        self.dt_s = dt_s
        self._latencies: deque[float] = deque(maxlen=window)
        self._last_t_obs_ns: int | None = None
        self._hold_until_ns = 0

    @property
    def latency_s(self) -> float:
        """Median of the recent latencies (0 before the first chunk)."""
        return statistics.median(self._latencies) if self._latencies else 0.0

    def reset(self) -> None:
        """Forget the previous chunk: the next query is due at once (latency history is kept)."""
        self._last_t_obs_ns = None

    def record(self, t_obs_ns: int, latency_s: float) -> None:
        """A chunk anchored at ``t_obs_ns`` was published ``latency_s`` after t_obs."""
        self._last_t_obs_ns = t_obs_ns
        self._latencies.append(latency_s)

    def hold_until(self, t_ns: int) -> None:
        """No query before ``t_ns`` (e.g. a pause after a failed call)."""
        self._hold_until_ns = t_ns

    def next_due_ns(self) -> int | None:
        if self._last_t_obs_ns is None:
            return None
        return self._last_t_obs_ns + round((self.execute_steps * self.dt_s - self.latency_s) * 1e9)

    def due(self, now_ns: int) -> bool:
        due_ns = self.next_due_ns()
        return now_ns >= self._hold_until_ns and (due_ns is None or now_ns >= due_ns)
