"""Chunk smoothing (dreamzero_embodiments.smoothing): the measured defaults hold on fresh synthetic data.

bench/smoothing_bench.py measured, for the default window 19 / order 4 at noise 0.005 rad: within-chunk
jerk / 7.2 (15 Hz) and / 8.5 (30 Hz), lag 0.01-0.03 steps, step response 90 % point 0.85 steps late.
The bounds below are conservative (other seeds, fewer chunks) and fail for a disabled or mis-set filter.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.smoothing import SmoothingConfig, smooth_chunk, upsample_linear

H = 24  # facts §1.3
RATE_HZ = 15.0  # DROID, facts §1.4: the coarser rate, where a window spans the most time
NOISE = 0.005  # rad, the bench's nominal noise


def _clean(steps: int, rng: np.random.Generator, dims: int = 6) -> np.ndarray:
    t = np.arange(steps)[:, None, None] / RATE_HZ
    freq, amp = rng.uniform(0.1, 0.8, (1, 3, dims)), rng.uniform(0.03, 0.15, (1, 3, dims))
    return (amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi, (1, 3, dims)))).sum(axis=1)


def _execute(chunks: list[np.ndarray], config: SmoothingConfig) -> np.ndarray:
    executed: list[np.ndarray] = []
    for chunk in chunks:
        history = np.concatenate(executed)[-config.history_steps:] if executed else None
        executed.append(smooth_chunk(chunk, config, history=history))
    return np.concatenate(executed)


def _jerk_within(sequence: np.ndarray) -> float:
    jerk = np.diff(sequence, n=3, axis=0)
    chunk_of = np.arange(len(sequence)) // H
    return float(np.sqrt(np.mean(jerk[chunk_of[:-3] == chunk_of[3:]] ** 2)))


def _lag(signal: np.ndarray, reference: np.ndarray, max_shift: int = 3) -> int:
    core = slice(max_shift, len(signal) - max_shift)
    shifts = range(-max_shift, max_shift + 1)
    errors = [np.mean((signal[core] - np.roll(reference, s, axis=0)[core]) ** 2) for s in shifts]
    return int(np.argmin(errors)) - max_shift


@pytest.fixture(scope="module")
def noisy_run() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clean reference, raw executed, smoothed executed): 30 chunks with jumps and white noise, seed 7."""
    rng = np.random.default_rng(7)
    clean = _clean(30 * H, rng)
    reference = clean + np.repeat(rng.normal(0, 0.02, (30, clean.shape[1])), H, axis=0)
    noisy = reference + rng.normal(0, NOISE, clean.shape)
    chunks = [noisy[i:i + H] for i in range(0, len(noisy), H)]
    return reference, noisy, _execute(chunks, SmoothingConfig())


def test_jerk_within_chunks_falls_by_the_measured_factor(noisy_run) -> None:
    _, raw, smoothed = noisy_run
    assert _jerk_within(raw) / _jerk_within(smoothed) > 5.0  # bench: 7.2 at 15 Hz


def test_smoothing_adds_no_lag_and_moves_closer_to_the_clean_motion(noisy_run) -> None:
    reference, raw, smoothed = noisy_run
    assert _lag(smoothed, reference) == 0  # bench: +0.01 steps; the rule allows at most 1
    assert np.sqrt(np.mean((smoothed - reference) ** 2)) < 0.85 * np.sqrt(np.mean((raw - reference) ** 2))


def test_a_step_reaches_ninety_percent_at_most_one_step_late() -> None:
    chunk = np.zeros((H, 1))
    chunk[12:] = 1.0
    smoothed = smooth_chunk(chunk, SmoothingConfig(), history=np.zeros((5, 1)))[:, 0]
    first = int(np.nonzero(smoothed >= 0.9)[0][0])
    crossing = first - 1 + (0.9 - smoothed[first - 1]) / (smoothed[first] - smoothed[first - 1])
    assert 11.9 < crossing <= 11.9 + 1.0  # raw step crosses 90 % at 11.9 (linear between 11 and 12)


@pytest.mark.parametrize("history_steps", [0, 5, 8])
def test_a_clean_linear_trajectory_passes_unchanged(history_steps: int) -> None:
    k = np.arange(-history_steps, H)[:, None]
    line = 0.3 + k * np.array([[0.02, -0.05, 0.0]])  # rad per step
    smoothed = smooth_chunk(line[history_steps:], SmoothingConfig(), history=line[:history_steps])
    np.testing.assert_allclose(smoothed, line[history_steps:], rtol=0, atol=1e-10)


def test_history_smooths_the_boundary_with_the_executed_commands() -> None:
    history = np.zeros((5, 1))
    chunk = np.full((H, 1), 0.1)  # the new chunk starts 0.1 rad away from what was executed
    with_history = smooth_chunk(chunk, SmoothingConfig(), history=history)[:, 0]
    without = smooth_chunk(chunk, SmoothingConfig())[:, 0]
    np.testing.assert_allclose(without, 0.1, atol=1e-12)  # a constant is a polynomial: unchanged
    assert 0.0 < with_history[0] < 0.09  # pulled towards the history ...
    np.testing.assert_allclose(with_history[12:], 0.1, atol=1e-3)  # ... only near the seam


def test_disabled_returns_an_unchanged_copy() -> None:
    values = np.random.default_rng(1).normal(size=(H, 4))
    out = smooth_chunk(values, SmoothingConfig(enabled=False), history=np.zeros((3, 4)))
    np.testing.assert_array_equal(out, values)
    assert out is not values


def test_a_chunk_shorter_than_the_window_is_filtered_with_a_smaller_window_or_left_alone() -> None:
    tiny = np.array([[0.0], [1.0]])
    np.testing.assert_array_equal(smooth_chunk(tiny, SmoothingConfig()), tiny)  # 3 samples <= order 4: unchanged
    short = np.random.default_rng(2).normal(size=(6, 2))  # 11 upsampled samples < window 19
    out = smooth_chunk(short, SmoothingConfig())
    assert out.shape == short.shape and np.all(np.isfinite(out))


def test_upsampling_is_linear_in_time_and_keeps_the_original_samples() -> None:
    values = np.array([[0.0, 10.0], [1.0, 30.0], [3.0, 30.0]])
    fine = upsample_linear(values, 2)
    np.testing.assert_allclose(fine[:, 0], [0.0, 0.5, 1.0, 2.0, 3.0])
    np.testing.assert_allclose(fine[:, 1], [10.0, 20.0, 30.0, 30.0, 30.0])


def test_history_steps_cover_the_half_window() -> None:
    assert SmoothingConfig().history_steps == 5  # window 19: 9 upsampled samples back = 4.5 steps
    assert SmoothingConfig(window=5, polyorder=2, upsample=1).history_steps == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"window": 18}, "window must be odd"),
    ({"window": 5, "polyorder": 5}, r"polyorder must be in \[0, window=5\)"),
    ({"upsample": 0}, "upsample must be >= 1"),
    ({"window": 19.0}, "window must be an int"),
])
def test_invalid_configs_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SmoothingConfig(**kwargs)


@pytest.mark.parametrize(("values", "history", "message"), [
    (np.zeros(24), None, r"values must be float64\[H >= 1, D\]"),
    (np.zeros((24, 3)), np.zeros((2, 4)), r"history must be float64\[K, D=3\]"),
    (np.full((24, 3), np.nan), None, "must be finite"),
    (np.zeros((24, 3)), np.full((2, 3), np.inf), "must be finite"),
])
def test_malformed_input_is_refused(values: np.ndarray, history, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        smooth_chunk(values, SmoothingConfig(), history=history)


def test_magnitudes_that_overflow_the_filter_return_the_chunk_unchanged_never_inf() -> None:
    values = np.full((H, 2), 1.7e308)
    values[::2, 1] = -1.7e308
    out = smooth_chunk(values, SmoothingConfig(), history=np.full((5, 2), -1.7e308))
    np.testing.assert_array_equal(out, values)
