"""Implausible joint states and chunks are refused, naming joint, value and bound (issue 12 items 1-2).

The faults are the ones that drove a live DROID arm to its limits when clamping was the only check:
a reading of 1e6 rad, a 10 rad relative jump, -10 rad absolute, 1e308, and a relative chunk anchored
at zeros while the arm was at -2.43 rad. Bounds: URDF limits (urdf/README.md: panda_joint1 range
[-2.8973, 2.8973] rad, 2.175 rad/s) and droid.yaml's ``safety`` section.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamzero_embodiments.actions import ChunkError, chunk_to_ros
from dreamzero_embodiments.limits import limits_from_urdf
from dreamzero_embodiments.plausibility import ImplausibleError, JointStateGate, check_chunk
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.spec import ROBOTS_DIR, EmbodimentSpecError, load_embodiment, parse_embodiment

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
SPEC = load_embodiment("droid")
LIMITS = limits_from_urdf(SPEC.action_names, load_joint_limits(URDF_DIR / "droid.urdf.xacro"), 10.0)
ARM = SPEC.controller_groups[0].names
READY = dict(zip(SPEC.state_names, [0.16, -0.5, 0.0, -2.43, 0.0, 1.9, 0.7, 0.2]))
MS = 1_000_000


def test_readings_within_range_and_velocity_are_accepted_and_a_glitch_is_refused_naming_it() -> None:
    gate = JointStateGate(LIMITS, SPEC.safety)
    gate.check(0, READY)
    gate.check(10 * MS, {**READY, "panda_joint1": 0.16 + 0.02})  # 2 rad/s: within 1.5 x 2.175
    with pytest.raises(ImplausibleError, match=r"panda_joint1=1e\+06 is outside \[-2.95.*, 2.95.*\]"):
        gate.check(20 * MS, {**READY, "panda_joint1": 1e6})
    gate.check(30 * MS, {**READY, "panda_joint1": 0.2})  # the glitch did not become the reference


def test_a_reading_that_jumps_faster_than_the_velocity_limit_is_refused_until_time_allows_it() -> None:
    gate = JointStateGate(LIMITS, SPEC.safety)
    gate.check(0, READY)
    with pytest.raises(ImplausibleError, match=r"panda_joint4 jumped 0.5 .* in 0.010 s; at most 0.0.* is possible"):
        gate.check(10 * MS, {**READY, "panda_joint4": -1.93})
    # measured against the last ACCEPTED reading: 0.5 rad in 0.2 s is within 1.5 x 2.175 rad/s
    gate.check(200 * MS, {**READY, "panda_joint4": -1.93})


def test_the_gate_ignores_joints_it_has_no_limits_for() -> None:
    gate = JointStateGate(LIMITS, SPEC.safety)
    gate.check(0, {**READY, "some_other_joint": 1e9})


def _chunk(spec_values: np.ndarray, relative: np.ndarray, anchor: np.ndarray) -> np.ndarray:
    return chunk_to_ros(spec_values, relative, anchor, SPEC.action_names, SPEC)


def _model_state(state: dict[str, float]) -> np.ndarray:
    return np.array([state[n] for n in ARM] + [state["panda_gripper_joint"] / 0.81])


def _check(values: np.ndarray, relative: np.ndarray, anchor: np.ndarray, measured: dict[str, float],
           first_step: int = 0) -> None:
    check_chunk(_chunk(values, relative, anchor), first_step, relative, anchor, measured, measured, SPEC, LIMITS,
                SPEC.safety)


RELATIVE = SPEC.relative_mask
ANCHOR = np.where(RELATIVE, _model_state(READY), 0.0)


def _steps(per_step: np.ndarray) -> np.ndarray:
    return np.tile(per_step, (SPEC.timing.horizon, 1))


def test_a_plausible_chunk_passes() -> None:
    small = _steps(np.array([0.01] * 7 + [1.43]))  # gripper jumps past closed (free_jump): the limiter clamps it
    _check(small, RELATIVE, ANCHOR, READY)


@pytest.mark.parametrize(("values", "relative", "anchor", "message"), [
    (_steps(np.array([10.0] * 7 + [0.2])), RELATIVE, ANCHOR, r"target at step 0: panda_joint1=10.16 is outside"),
    (_steps(np.array([-10.0] * 7 + [0.2])), np.zeros(8, bool), np.zeros(8), r"panda_joint1=-10 is outside"),
    (_steps(np.array([1e300] * 7 + [0.2])), np.zeros(8, bool), np.zeros(8), r"panda_joint1=1e\+300 is outside"),
    (_steps(np.array([0.0] * 7 + [0.2])), RELATIVE, np.zeros(8),
     r"anchor panda_joint4=0 but the measured state at t_obs is -2.43 \(bound 0.05\)"),
    (_steps(np.array([0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.2])), RELATIVE, ANCHOR,
     r"first executed target panda_joint4=-0.43 is 2 from the measured -2.43 \(bound 0.6.*\)"),
], ids=["10 rad relative jump", "-10 rad absolute", "1e300", "zero anchor", "first target far"])
def test_implausible_chunks_are_refused_naming_joint_value_and_bound(values, relative, anchor, message) -> None:
    with pytest.raises(ImplausibleError, match=message):
        _check(values, relative, anchor, READY)


def test_the_first_target_is_the_first_executed_step_not_step_zero() -> None:
    ramp = np.zeros((SPEC.timing.horizon, 8))
    ramp[:, 3] = np.linspace(0.0, 2.3, SPEC.timing.horizon)  # far only at the end: fine once executing
    _check(ramp, RELATIVE, ANCHOR, READY, first_step=0)
    with pytest.raises(ImplausibleError, match="first executed target panda_joint4"):
        _check(ramp, RELATIVE, ANCHOR, READY, first_step=20)  # a late chunk would start far from the arm


def test_a_relative_chunk_without_a_state_near_t_obs_is_refused() -> None:
    targets = _chunk(_steps(np.zeros(8)), RELATIVE, ANCHOR)
    with pytest.raises(ImplausibleError, match="no measured joint state near t_obs"):
        check_chunk(targets, 0, RELATIVE, ANCHOR, None, READY, SPEC, LIMITS, SPEC.safety)


def test_a_chunk_missing_a_dimension_is_refused_never_filled_with_zeros() -> None:
    with pytest.raises(ChunkError, match="7 names, expected 8"):
        chunk_to_ros(np.zeros((SPEC.timing.horizon, 7)), RELATIVE[:7], ANCHOR[:7], ARM, SPEC)


def test_safety_section_is_optional_and_checked() -> None:
    import yaml

    document = yaml.safe_load((ROBOTS_DIR / "droid.yaml").read_text())
    del document["safety"]
    assert parse_embodiment(document, "droid without safety").safety.free_jump == ()
    document["safety"] = {"range_tolerance": -1, "free_jump": ["panda_finger"]}
    with pytest.raises(EmbodimentSpecError, match=r"safety.range_tolerance: must be >= 0.*\n.*safety.free_jump"):
        parse_embodiment(document, "droid with a bad safety section")
