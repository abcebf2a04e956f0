"""Synthetic ``experiment_cfg`` contents with the official structure for DROID, AgiBot and YAM.

Key names, widths, view order, resolutions and relative keys follow facts §1.4-1.6 (YAM's camera
resolution is not published; 480x640 is used here). Statistics are random but well-formed.
"""
from __future__ import annotations

import numpy as np

from dreamzero_model.metadata import EmbodimentMetadata, KeyLayout

LAYOUTS = {
    "oxe_droid": {
        "video": (["exterior_image_1_left", "exterior_image_2_left", "wrist_image_left"], (180, 320)),
        "state": [("joint_position", 7), ("gripper_position", 1)],
        "action": [("joint_position", 7), ("gripper_position", 1)],
        "relative": ["joint_position"],
    },
    "agibot": {
        "video": (["top_head", "hand_left", "hand_right"], (480, 640)),
        "state": [("left_arm_joint_position", 7), ("right_arm_joint_position", 7), ("left_effector_position", 1),
                  ("right_effector_position", 1), ("head_position", 2), ("waist_position", 2)],
        "action": [("left_arm_joint_position", 7), ("right_arm_joint_position", 7), ("left_effector_position", 1),
                   ("right_effector_position", 1), ("head_position", 2), ("waist_position", 2),
                   ("robot_velocity", 2)],
        "relative": ["left_arm_joint_position", "right_arm_joint_position", "left_effector_position",
                     "right_effector_position", "head_position", "waist_position"],
    },
    "yam": {
        "video": (["top_camera-images-rgb", "left_camera-images-rgb", "right_camera-images-rgb"], (480, 640)),
        "state": [("left_joint_pos", 6), ("left_gripper_pos", 1), ("right_joint_pos", 6), ("right_gripper_pos", 1)],
        "action": [("left_joint_pos", 6), ("left_gripper_pos", 1), ("right_joint_pos", 6), ("right_gripper_pos", 1)],
        "relative": ["left_joint_pos", "left_gripper_pos", "right_joint_pos", "right_gripper_pos"],
    },
}


def _statistics(dim: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    q01 = rng.uniform(-2.0, 0.0, dim)
    q99 = q01 + rng.uniform(0.1, 2.0, dim)
    return {"max": q99 + 0.1, "min": q01 - 0.1, "mean": (q01 + q99) / 2, "std": (q99 - q01) / 4, "q01": q01, "q99": q99}


def synthetic_metadata(tag: str, seed: int = 0) -> EmbodimentMetadata:
    rng = np.random.default_rng(seed)
    layout = LAYOUTS[tag]
    views, resolution = layout["video"]
    return EmbodimentMetadata(
        tag=tag, video_keys=tuple(views), video_resolutions={v: resolution for v in views},
        state_keys=tuple(KeyLayout(n, d, _statistics(d, rng)) for n, d in layout["state"]),
        action_keys=tuple(KeyLayout(n, d, _statistics(d, rng)) for n, d in layout["action"]),
        relative_action_keys=tuple(layout["relative"]), max_chunk_size=4, tokenizer_path=None, save_lora_only=False)
