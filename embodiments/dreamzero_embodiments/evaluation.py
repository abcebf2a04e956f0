"""Open-loop evaluation math: predicted chunks against what a recording shows (``dreamzero eval-bag``).

A chunk anchored at t_obs commands step k for t_obs + k dt (ARCHITECTURE.md §3). Its absolute
targets (ROS units, after anchor and unit maps: ``actions.chunk_to_ros``) are compared per step and
dimension with two references taken at those times:

* the recorded joint states, linearly interpolated between samples (``interpolate``);
* the recorded commands, the last command at or before each time (``hold``), since a controller
  holds its last command.

A reference time outside the recorded span, or a dimension the recording lacks, gives NaN and is left
out of every statistic; the counts say how many values each statistic rests on.

Pure: numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def step_times_ns(t_obs_ns: int, horizon: int, dt_s: float) -> np.ndarray:
    """int64[H]: t_obs + k dt for k = 0..H-1."""
    return t_obs_ns + np.round(np.arange(horizon) * dt_s * 1e9).astype(np.int64)


def _prepare(times_ns: np.ndarray, stamps_ns: np.ndarray, values: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Checked (times, stamps, values), the all-NaN output and the mask of times inside the recording."""
    stamps = np.asarray(stamps_ns, dtype=np.int64)
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or len(values) != len(stamps):
        raise ValueError(f"values must be [N, D] with N = {len(stamps)} stamps, got shape {values.shape}")
    if len(stamps) > 1 and np.any(np.diff(stamps) < 0):
        raise ValueError("stamps must be in non-decreasing order")
    times = np.asarray(times_ns, dtype=np.int64)
    out = np.full((len(times), values.shape[1]), np.nan)
    inside = (times >= stamps[0]) & (times <= stamps[-1]) if len(stamps) else np.zeros(len(times), dtype=bool)
    return times, stamps, values, out, inside


def interpolate(times_ns: np.ndarray, stamps_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float64[T, D]: ``values`` (float64[N, D] at ``stamps_ns``) linearly interpolated at ``times_ns``;
    NaN outside [first stamp, last stamp] and where a neighbouring sample is NaN."""
    times, stamps, values, out, inside = _prepare(times_ns, stamps_ns, values)
    if not inside.any():
        return out
    upper = np.searchsorted(stamps, times[inside], side="left")
    lower = np.where(stamps[upper] == times[inside], upper, upper - 1)
    span = (stamps[upper] - stamps[lower]).astype(np.float64)
    weight = np.divide((times[inside] - stamps[lower]).astype(np.float64), span, out=np.zeros_like(span),
                       where=span > 0)[:, None]
    out[inside] = values[lower] * (1.0 - weight) + values[upper] * weight
    return out


def hold(times_ns: np.ndarray, stamps_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """float64[T, D]: the last row of ``values`` stamped at or before each time; NaN before the first
    stamp and after the last (the recording says nothing there)."""
    times, stamps, values, out, inside = _prepare(times_ns, stamps_ns, values)
    out[inside] = values[np.searchsorted(stamps, times[inside], side="right") - 1]
    return out


@dataclass(frozen=True)
class ErrorStats:
    """Absolute errors of predictions against one reference.

    Attributes:
        names: the D dimensions. count: int[D] values compared. mae, rmse, max: float64[D] (NaN where
        count is 0). mae_per_step: float64[H], mean over chunks and dimensions of each step's error.
    """

    names: tuple[str, ...]
    count: np.ndarray
    mae: np.ndarray
    rmse: np.ndarray
    max: np.ndarray
    mae_per_step: np.ndarray

    def as_rows(self) -> list[dict[str, float | int | str]]:
        """One dict per dimension (JSON-ready; NaN becomes None)."""
        def number(x: float) -> float | None:
            return None if not np.isfinite(x) else float(x)

        return [{"name": n, "count": int(c), "mae": number(a), "rmse": number(r), "max": number(m)}
                for n, c, a, r, m in zip(self.names, self.count, self.mae, self.rmse, self.max)]


def error_stats(predicted: np.ndarray, reference: np.ndarray, names: tuple[str, ...]) -> ErrorStats:
    """Statistics of |predicted - reference| over chunks and steps, NaN references left out.

    Args:
        predicted: float64[N, H, D] absolute targets. reference: float64[N, H, D], NaN where unknown.
        names: the D dimension names.
    """
    predicted, reference = np.asarray(predicted, dtype=np.float64), np.asarray(reference, dtype=np.float64)
    if predicted.shape != reference.shape or predicted.ndim != 3 or predicted.shape[2] != len(names):
        raise ValueError(f"predicted {predicted.shape} and reference {reference.shape} must both be "
                         f"[N, H, D={len(names)}]")
    error = np.abs(predicted - reference)
    known = np.isfinite(error)
    count = known.sum(axis=(0, 1))
    zeroed = np.where(known, error, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mae = zeroed.sum(axis=(0, 1)) / count
        rmse = np.sqrt((zeroed ** 2).sum(axis=(0, 1)) / count)
        per_step = zeroed.sum(axis=(0, 2)) / known.sum(axis=(0, 2))
    peak = np.where(count > 0, np.where(known, error, -np.inf).max(axis=(0, 1), initial=-np.inf), np.nan)
    return ErrorStats(names=tuple(names), count=count, mae=np.where(count > 0, mae, np.nan),
                      rmse=np.where(count > 0, rmse, np.nan), max=peak, mae_per_step=per_step)
