"""Embodiment YAMLs: every shipped one loads, agrees with its URDF, and bad YAML is reported precisely."""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import yaml

from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.spec import (ROBOTS_DIR, EmbodimentSpecError, UnitMap, embodiment_names, load_embodiment,
                                        parse_embodiment)

URDF_DIR = Path(__file__).resolve().parents[2] / "urdf"
EXPECTED = {  # name: (tag, rate Hz, state dims, action dims, relative dims) from facts §1.4-1.6
    "droid": ("oxe_droid", 15, 8, 8, 7),
    "agibot_g1": ("agibot", 30, 20, 22, 20),
    "yam": ("yam", 30, 14, 14, 14),
}


def test_the_three_robots_ship() -> None:
    assert embodiment_names() == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shipped_yaml_has_the_published_layout(name: str) -> None:
    spec = load_embodiment(name)
    tag, rate, state, action, relative = EXPECTED[name]
    assert (spec.embodiment_tag, spec.timing.action_rate_hz, len(spec.state_names), len(spec.action_names),
            int(spec.relative_mask.sum())) == (tag, rate, state, action, relative)
    assert spec.timing.horizon == 24 and spec.timing.frame_stride == 3
    assert spec.image.crop_scale == 0.95 and spec.image.view_size == (176, 320)
    assert len(spec.cameras) == 3


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_commanded_joint_exists_in_the_robot_description(name: str) -> None:
    spec = load_embodiment(name)
    limits = load_joint_limits(URDF_DIR / spec.robot_description)
    joints = [n for g in spec.controller_groups if g.kind == "joints" for n in g.names]
    assert joints and [n for n in joints if n not in limits] == []
    assert [n for n in spec.state_names if n not in limits] == []


def test_droid_gripper_is_absolute_and_joints_relative() -> None:
    spec = load_embodiment("droid")
    assert spec.relative_mask.tolist() == [True] * 7 + [False]
    assert spec.image.mosaic[0].view == "wrist_image_left" and spec.image.mosaic[0].cols == 2


def test_agibot_effector_unit_map_is_35_to_120_raw() -> None:
    effector = next(k for k in load_embodiment("agibot_g1").action if k.key == "left_effector_position")
    assert np.allclose(effector.unit_map.to_ros([0.0, 0.5, 1.0]), [35.0, 77.5, 120.0])
    assert np.allclose(effector.unit_map.to_model([35.0, 77.5, 200.0]), [0.0, 0.5, 1.0])  # clipped like the converter


def test_unit_map_round_trips_inside_its_range() -> None:
    unit_map = UnitMap(ros=(0.0, 0.81), model=(0.0, 1.0))
    values = np.linspace(0.0, 0.81, 7)
    assert np.allclose(unit_map.to_ros(unit_map.to_model(values)), values)


def _droid_document() -> dict:
    return yaml.safe_load((ROBOTS_DIR / "droid.yaml").read_text())


def test_unknown_key_is_named_with_its_path_and_the_allowed_keys() -> None:
    document = _droid_document()
    document["cameras"][1]["typ"] = "Image"
    with pytest.raises(EmbodimentSpecError, match=r"cameras\[1\]\.typ: unknown key \(did you mean 'type'\?\); "
                                                  r"allowed: key, topic, type, resolution"):
        parse_embodiment(document, "droid.yaml")


def test_all_problems_are_reported_together() -> None:
    document = copy.deepcopy(_droid_document())
    document["timing"]["action_rate_hz"] = "fast"
    document["cameras"][0]["type"] = "Video"
    document["joint_states_topic"] = "/joint_states"
    document["controller_groups"][1]["names"] = ["panda_joint7"]
    with pytest.raises(EmbodimentSpecError) as error:
        parse_embodiment(document, "droid.yaml")
    message = str(error.value)
    for fragment in ("timing.action_rate_hz: expected", "cameras[0].type: must be one of Image, CompressedImage",
                     "joint_states_topic: use a relative topic name", "must command every action dimension exactly once"):
        assert fragment in message
    assert "4 problem(s)" in message or "5 problem(s)" in message


def test_relative_action_needs_matching_state_names() -> None:
    document = _droid_document()
    document["state"][0]["names"][0] = "shoulder"
    with pytest.raises(EmbodimentSpecError, match=r"action\[0\]: relative key 'joint_position' needs state dimensions"):
        parse_embodiment(document, "droid.yaml")


def test_mosaic_must_place_each_camera_once() -> None:
    document = _droid_document()
    document["image"]["mosaic"][2]["view"] = "exterior_image_1_left"
    with pytest.raises(EmbodimentSpecError, match="must place each camera exactly once"):
        parse_embodiment(document, "droid.yaml")


def test_unknown_embodiment_suggests_the_closest() -> None:
    with pytest.raises(EmbodimentSpecError, match="did you mean 'droid'"):
        load_embodiment("droyd")


def test_droid_on_an_fr3_is_the_same_yaml_with_its_joints_renamed() -> None:
    """Issue 12 item 11: a joint-name map (no YAML edit) names every dimension as the FR3 does, and the FR3
    robot description (xacro arm_id=fr3) has each of them; order, layout and safety stay DROID's."""
    panda, fr3 = load_embodiment("droid"), load_embodiment("droid", ["panda_*=fr3_*"])
    assert fr3.action_names == tuple(n.replace("panda_", "fr3_") for n in panda.action_names)
    assert fr3.state_names == tuple(n.replace("panda_", "fr3_") for n in panda.state_names)
    assert [g.names for g in fr3.controller_groups] == [tuple(n.replace("panda_", "fr3_") for n in g.names)
                                                         for g in panda.controller_groups]
    assert fr3.safety.free_jump == ("fr3_gripper_joint",)
    assert fr3.relative_mask.tolist() == panda.relative_mask.tolist() and fr3.cameras == panda.cameras
    limits = load_joint_limits(URDF_DIR / fr3.robot_description, {"arm_id": "fr3"})
    assert [n for n in fr3.action_names + fr3.state_names if n not in limits] == []
    # one joint, later entries winning: a Franka Hand's finger instead of the 2F-85
    hand = load_embodiment("droid", ["panda_*=fr3_*", "panda_gripper_joint=fr3_finger_joint1"])
    assert hand.action_names[-1] == "fr3_finger_joint1" and hand.action_names[0] == "fr3_joint1"


@pytest.mark.parametrize("entries, reason", [
    (["panda_joint1"], "must look like 'yaml_name=robot_name'"),
    (["panda_*=fr3_"], "must look like"),
    (["fr3_*=panda_*"], "renames nothing; its dimensions are \\['panda_joint1'"),
    (["panda_joint1=panda_joint2"], "duplicate names \\['panda_joint2'\\]"),
])
def test_a_bad_joint_name_map_is_refused_with_its_reason(entries: list[str], reason: str) -> None:
    with pytest.raises(EmbodimentSpecError, match=reason):
        load_embodiment("droid", entries)
