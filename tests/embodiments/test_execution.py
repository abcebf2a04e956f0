"""Chunk execution over time (dreamzero_embodiments.execution; ARCHITECTURE.md §3), and the whole
robot-side pipeline chunk_to_ros -> smooth_chunk -> ExecutionBuffer -> RateLimiter -> clamp as a
property test over arbitrary (also malformed) chunks with the real DROID URDF limits.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dreamzero_embodiments.actions import ChunkError, chunk_to_ros
from dreamzero_embodiments.execution import ExecutionBuffer
from dreamzero_embodiments.limits import RateLimiter, clamp_positions, limits_from_urdf
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.smoothing import SmoothingConfig, smooth_chunk
from dreamzero_embodiments.spec import load_embodiment

DT_S = 0.1  # s per step: round nanoseconds keep the expected times exact
DT_NS = 100_000_000
T0 = 1_700_000_000_000_000_000  # ns, a realistic epoch stamp
H = 24


def _ramp(offset: float = 0.0, slope: float = 1.0, dims: int = 2, steps: int = H) -> np.ndarray:
    """float64[steps, dims]: value offset + slope * k at step k (second column negated)."""
    k = np.arange(steps, dtype=np.float64)[:, None]
    return (offset + slope * k) * np.array([[1.0, -1.0][i % 2] for i in range(dims)])[None, :]


# ------------------------------------------------------------------------------ latency compensation
@pytest.mark.parametrize("late", [0, 1, 5, 23])
def test_a_chunk_arriving_k_steps_late_starts_at_its_step_k(late: int) -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    result = buffer.accept(_ramp(), T0, now_ns=T0 + late * DT_NS)
    assert (result.start_step, result.dropped_steps, result.blended, result.accepted) == (late, late, False, True)
    np.testing.assert_array_equal(buffer.sample(T0 + late * DT_NS), [late, -late])
    times, values = buffer.remaining(T0 + late * DT_NS)
    assert times.tolist() == [T0 + k * DT_NS for k in range(late + 1, H)]
    np.testing.assert_array_equal(values[:, 0], np.arange(late + 1, H))


def test_a_chunk_arriving_between_steps_drops_the_past_ones_and_starts_on_its_own_line() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    result = buffer.accept(_ramp(), T0, now_ns=T0 + 4 * DT_NS + DT_NS // 4)
    assert (result.start_step, result.dropped_steps) == (5, 5)
    np.testing.assert_allclose(buffer.sample(T0 + 4 * DT_NS + DT_NS // 4), [4.25, -4.25])
    assert buffer.sample(T0 + 4 * DT_NS) is None  # the dropped step is not executed, even if asked


def test_a_chunk_entirely_in_the_past_is_rejected_and_nothing_changes() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(_ramp(), T0, now_ns=T0)
    result = buffer.accept(_ramp(100.0), T0 + DT_NS, now_ns=T0 + (H + 1) * DT_NS)
    assert (result.accepted, result.start_step, result.dropped_steps) == (False, H, H)
    assert "all 24 steps are in the past" in result.reason
    np.testing.assert_array_equal(buffer.sample(T0 + 3 * DT_NS), [3.0, -3.0])


def test_a_chunk_older_than_the_accepted_one_is_rejected_as_overtaken() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(_ramp(), T0 + 2 * DT_NS, now_ns=T0 + 2 * DT_NS)
    result = buffer.accept(_ramp(100.0), T0, now_ns=T0 + 3 * DT_NS)
    assert not result.accepted and "overtaken" in result.reason
    np.testing.assert_array_equal(buffer.sample(T0 + 5 * DT_NS), [3.0, -3.0])


# ------------------------------------------------------------------------------ hold, interpolation
def test_hold_before_the_first_step_and_after_the_last_never_extrapolating() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    assert buffer.sample(T0) is None  # nothing accepted yet
    buffer.accept(_ramp(), T0 + 2 * DT_NS, now_ns=T0)  # anchored in the future
    assert buffer.sample(T0 + 2 * DT_NS - 1) is None
    np.testing.assert_array_equal(buffer.sample(T0 + 2 * DT_NS), [0.0, 0.0])
    end = T0 + (2 + H - 1) * DT_NS
    np.testing.assert_array_equal(buffer.sample(end), [23.0, -23.0])
    assert buffer.sample(end + 1) is None
    assert buffer.remaining(end)[0].size == 0 and buffer.end_ns == end


def test_interpolation_is_exact_at_step_times_and_linear_between() -> None:
    values = np.random.default_rng(0).normal(size=(H, 3))
    buffer = ExecutionBuffer(DT_S, blend_steps=0, horizon=H)
    buffer.accept(values, T0, now_ns=T0)
    for k in range(H):
        np.testing.assert_array_equal(buffer.sample(T0 + k * DT_NS), values[k])
    for k in (0, 7, 22):
        for fraction in (0.1, 0.5, 0.9):
            expected = (1 - fraction) * values[k] + fraction * values[k + 1]
            np.testing.assert_allclose(buffer.sample(T0 + k * DT_NS + round(fraction * DT_NS)), expected,
                                       rtol=0, atol=1e-12)


def test_step_times_do_not_drift_at_a_fifteen_hertz_rate() -> None:
    buffer = ExecutionBuffer(1 / 15, blend_steps=0, horizon=H)  # DROID, facts §1.4
    buffer.accept(_ramp(), T0, now_ns=T0)
    last = T0 + round(23 / 15 * 1e9)
    np.testing.assert_array_equal(buffer.sample(last), [23.0, -23.0])
    assert buffer.sample(last + 1) is None


def test_clear_forgets_the_plan_like_an_estop() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(_ramp(), T0, now_ns=T0)
    buffer.clear()
    assert buffer.sample(T0 + DT_NS) is None and buffer.end_ns is None
    assert buffer.accept(_ramp(), T0 - DT_NS, now_ns=T0).accepted  # no longer "older than the accepted one"


# ------------------------------------------------------------------------------ cross-fade
def _steps(buffer: ExecutionBuffer, start_ns: int, count: int) -> np.ndarray:
    return np.array([buffer.sample(start_ns + k * DT_NS) for k in range(count)])


def test_a_new_chunk_is_cross_faded_in_linearly_over_blend_steps_without_a_jump() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=4, horizon=H)
    buffer.accept(np.zeros((H, 1)), T0, now_ns=T0)
    result = buffer.accept(np.ones((H, 1)), T0 + 5 * DT_NS, now_ns=T0 + 8 * DT_NS)  # 3 steps late
    assert (result.start_step, result.dropped_steps, result.blended) == (3, 3, True)
    commands = _steps(buffer, T0 + 7 * DT_NS, 8)[:, 0]
    np.testing.assert_allclose(commands, [0, 0, 0.25, 0.5, 0.75, 1, 1, 1], atol=1e-12)
    assert np.max(np.abs(np.diff(commands))) <= 1 / 4 + 1e-12  # one blend step's share of the jump


def test_cross_fade_is_continuous_at_the_switch_between_steps() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(_ramp(slope=0.1), T0, now_ns=T0)
    now = T0 + 6 * DT_NS + DT_NS // 3
    before = buffer.sample(now)
    buffer.accept(_ramp(offset=5.0, slope=0.1), T0 + 6 * DT_NS, now_ns=now)
    np.testing.assert_allclose(buffer.sample(now), before, rtol=0, atol=1e-12)
    commands = np.array([buffer.sample(now + k * DT_NS // 10) for k in range(60)])[:, 0]
    # old and new move 0.1 per step; the switch adds the 5.0 offset spread over 3 steps (< 0.2 per 1/10 step)
    assert np.max(np.abs(np.diff(commands))) <= (0.1 + 5.0 / 3) / 10 + 1e-9


def test_a_chunk_arriving_mid_blend_blends_from_the_blended_plan() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=4, horizon=H)
    buffer.accept(np.zeros((H, 1)), T0, now_ns=T0)
    buffer.accept(np.ones((H, 1)), T0 + 2 * DT_NS, now_ns=T0 + 2 * DT_NS)
    mid = T0 + 4 * DT_NS  # half way through the first blend: 0.5
    np.testing.assert_allclose(buffer.sample(mid), [0.5])
    buffer.accept(np.full((H, 1), -1.0), T0 + 4 * DT_NS, now_ns=mid)
    commands = _steps(buffer, mid, 6)[:, 0]
    # the new plan at mid + k dt: (1 - k/4) * old blend (0.5 + k/4, capped at 1) + k/4 * (-1)
    old = np.minimum(0.5 + np.arange(6) / 4, 1.0)
    weight = np.minimum(np.arange(6) / 4, 1.0)
    np.testing.assert_allclose(commands, (1 - weight) * old - weight, atol=1e-12)


def test_without_blend_steps_the_switch_still_starts_from_the_old_command_at_now() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=0, horizon=H)
    buffer.accept(np.zeros((H, 1)), T0, now_ns=T0)
    now = T0 + 3 * DT_NS + DT_NS // 2
    result = buffer.accept(np.ones((H, 1)), T0 + 3 * DT_NS, now_ns=now)
    assert not result.blended
    np.testing.assert_array_equal(buffer.sample(now), [0.0])  # no jump at the switch ...
    np.testing.assert_allclose(buffer.sample(now + DT_NS // 4), [0.5])  # ... the change spreads to the next step
    np.testing.assert_array_equal(buffer.sample(T0 + 4 * DT_NS), [1.0])


def test_the_blend_ends_when_the_old_plan_ends_it_is_never_extended() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=10, horizon=H)
    buffer.accept(np.zeros((4, 1)), T0, now_ns=T0)  # a 4-step plan ending at T0 + 3 dt
    buffer.accept(np.ones((H, 1)), T0 + DT_NS, now_ns=T0 + DT_NS)
    np.testing.assert_allclose(_steps(buffer, T0 + DT_NS, 4)[:, 0], [0.0, 0.5, 1.0, 1.0], atol=1e-12)


def test_without_an_executing_plan_there_is_no_blend_and_a_gap_holds() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(np.zeros((4, 1)), T0, now_ns=T0)
    result = buffer.accept(np.ones((H, 1)), T0 + 10 * DT_NS, now_ns=T0 + 8 * DT_NS)
    assert not result.blended
    assert buffer.sample(T0 + 5 * DT_NS) is None  # between the old end and the new start: hold
    np.testing.assert_array_equal(buffer.sample(T0 + 10 * DT_NS), [1.0])
    times, _ = buffer.remaining(T0 + 8 * DT_NS)
    assert times[0] == T0 + 10 * DT_NS and len(times) == H


def test_history_returns_the_executed_plan_before_a_new_chunk() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=0, horizon=H)
    buffer.accept(_ramp(), T0, now_ns=T0)
    np.testing.assert_array_equal(buffer.history(T0 + 10 * DT_NS, 3)[:, 0], [7.0, 8.0, 9.0])
    np.testing.assert_array_equal(buffer.history(T0 + 2 * DT_NS, 5)[:, 0], [0.0, 1.0])  # only what it covers
    assert buffer.history(T0, 3) is None


@pytest.mark.parametrize(("values", "message"), [
    (np.zeros(H), r"values must be float64\[1..24, D\]"),
    (np.zeros((25, 2)), r"values must be float64\[1..24, D\]"),
    (np.full((H, 2), np.nan), "must be finite"),
])
def test_malformed_chunks_are_refused(values: np.ndarray, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ExecutionBuffer(DT_S, blend_steps=3, horizon=H).accept(values, T0, now_ns=T0)


def test_a_chunk_of_another_width_is_refused() -> None:
    buffer = ExecutionBuffer(DT_S, blend_steps=3, horizon=H)
    buffer.accept(np.zeros((H, 2)), T0, now_ns=T0)
    with pytest.raises(ValueError, match="chunk has D=3, plan has 2"):
        buffer.accept(np.zeros((H, 3)), T0 + DT_NS, now_ns=T0 + DT_NS)


# ------------------------------------------------------------------------------ property: the whole pipeline
SPEC = load_embodiment("droid")
LIMITS = limits_from_urdf(SPEC.action_names,
                          load_joint_limits(Path(__file__).resolve().parents[2] / "urdf" / "droid.urdf.xacro"), 10.0)
D = len(SPEC.action_names)
DROID_DT_NS = round(SPEC.timing.dt * 1e9)
TICK_NS = DROID_DT_NS // 2  # commands at twice the action rate (30 Hz) keep the example fast

finite = st.floats(-3.0, 3.0, allow_nan=False)
wild = st.one_of(finite, st.sampled_from([np.nan, np.inf, -np.inf, 1e6, -1e6, 1e300]))


@st.composite
def chunks(draw) -> dict:
    """A chunk message as arrays: usually well formed, sometimes with wrong shapes, names or values."""
    steps = draw(st.sampled_from([H] * 6 + [0, 1, 23, 25]))
    width = draw(st.sampled_from([D] * 6 + [D - 1, D + 1]))
    base = draw(st.lists(finite, min_size=width, max_size=width))
    jumps = draw(st.lists(st.floats(-1.0, 1.0), min_size=width, max_size=width))  # per-step drift, big jumps allowed
    values = np.array(base)[None, :] + np.arange(steps)[:, None] * np.array(jumps)[None, :] * 0.1
    if draw(st.integers(0, 4)) == 0 and steps and width:  # a poisoned value
        values[draw(st.integers(0, steps - 1)), draw(st.integers(0, width - 1))] = draw(wild)
    anchor = np.array(draw(st.lists(wild if draw(st.integers(0, 9)) == 0 else finite, min_size=width,
                                    max_size=width)))
    names = list(SPEC.action_names)[:width] + [f"extra{i}" for i in range(width - D)]
    if draw(st.integers(0, 9)) == 0:
        names = names[::-1]
    return {"values": values, "relative": SPEC.relative_mask[:width] if width <= D else np.ones(width, bool),
            "anchor": anchor, "names": names,
            "late_steps": draw(st.integers(0, 30)), "gap_ticks": draw(st.integers(1, 50))}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(chunks(), min_size=1, max_size=4), st.lists(finite, min_size=D, max_size=D))
def test_every_command_is_finite_within_limits_and_velocity_bounded(messages: list[dict], start: list[float]) -> None:
    buffer = ExecutionBuffer(SPEC.timing.dt, blend_steps=3, horizon=SPEC.timing.horizon)
    limiter = RateLimiter(LIMITS, initial=np.array(start))
    command, now, t_obs = limiter.command, T0, T0
    assert np.all((command >= LIMITS.lower) & (command <= LIMITS.upper))
    for message in messages:
        t_obs = max(t_obs, now - message["late_steps"] * DROID_DT_NS)
        try:
            targets = chunk_to_ros(message["values"], message["relative"], message["anchor"], message["names"], SPEC)
        except ChunkError as error:
            reason = str(error)
            assert "chunk for embodiment 'droid'" in reason
            assert any(word in reason for word in ("names", "shape", "non-finite", "is nan", "is inf", "is -inf",
                                                   "overflows", "relative must", "anchor must"))
            targets = None
        if targets is not None:
            assert np.all(np.isfinite(targets)) and targets.shape == (H, D)
            history = buffer.history(t_obs, SmoothingConfig().history_steps)
            buffer.accept(smooth_chunk(targets, SmoothingConfig(), history=history), t_obs, now)
        for _ in range(message["gap_ticks"]):
            now += TICK_NS
            target = buffer.sample(now)
            if target is None:
                target = command  # hold
            new, _ = limiter.step(target, TICK_NS * 1e-9)
            new, clamped = clamp_positions(new, LIMITS)
            assert np.all(np.isfinite(new))
            assert not clamped.any()  # the limiter already kept it inside
            assert np.all((new >= LIMITS.lower) & (new <= LIMITS.upper))
            assert np.all(np.abs(new - command) <= LIMITS.max_velocity * TICK_NS * 1e-9 + 1e-9)
            command = new
