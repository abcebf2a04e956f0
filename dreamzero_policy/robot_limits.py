"""The command limits of a robot, shared by the adapter and the control mux.

Joints take position and velocity limits from the URDF (rendered with xacro at configure time,
never copied). A unit-mapped dimension is bounded by its unit map's ROS range, with the URDF
velocity and the acceleration parameter rescaled to that range (AgiBot effectors are commanded in
raw 35..120 while the URDF joint spans 0..0.785 rad; for the DROID and YAM grippers both ranges
agree). Twist dimensions (a base) are clipped to the ``limits.base_*`` parameters: a twist group's
first name is the linear x velocity, its second the yaw rate (embodiment YAML).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dreamzero_embodiments.limits import JointLimitSet, limits_from_urdf
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_policy.paths import share_dir


@dataclass(frozen=True)
class LimitSettings:
    """The LIMIT_PARAMS of :mod:`dreamzero_policy.params`."""

    robot_description_file: str
    xacro_args: tuple[str, ...]
    joint_name_map: tuple[str, ...]
    max_acceleration: float
    base_linear_m_s: float
    base_angular_rad_s: float

    @classmethod
    def from_values(cls, values: dict[str, Any]) -> LimitSettings:
        return cls(robot_description_file=values["robot_description_file"],
                   xacro_args=tuple(a for a in values["xacro_args"] if a),
                   joint_name_map=tuple(e for e in values["joint_name_map"] if e),
                   max_acceleration=values["limits.max_acceleration"], base_linear_m_s=values["limits.base_linear_m_s"],
                   base_angular_rad_s=values["limits.base_angular_rad_s"])


def robot_embodiment(embodiment: str, settings: LimitSettings) -> EmbodimentSpec:
    """The embodiment YAML ``embodiment`` with its joints named as this robot names them (``joint_name_map``)."""
    return load_embodiment(embodiment, settings.joint_name_map)


def robot_limits(spec: EmbodimentSpec, settings: LimitSettings) -> JointLimitSet:
    """Limits of every action dimension of ``spec`` in ROS units (see module docstring)."""
    path = Path(settings.robot_description_file) if settings.robot_description_file else (
        share_dir() / "urdf" / spec.robot_description)
    urdf = load_joint_limits(path, dict(arg.split("=", 1) for arg in settings.xacro_args))
    extra: dict[str, tuple[float, float, float]] = {}
    acceleration = {name: settings.max_acceleration for name in spec.action_names}
    for key in (k for k in spec.action if k.unit_map is not None):
        lower, upper = sorted(key.unit_map.ros)
        for name in key.names:
            joint = urdf.get(name)
            scale = (upper - lower) / (joint.upper - joint.lower) if joint is not None and joint.upper > joint.lower \
                else 1.0
            extra[name] = (lower, upper, joint.velocity * scale if joint is not None else float("inf"))
            acceleration[name] *= scale
    twist = []
    for group in (g for g in spec.controller_groups if g.kind == "twist"):
        for name, bound in zip(group.names, (settings.base_linear_m_s, settings.base_angular_rad_s)):
            extra[name] = (-bound, bound, float("inf"))
            twist.append(name)
    return limits_from_urdf(spec.action_names, urdf, acceleration, extra, twist=twist)
