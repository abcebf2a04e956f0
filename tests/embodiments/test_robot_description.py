"""Tests for the xacro robot descriptions in urdf/ and dreamzero_embodiments.robot_description.

Every description is rendered with the real xacro package. Expected joint names and the spot-checked
numbers are written out here on purpose, so a renamed joint or an edited limit fails a test.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dreamzero_embodiments.robot_description import (
    JointLimits,
    RobotDescriptionError,
    load_joint_limits,
    parse_joint_limits,
    render_xacro,
)

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"


def _franka(arm_id: str) -> list[str]:
    return [f"{arm_id}_joint{i}" for i in range(1, 8)] + [f"{arm_id}_gripper_joint"]


def _g1_arm(side: str, index: int) -> list[str]:
    return [f"idx{index}{k}_arm_{side}_joint{k}" for k in range(1, 8)]


def _yam_arm(prefix: str) -> list[str]:
    return [f"{prefix}joint{k}" for k in range(1, 8)]


# (file, xacro args, every movable joint the description must have, nothing more)
CASES = {
    "droid_panda": ("droid.urdf.xacro", {}, _franka("panda")),
    "droid_fr3": ("droid.urdf.xacro", {"arm_id": "fr3"}, _franka("fr3")),
    "agibot_g1": (
        "agibot_g1.urdf.xacro",
        {},
        ["idx01_body_joint1", "idx02_body_joint2", "idx11_head_joint1", "idx12_head_joint2"]
        + _g1_arm("l", 2)
        + _g1_arm("r", 6)
        + ["idx41_gripper_l_outer_joint1", "idx81_gripper_r_outer_joint1"],
    ),
    "yam": ("yam.urdf.xacro", {}, _yam_arm("left_") + _yam_arm("right_")),
}


def _load(case: str) -> dict[str, JointLimits]:
    file_name, mappings, _ = CASES[case]
    return load_joint_limits(URDF_DIR / file_name, mappings)


@pytest.mark.parametrize("case", sorted(CASES))
def test_description_has_exactly_the_expected_joints(case: str) -> None:
    expected = CASES[case][2]
    limits = _load(case)
    assert sorted(limits) == sorted(expected)
    assert all(limit.name == name for name, limit in limits.items())


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_joint_has_finite_ordered_limits_and_positive_speed_and_effort(case: str) -> None:
    for limit in _load(case).values():
        assert limit.type in ("revolute", "prismatic"), limit
        assert math.isfinite(limit.lower) and math.isfinite(limit.upper), limit
        assert limit.lower < limit.upper, limit
        assert math.isfinite(limit.velocity) and limit.velocity > 0.0, limit
        assert math.isfinite(limit.effort) and limit.effort > 0.0, limit


@pytest.mark.parametrize("case", sorted(CASES))
def test_kinematic_chain_is_a_single_tree(case: str) -> None:
    file_name, mappings, _ = CASES[case]
    root = ET.fromstring(render_xacro(URDF_DIR / file_name, mappings))
    links = [link.get("name") for link in root.findall("link")]
    joints = root.findall("joint")
    parents = [joint.find("parent").get("link") for joint in joints]
    children = [joint.find("child").get("link") for joint in joints]

    assert len(set(links)) == len(links), "duplicate link names"
    assert len(set(children)) == len(children), "a link is the child of two joints"
    assert set(parents) | set(children) <= set(links), "a joint names an undefined link"
    roots = set(links) - set(children)
    assert len(roots) == 1, f"expected one root link, got {sorted(roots)}"
    # A connected tree over N links has exactly N - 1 joints.
    assert len(joints) == len(links) - 1


def test_panda_limits_match_the_franka_datasheet() -> None:
    limits = _load("droid_panda")
    assert limits["panda_joint1"].velocity == 2.175
    assert limits["panda_joint1"].effort == 87.0
    assert limits["panda_joint4"].lower == -3.0718
    assert limits["panda_joint4"].upper == -0.0698
    assert limits["panda_joint6"].lower == -0.0175
    assert limits["panda_joint6"].upper == 3.7525
    assert limits["panda_joint7"].velocity == 2.61
    assert limits["panda_joint7"].effort == 12.0


def test_fr3_arm_id_selects_fr3_names_and_limits() -> None:
    limits = _load("droid_fr3")
    assert not any(name.startswith("panda_") for name in limits)
    assert limits["fr3_joint1"].upper == 2.7437
    assert limits["fr3_joint4"].upper == -0.1518
    assert limits["fr3_joint6"].lower == 0.5445
    assert limits["fr3_joint6"].upper == 4.5169
    assert limits["fr3_joint6"].velocity == 4.18
    assert limits["fr3_joint7"].velocity == 5.26


def test_droid_gripper_closes_towards_its_upper_limit() -> None:
    gripper = _load("droid_panda")["panda_gripper_joint"]
    assert (gripper.type, gripper.lower, gripper.upper) == ("revolute", 0.0, 0.81)


def test_unknown_arm_id_is_rejected_naming_the_file() -> None:
    with pytest.raises(RobotDescriptionError, match="droid.urdf.xacro.*ur5"):
        load_joint_limits(URDF_DIR / "droid.urdf.xacro", {"arm_id": "ur5"})


def test_agibot_g1_waist_lift_is_prismatic_and_arms_are_mirrored() -> None:
    limits = _load("agibot_g1")
    lift = limits["idx01_body_joint1"]
    assert (lift.type, lift.lower, lift.upper) == ("prismatic", 0.0, 0.55)
    assert limits["idx02_body_joint2"].type == "revolute"
    left, right = limits["idx22_arm_l_joint2"], limits["idx62_arm_r_joint2"]
    assert (left.lower, left.upper) == (-2.09, 1.48)
    assert (right.lower, right.upper) == (-1.48, 2.09)
    assert limits["idx41_gripper_l_outer_joint1"].upper == pytest.approx(math.pi / 4)


def test_yam_arms_share_limits_and_gripper_is_a_slide() -> None:
    limits = _load("yam")
    for k in range(1, 8):
        left, right = limits[f"left_joint{k}"], limits[f"right_joint{k}"]
        assert (left.type, left.lower, left.upper, left.velocity, left.effort) == (
            right.type, right.lower, right.upper, right.velocity, right.effort
        )
    assert limits["left_joint1"].lower == -2.61799
    assert limits["left_joint2"].upper == 3.66519
    gripper = limits["left_joint7"]
    assert (gripper.type, gripper.lower, gripper.upper) == ("prismatic", 0.0, 0.04695)


def _urdf(joint: str) -> str:
    return f'<robot name="r"><link name="a"/><link name="b"/>{joint}</robot>'


def test_revolute_joint_without_limit_raises_naming_the_joint() -> None:
    urdf = _urdf(
        '<joint name="elbow" type="revolute"><parent link="a"/><child link="b"/>'
        '<axis xyz="0 0 1"/></joint>'
    )
    with pytest.raises(RobotDescriptionError, match="'elbow' has no <limit>"):
        parse_joint_limits(urdf)


def test_limit_without_velocity_raises_naming_the_joint_and_attribute() -> None:
    urdf = _urdf(
        '<joint name="elbow" type="revolute"><parent link="a"/><child link="b"/>'
        '<limit lower="-1" upper="1" effort="5"/></joint>'
    )
    with pytest.raises(RobotDescriptionError, match="'elbow'.*'velocity'"):
        parse_joint_limits(urdf)


def test_inverted_limits_raise() -> None:
    urdf = _urdf(
        '<joint name="elbow" type="revolute"><parent link="a"/><child link="b"/>'
        '<limit lower="1" upper="-1" velocity="1" effort="5"/></joint>'
    )
    with pytest.raises(RobotDescriptionError, match="'elbow' has lower"):
        parse_joint_limits(urdf)


def test_continuous_joint_is_unbounded_and_fixed_joint_is_skipped() -> None:
    urdf = (
        '<robot name="r"><link name="a"/><link name="b"/><link name="c"/>'
        '<joint name="wheel" type="continuous"><parent link="a"/><child link="b"/>'
        '<limit velocity="3" effort="4"/></joint>'
        '<joint name="mount" type="fixed"><parent link="b"/><child link="c"/></joint></robot>'
    )
    assert parse_joint_limits(urdf) == {
        "wheel": JointLimits("wheel", "continuous", -math.inf, math.inf, 3.0, 4.0)
    }


def test_missing_xacro_file_raises() -> None:
    with pytest.raises(RobotDescriptionError, match="not found"):
        render_xacro(URDF_DIR / "no_such_robot.urdf.xacro")
