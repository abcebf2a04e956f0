"""Time-indexed execution of action chunks: latency compensation, cross-fade, interpolation, hold.

Implements the execution rules of ARCHITECTURE.md §3 on absolute, ROS-unit chunks (after
``actions.chunk_to_ros`` and ``smoothing.smooth_chunk``). The buffer holds one PLAN: knots (time,
command) joined by straight lines.

* Anchoring (§3): a chunk is anchored at t_obs; step k is the command for t_obs + k dt.
* Latency compensation (§3 "drops steps already in the past"): steps with t_obs + k dt < now are
  dropped, so a chunk arriving k steps late starts at its step k. Between now and that step the plan
  follows the chunk's own line from step k-1 to step k (interpolation inside the chunk, not
  extrapolation). A chunk whose every step is past is rejected and nothing changes; so is a chunk
  anchored before the one already accepted (it was overtaken).
* Cross-fade (§3 "cross-fades into a new chunk over a few steps"): if the plan covers the switch time
  s = max(now, t_obs), the new chunk is blended in with weights rising linearly from 0 at s to 1 at
  s + blend_steps dt (sooner if the old plan ends sooner: it is never extended). The command at s is
  the old plan's, so it never jumps; a chunk arriving mid-blend blends from the blended plan.
* Interpolation to the command rate: :meth:`ExecutionBuffer.sample` interpolates linearly between the
  two knots around now; exact at knot times.
* Hold (§3 "holds ... when no valid step covers now, never extrapolates"): before the plan's first
  knot, after its last, or in a gap between a finished plan and a later one, ``sample`` returns None
  and the caller holds its last command. Nothing here ever returns zeros or extrapolates.

Pure; imports numpy only. Never reads a clock: ``now_ns`` and ``t_obs_ns`` are arguments (integer ns).
Not thread-safe: the adapter calls it from one callback group.

Dimensions: H steps of a chunk (<= ``horizon``), D command dimensions, M knots of the plan.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class AcceptResult:
    """What :meth:`ExecutionBuffer.accept` did with a chunk.

    Attributes:
        start_step: first step of the chunk executed at its own time (t_obs + k dt >= now); H if none.
        dropped_steps: steps already past at arrival (latency compensation), H for a rejected chunk.
        blended: True if the chunk was cross-faded into a plan that was executing.
        accepted: False if the chunk was rejected (all steps past, or older than the current one);
            the plan is then unchanged.
        reason: why it was rejected ("" when accepted).
    """

    start_step: int
    dropped_steps: int
    blended: bool
    accepted: bool = True
    reason: str = ""


class ExecutionBuffer:
    """The plan of commands over time (see module docstring)."""

    def __init__(self, dt_s: float, blend_steps: int, horizon: int) -> None:
        """Args:
            dt_s: seconds between the steps of a chunk (``spec.timing.dt``: 1/15 DROID, 1/30 AgiBot and YAM).
            blend_steps: steps over which a new chunk is cross-faded in (0: switch at once).
            horizon: most steps a chunk may have (``spec.timing.horizon``, 24: facts §1.3); the plan
                also keeps this many steps of the past for :meth:`history`.

        Raises:
            ValueError: dt_s not positive and finite, blend_steps < 0, horizon < 1.
        """
        if not (np.isfinite(dt_s) and dt_s > 0):
            raise ValueError(f"ExecutionBuffer: dt_s must be positive and finite, got {dt_s}")
        if operator.index(blend_steps) < 0 or operator.index(horizon) < 1:
            raise ValueError(f"ExecutionBuffer: need blend_steps >= 0 and horizon >= 1, got {blend_steps}, {horizon}")
        self.dt_ns = dt_s * 1e9  # float: step k is at t_obs + round(k * dt_ns), no drift over a chunk
        # Time arithmetic stays in integer ns: float64 rounds epoch stamps (~1.7e18 ns) to 256 ns.
        self.blend_steps = int(blend_steps)
        self.horizon = int(horizon)
        self.clear()

    def clear(self) -> None:
        """Forget the plan (e-stop, deactivation): ``sample`` returns None until the next chunk."""
        self._times = np.empty(0, dtype=np.int64)  # M, ascending
        self._values = np.empty((0, 0))  # M, D
        self._gap = np.empty(0, dtype=bool)  # M: True where the line from the previous knot is not valid
        self._last_t_obs_ns: int | None = None

    @property
    def end_ns(self) -> int | None:
        """Time of the plan's last knot, or None without a plan."""
        return int(self._times[-1]) if len(self._times) else None

    # ------------------------------------------------------------------------------------ accept
    def accept(self, values: np.ndarray, t_obs_ns: int, now_ns: int) -> AcceptResult:
        """Add a chunk to the plan (see module docstring for every rule).

        Args:
            values: float64[H, D], absolute commands in ROS units for t_obs + k dt, k = 0..H-1.
            t_obs_ns: the chunk's anchor, integer ns (``ActionChunk.header.stamp``).
            now_ns: arrival time, integer ns, same clock.

        Returns:
            What happened (:class:`AcceptResult`).

        Raises:
            ValueError: values not 2-D with 1 <= H <= horizon, D different from the plan's, or not
                finite (``actions.chunk_to_ros`` rejects such chunks first).
        """
        values = np.asarray(values, dtype=np.float64)
        t_obs_ns, now_ns = operator.index(t_obs_ns), operator.index(now_ns)
        if values.ndim != 2 or not 1 <= values.shape[0] <= self.horizon:
            raise ValueError(f"ExecutionBuffer.accept: values must be float64[1..{self.horizon}, D], "
                             f"got {values.shape}")
        if len(self._times) and values.shape[1] != self._values.shape[1]:
            raise ValueError(f"ExecutionBuffer.accept: chunk has D={values.shape[1]}, plan has {self._values.shape[1]}")
        if not np.all(np.isfinite(values)):
            raise ValueError("ExecutionBuffer.accept: values must be finite")
        steps = len(values)
        if self._last_t_obs_ns is not None and t_obs_ns < self._last_t_obs_ns:
            return AcceptResult(0, 0, False, False, f"anchored at {t_obs_ns} ns, before the accepted chunk's "
                                                    f"{self._last_t_obs_ns} ns (overtaken)")
        times = self._step_times(t_obs_ns, steps)
        start = self.first_step(t_obs_ns, now_ns, steps)
        if start == steps:
            return AcceptResult(steps, steps, False, False, f"all {steps} steps are in the past (last at "
                                                            f"{int(times[-1])} ns, now {now_ns} ns)")
        switch_ns = max(now_ns, t_obs_ns)
        if times[start] > switch_ns:  # arrived between steps start-1 and start: the chunk's line at now
            knot = _interpolate(times[start - 1:start + 1], values[start - 1:start + 1], switch_ns)
            new_times = np.concatenate([[switch_ns], times[start:]])
            new_values = np.concatenate([knot[None], values[start:]])
        else:
            new_times, new_values = times[start:], values[start:]
        old = self._at(switch_ns)
        blended = False
        if old is not None:
            new_values = new_values.copy()
            end_ns = min(switch_ns + round(self.blend_steps * self.dt_ns), self._segment_end_ns(switch_ns))
            if end_ns > switch_ns:
                blended = True
                weights = np.clip((new_times - switch_ns) / (end_ns - switch_ns), 0.0, 1.0)
                for i in np.nonzero(weights < 1.0)[0]:  # the old plan is valid there: t < end_ns
                    new_values[i] = (1 - weights[i]) * self._at(int(new_times[i])) + weights[i] * new_values[i]
            new_values[0] = old  # the command at the switch is the old plan's: no jump
        self._splice(switch_ns, new_times, new_values, continuous=old is not None, now_ns=now_ns)
        self._last_t_obs_ns = t_obs_ns
        return AcceptResult(start_step=start, dropped_steps=start, blended=blended)

    def _step_times(self, t_obs_ns: int, steps: int) -> np.ndarray:
        return t_obs_ns + np.round(np.arange(steps) * self.dt_ns).astype(np.int64)

    def first_step(self, t_obs_ns: int, now_ns: int, steps: int) -> int:
        """Index of the first of ``steps`` steps of a chunk anchored at ``t_obs_ns`` that is not in the
        past at ``now_ns`` (the step ``accept`` starts executing); ``steps`` when all are past."""
        return int(np.searchsorted(self._step_times(t_obs_ns, steps), now_ns, side="left"))

    def _segment_end_ns(self, t_ns: int) -> int:
        """Last knot time of the gap-free stretch of the plan that covers ``t_ns``."""
        after = int(np.searchsorted(self._times, t_ns, side="right"))
        gaps = np.nonzero(self._gap[after:])[0]
        return int(self._times[after + gaps[0] - 1]) if len(gaps) else int(self._times[-1])

    def _splice(self, switch_ns: int, times: np.ndarray, values: np.ndarray, continuous: bool, now_ns: int) -> None:
        """Keep the plan before ``switch_ns`` (and at most ``horizon`` steps of the past), then the new knots."""
        keep = self._times < switch_ns
        keep &= self._times >= now_ns - round(self.horizon * self.dt_ns)  # history kept for history()
        old_times, old_values, old_gap = self._times[keep], self._values[keep], self._gap[keep]
        if len(old_gap):
            old_gap[0] = True  # the line into the first kept knot came from a dropped one
        gap = np.zeros(len(times), dtype=bool)
        gap[0] = not continuous
        self._times = np.concatenate([old_times, times.astype(np.int64)])
        self._values = np.concatenate([old_values.reshape(-1, values.shape[1]), values])
        self._gap = np.concatenate([old_gap, gap])

    # ------------------------------------------------------------------------------------ queries
    def _at(self, t_ns: int) -> np.ndarray | None:
        """Plan value at ``t_ns`` (linear between knots), or None where no valid line covers it."""
        times = self._times
        if not len(times) or t_ns < times[0] or t_ns > times[-1]:
            return None
        right = int(np.searchsorted(times, t_ns, side="left"))
        if times[right] == t_ns:
            return self._values[right].copy()
        if self._gap[right]:
            return None
        return _interpolate(times[right - 1:right + 1], self._values[right - 1:right + 1], t_ns)

    def sample(self, now_ns: int) -> np.ndarray | None:
        """The command for ``now_ns``: float64[D], ROS units, or None (hold: nothing valid covers now).

        Linear between the two knots around now, exact at knot (step) times; None before the first
        knot, after the last, and in a gap between plans (ARCHITECTURE.md §3: never extrapolate).
        """
        return self._at(operator.index(now_ns))

    def remaining(self, now_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """The plan after ``now_ns`` for trajectory output (e.g. one ``JointTrajectory`` per chunk).

        Returns:
            (int64[M] knot times strictly after now, float64[M, D] their commands), up to the first gap
            after the first of them; empty (M = 0) when the plan ends by now. The value AT now is
            :meth:`sample`'s.
        """
        now_ns = operator.index(now_ns)
        first = int(np.searchsorted(self._times, now_ns, side="right"))
        gaps = np.nonzero(self._gap[first + 1:])[0]
        stop = first + 1 + int(gaps[0]) if len(gaps) else len(self._times)
        return self._times[first:stop].copy(), self._values[first:stop].copy()

    def history(self, t_ns: int, steps: int) -> np.ndarray | None:
        """The plan at the ``steps`` action steps before ``t_ns``: history for ``smoothing.smooth_chunk``.

        Args:
            t_ns: a new chunk's t_obs, integer ns.
            steps: how many steps (e.g. ``SmoothingConfig.history_steps``).

        Returns:
            float64[K, D] at t_ns - K dt, ..., t_ns - dt (oldest first), K <= steps: the longest run of
            such steps the plan covers, ending at t_ns - dt. None if it covers none. These are the
            commands executed then (before rate limits), as the plan keeps ``horizon`` steps of the past.
        """
        t_ns = operator.index(t_ns)
        rows = []
        for k in range(1, operator.index(steps) + 1):
            value = self._at(t_ns - round(k * self.dt_ns))
            if value is None:
                break
            rows.append(value)
        return np.array(rows[::-1]) if rows else None


def _interpolate(times: np.ndarray, values: np.ndarray, t_ns: int) -> np.ndarray:
    """Linear interpolation between two knots: times int64[2], values float64[2, D] -> float64[D]."""
    fraction = (t_ns - int(times[0])) / (int(times[1]) - int(times[0]))
    return (1.0 - fraction) * values[0] + fraction * values[1]  # no difference: cannot overflow
