"""``dreamzero dataset``: rosbag2 bags -> a LeRobot v2.1 dataset the official DreamZero loader trains on.

One bag folder (``ros2 bag record``, ``dreamzero record`` or ``dreamzero collect``; sqlite3 or MCAP) is
one episode. Bags are read with ``rosbags`` and decoded as ``eval-bag`` and the live nodes decode them;
the files are written by :mod:`dreamzero_policy.bags.lerobot_writer`.

Time is the bag's own (header stamps), resampled on one grid at the action rate:

1. one pass over the robot topics and cameras: joint states and controller commands go into
   ``evaluation.RecordedRobot`` as for ``eval-bag`` (commands carry no header: their receive time is
   moved into the stamp time base by the newest joint state's receive-minus-stamp offset); of the
   camera messages only the header stamps are read. Frames and joint states stamped more than
   ``max_future_stamp_s`` after they were received are refused and counted, as in the policy node;
2. the grid: action times ``t_k = t_0 + k dt`` anchored at the first frame of the first camera (model
   view order), kept from the first time every stream (joint states, every controller group's
   commands, every camera) has started to the first time one of them has ended;
3. at each action time: ``observation.state`` = the joint states linearly interpolated
   (``evaluation.interpolate``), packed by name into the checkpoint's order and model units
   (``state.pack_state``, unit maps applied); ``action`` = what was commanded, the last command of each
   controller group at or before it (``evaluation.hold``: a controller holds its last command), in
   model units through the action keys' unit maps (``UnitMap.to_model``, clipped as the official
   converters clip, facts §1.5); one frame per camera = the frame nearest it (older wins a tie, as the
   policy node's frame selection) within ``frame_tolerance_s``, decoded as the live node decodes
   (``conversions.image_to_rgb``) and resized to the camera's checkpoint resolution (``resize_to``, as
   the observation assembler does), so the stored video has the resolution the model's transforms
   assert (facts §1.7). Each camera is read once more, decoding only the frames used, and streamed
   into the encoder (memory: a few frames, not the episode).

Task text: ``--task`` for every bag, else the episode metadata file written by ``dreamzero collect``:
``metadata.json`` inside the bag folder (beside rosbag2's ``metadata.yaml``), else ``metadata.json`` in
the folder that holds the bag folder. Format (UTF-8 JSON object)::

    {"instruction": "Put the cube in the tray.",   # required, non-empty string: the episode's task
     "seed": 7,                                      # optional int or null: the scene seed
     "success": true}                                # optional bool or null: the task test's verdict

Other keys are ignored. ``success`` goes to ``episodes.jsonl`` (as in the official DROID data) and
``only_success`` skips episodes whose metadata says false.

Bad input (one line, before any long work, ``DatasetError``/``EvalError``, exit status 2 in the CLI): a
bag lacking a camera, the joint states or a controller group's command topic (the bag's topics are
listed), a bag without a task, a malformed metadata file, an output folder that exists. Episodes that
cannot train are skipped, counted and named in the summary: shorter than one chunk, NaN or inf in a
joint state or command, joints the joint states never carry, a camera gap beyond the tolerance, an
undecodable image, streams that never overlap (lerobot_writer module docstring).
"""
from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from dreamzero_embodiments.buffers import nearest_index
from dreamzero_embodiments.evaluation import hold, interpolate, step_times_ns
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.state import StateError, pack_state
from dreamzero_embodiments.stitching import resize_to
from dreamzero_policy.bags.bag_types import message_class, typestore_for
from dreamzero_policy.bags.evaluation import (COMMAND_TYPE, BagTopics, EvalOptions, RecordedRobot, absolute_topic,
                                              find_topics)
from dreamzero_policy.bags.lerobot_writer import (Episode, EpisodeError, SkippedEpisode, check_output,
                                                  write_lerobot_dataset)
from dreamzero_policy.conversions import image_to_rgb, joint_state_arrays, stamp_to_ns

EPISODE_METADATA = "metadata.json"
TWIST_TYPE = "geometry_msgs/msg/Twist"
COMMAND_TYPES = {"joints": COMMAND_TYPE, "twist": TWIST_TYPE}  # controller group kind -> message (conversions)
SKIPPED_BY_LOADER = (".sh", ".json")  # the official loader drops dataset paths with these (training-serving-facts §7)


class DatasetError(ValueError):
    """The bags or options cannot make a dataset; one line naming the bag, what is missing and what it has."""


@dataclass(frozen=True)
class DatasetOptions:
    """See the module docstring. ``task`` empty: each bag's metadata file. ``camera_topics`` camera key ->
    topic and ``command_topics`` controller group -> topic override the YAML (under ``namespace``).
    The tolerances are the policy node's parameters of the same names."""

    task: str = ""
    namespace: str = ""
    camera_topics: dict[str, str] = field(default_factory=dict)
    command_topics: dict[str, str] = field(default_factory=dict)
    frame_tolerance_s: float = 0.15
    max_future_stamp_s: float = 0.2
    only_success: bool = False
    overwrite: bool = False
    progress: bool = True


@dataclass(frozen=True)
class EpisodeMetadata:
    """The episode metadata file (module docstring)."""

    instruction: str
    seed: int | None = None
    success: bool | None = None


def read_episode_metadata(bag: Path) -> EpisodeMetadata | None:
    """The metadata of the episode in bag folder ``bag`` (inside it, else beside it), or None when there
    is none; raises DatasetError naming the file and the field on a malformed one."""
    for path in (Path(bag) / EPISODE_METADATA, Path(bag).parent / EPISODE_METADATA):
        if path.is_file():
            break
    else:
        return None
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise DatasetError(f"{path}: not a JSON object ({error})") from error
    if not isinstance(document, dict):
        raise DatasetError(f"{path}: expected a JSON object with 'instruction', got {type(document).__name__}")
    instruction, seed, success = document.get("instruction"), document.get("seed"), document.get("success")
    if not isinstance(instruction, str) or not instruction.strip():
        raise DatasetError(f"{path}: 'instruction' must be a non-empty string, got {instruction!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise DatasetError(f"{path}: 'seed' must be an integer or null, got {seed!r}")
    if success is not None and not isinstance(success, bool):
        raise DatasetError(f"{path}: 'success' must be true, false or null, got {success!r}")
    return EpisodeMetadata(instruction.strip(), seed, success)


@dataclass(frozen=True)
class BagPlan:
    """What one bag will give: its topics (``commands`` has every controller group), task and success."""

    path: Path
    topics: BagTopics
    task: str
    success: bool | None
    duration_s: float


def _bag_topics(reader: Reader, spec: EmbodimentSpec, options: DatasetOptions) -> BagTopics:
    """Cameras and joint states as ``eval-bag`` finds them, plus every controller group's command topic."""
    types = {c.topic: c.msgtype for c in reader.connections}
    found = find_topics(types, spec, EvalOptions(namespace=options.namespace, camera_topics=options.camera_topics,
                                                 progress=False))
    unknown = sorted(set(options.command_topics) - {g.name for g in spec.controller_groups})
    if unknown:
        raise DatasetError(f"command topics name unknown controller groups {unknown}; {spec.name} has "
                           f"{[g.name for g in spec.controller_groups]}")
    commands, problems = {}, []
    for group in spec.controller_groups:
        topic = absolute_topic(options.namespace, options.command_topics.get(group.name, group.command_topic))
        if types.get(topic) != COMMAND_TYPES[group.kind]:
            problems.append(f"commands of controller group {group.name}: {topic} is "
                            f"{types.get(topic, 'missing')} (expected {COMMAND_TYPES[group.kind]})")
        commands[group.name] = topic
    if problems:
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(types.items()))
        raise DatasetError(f"bag lacks what embodiment {spec.name!r} needs for actions: {'; '.join(problems)}. "
                           f"The bag has: {listing}. Use --namespace or --command-topic group=topic if it was "
                           f"recorded under other names")
    return BagTopics(found.cameras, found.joint_states, commands)


def plan_bags(bags: Sequence[Path], spec: EmbodimentSpec, options: DatasetOptions) -> list[BagPlan]:
    """Check every bag before any long work (metadata and the small metadata file only); raises
    DatasetError (or the EvalError/ReaderError of the bag) for the first bag that cannot be converted."""
    paths = [Path(b) for b in bags]
    repeated = sorted({str(p) for p in paths if paths.count(p) > 1})
    if repeated:
        raise DatasetError(f"bags given more than once: {repeated}")
    plans = []
    for path in paths:
        with Reader(path) as reader:
            try:
                topics = _bag_topics(reader, spec, options)
            except ValueError as error:
                raise DatasetError(f"{path}: {error}") from error
            duration_s = reader.duration * 1e-9 if reader.message_count else 0.0
        metadata = read_episode_metadata(path)
        task = options.task.strip() or (metadata.instruction if metadata else "")
        if not task:
            raise DatasetError(f"{path}: no task: pass --task TEXT or write {EPISODE_METADATA} in the bag folder "
                               f"with an 'instruction' (see dreamzero dataset --help)")
        plans.append(BagPlan(path, topics, task, metadata.success if metadata else None, duration_s))
    return plans


@dataclass
class _CameraStamps:
    """Header stamps of one camera's accepted frames, with their receive times (to find them again)."""

    stamps: list[int] = field(default_factory=list)
    receive: list[int] = field(default_factory=list)

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        stamps = np.array(self.stamps, dtype=np.int64)
        order = np.argsort(stamps, kind="stable")
        return stamps[order], np.array(self.receive, dtype=np.int64)[order]


class BagReading:
    """Step 1 of the module docstring for one bag, read from the open ``reader``: the robot streams and
    every camera's stamps. The reader stays in use until the episode's frames have been written."""

    def __init__(self, reader: Reader, plan: BagPlan, spec: EmbodimentSpec, options: DatasetOptions) -> None:
        self.reader, self.plan, self.spec = reader, plan, spec
        max_future_ns = round(options.max_future_stamp_s * 1e9)
        self.robot = RecordedRobot(spec, plan.topics, max_future_ns)
        self.cameras = {key: _CameraStamps() for key in plan.topics.cameras}
        self.refused: Counter = Counter()  # messages refused, by cause
        self.bad_reading: str | None = None  # the first non-finite joint reading
        camera_of = {topic: key for key, topic in plan.topics.cameras.items()}
        robot_topics = {plan.topics.joint_states, *plan.topics.commands.values()}
        wanted_joints = set(spec.state_names)
        connections = [c for c in reader.connections if c.topic in robot_topics or c.topic in camera_of]
        typestore = typestore_for({c.msgtype for c in connections if c.topic in camera_of})
        for connection, receive_ns, raw in reader.messages(connections):
            key = camera_of.get(connection.topic)
            if key is not None:  # only the stamp: rosbags reads it without copying the pixels
                stamp = stamp_to_ns(typestore.deserialize_cdr(raw, connection.msgtype).header.stamp)
                if stamp - receive_ns > max_future_ns:
                    self.refused["frame stamped ahead of its receive time"] += 1
                    continue
                self.cameras[key].stamps.append(stamp)
                self.cameras[key].receive.append(receive_ns)
                continue
            msg = deserialize_message(raw, message_class(connection.msgtype))
            if connection.topic == plan.topics.joint_states and self.bad_reading is None:
                self._check_reading(msg, wanted_joints)
            self.robot.add(connection.topic, msg, receive_ns)
        self.robot.finish()
        self.refused.update(self.robot.bad)

    def _check_reading(self, msg: Any, wanted: set[str]) -> None:
        try:
            names, positions = joint_state_arrays(msg)
        except ValueError:
            return  # counted by RecordedRobot
        bad = [f"{n}={p}" for n, p in zip(names, positions) if n in wanted and not np.isfinite(p)]
        if bad:
            self.bad_reading = f"joint state {', '.join(bad)} stamped {stamp_to_ns(msg.header.stamp)} ns"


def _span(stamps: np.ndarray) -> tuple[int, int]:
    return int(stamps[0]), int(stamps[-1])


def action_times(reading: BagReading, spec: EmbodimentSpec) -> np.ndarray:
    """int64[T] action times of step 2 of the module docstring; EpisodeError when a stream is empty or
    the streams never overlap."""
    robot, spans = reading.robot, {}
    if not len(robot.stamps):
        raise EpisodeError("no joint states", f"no usable joint state on {reading.plan.topics.joint_states}")
    spans["joint states"] = _span(robot.stamps)
    for group in spec.controller_groups:
        stamps = robot.commands[group.name][0]
        if not len(stamps):
            raise EpisodeError("no commands", f"no usable command of controller group {group.name} on "
                               f"{reading.plan.topics.commands[group.name]} after the first joint state")
        spans[f"commands {group.name}"] = _span(stamps)
    for camera in spec.cameras:
        stamps = reading.cameras[camera.key].sorted()[0]
        if not len(stamps):
            raise EpisodeError("no frames", f"no usable frame of camera {camera.key} on "
                               f"{reading.plan.topics.cameras[camera.key]}")
        spans[f"camera {camera.key}"] = _span(stamps)
    start, end = max(s for s, _ in spans.values()), min(e for _, e in spans.values())
    anchor = spans[f"camera {spec.cameras[0].key}"][0]
    dt_ns = 1e9 * spec.timing.dt
    ticks = step_times_ns(anchor, max(int((end - anchor) // dt_ns) + 2, 1), spec.timing.dt)
    ticks = ticks[(ticks >= start) & (ticks <= end)]
    if not len(ticks):
        spans_s = ", ".join(f"{name} {(s - anchor) * 1e-9:.3f}..{(e - anchor) * 1e-9:.3f} s" for name, (s, e)
                            in spans.items())
        raise EpisodeError("streams never overlap", f"no action time has every stream ({spans_s})")
    return ticks


def _states(reading: BagReading, ticks: np.ndarray, spec: EmbodimentSpec) -> np.ndarray:
    """float64[T, S] model units: joint states interpolated at ``ticks``, packed as the policy node packs them."""
    robot = reading.robot
    if reading.bad_reading is not None:
        raise EpisodeError("non-finite state or action", reading.bad_reading)
    missing = [name for name in spec.state_names if not len(robot.series(name)[0])]
    if missing:
        raise EpisodeError("missing joints", f"the joint states never carry {missing}; they carry "
                           f"{list(robot.other_names)} (rename with --joint-name-map)")
    series = [robot.series(name) for name in spec.state_names]
    ros = np.stack([interpolate(ticks, stamps, values[:, None])[:, 0] for stamps, values in series], axis=1)
    try:
        return np.stack([pack_state(spec.state_names, row, spec) for row in ros])
    except StateError as error:
        raise EpisodeError("non-finite state or action", str(error)) from error


def _actions(reading: BagReading, ticks: np.ndarray, spec: EmbodimentSpec) -> np.ndarray:
    """float64[T, A] model units: each controller group's last command at ``ticks``, unit maps applied."""
    index = {name: d for d, name in enumerate(spec.action_names)}
    ros = np.full((len(ticks), len(spec.action_names)), np.nan)
    for group in spec.controller_groups:
        held = hold(ticks, *reading.robot.commands[group.name])
        for j, name in enumerate(group.names):
            ros[:, index[name]] = held[:, j]
    model, start = ros.copy(), 0
    for key in spec.action:
        if key.unit_map is not None:
            values = ros[:, start:start + key.dim]
            model[:, start:start + key.dim] = np.where(np.isfinite(values), key.unit_map.to_model(values), values)
        start += key.dim
    return model


def _frame_keys(reading: BagReading, ticks: np.ndarray, key: str, tolerance_ns: int) -> list[tuple[int, int]]:
    """(receive time, stamp) of the frame nearest each action time; EpisodeError naming a gap beyond the tolerance."""
    stamps, receive = reading.cameras[key].sorted()
    listed = stamps.tolist()
    picked, far = [], []
    for t in ticks.tolist():
        i = nearest_index(listed, t)
        if abs(listed[i] - t) > tolerance_ns:
            far.append(t)
        picked.append((int(receive[i]), listed[i]))
    if far:
        widest = int(np.max(np.diff(stamps))) if len(stamps) > 1 else 0
        raise EpisodeError("camera gap", f"camera {key} has no frame within {tolerance_ns * 1e-9:.3f} s of {len(far)} "
                           f"action time(s), the first {(far[0] - int(ticks[0])) * 1e-9:.3f} s into the episode "
                           f"(widest gap between frames {widest * 1e-9:.3f} s)")
    return picked


def _frames(reader: Reader, topic: str, wanted: list[tuple[int, int]],
            resolution: tuple[int, int]) -> Iterator[np.ndarray]:
    """The frames ``wanted`` (receive time, stamp) of camera ``topic``, in order, decoded and resized as the
    live node does; each decoded once and kept only until its last use."""
    uses = Counter(wanted)
    receive_times = {r for r, _ in wanted}
    pending: dict[tuple[int, int], np.ndarray] = {}
    row = 0
    connections = [c for c in reader.connections if c.topic == topic]
    for connection, receive_ns, raw in reader.messages(connections):
        if receive_ns not in receive_times:
            continue
        msg = deserialize_message(raw, message_class(connection.msgtype))
        key = (receive_ns, stamp_to_ns(msg.header.stamp))
        if uses.get(key, 0) <= 0 or key in pending:  # not used, or a second copy of a frame
            continue
        try:
            rgb = image_to_rgb(msg)
        except ValueError as error:
            raise EpisodeError("undecodable image", f"{topic} frame stamped {key[1]} ns: {error}") from error
        pending[key] = resize_to(rgb, resolution)
        while row < len(wanted) and wanted[row] in pending:
            frame = pending[wanted[row]]
            uses[wanted[row]] -= 1
            if not uses[wanted[row]]:
                del pending[wanted[row]]
            row += 1
            yield frame
    if row < len(wanted):
        raise EpisodeError("frame count", f"{topic}: {len(wanted) - row} frames went missing on the second read")


def bag_episode(reading: BagReading, spec: EmbodimentSpec, options: DatasetOptions) -> Episode:
    """The episode of one read bag (module docstring, steps 2-3); frames are decoded when the writer iterates."""
    plan = reading.plan
    ticks = action_times(reading, spec)
    state, action = _states(reading, ticks, spec), _actions(reading, ticks, spec)
    tolerance_ns = round(options.frame_tolerance_s * 1e9)
    frames = {camera.key: _frames(reading.reader, plan.topics.cameras[camera.key],
                                  _frame_keys(reading, ticks, camera.key, tolerance_ns), camera.resolution)
              for camera in spec.cameras}
    return Episode(task=plan.task, state=state.astype(np.float32), action=action.astype(np.float32), frames=frames,
                   name=str(plan.path), success=plan.success)


def convert_bags(bags: Sequence[Path], output: Path, spec: EmbodimentSpec, options: DatasetOptions) -> dict[str, Any]:
    """Convert ``bags`` (one episode each) into a dataset at ``output``; returns the writer's summary plus
    bag seconds, conversion seconds, the rate and refused messages.

    Raises:
        DatasetError, EvalError, rosbags ReaderError, FileExistsError: before any long work (module docstring).
        ValueError: no episode could be written (every reason listed); nothing is left at ``output``.
    """
    started = time.perf_counter()
    output = Path(output)
    marked = [mark for mark in SKIPPED_BY_LOADER if mark in str(output.resolve())]
    if marked:
        raise DatasetError(f"{output}: the official DreamZero loader silently skips dataset paths containing "
                           f"{marked}; choose another output folder")
    check_output(output, options.overwrite)
    plans = plan_bags(bags, spec, options)
    refused: Counter = Counter()

    def episodes() -> Iterator[Episode | SkippedEpisode]:
        for plan in tqdm(plans, unit="bag", desc="dataset", disable=not options.progress):
            if options.only_success and plan.success is False:
                yield SkippedEpisode(str(plan.path),
                                     EpisodeError("unsuccessful", f"{EPISODE_METADATA} says success: false"))
                continue
            with Reader(plan.path) as reader:  # open until the writer has taken the episode's frames
                reading = BagReading(reader, plan, spec, options)
                refused.update(reading.refused)
                try:
                    episode: Episode | SkippedEpisode = bag_episode(reading, spec, options)
                except EpisodeError as error:
                    episode = SkippedEpisode(str(plan.path), error)
                yield episode

    summary = write_lerobot_dataset(output, episodes(), spec, overwrite=options.overwrite)
    bag_s = sum(plan.duration_s for plan in plans)
    seconds = time.perf_counter() - started
    return {**summary, "bags": len(plans), "bag_seconds": round(bag_s, 3), "dataset_seconds": round(
        summary["frames"] / summary["fps"], 3), "conversion_seconds": round(seconds, 3),
        "conversion_seconds_per_bag_minute": round(seconds / (bag_s / 60.0), 3) if bag_s > 0 else None,
        "refused_messages": dict(refused)}


__all__ = ["BagPlan", "BagReading", "DatasetError", "DatasetOptions", "EPISODE_METADATA", "EpisodeMetadata",
           "action_times", "bag_episode", "convert_bags", "plan_bags", "read_episode_metadata"]
