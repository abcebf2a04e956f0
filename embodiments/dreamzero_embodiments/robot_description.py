"""Render the xacro robot descriptions in ``urdf/`` and read their joint limits.

Owns: turning a ``.urdf.xacro`` file into a URDF string and that string into one
:class:`JointLimits` record per movable joint. The URDF files are the source of each robot's
kinematics and published limits (``urdf/README.md`` lists every value and where it comes from).

Imports only the standard library and ``xacro`` (pure Python). Must not import rclpy or torch.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.parsers.expat import ExpatError

import xacro

# Joint types that carry one degree of freedom and therefore a <limit> in our descriptions.
BOUNDED_JOINT_TYPES = ("revolute", "prismatic")
UNBOUNDED_JOINT_TYPES = ("continuous",)


class RobotDescriptionError(ValueError):
    """A robot description cannot be rendered or does not give every movable joint its limits."""


@dataclass(frozen=True)
class JointLimits:
    """Limits of one movable joint, as written in its URDF ``<limit>`` element.

    Attributes:
        name: Joint name, e.g. ``panda_joint1``.
        type: URDF joint type: ``revolute``, ``prismatic`` or ``continuous``.
        lower: Lower position limit, rad (revolute) or m (prismatic); ``-inf`` if continuous.
        upper: Upper position limit, same unit as ``lower``; ``+inf`` if continuous.
        velocity: Maximum speed, rad/s or m/s.
        effort: Maximum effort, N m or N.
    """

    name: str
    type: str
    lower: float
    upper: float
    velocity: float
    effort: float


def render_xacro(path: str | Path, mappings: Mapping[str, str] | None = None) -> str:
    """Expand a xacro file into a URDF XML string.

    Args:
        path: The ``.urdf.xacro`` file. Its ``xacro:include`` paths are relative to it.
        mappings: Values for the file's ``xacro:arg`` arguments, e.g. ``{"arm_id": "fr3"}``.

    Returns:
        The URDF document as an XML string.

    Raises:
        RobotDescriptionError: The file is missing, is not well-formed XML, or xacro rejects it
            (unknown macro, failed expression, a ``xacro.fatal`` in the file). The message names
            the file and carries xacro's reason.
    """
    source = Path(path).resolve()
    if not source.is_file():
        raise RobotDescriptionError(f"{source}: xacro file not found")
    try:
        document = xacro.process_file(str(source), mappings=dict(mappings or {}))
    except (xacro.XacroException, ExpatError) as exc:
        raise RobotDescriptionError(f"{source}: xacro failed: {exc}") from exc
    return document.toxml()


def parse_joint_limits(urdf_xml: str, *, source: str = "<urdf string>") -> dict[str, JointLimits]:
    """Read the limits of every movable joint of a URDF document.

    Fixed joints are skipped. Revolute and prismatic joints need ``lower``, ``upper``,
    ``velocity`` and ``effort``; continuous joints need ``velocity`` and ``effort`` and get
    ``lower = -inf``, ``upper = +inf``.

    Args:
        urdf_xml: The URDF document (e.g. the result of :func:`render_xacro`).
        source: What to call the document in error messages, e.g. its file path.

    Returns:
        Joint name to limits, in document order.

    Raises:
        RobotDescriptionError: The XML is malformed, or a joint is unnamed, duplicated, of a
            multi-DoF or unknown type, lacks ``<limit>`` or one of its attributes, has a
            non-numeric or non-finite value, or has ``lower > upper``. The message names the
            source and the joint.
    """
    try:
        root = ET.fromstring(urdf_xml)
    except ET.ParseError as exc:
        raise RobotDescriptionError(f"{source}: not well-formed XML: {exc}") from exc

    limits: dict[str, JointLimits] = {}
    for joint in root.iter("joint"):
        name = joint.get("name")
        joint_type = joint.get("type")
        if not name:
            raise RobotDescriptionError(f"{source}: a <joint> has no name")
        if joint_type == "fixed":
            continue
        if name in limits:
            raise RobotDescriptionError(f"{source}: joint '{name}' is defined twice")
        if joint_type not in BOUNDED_JOINT_TYPES + UNBOUNDED_JOINT_TYPES:
            expected = ", ".join(("fixed",) + BOUNDED_JOINT_TYPES + UNBOUNDED_JOINT_TYPES)
            raise RobotDescriptionError(
                f"{source}: joint '{name}' has type '{joint_type}', expected one of {expected}"
            )
        element = joint.find("limit")
        if element is None:
            raise RobotDescriptionError(
                f"{source}: {joint_type} joint '{name}' has no <limit> element"
            )
        bounded = joint_type in BOUNDED_JOINT_TYPES
        limits[name] = JointLimits(
            name=name,
            type=joint_type,
            lower=_limit_value(element, "lower", name, source) if bounded else -math.inf,
            upper=_limit_value(element, "upper", name, source) if bounded else math.inf,
            velocity=_limit_value(element, "velocity", name, source),
            effort=_limit_value(element, "effort", name, source),
        )
        if limits[name].lower > limits[name].upper:
            raise RobotDescriptionError(
                f"{source}: joint '{name}' has lower {limits[name].lower} > "
                f"upper {limits[name].upper}"
            )
    return limits


def load_joint_limits(
    path: str | Path, mappings: Mapping[str, str] | None = None
) -> dict[str, JointLimits]:
    """Render a xacro file and read the limits of its movable joints.

    Args:
        path: The ``.urdf.xacro`` file.
        mappings: Values for its ``xacro:arg`` arguments.

    Returns:
        Joint name to limits, in document order.

    Raises:
        RobotDescriptionError: As for :func:`render_xacro` and :func:`parse_joint_limits`;
            messages name the file.
    """
    return parse_joint_limits(render_xacro(path, mappings), source=str(Path(path).resolve()))


def _limit_value(element: ET.Element, attribute: str, joint: str, source: str) -> float:
    """Return one finite numeric attribute of a ``<limit>`` element, or raise naming the joint."""
    text = element.get(attribute)
    if text is None:
        raise RobotDescriptionError(f"{source}: joint '{joint}' <limit> has no '{attribute}'")
    try:
        value = float(text)
    except ValueError as exc:
        raise RobotDescriptionError(
            f"{source}: joint '{joint}' <limit> '{attribute}' is not a number: '{text}'"
        ) from exc
    if not math.isfinite(value):
        raise RobotDescriptionError(
            f"{source}: joint '{joint}' <limit> '{attribute}' is not finite: '{text}'"
        )
    return value
