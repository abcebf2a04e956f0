"""Packing joint positions into the checkpoint's state vector (dreamzero_embodiments.state; facts §1.4-1.6).

Unit-mapped values are checked against hand-computed numbers: DROID gripper 0.405 rad of 0..0.81 ->
0.5; AgiBot effector raw 77.5 of 35..120 -> 0.5; YAM gripper 0.023475 m of 0..0.04695 -> 0.5.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments.state import StateError, pack_state, split_state, unpack_state

HALF_WAY = {  # ROS value of each unit-mapped joint that is 0.5 in model units
    "droid": {"panda_gripper_joint": 0.405},
    "agibot_g1": {"idx41_gripper_l_outer_joint1": 77.5, "idx81_gripper_r_outer_joint1": 77.5},
    "yam": {"left_joint7": 0.023475, "right_joint7": 0.023475},
}
NAMES = sorted(HALF_WAY)


def _ros_positions(name: str) -> dict[str, float]:
    """Joint -> ROS value: 0.1 * (index + 1) for plain joints, the half-way value for mapped ones."""
    spec = load_embodiment(name)
    return {joint: HALF_WAY[name].get(joint, 0.1 * (i + 1)) for i, joint in enumerate(spec.state_names)}


@pytest.mark.parametrize("name", NAMES)
def test_any_order_with_extra_joints_packs_in_checkpoint_order_with_units_mapped(name: str) -> None:
    spec = load_embodiment(name)
    positions = _ros_positions(name)
    names = list(reversed(positions)) + ["extra_wheel", "camera_pan"]
    values = [positions[n] for n in reversed(positions)] + [7.0, float("nan")]  # extras ignored, even NaN
    state = pack_state(names, values, spec)
    expected = [0.5 if joint in HALF_WAY[name] else 0.1 * (i + 1) for i, joint in enumerate(spec.state_names)]
    assert state.dtype == np.float64 and state.shape == (len(spec.state_names),)
    np.testing.assert_allclose(state, expected, rtol=0, atol=1e-12)


def test_droid_state_is_seven_joints_then_the_gripper() -> None:
    spec = load_embodiment("droid")
    names = [f"panda_joint{i}" for i in range(1, 8)] + ["panda_gripper_joint"]
    state = pack_state(names[::-1], [0.405, 7, 6, 5, 4, 3, 2, 1], spec)
    assert state.tolist() == [1, 2, 3, 4, 5, 6, 7, 0.5]
    parts = split_state(state, spec)
    assert list(parts) == ["joint_position", "gripper_position"]
    assert parts["joint_position"].tolist() == [1, 2, 3, 4, 5, 6, 7] and parts["gripper_position"].tolist() == [0.5]


def test_agibot_effector_raw_units_are_mapped_and_clipped_like_the_converter() -> None:
    spec = load_embodiment("agibot_g1")
    positions = _ros_positions("agibot_g1") | {"idx41_gripper_l_outer_joint1": 77.5,
                                               "idx81_gripper_r_outer_joint1": 200.0}
    state = dict(zip(spec.state_names, pack_state(list(positions), list(positions.values()), spec)))
    assert state["idx41_gripper_l_outer_joint1"] == pytest.approx(0.5)
    assert state["idx81_gripper_r_outer_joint1"] == 1.0  # clip((200 - 35) / 85, 0, 1), facts §1.5


@pytest.mark.parametrize("name", NAMES)
def test_unpack_inverts_pack(name: str) -> None:
    spec = load_embodiment(name)
    positions = _ros_positions(name)
    state = pack_state(list(positions), list(positions.values()), spec)
    back = unpack_state(state, spec)
    assert list(back) == list(spec.state_names)
    np.testing.assert_allclose([back[n] for n in positions], list(positions.values()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_every_missing_joint_is_named(name: str) -> None:
    spec = load_embodiment(name)
    positions = _ros_positions(name)
    gone = [spec.state_names[0], spec.state_names[-1]]
    kept = [n for n in positions if n not in gone]
    with pytest.raises(StateError, match=rf"embodiment '{name}'.*missing joints \['{gone[0]}', '{gone[1]}'\]"):
        pack_state(kept, [positions[n] for n in kept], spec)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_position_is_named(bad: float) -> None:
    spec = load_embodiment("droid")
    positions = _ros_positions("droid") | {"panda_joint4": bad}
    with pytest.raises(StateError, match=rf"non-finite positions panda_joint4={bad}"):
        pack_state(list(positions), list(positions.values()), spec)


def test_a_duplicated_state_joint_is_refused_but_a_duplicated_extra_is_ignored() -> None:
    spec = load_embodiment("droid")
    positions = _ros_positions("droid")
    names, values = list(positions), list(positions.values())
    with pytest.raises(StateError, match=r"given more than once: \['panda_joint2'\]"):
        pack_state(names + ["panda_joint2"], values + [9.0], spec)
    state = pack_state(names + ["extra", "extra"], values + [1.0, 2.0], spec)
    assert state[1] == pytest.approx(0.2)


def test_names_and_positions_of_different_length_are_refused() -> None:
    with pytest.raises(StateError, match="8 names but 7 positions"):
        pack_state(list(_ros_positions("droid")), [0.0] * 7, load_embodiment("droid"))
    with pytest.raises(ValueError, match=r"needs float64\[8\], got shape \(7,\)"):
        split_state(np.zeros(7), load_embodiment("droid"))
