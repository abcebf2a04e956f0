"""Open-loop evaluation maths: reference trajectories at chunk step times and error statistics."""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.evaluation import error_stats, hold, interpolate, step_times_ns


def test_step_times_follow_the_chunk_clock() -> None:
    np.testing.assert_array_equal(step_times_ns(10**9, 4, 1 / 15), 10**9 + np.array([0, 66_666_667, 133_333_333,
                                                                                       200_000_000]))


def test_interpolate_is_exact_on_lines_and_unknown_outside_the_recording() -> None:
    stamps = np.array([0, 100, 300])
    values = np.array([[0.0, 1.0], [1.0, 1.0], [3.0, np.nan]])
    out = interpolate(np.array([-1, 0, 50, 100, 250, 300, 301]), stamps, values)
    np.testing.assert_allclose(out[:, 0], [np.nan, 0.0, 0.5, 1.0, 2.5, 3.0, np.nan])
    np.testing.assert_allclose(out[:, 1], [np.nan, 1.0, 1.0, 1.0, np.nan, np.nan, np.nan])  # a NaN neighbour
    assert np.isnan(interpolate(np.array([5]), np.zeros(0, dtype=np.int64), np.zeros((0, 2)))).all()


def test_hold_takes_the_last_command_at_or_before_each_time() -> None:
    stamps = np.array([0, 100, 200])
    values = np.array([[1.0], [2.0], [3.0]])
    out = hold(np.array([-5, 0, 99, 100, 150, 200, 201]), stamps, values)
    np.testing.assert_allclose(out[:, 0], [np.nan, 1.0, 1.0, 2.0, 2.0, 3.0, np.nan])


def test_references_refuse_unsorted_or_misshapen_recordings() -> None:
    with pytest.raises(ValueError, match="non-decreasing"):
        interpolate(np.array([0]), np.array([2, 1]), np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"\[N, D\] with N = 2"):
        hold(np.array([0]), np.array([1, 2]), np.zeros(2))


def test_error_stats_leave_unknown_references_out() -> None:
    predicted = np.zeros((2, 3, 2))
    reference = np.array([[[1.0, np.nan], [2.0, np.nan], [np.nan, np.nan]],
                          [[-1.0, np.nan], [4.0, np.nan], [3.0, np.nan]]])
    stats = error_stats(predicted, reference, ("a", "b"))
    np.testing.assert_array_equal(stats.count, [5, 0])
    assert stats.mae[0] == pytest.approx(11 / 5) and stats.max[0] == 4.0
    assert stats.rmse[0] == pytest.approx(np.sqrt((1 + 4 + 1 + 16 + 9) / 5))
    assert np.isnan(stats.mae[1]) and np.isnan(stats.max[1])
    np.testing.assert_allclose(stats.mae_per_step, [1.0, 3.0, 3.0])
    assert stats.as_rows()[1] == {"name": "b", "count": 0, "mae": None, "rmse": None, "max": None}
    with pytest.raises(ValueError, match="must both be"):
        error_stats(predicted, reference[:, :2], ("a", "b"))
