"""Chunk -> absolute ROS targets (dreamzero_embodiments.actions; facts §1.4-1.6, §1.9).

Expected values are computed by hand in the tables: absolute = relative + anchor (model units), then the
key's unit map: AgiBot effector raw = 35 + 85 x value (facts §1.5), DROID gripper rad = 0.81 x value,
YAM gripper m = 0.04695 x value.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.actions import ChunkError, chunk_to_ros
from dreamzero_embodiments.spec import load_embodiment

H = 24  # facts §1.3

# embodiment -> {joint: (relative value, anchor in model units, expected ROS value)}; joints not listed
# get relative 0.01 * (index + 1) on anchor 0.1 (absolute dimensions: value 0.01 * (index + 1)).
CASES = {
    "droid": {
        "panda_joint1": (0.2, -0.5, -0.3),
        "panda_joint4": (-0.1, -2.0, -2.1),
        "panda_gripper_joint": (0.5, None, 0.405),  # absolute gripper (facts §1.4): 0.5 x 0.81 rad
    },
    "agibot_g1": {
        "idx21_arm_l_joint1": (0.25, 1.0, 1.25),
        "idx41_gripper_l_outer_joint1": (0.1, 0.5, 86.0),  # 0.6 -> 35 + 85 x 0.6 raw
        "idx81_gripper_r_outer_joint1": (-0.2, 0.2, 35.0),  # 0.0 -> fully open, 35 raw
        "idx01_body_joint1": (0.05, 0.3, 0.35),  # waist lift, m
        "base_vx": (0.4, None, 0.4),  # absolute base velocity (facts §1.5)
        "base_wz": (-0.3, None, -0.3),
    },
    "yam": {
        "left_joint1": (0.3, -0.3, 0.0),
        "left_joint7": (0.25, 0.5, 0.0352125),  # relative gripper (facts §1.6): 0.75 x 0.04695 m
        "right_joint7": (-0.5, 0.5, 0.0),
    },
}


def _chunk(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, float]]:
    """values float64[H, D] (the table row at every step), relative, anchor, expected ROS value per joint."""
    spec = load_embodiment(name)
    relative = spec.relative_mask
    values, anchor, expected = [], [], {}
    for index, joint in enumerate(spec.action_names):
        default_value = 0.01 * (index + 1)
        value, base, ros = CASES[name].get(joint, (default_value, 0.1 if relative[index] else None, None))
        if base is None:
            base = 0.0
        values.append(value)
        anchor.append(base)
        if ros is None:  # no unit map on the un-tabled joints of these embodiments
            ros = value + base
        expected[joint] = ros
    return np.repeat(np.array(values)[None, :], H, axis=0), relative, np.array(anchor), expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_relative_values_plus_anchor_give_absolute_ros_targets_per_joint(name: str) -> None:
    spec = load_embodiment(name)
    values, relative, anchor, expected = _chunk(name)
    ros = chunk_to_ros(values, relative, anchor, spec.action_names, spec)
    assert ros.shape == (H, len(spec.action_names)) and ros.dtype == np.float64
    for column, joint in enumerate(spec.action_names):
        np.testing.assert_allclose(ros[:, column], expected[joint], rtol=0, atol=1e-12, err_msg=joint)


def test_anchor_is_broadcast_over_every_step_and_ignored_on_absolute_dimensions() -> None:
    spec = load_embodiment("droid")
    values = np.linspace(0, 0.23, H)[:, None] * np.ones((1, 8))
    anchor = np.array([0.1, 0.2, 0.3, -1.0, 0.5, 1.0, 0.7, 123.0])  # 123: ignored, gripper is absolute
    ros = chunk_to_ros(values, spec.relative_mask, anchor, spec.action_names, spec)
    np.testing.assert_allclose(ros[:, :7], values[:, :7] + anchor[:7], rtol=0, atol=1e-12)
    np.testing.assert_allclose(ros[:, 7], values[:, 7] * 0.81, rtol=0, atol=1e-12)


def test_an_all_absolute_chunk_from_the_remote_backend_ignores_the_anchor() -> None:
    spec = load_embodiment("agibot_g1")
    values = np.full((H, 22), 0.5)
    ros = chunk_to_ros(values, np.zeros(22, dtype=bool), np.full(22, 9.0), spec.action_names, spec)
    names = spec.action_names
    assert ros[0, names.index("idx41_gripper_l_outer_joint1")] == pytest.approx(77.5)  # 35 + 85 x 0.5
    assert ros[0, names.index("idx21_arm_l_joint1")] == pytest.approx(0.5)


def test_the_input_arrays_are_not_modified() -> None:
    spec = load_embodiment("yam")
    values, relative, anchor, _ = _chunk("yam")
    before = values.copy()
    chunk_to_ros(values, relative, anchor, spec.action_names, spec)
    np.testing.assert_array_equal(values, before)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda n: n[:3] + ["panda_joint5"] + n[4:], r"names\[3\] is 'panda_joint5', expected 'panda_joint4'"),
    (lambda n: n[::-1], r"names\[0\] is 'panda_gripper_joint', expected 'panda_joint1'"),
    (lambda n: n[:-1], r"7 names, expected 8; missing \['panda_gripper_joint'\]"),
    (lambda n: n + ["extra_joint"], r"9 names, expected 8; unexpected extra \['extra_joint'\]"),
])
def test_wrong_names_are_refused_naming_the_first_difference(edit, message: str) -> None:
    spec = load_embodiment("droid")
    values, relative, anchor, _ = _chunk("droid")
    with pytest.raises(ChunkError, match=message):
        chunk_to_ros(values, relative, anchor, edit(list(spec.action_names)), spec)


@pytest.mark.parametrize(("values", "relative", "anchor", "message"), [
    (np.zeros((23, 8)), None, None, r"values must have shape \(H=24, D=8\), got \(23, 8\)"),
    (np.zeros((24, 7)), None, None, r"values must have shape \(H=24, D=8\), got \(24, 7\)"),
    (np.zeros(192), None, None, r"got \(192,\)"),
    (None, np.ones(7, dtype=bool), None, r"relative must be bool\[8\]"),
    (None, np.ones(8), None, r"relative must be bool\[8\], got float64"),
    (None, None, np.zeros(9), r"anchor must be float64\[8\], got shape \(9,\)"),
])
def test_wrong_lengths_are_refused_with_the_expected_shape(values, relative, anchor, message: str) -> None:
    spec = load_embodiment("droid")
    good_values, good_relative, good_anchor, _ = _chunk("droid")
    with pytest.raises(ChunkError, match=message):
        chunk_to_ros(good_values if values is None else values, good_relative if relative is None else relative,
                     good_anchor if anchor is None else anchor, spec.action_names, spec)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_value_rejects_the_whole_chunk_naming_joint_and_step(bad: float) -> None:
    spec = load_embodiment("agibot_g1")
    values, relative, anchor, _ = _chunk("agibot_g1")
    values[17, spec.action_names.index("idx63_arm_r_joint3")] = bad
    with pytest.raises(ChunkError, match=rf"values\[step 17, 'idx63_arm_r_joint3'\] is {bad}.*whole chunk"):
        chunk_to_ros(values, relative, anchor, spec.action_names, spec)


def test_a_non_finite_anchor_rejects_the_chunk_naming_the_joint() -> None:
    spec = load_embodiment("yam")
    values, relative, anchor, _ = _chunk("yam")
    anchor[spec.action_names.index("right_joint2")] = np.nan
    with pytest.raises(ChunkError, match=r"anchor\['right_joint2'\] is nan"):
        chunk_to_ros(values, relative, anchor, spec.action_names, spec)


def test_overflow_to_inf_after_adding_the_anchor_is_rejected() -> None:
    spec = load_embodiment("droid")
    values, relative, anchor, _ = _chunk("droid")
    values[2, 0], anchor[0] = 1e308, 1e308
    with pytest.raises(ChunkError, match=r"step 2, 'panda_joint1' overflows to inf"):
        chunk_to_ros(values, relative, anchor, spec.action_names, spec)


def test_a_relative_flag_on_a_dimension_without_state_is_refused() -> None:
    spec = load_embodiment("agibot_g1")
    values, relative, anchor, _ = _chunk("agibot_g1")
    relative = relative.copy()
    relative[spec.action_names.index("base_vx")] = True
    with pytest.raises(ChunkError, match=r"\['base_vx'\] are flagged relative but the embodiment has no state"):
        chunk_to_ros(values, relative, anchor, spec.action_names, spec)
