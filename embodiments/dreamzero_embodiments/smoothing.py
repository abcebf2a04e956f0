"""Action-chunk smoothing: 2x linear upsampling, Savitzky-Golay along time, downsampling back.

The DreamZero repository smooths nothing (facts §4); its project page says the real-robot demos used
"action chunk smoothing" without publishing parameters. The recipe here is the published one: upsample
the chunk ``upsample`` times by linear interpolation in time, run ``scipy.signal.savgol_filter`` along
time, take every ``upsample``-th sample again. The window and polynomial order were chosen by
measurement (bench/smoothing_bench.py, numbers in bench/RESULTS.md "Smoothing").

Boundaries: a Savitzky-Golay filter is symmetric (zero phase) inside the signal, so it adds no lag
there. At the ends it fits one polynomial to the first / last window (``mode="interp"``), which
neither pads with invented values nor extrapolates past the chunk. The start of a chunk is where it
meets what the robot already did: ``history`` (the last commands executed before the chunk's first
step, one per action step) is prepended before filtering and dropped after, so the seam is smoothed
from both sides. Values are only ever moved, never invented: a chunk too short for the window is
filtered with the largest odd window that fits, or returned unchanged if none does; a chunk whose
magnitudes overflow the filter (near 1e308) is returned unchanged, so the output is always finite
(the limits downstream deal with absurd values).

Pure; imports numpy and scipy only. Never reads a clock.

Dimensions: H steps of the chunk, K history steps (0 allowed), D action dimensions. Units are those
of the input (ROS units after ``actions.chunk_to_ros``); the filter is linear and per dimension.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.signal import savgol_filter

# savgol_filter boundary handling: fit a polynomial to the edge window (no padding, no extrapolation).
_MODE = "interp"


@dataclass(frozen=True)
class SmoothingConfig:
    """Parameters of :func:`smooth_chunk`.

    Attributes:
        enabled: False returns chunks unchanged.
        upsample: samples per action step during filtering (linear interpolation in time); 2 is the
            recipe of the DreamZero project page (facts §4).
        window: Savitzky-Golay window length in UPSAMPLED samples, odd, > polyorder. With
            ``upsample=2`` a window w spans (w - 1) / 2 action steps.
        polyorder: Savitzky-Golay polynomial order; polynomials up to this degree pass unchanged.
    """

    enabled: bool = True
    upsample: int = 2  # facts §4 (project page: 2x upsampling)
    # measured: bench/smoothing_bench.py (bench/RESULTS.md "Smoothing"): the largest jerk reduction (7.2x
    # at 15 Hz, 8.5x at 30 Hz) whose step response reaches 90 % at most 1 step late (0.85) and whose
    # distortion of clean motion is 0.4 mrad RMS. Spans 9 action steps (0.6 s at 15 Hz, 0.3 s at 30 Hz).
    window: int = 19
    polyorder: int = 4

    def __post_init__(self) -> None:
        for field in ("upsample", "window", "polyorder"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"SmoothingConfig.{field} must be an int, got {value!r}")
        if self.upsample < 1:
            raise ValueError(f"SmoothingConfig.upsample must be >= 1, got {self.upsample}")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"SmoothingConfig.window must be odd and >= 1 (zero phase), got {self.window}")
        if not 0 <= self.polyorder < self.window:
            raise ValueError(f"SmoothingConfig.polyorder must be in [0, window={self.window}), got {self.polyorder}")

    @property
    def history_steps(self) -> int:
        """Action steps before a chunk that reach its first step through the window (how much history to pass)."""
        return math.ceil((self.window // 2) / self.upsample)


def upsample_linear(values: np.ndarray, factor: int) -> np.ndarray:
    """Linear interpolation in time: float64[N, D] -> float64[(N - 1) * factor + 1, D], same units.

    Sample ``j`` lies at step ``j / factor``; every ``factor``-th sample is an original row, exactly.
    """
    values = np.asarray(values, dtype=np.float64)
    if factor == 1 or len(values) < 2:
        return values.copy()
    fraction = (np.arange(factor, dtype=np.float64) / factor)[None, :, None]  # 1, factor, 1
    lower, upper = values[:-1, None, :], values[1:, None, :]  # N-1, 1, D
    inner = ((1.0 - fraction) * lower + fraction * upper).reshape(-1, values.shape[1])  # (N-1)*factor, D
    return np.concatenate([inner, values[-1:]], axis=0)


def smooth_chunk(values: np.ndarray, config: SmoothingConfig, history: np.ndarray | None = None) -> np.ndarray:
    """Smooth one chunk along time (see module docstring).

    Args:
        values: float64[H, D], absolute targets of steps 0..H-1 (any units; ROS units in the adapter).
        config: the filter; ``config.enabled=False`` returns a copy of ``values``.
        history: float64[K, D] or None: the commands executed at the K action steps just before step 0,
            oldest first, same units as ``values``. Prepended for filtering, not returned.

    Returns:
        float64[H, D], the smoothed chunk (a new array).

    Raises:
        ValueError: ``values`` not 2-D with H >= 1; ``history`` not of shape (K, D); a non-finite value
            in either (``actions.chunk_to_ros`` rejects those chunks before they get here).
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2 or values.shape[0] < 1:
        raise ValueError(f"smooth_chunk: values must be float64[H >= 1, D], got shape {values.shape}")
    if history is None:
        history = np.empty((0, values.shape[1]))
    history = np.asarray(history, dtype=np.float64)
    if history.ndim != 2 or history.shape[1] != values.shape[1]:
        raise ValueError(f"smooth_chunk: history must be float64[K, D={values.shape[1]}], got shape {history.shape}")
    if not (np.all(np.isfinite(values)) and np.all(np.isfinite(history))):
        raise ValueError("smooth_chunk: values and history must be finite")
    if not config.enabled:
        return values.copy()
    sequence = np.concatenate([history, values], axis=0)  # K + H, D
    fine = upsample_linear(sequence, config.upsample)  # (K + H - 1) * up + 1, D
    window = min(config.window, len(fine) if len(fine) % 2 else len(fine) - 1)
    if window <= config.polyorder:
        return values.copy()  # too short to filter: leave it as the model sent it
    with np.errstate(over="ignore", invalid="ignore"):  # absurd magnitudes: handled just below
        filtered = savgol_filter(fine, window, config.polyorder, axis=0, mode=_MODE)
    smoothed = filtered[::config.upsample][len(history):].copy()
    if not np.all(np.isfinite(smoothed)):  # overflow of values near 1e308: never hand on inf or NaN
        return values.copy()
    return smoothed
