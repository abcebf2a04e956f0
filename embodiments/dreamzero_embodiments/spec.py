"""Embodiment specs: one YAML per robot in ``robots/``, loaded strictly into frozen dataclasses.

The YAML is the single source of truth for a robot (STYLE.md items 9, 11): model camera keys in
model view order with default topics and message types, the mosaic layout, expected input
resolution, crop and per-view size, state and action layouts (checkpoint keys, names per dimension,
relative flags, unit maps), rates, joint-state topic, controller groups, the URDF and the safety
bounds beyond which inputs are refused (optional ``safety`` section). Joint limits
come from the URDF, not from here. Every problem is reported at once, each with its dotted path.
Imports numpy and yaml only.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

ROBOTS_DIR = Path(__file__).resolve().parent / "robots"
MESSAGE_TYPES = ("Image", "CompressedImage")
GROUP_KINDS = ("joints", "twist")


class EmbodimentSpecError(ValueError):
    """An embodiment YAML is missing, malformed or inconsistent; the message lists every problem with its path."""


@dataclass(frozen=True)
class UnitMap:
    """Linear map between ROS units and model units, e.g. AgiBot effector raw 35..120 <-> 0..1 (facts §1.5).

    ``to_model`` clips to the model range as the dataset converters do; ``to_ros`` does not clip (the
    adapter's limits do).
    """

    ros: tuple[float, float]
    model: tuple[float, float]

    def to_model(self, value: np.ndarray) -> np.ndarray:
        (r0, r1), (m0, m1) = self.ros, self.model
        mapped = m0 + (np.asarray(value, dtype=np.float64) - r0) * (m1 - m0) / (r1 - r0)
        return np.clip(mapped, min(m0, m1), max(m0, m1))

    def to_ros(self, value: np.ndarray) -> np.ndarray:
        (r0, r1), (m0, m1) = self.ros, self.model
        return r0 + (np.asarray(value, dtype=np.float64) - m0) * (r1 - r0) / (m1 - m0)


@dataclass(frozen=True)
class CameraSpec:
    """One model view: checkpoint key, default topic, message type, expected (height, width)."""

    key: str
    topic: str
    type: str
    resolution: tuple[int, int]


@dataclass(frozen=True)
class MosaicCell:
    """Where a view goes in the 2 x 2 mosaic of view_size cells; ``cols: 2`` widens it (facts §1.7)."""

    view: str
    row: int
    col: int
    cols: int = 1


@dataclass(frozen=True)
class ImageSpec:
    """Centre crop scale, per-view size (height, width) and the mosaic layout."""

    crop_scale: float
    view_size: tuple[int, int]
    mosaic: tuple[MosaicCell, ...]


@dataclass(frozen=True)
class VectorKey:
    """One state or action key of the checkpoint (e.g. ``joint_position``) and its dimensions.

    Attributes:
        key: checkpoint sub-key. names: one name per dimension (joint names, or e.g. ``base_vx``).
        relative: action only: predicted relative to the state at the chunk start (facts §1.9).
        unit_map: ROS <-> model units, or None when they agree.
    """

    key: str
    names: tuple[str, ...]
    relative: bool = False
    unit_map: UnitMap | None = None

    @property
    def dim(self) -> int:
        return len(self.names)


@dataclass(frozen=True)
class ControllerGroup:
    """Commands for one controller: ``joints`` groups take joint positions, ``twist`` groups a base velocity."""

    name: str
    kind: str
    names: tuple[str, ...]
    command_topic: str


@dataclass(frozen=True)
class TimingSpec:
    """Action rate (Hz), actions per chunk, video frame stride in action steps (facts §1.8)."""

    action_rate_hz: float
    horizon: int
    frame_stride: int

    @property
    def dt(self) -> float:
        return 1.0 / self.action_rate_hz


@dataclass(frozen=True)
class SafetySpec:
    """Bounds beyond which a joint state or a chunk is refused rather than clamped (YAML ``safety``,
    optional; :mod:`dreamzero_embodiments.plausibility` applies them).

    Attributes:
        range_tolerance: how far outside its URDF position range a joint reading or target may lie,
            as a fraction of that range (on each side), before it is refused.
        state_velocity_margin: a joint reading may differ from the last accepted one by at most this
            times the URDF velocity times the time between their stamps (plus the range tolerance).
        anchor_tolerance: model units (rad for joints, 0..1 for unit-mapped grippers): how far a
            relative chunk's anchor may be from the measured state at its t_obs.
        first_target_reach_s: the first executed target of a chunk may be at most URDF velocity x
            this (plus the range tolerance) from the measured state.
        free_jump: action dimensions whose targets may jump and overshoot their range (grippers): not
            target-checked; the limiter clamps them (their joint readings are still checked).
        refusals_for_error: consecutive refused chunks after which diagnostics turn from WARN to ERROR.
    """

    range_tolerance: float = 0.01
    state_velocity_margin: float = 1.5
    anchor_tolerance: float = 0.05
    first_target_reach_s: float = 0.3
    free_jump: tuple[str, ...] = ()
    refusals_for_error: int = 3


@dataclass(frozen=True)
class EmbodimentSpec:
    """Everything the nodes need to know about one robot (see module docstring)."""

    name: str
    embodiment_tag: str
    description: str
    robot_description: str
    timing: TimingSpec
    cameras: tuple[CameraSpec, ...]
    image: ImageSpec
    joint_states_topic: str
    state: tuple[VectorKey, ...]
    action: tuple[VectorKey, ...]
    controller_groups: tuple[ControllerGroup, ...]
    safety: SafetySpec = SafetySpec()

    @property
    def state_names(self) -> tuple[str, ...]:
        return tuple(n for key in self.state for n in key.names)

    @property
    def action_names(self) -> tuple[str, ...]:
        return tuple(n for key in self.action for n in key.names)

    @property
    def relative_mask(self) -> np.ndarray:
        """bool[A]: per action dimension, relative to the state at the chunk start."""
        return np.array([key.relative for key in self.action for _ in key.names], dtype=bool)

    def camera(self, key: str) -> CameraSpec:
        return next(c for c in self.cameras if c.key == key)


# ------------------------------------------------------------------------------------------ loading
class _Reader:
    """Collects every problem of one YAML with its dotted path instead of stopping at the first."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.problems: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(f"{path}: {message}")

    def mapping(self, node: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict:
        if not isinstance(node, dict):
            self.fail(path, f"expected a mapping, got {type(node).__name__}")
            return {}
        allowed = required + optional
        for key in node:
            if key not in allowed:
                close = difflib.get_close_matches(str(key), allowed, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.fail(f"{path}.{key}", f"unknown key{hint}; allowed: {', '.join(allowed)}")
        for key in required:
            if key not in node:
                self.fail(f"{path}.{key}", "missing")
        return node

    def sequence(self, node: Any, path: str) -> list:
        if not isinstance(node, list) or not node:
            self.fail(path, f"expected a non-empty list, got {node!r}")
            return []
        return node

    def value(self, node: dict, key: str, path: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
        value = node.get(key, default)
        if value is None or (kind is not bool and isinstance(value, bool)) or not isinstance(value, kind):
            if key in node or default is None:
                self.fail(f"{path}.{key}", f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
            return default
        return value

    def pair(self, node: dict, key: str, path: str, kind: type) -> tuple:
        value = node.get(key)
        if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, kind) and not isinstance(v, bool)
                                                                    for v in value)):
            self.fail(f"{path}.{key}", f"expected [a, b] of {kind.__name__}, got {value!r}")
            return (kind(0), kind(1))
        return tuple(value)


def _names(reader: _Reader, node: dict, path: str) -> tuple[str, ...]:
    names = reader.sequence(node.get("names"), f"{path}.names")
    if not all(isinstance(n, str) and n for n in names):
        reader.fail(f"{path}.names", "every name must be a non-empty string")
    return tuple(str(n) for n in names)


def _unit_map(reader: _Reader, node: Any, path: str) -> UnitMap | None:
    if node is None:
        return None
    node = reader.mapping(node, path, ("ros", "model"))
    ros, model = reader.pair(node, "ros", path, (int, float)), reader.pair(node, "model", path, (int, float))
    if ros[0] == ros[1] or model[0] == model[1]:
        reader.fail(path, "ranges must not be empty")
        return None
    return UnitMap(ros=(float(ros[0]), float(ros[1])), model=(float(model[0]), float(model[1])))


def _vector_keys(reader: _Reader, node: Any, path: str, with_relative: bool) -> tuple[VectorKey, ...]:
    keys = []
    for index, item in enumerate(reader.sequence(node, path)):
        where = f"{path}[{index}]"
        item = reader.mapping(item, where, ("key", "names"), ("relative", "unit_map") if with_relative else ("unit_map",))
        keys.append(VectorKey(key=reader.value(item, "key", where, str, ""), names=_names(reader, item, where),
                              relative=bool(reader.value(item, "relative", where, bool, False)),
                              unit_map=_unit_map(reader, item.get("unit_map"), f"{where}.unit_map")))
    return tuple(keys)


def _cameras(reader: _Reader, node: Any) -> tuple[CameraSpec, ...]:
    cameras = []
    for index, item in enumerate(reader.sequence(node, "cameras")):
        where = f"cameras[{index}]"
        item = reader.mapping(item, where, ("key", "topic", "type", "resolution"))
        kind = reader.value(item, "type", where, str, "Image")
        if kind not in MESSAGE_TYPES:
            reader.fail(f"{where}.type", f"must be one of {', '.join(MESSAGE_TYPES)}, got {kind!r}")
        cameras.append(CameraSpec(key=reader.value(item, "key", where, str, ""),
                                  topic=reader.value(item, "topic", where, str, ""), type=kind,
                                  resolution=reader.pair(item, "resolution", where, int)))
    return tuple(cameras)


def _image(reader: _Reader, node: Any, cameras: tuple[CameraSpec, ...]) -> ImageSpec:
    node = reader.mapping(node, "image", ("crop_scale", "view_size", "mosaic"))
    crop = reader.value(node, "crop_scale", "image", (int, float), 1.0)
    if not 0 < crop <= 1:
        reader.fail("image.crop_scale", f"must be in (0, 1], got {crop}")
    cells, covered = [], set()
    for index, item in enumerate(reader.sequence(node.get("mosaic"), "image.mosaic")):
        where = f"image.mosaic[{index}]"
        item = reader.mapping(item, where, ("view", "row", "col"), ("cols",))
        cell = MosaicCell(view=reader.value(item, "view", where, str, ""), row=reader.value(item, "row", where, int, 0),
                          col=reader.value(item, "col", where, int, 0), cols=reader.value(item, "cols", where, int, 1))
        spots = {(cell.row, c) for c in range(cell.col, cell.col + cell.cols)}
        if not all(0 <= r < 2 and 0 <= c < 2 for r, c in spots):
            reader.fail(where, "cell outside the 2 x 2 mosaic")
        if spots & covered:
            reader.fail(where, "overlaps another view")
        covered |= spots
        cells.append(cell)
    views = [c.view for c in cells]
    if sorted(views) != sorted(c.key for c in cameras):
        reader.fail("image.mosaic", f"must place each camera exactly once: cameras {[c.key for c in cameras]}, "
                                    f"placed {views}")
    return ImageSpec(crop_scale=float(crop), view_size=reader.pair(node, "view_size", "image", int), mosaic=tuple(cells))


def _groups(reader: _Reader, node: Any, action_names: tuple[str, ...]) -> tuple[ControllerGroup, ...]:
    groups = []
    for index, item in enumerate(reader.sequence(node, "controller_groups")):
        where = f"controller_groups[{index}]"
        item = reader.mapping(item, where, ("name", "kind", "names", "command_topic"))
        kind = reader.value(item, "kind", where, str, "joints")
        if kind not in GROUP_KINDS:
            reader.fail(f"{where}.kind", f"must be one of {', '.join(GROUP_KINDS)}, got {kind!r}")
        names = _names(reader, item, where)
        unknown = [n for n in names if n not in action_names]
        if unknown:
            reader.fail(f"{where}.names", f"{unknown} are not action dimensions")
        groups.append(ControllerGroup(name=reader.value(item, "name", where, str, ""), kind=kind, names=names,
                                      command_topic=reader.value(item, "command_topic", where, str, "")))
    commanded = [n for g in groups for n in g.names]
    if sorted(commanded) != sorted(action_names):
        reader.fail("controller_groups", f"must command every action dimension exactly once: actions "
                                         f"{list(action_names)}, commanded {commanded}")
    return tuple(groups)


def _safety(reader: _Reader, node: Any, action_names: tuple[str, ...]) -> SafetySpec:
    if node is None:
        return SafetySpec()
    defaults = SafetySpec()
    node = reader.mapping(node, "safety", (), ("range_tolerance", "state_velocity_margin", "anchor_tolerance",
                                               "first_target_reach_s", "free_jump", "refusals_for_error"))
    values = {}
    for key in ("range_tolerance", "state_velocity_margin", "anchor_tolerance", "first_target_reach_s"):
        value = reader.value(node, key, "safety", (int, float), getattr(defaults, key))
        if not value >= 0:
            reader.fail(f"safety.{key}", f"must be >= 0, got {value}")
        values[key] = float(value)
    free_jump = node.get("free_jump", [])
    if not isinstance(free_jump, list) or any(n not in action_names for n in free_jump):
        reader.fail("safety.free_jump", f"must list action dimensions of {list(action_names)}, got {free_jump!r}")
        free_jump = []
    refusals = reader.value(node, "refusals_for_error", "safety", int, defaults.refusals_for_error)
    if refusals < 1:
        reader.fail("safety.refusals_for_error", f"must be >= 1, got {refusals}")
    return SafetySpec(**values, free_jump=tuple(free_jump), refusals_for_error=refusals)


def parse_embodiment(document: Any, source: str) -> EmbodimentSpec:
    """Validate a parsed YAML document; raise :class:`EmbodimentSpecError` listing every problem."""
    reader = _Reader(source)
    root = reader.mapping(document, "", ("name", "embodiment_tag", "description", "robot_description", "timing",
                                         "cameras", "image", "joint_states_topic", "state", "action",
                                         "controller_groups"), ("safety",))
    timing_node = reader.mapping(root.get("timing", {}), "timing", ("action_rate_hz", "horizon", "frame_stride"))
    timing = TimingSpec(action_rate_hz=float(reader.value(timing_node, "action_rate_hz", "timing", (int, float), 1.0)),
                        horizon=reader.value(timing_node, "horizon", "timing", int, 24),
                        frame_stride=reader.value(timing_node, "frame_stride", "timing", int, 3))
    cameras = _cameras(reader, root.get("cameras"))
    state = _vector_keys(reader, root.get("state"), "state", with_relative=False)
    action = _vector_keys(reader, root.get("action"), "action", with_relative=True)
    state_names = {n for k in state for n in k.names}
    for index, key in enumerate(action):
        if key.relative and not set(key.names) <= state_names:
            reader.fail(f"action[{index}]", f"relative key {key.key!r} needs state dimensions named {list(key.names)}")
    action_names = tuple(n for k in action for n in k.names)
    for path, names in (("state", [n for k in state for n in k.names]), ("action", list(action_names))):
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            reader.fail(path, f"duplicate names {duplicates}")
    for topic_path, topic in [("joint_states_topic", root.get("joint_states_topic", ""))] + [
            (f"cameras[{i}].topic", c.topic) for i, c in enumerate(cameras)]:
        if isinstance(topic, str) and topic.startswith("/"):
            reader.fail(topic_path, f"use a relative topic name (remap or namespace instead), got {topic!r}")
    spec = EmbodimentSpec(
        name=reader.value(root, "name", "", str, ""), embodiment_tag=reader.value(root, "embodiment_tag", "", str, ""),
        description=reader.value(root, "description", "", str, ""),
        robot_description=reader.value(root, "robot_description", "", str, ""), timing=timing, cameras=cameras,
        image=_image(reader, root.get("image", {}), cameras),
        joint_states_topic=reader.value(root, "joint_states_topic", "", str, ""), state=state, action=action,
        controller_groups=_groups(reader, root.get("controller_groups"), action_names),
        safety=_safety(reader, root.get("safety"), action_names))
    if reader.problems:
        raise EmbodimentSpecError(f"{source}: {len(reader.problems)} problem(s):\n  " + "\n  ".join(reader.problems))
    return spec


def embodiment_names() -> list[str]:
    """Names of the shipped embodiments (``robots/<name>.yaml``)."""
    return sorted(p.stem for p in ROBOTS_DIR.glob("*.yaml"))


def load_embodiment(name_or_path: str | Path, joint_name_map: Sequence[str] = ()) -> EmbodimentSpec:
    """Load a shipped embodiment by name (``droid``) or any YAML file by path.

    Args:
        name_or_path: shipped name or YAML path.
        joint_name_map: renames the YAML's dimensions for a robot that names its joints otherwise, so the
            same embodiment drives it without editing the YAML (:func:`joint_name_mapping`). A Franka FR3 on
            DROID: ``["panda_*=fr3_*"]`` with the robot description rendered with ``arm_id=fr3``.

    Raises:
        EmbodimentSpecError: unknown name (with the closest one), unreadable file, invalid content, or a
            map entry that is malformed, renames nothing, or makes two dimensions share a name.
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        names = embodiment_names()
        if str(name_or_path) not in names:
            close = difflib.get_close_matches(str(name_or_path), names, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise EmbodimentSpecError(f"unknown embodiment {str(name_or_path)!r}{hint} (known: {', '.join(names)})")
        path = ROBOTS_DIR / f"{name_or_path}.yaml"
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise EmbodimentSpecError(f"{path}: cannot read: {error}") from error
    if joint_name_map:
        spec = parse_embodiment(document, str(path))  # valid before renaming: errors name the YAML's own names
        mapping = joint_name_mapping(joint_name_map, spec.state_names + tuple(
            n for n in spec.action_names if n not in spec.state_names), source=str(path))
        document = _renamed(document, mapping)
        return parse_embodiment(document, f"{path} with joint_name_map {list(joint_name_map)}")
    return parse_embodiment(document, str(path))


def joint_name_mapping(entries: Sequence[str], names: Sequence[str], source: str = "embodiment") -> dict[str, str]:
    """Expand joint-name map entries over an embodiment's dimension ``names``.

    An entry is ``yaml_name=robot_name`` (one dimension) or ``yaml_prefix*=robot_prefix*`` (every name with
    that prefix; ``panda_*=fr3_*`` turns ``panda_joint1`` into ``fr3_joint1``). Later entries win.

    Raises:
        EmbodimentSpecError: an entry without '=', with a '*' on one side only or inside a name, or one
            that matches none of ``names`` (a typo would otherwise be ignored silently).
    """
    mapping: dict[str, str] = {}
    for entry in (e.strip() for e in entries if e.strip()):
        old, separator, new = (part.strip() for part in entry.partition("="))
        prefix = old.endswith("*")
        if (not separator or not old.rstrip("*") or not new.rstrip("*") or prefix != new.endswith("*")
                or "*" in old[:-1] or "*" in new[:-1]):
            raise EmbodimentSpecError(f"{source}: joint_name_map entry {entry!r} must look like "
                                      f"'yaml_name=robot_name' or 'yaml_prefix*=robot_prefix*'")
        matched = {n: new[:-1] + n[len(old) - 1:] for n in names if n.startswith(old[:-1])} if prefix else (
            {old: new} if old in names else {})
        if not matched:
            raise EmbodimentSpecError(f"{source}: joint_name_map entry {entry!r} renames nothing; its "
                                      f"dimensions are {list(names)}")
        mapping.update(matched)
    return mapping


def _renamed(document: dict, mapping: dict[str, str]) -> dict:
    """A copy of an embodiment YAML document with every dimension name replaced through ``mapping``."""
    def rename(names: list) -> list:
        return [mapping.get(n, n) for n in names]

    document = copy.deepcopy(document)
    for section in ("state", "action", "controller_groups"):
        for item in document[section]:
            item["names"] = rename(item["names"])
    if isinstance(document.get("safety"), dict) and "free_jump" in document["safety"]:
        document["safety"]["free_jump"] = rename(document["safety"]["free_jump"])
    return document
