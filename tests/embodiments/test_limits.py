"""Command limits (dreamzero_embodiments.limits) with the real URDF limits of the shipped robots.

Spot values come from urdf/README.md: panda_joint4 [-3.0718, -0.0698] rad, 2.175 rad/s; panda_joint7
2.61 rad/s; AgiBot idx41 effector 0..0.7854 rad in the URDF.
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from dreamzero_embodiments.limits import (
    JointLimitSet,
    LimitsError,
    MAX_TICK_PERIODS,
    RateLimiter,
    clamp_positions,
    clamp_twist,
    limits_from_urdf,
    tick_interval_s,
)
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.spec import load_embodiment

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
ACCEL = 10.0  # rad/s^2: the adapter's default parameter (URDFs carry no acceleration)
DT = 0.01  # s, a 100 Hz command tick


@pytest.fixture(scope="module")
def droid() -> JointLimitSet:
    spec = load_embodiment("droid")
    return limits_from_urdf(spec.action_names, load_joint_limits(URDF_DIR / "droid.urdf.xacro"), ACCEL)


def _one(lower: float = -1.0, upper: float = 1.0, velocity: float = 1.0, accel: float = ACCEL) -> JointLimitSet:
    return JointLimitSet(("j",), [lower], [upper], [velocity], [accel])


# ------------------------------------------------------------------------------ building limits
def test_droid_limits_come_from_the_urdf_in_action_order(droid: JointLimitSet) -> None:
    assert droid.names == load_embodiment("droid").action_names
    assert (droid.lower[3], droid.upper[3], droid.max_velocity[3]) == (-3.0718, -0.0698, 2.175)
    assert droid.max_velocity[6] == 2.61
    assert (droid.lower[7], droid.upper[7]) == (0.0, 0.81)  # gripper, rad
    np.testing.assert_array_equal(droid.max_acceleration, ACCEL)
    assert not droid.twist.any()
    with pytest.raises(ValueError):
        droid.lower[0] = 0.0  # read-only


def test_agibot_needs_extra_limits_for_the_base_and_names_what_is_missing() -> None:
    spec = load_embodiment("agibot_g1")
    urdf = load_joint_limits(URDF_DIR / "agibot_g1.urdf.xacro")
    with pytest.raises(LimitsError, match=r"no limits for \['base_vx', 'base_wz'\]: not joints of the URDF"):
        limits_from_urdf(spec.action_names, urdf, ACCEL)
    effectors = {n: (35.0, 120.0, 850.0) for n in ("idx41_gripper_l_outer_joint1", "idx81_gripper_r_outer_joint1")}
    base = {"base_vx": (-0.5, 0.5, math.inf), "base_wz": (-0.8, 0.8, math.inf)}
    limits = limits_from_urdf(spec.action_names, urdf, ACCEL, extra=base | effectors, twist=["base_vx", "base_wz"])
    index = spec.action_names.index
    assert (limits.lower[index("base_wz")], limits.upper[index("base_wz")]) == (-0.8, 0.8)
    assert limits.twist.tolist() == [n in base for n in spec.action_names]
    # extra wins over the URDF: the effector is commanded in raw units (facts §1.5), the URDF says rad
    assert limits.upper[index("idx41_gripper_l_outer_joint1")] == 120.0
    assert limits.upper[index("idx21_arm_l_joint1")] == 3.14


def test_acceleration_can_be_given_per_joint_and_a_missing_one_is_named() -> None:
    urdf = load_joint_limits(URDF_DIR / "droid.urdf.xacro")
    names = load_embodiment("droid").action_names
    per_joint = {n: 5.0 + i for i, n in enumerate(names)}
    assert limits_from_urdf(names, urdf, per_joint).max_acceleration.tolist() == list(per_joint.values())
    del per_joint["panda_joint6"]
    with pytest.raises(LimitsError, match=r"no acceleration limit for \['panda_joint6'\]"):
        limits_from_urdf(names, urdf, per_joint)


@pytest.mark.parametrize(("extra", "twist", "message"), [
    ({"not_a_dim": (0.0, 1.0, 1.0)}, (), r"not commanded: \['not_a_dim'\]"),
    ({}, ("panda_joint1",), r"twist dimensions \['panda_joint1'\] need their velocity bounds in extra"),
    ({"panda_joint1": (1.0, -1.0, 1.0)}, (), r"'panda_joint1' needs lower <= upper"),
    ({"panda_joint1": (-1.0, 1.0, 0.0)}, (), r"'panda_joint1' needs max_velocity > 0"),
])
def test_invalid_extra_limits_are_refused_naming_the_dimension(extra: dict, twist: tuple, message: str) -> None:
    urdf = load_joint_limits(URDF_DIR / "droid.urdf.xacro")
    with pytest.raises(LimitsError, match=message):
        limits_from_urdf(load_embodiment("droid").action_names, urdf, ACCEL, extra=extra, twist=twist)


def test_select_returns_one_groups_limits_in_its_order(droid: JointLimitSet) -> None:
    arm = droid.select(["panda_joint4", "panda_joint1"])
    assert arm.names == ("panda_joint4", "panda_joint1") and arm.lower.tolist() == [-3.0718, -2.8973]
    with pytest.raises(LimitsError, match=r"unknown dimensions \['base_vx'\]"):
        droid.select(["base_vx"])


# ------------------------------------------------------------------------------ clamping
def test_clamp_positions_clips_and_reports_which(droid: JointLimitSet) -> None:
    q = np.array([0.0, 2.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.9])
    clipped, clamped = clamp_positions(q, droid)
    assert clipped[1] == 1.7628 and clipped[5] == -0.0175 and clipped[7] == 0.81 and clipped[3] == -0.0698
    assert clamped.tolist() == [False, True, False, True, False, True, False, True]


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_clamp_refuses_non_finite_values_instead_of_passing_nan(droid: JointLimitSet, bad: float) -> None:
    q = np.full(8, -0.5)
    q[2] = bad
    with pytest.raises(ValueError, match=rf"non-finite panda_joint3={bad}"):
        clamp_positions(q, droid)


def test_clamp_twist_clips_velocities_to_their_bounds() -> None:
    limits = JointLimitSet(("base_vx", "base_wz"), [-0.5, -0.8], [0.5, 0.8], [math.inf] * 2, [math.inf] * 2,
                           twist=[True, True])
    v, clamped = clamp_twist(np.array([0.7, -0.3]), limits)
    assert v.tolist() == [0.5, -0.3] and clamped.tolist() == [True, False]


# ------------------------------------------------------------------------------ rate limiter
def _run(limiter: RateLimiter, targets: np.ndarray, dt: float = DT) -> tuple[np.ndarray, np.ndarray]:
    results = [limiter.step(t, dt) for t in targets]
    return np.array([c for c, _ in results]), np.array([lim for _, lim in results])


def test_a_jump_is_approached_within_velocity_and_acceleration_without_overshoot() -> None:
    limiter = RateLimiter(_one(velocity=1.0, accel=10.0), initial=np.zeros(1))
    commands, limited = _run(limiter, np.full((150, 1), 0.8))
    q = np.concatenate([[0.0], commands[:, 0]])
    v = np.diff(q) / DT
    assert np.max(np.abs(v)) <= 1.0 + 1e-9
    assert np.max(np.abs(np.diff(np.concatenate([[0.0], v])) / DT)) <= 10.0 + 1e-6
    assert np.max(q) <= 0.8 + 1e-12  # braked in time: no overshoot
    assert q[-1] == 0.8 and not limited[-1, 0] and limited[0, 0]


def test_a_feasible_moving_target_is_followed_exactly_once_caught_up() -> None:
    limiter = RateLimiter(_one(velocity=1.0, accel=10.0), initial=np.zeros(1))
    t = np.arange(300) * DT
    targets = (0.3 * np.sin(2.0 * t))[:, None]  # peak 0.6 rad/s, 1.2 rad/s^2
    commands, limited = _run(limiter, targets)
    np.testing.assert_array_equal(commands[50:], targets[50:])
    assert not limited[50:].any()


@pytest.mark.parametrize("irregular", [False, True])
def test_a_target_that_stops_is_never_passed_on_regular_or_irregular_ticks(irregular: bool) -> None:
    """A target ramping at the velocity limit stops dead (an adapter hold, the end of a blend): the
    command catches up and stops on it. Braking within the acceleration limit alone would carry it
    past (0.009 rad on regular ticks, up to 0.067 rad with ticks of varying length)."""
    rng = np.random.default_rng(7)
    for trial in range(20):
        limiter = RateLimiter(_one(velocity=1.0, accel=10.0), initial=np.zeros(1))
        dts = rng.uniform(0.2, 3.0, 200) * DT if irregular else np.full(200, DT)
        stop = 0.3 + 0.02 * trial
        elapsed, commands, targets = 0.0, [], []
        for dt in dts:
            elapsed += dt
            target = min(elapsed * 0.9, stop)
            commands.append(limiter.step(np.array([target]), dt)[0][0])
            targets.append(target)
        assert max(commands) <= stop, (trial, max(commands) - stop)
        assert np.all(np.array(commands) <= np.array(targets) + 1e-12)
        assert commands[-1] == stop


def test_a_target_that_reverses_is_not_passed_either() -> None:
    limiter = RateLimiter(_one(velocity=1.0, accel=10.0), initial=np.zeros(1))
    _run(limiter, np.linspace(0.0, 0.5, 60)[:, None])
    commands, _ = _run(limiter, np.full((50, 1), 0.2))
    assert commands.max() <= 0.5 and np.all(np.diff(commands[:, 0]) <= 0)  # turns back, never further away


def test_tick_interval_is_the_measured_time_capped_after_a_stall() -> None:
    period = 0.05
    assert tick_interval_s(None, 10**9, period) == period  # first tick
    assert tick_interval_s(10**9, 10**9 + 73_000_000, period) == pytest.approx(0.073)  # a late tick
    assert tick_interval_s(10**9, 10**9 + 10**9, period) == MAX_TICK_PERIODS * period  # a stall
    assert tick_interval_s(10**9, 10**9, period) == period  # a clock that did not advance
    assert tick_interval_s(2 * 10**9, 10**9, period) == period  # a clock that jumped back


def test_commands_stay_inside_position_limits_even_for_targets_outside(droid: JointLimitSet) -> None:
    limiter = RateLimiter(droid, initial=np.array([0, 0, 0, -1.5, 0, 1.5, 0, 0.4]))
    commands, limited = _run(limiter, np.tile([9, -9, 9, 9, -9, 9, -9, 9], (400, 1)).astype(float))
    assert np.all(commands >= droid.lower) and np.all(commands <= droid.upper)
    np.testing.assert_allclose(commands[-1], [2.8973, -1.7628, 2.8973, -0.0698, -2.8973, 3.7525, -2.8973, 0.81])
    assert limited.all()


def test_an_initial_position_outside_the_limits_is_clipped_into_them(droid: JointLimitSet) -> None:
    limiter = RateLimiter(droid, initial=np.array([0, 0, 0, 0.1, 0, 0, 0, 0.0]))  # joint4 above -0.0698
    assert limiter.command[3] == -0.0698


def test_velocity_limit_holds_for_every_step_size(droid: JointLimitSet) -> None:
    limiter = RateLimiter(droid, initial=np.array([0, 0, 0, -1.5, 0, 1.5, 0, 0.4]))
    rng = np.random.default_rng(3)
    previous = limiter.command
    for dt in rng.uniform(1e-4, 0.1, 300):
        command, _ = limiter.step(rng.uniform(-4, 4, 8), dt)
        assert np.all(np.abs(command - previous) <= droid.max_velocity * dt + 1e-9)
        previous = command


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_target_is_refused_and_the_state_is_kept(bad: float) -> None:
    limiter = RateLimiter(_one(), initial=np.array([0.2]))
    limiter.step(np.array([0.3]), DT)
    before = limiter.command
    with pytest.raises(ValueError, match=rf"non-finite j={bad}"):
        limiter.step(np.array([bad]), DT)
    np.testing.assert_array_equal(limiter.command, before)


@pytest.mark.parametrize("dt", [0.0, -0.01, math.nan, math.inf])
def test_a_non_positive_or_non_finite_dt_is_refused(dt: float) -> None:
    with pytest.raises(ValueError, match="dt_s must be positive and finite"):
        RateLimiter(_one(), initial=np.zeros(1)).step(np.zeros(1), dt)


def test_twist_dimensions_are_clipped_but_not_rate_limited() -> None:
    limits = JointLimitSet(("j", "base_vx"), [-1, -0.5], [1, 0.5], [1, math.inf], [10, 10], twist=[False, True])
    limiter = RateLimiter(limits, initial=np.zeros(2))
    command, limited = limiter.step(np.array([0.5, 0.4]), DT)
    assert command[1] == 0.4 and not limited[1]  # jumps at once: a velocity, nothing to integrate
    assert command[0] == pytest.approx(ACCEL * DT * DT) and limited[0]  # position: one step of acceleration
    command, limited = limiter.step(np.array([0.5, 2.0]), DT)
    assert command[1] == 0.5 and limited[1]


def test_reset_restarts_at_rest_from_a_new_position() -> None:
    limiter = RateLimiter(_one(), initial=np.zeros(1))
    _run(limiter, np.full((20, 1), 1.0))
    limiter.reset(np.array([-0.5]))
    command, _ = limiter.step(np.array([-0.5]), DT)
    assert command[0] == -0.5
