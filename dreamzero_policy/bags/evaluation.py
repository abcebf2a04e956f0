"""``dreamzero eval-bag``: what the model would have done on a recorded bag (offline, open loop).

The bag (``ros2 bag record`` or ``dreamzero record``; sqlite3 or MCAP) is decoded exactly as the
live nodes decode (``rclpy`` deserialisation + ``conversions``). Time is the bag's own: the
evaluation clock is the newest camera header stamp (the sim time of a simulated robot, about the
receive time of a real one), never the wall clock, so a slow model sees the same observations as a
fast one. Two passes:

1. the joint states and commands of the whole bag are read and sorted by stamp (a bag's receive
   order need not follow the stamps when its recorder lagged);
2. the cameras are read in order into the policy node's ``ObservationAssembler``. When every camera
   has a frame at or after the next query time (the first: the first frame's stamp; then
   ``execute_steps`` action steps after the previous t_obs), the joint states up to the clock plus
   ``state_tolerance_s`` are fed in, one query is assembled and the backend runs synchronously: the
   bag waits for the model (open loop: the recorded robot never sees the prediction). How far each frame
   used is from the time it was wanted for is kept per camera (``AssembledObservation.wanted_stamps``:
   a wanted time older than the camera's history counts from its oldest frame, the documented left-pad),
   so a camera gap bridged within ``frame_tolerance_s`` shows in the report;
3. the predicted chunk goes to absolute targets in ROS units exactly as the adapter converts it
   (``actions.anchor_from_state``, ``actions.chunk_to_ros``);
4. at the end each chunk step k is compared with the recorded joint states at t_obs + k dt
   (interpolated) and with the recorded controller commands then (held)
   (``dreamzero_embodiments.evaluation``). Commands carry no header: their receive time is moved
   into the header-stamp time base by the newest joint state's receive-minus-stamp offset.

Predicted video frames (backends that decode them) are paired with the recorded mosaic at their time
(t_obs + (i + 1) frame_stride dt, as the policy node stamps them) and written side by side to an MP4
as the bag goes by. A query that cannot be assembled (a camera missing or stale, no joint state near
t_obs) is counted by cause and retried at the next frame; a backend error ends the evaluation with
that error. As in the policy node, a frame or joint state stamped more than ``max_future_stamp_s``
after it was received (bag time) is refused and counted, so a clock that jumped ahead cannot move the
evaluation clock or become an anchor. Topics come from the embodiment YAML under ``namespace``, or from ``camera_topics``.
"""
from __future__ import annotations

import re
import time
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from tqdm import tqdm

from dreamzero_embodiments.actions import anchor_from_state, chunk_to_ros
from dreamzero_embodiments.assembly import ObservationAssembler, ObservationError
from dreamzero_embodiments.evaluation import hold, interpolate, step_times_ns
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.stitching import stitch_frames
from dreamzero_policy.backends.base import Observation, PolicyBackend, wanted_frame_mode
from dreamzero_policy.bags.bag_types import message_class
from dreamzero_policy.conversions import command_values, image_to_rgb, joint_state_arrays, stamp_to_ns
from dreamzero_policy.video import Mp4Writer, side_by_side

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
JOINT_STATE_TYPE = "sensor_msgs/msg/JointState"
COMMAND_TYPE = "std_msgs/msg/Float64MultiArray"
SESSION_ID = "eval-bag"


class EvalError(ValueError):
    """The bag cannot be evaluated for this embodiment; the message names the topic or type and what the bag has."""


@dataclass(frozen=True)
class EvalOptions:
    """See the module docstring. ``execute_steps`` 0: one query per chunk horizon. ``max_chunks`` 0: no limit.
    The tolerances are the policy node's parameters of the same names."""

    prompt: str = ""
    execute_steps: int = 0
    namespace: str = ""
    camera_topics: dict[str, str] = field(default_factory=dict)
    frame_mode: str = "auto"
    camera_timeout_s: float = 0.5
    frame_tolerance_s: float = 0.15
    state_tolerance_s: float = 0.1
    max_future_stamp_s: float = 0.2
    max_chunks: int = 0
    progress: bool = True


@dataclass(frozen=True)
class BagTopics:
    """Where the embodiment's data is in the bag: camera key -> topic, the joint states, and the
    recorded command topic of each joint controller group that the bag has."""

    cameras: dict[str, str]
    joint_states: str
    commands: dict[str, str]


def absolute_topic(namespace: str, topic: str) -> str:
    """``topic`` under ``namespace`` with a leading slash, as a bag names it (an absolute topic stays)."""
    if topic.startswith("/"):
        return topic
    return "/" + "/".join(part for part in (namespace.strip("/"), topic) if part)


def find_topics(types: dict[str, str], spec: EmbodimentSpec, options: EvalOptions) -> BagTopics:
    """The embodiment's topics in a bag with ``types`` (topic -> message type); raises EvalError naming
    every missing or mistyped camera / joint-state topic and listing the bag's topics."""
    unknown = sorted(set(options.camera_topics) - {c.key for c in spec.cameras})
    if unknown:
        raise EvalError(f"camera_topics names unknown cameras {unknown}; {spec.name} has {[c.key for c in spec.cameras]}")
    cameras = {c.key: absolute_topic(options.namespace, options.camera_topics.get(c.key, c.topic)) for c in spec.cameras}
    joint_states = absolute_topic(options.namespace, spec.joint_states_topic)
    problems = [f"camera {key}: {topic} is {'missing' if topic not in types else types[topic]}"
                for key, topic in cameras.items() if types.get(topic) not in IMAGE_TYPES]
    if types.get(joint_states) != JOINT_STATE_TYPE:
        problems.append(f"joint states: {joint_states} is {types.get(joint_states, 'missing')}")
    if problems:
        listing = ", ".join(f"{t} ({m})" for t, m in sorted(types.items()))
        raise EvalError(f"bag lacks what embodiment {spec.name!r} needs: {'; '.join(problems)}. The bag has: {listing}. "
                        f"Use --namespace or --camera-topic key=topic if it was recorded under other names")
    commands = {g.name: absolute_topic(options.namespace, g.command_topic) for g in spec.controller_groups
                if g.kind == "joints" and types.get(absolute_topic(options.namespace, g.command_topic)) == COMMAND_TYPE}
    return BagTopics(cameras, joint_states, commands)


@dataclass
class EvalResult:
    """What one evaluation produced; arrays are in the embodiment's action order, ROS units.

    Attributes:
        t_obs_ns: int64[N] chunk anchors. predicted: float64[N, H, D] absolute targets.
        state_reference / command_reference: float64[N, H, D] recorded joint states / commands at each
            step's time, NaN where the bag has none. latencies_s: float64[N] wall seconds per backend call.
        frame_offsets_ns: camera key -> int64[N T] |frame stamp - wanted stamp| of every frame the N queries
            used (see module docstring, step 2).
        state_series: dimension -> (int64 stamps, float64 values) of the recorded joint states.
        blocked: query attempts that could not be assembled, by cause; blocked_example: cause -> one full
            message. video_frames: frames written to the MP4. messages: messages read.
        topics: what was read.
    """

    t_obs_ns: np.ndarray
    predicted: np.ndarray
    state_reference: np.ndarray
    command_reference: np.ndarray
    latencies_s: np.ndarray
    frame_offsets_ns: dict[str, np.ndarray]
    state_series: dict[str, tuple[np.ndarray, np.ndarray]]
    blocked: Counter
    blocked_example: dict[str, str]
    video_frames: int
    messages: int
    topics: BagTopics


class RecordedRobot:
    """Pass 1: the joint states and commands of the whole bag, sorted by stamp (about 8 bytes per value).
    Also read by ``dreamzero dataset`` (:mod:`dreamzero_policy.bags.dataset`). A command topic may carry
    ``Float64MultiArray`` (joint groups) or ``Twist`` (base groups), read by ``conversions.command_values``.

    Joint states are read before the cameras because a bag's receive order need not follow the header
    stamps (a recorder whose executor lags receives topics in bursts); sorted, they can be fed to the
    assembler up to any time in order."""

    def __init__(self, spec: EmbodimentSpec, topics: BagTopics, max_future_stamp_ns: int) -> None:
        self.max_future_stamp_ns = max_future_stamp_ns
        self.columns = tuple(dict.fromkeys(spec.state_names + spec.action_names))
        self._known = frozenset(self.columns)
        self.topics = topics
        self.group_of = {topic: name for name, topic in topics.commands.items()}
        self.width = {g.name: len(g.names) for g in spec.controller_groups}
        self._stamps, self._values = array("q"), array("d")
        self._command_stamps = {name: array("q") for name in topics.commands}
        self._command_values = {name: array("d") for name in topics.commands}
        self._receive_offset_ns: int | None = None  # receive time - header stamp of the newest joint state
        self.bad: Counter = Counter()
        self.bad_example: dict[str, str] = {}
        self.other_names: dict[str, None] = {}  # joint names in the messages that the embodiment does not have

    def add(self, topic: str, msg: object, receive_ns: int) -> None:
        if topic == self.topics.joint_states:
            try:
                names, positions = joint_state_arrays(msg)
            except ValueError as error:
                self.bad["bad joint state"] += 1
                self.bad_example.setdefault("bad joint state", str(error))
                return
            row = dict(zip(names, positions))
            self.other_names.update(dict.fromkeys(n for n in names if n not in self._known))
            stamp = stamp_to_ns(msg.header.stamp)
            if stamp - receive_ns > self.max_future_stamp_ns:
                cause = "joint state stamped ahead of its receive time"
                self.bad[cause] += 1
                self.bad_example.setdefault(cause, f"stamped {(stamp - receive_ns) * 1e-9:.3f} s after it was "
                                                   f"received (max_future_stamp_s)")
                return
            self._stamps.append(stamp)
            self._values.extend(row.get(name, np.nan) for name in self.columns)
            self._receive_offset_ns = receive_ns - stamp
        elif self._receive_offset_ns is not None:
            group = self.group_of[topic]
            values = command_values(msg)
            if len(values) == self.width[group]:  # a malformed command says nothing
                self._command_stamps[group].append(receive_ns - self._receive_offset_ns)
                self._command_values[group].extend(values)

    def finish(self) -> None:
        """Sort everything by stamp; afterwards ``stamps``, ``values`` and ``commands`` are arrays."""
        stamps = np.frombuffer(self._stamps, dtype=np.int64)
        order = np.argsort(stamps, kind="stable")
        self.stamps = stamps[order]
        self.values = np.frombuffer(self._values, dtype=np.float64).reshape(len(stamps), len(self.columns))[order]
        self.commands = {}
        for group, raw_stamps in self._command_stamps.items():
            group_stamps = np.frombuffer(raw_stamps, dtype=np.int64)
            order = np.argsort(group_stamps, kind="stable")
            values = np.frombuffer(self._command_values[group], dtype=np.float64).reshape(len(group_stamps),
                                                                                          self.width[group])
            self.commands[group] = (group_stamps[order], values[order])

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(stamps, values) of one joint where the joint states carry it."""
        values = self.values[:, self.columns.index(name)]
        known = np.isfinite(values)
        return self.stamps[known], values[known]


class _Run:
    """Pass 2 over the cameras (see module docstring), fed with the joint states of pass 1."""

    def __init__(self, spec: EmbodimentSpec, backend: PolicyBackend, options: EvalOptions, recorded: RecordedRobot,
                 video: Mp4Writer | None) -> None:
        self.spec, self.backend, self.options, self.recorded, self.video = spec, backend, options, recorded, video
        self.assembler = ObservationAssembler(spec, frame_mode=wanted_frame_mode(backend, options.frame_mode),
                                              camera_timeout_s=options.camera_timeout_s,
                                              frame_tolerance_s=options.frame_tolerance_s,
                                              state_tolerance_s=options.state_tolerance_s)
        self.camera_of = {topic: key for key, topic in recorded.topics.cameras.items()}
        self.every_ns = round((options.execute_steps or spec.timing.horizon) * spec.timing.dt * 1e9)
        self.clock_ns = -1
        self.next_query_ns: int | None = None  # set by the first frame, then by each chunk
        self.newest_frame_ns: dict[str, int] = {}
        self.states_fed = 0
        self.latest: dict[str, np.ndarray] = {}
        self.pending_video: list[tuple[int, np.ndarray]] = []
        self.t_obs: list[int] = []
        self.predicted: list[np.ndarray] = []
        self.latencies: list[float] = []
        self.frame_offsets: dict[str, list[int]] = {camera.key: [] for camera in spec.cameras}
        self.blocked: Counter = Counter(recorded.bad)
        self.blocked_example: dict[str, str] = dict(recorded.bad_example)

    def on_frame(self, topic: str, msg: object, receive_ns: int) -> None:
        key, stamp = self.camera_of[topic], stamp_to_ns(msg.header.stamp)
        if stamp - receive_ns > self.recorded.max_future_stamp_ns:  # would move the evaluation clock ahead
            self._block("frame stamped ahead of its receive time",
                        ValueError(f"{topic}: stamped {(stamp - receive_ns) * 1e-9:.3f} s after it was received "
                                   f"(max_future_stamp_s)"))
            return
        try:
            rgb = image_to_rgb(msg)
        except ValueError as error:
            self._block(f"undecodable image on {topic}", error)
            return
        self.assembler.push_frame(key, stamp, rgb)
        self.latest[key] = rgb
        self.newest_frame_ns[key] = max(stamp, self.newest_frame_ns.get(key, stamp))
        self.clock_ns = max(self.clock_ns, stamp)
        self._write_video()
        if self.next_query_ns is None:
            self.next_query_ns = self.clock_ns
        if self._due():
            self._feed_states(self.clock_ns + self.assembler.state_tolerance_ns)
            self._query()

    def _due(self) -> bool:
        """Due once every camera has a frame at or after the due time (so t_obs lands on it, not on the camera
        set before), or a camera timeout after it (the assembler then names the camera that is missing)."""
        if self.clock_ns >= self.next_query_ns + self.assembler.camera_timeout_ns:
            return True
        return len(self.newest_frame_ns) == len(self.spec.cameras) and \
            min(self.newest_frame_ns.values()) >= self.next_query_ns

    def _feed_states(self, until_ns: int) -> None:
        """Push the recorded joint states stamped up to ``until_ns`` into the assembler, in stamp order."""
        recorded = self.recorded
        stop = int(np.searchsorted(recorded.stamps, until_ns, side="right"))
        for i in range(self.states_fed, stop):
            known = np.isfinite(recorded.values[i])
            self.assembler.push_state(int(recorded.stamps[i]),
                                      [n for n, k in zip(recorded.columns, known) if k], recorded.values[i][known])
        self.states_fed = max(self.states_fed, stop)

    def _block(self, cause: str, error: Exception) -> None:
        self.blocked[cause] += 1
        example = str(error)
        if "missing joints" in example and self.recorded.other_names:  # only the embodiment's joints are kept
            example += (f"; the bag's joint states carry {list(self.recorded.other_names)}, which are not joints "
                        f"of {self.spec.name}: rename its joints with --joint-name-map (e.g. 'panda_*=fr3_*')")
        self.blocked_example.setdefault(cause, example)

    def _query(self) -> None:
        first = not self.t_obs
        self.assembler.set_frame_mode(wanted_frame_mode(self.backend, self.options.frame_mode))  # auto: the server's
        try:
            assembled = self.assembler.assemble(self.clock_ns, first_of_session=first)
        except ObservationError as error:
            self._block(re.sub(r"\d+(\.\d+)?", "#", str(error).split("(")[0]).strip(" :;"), error)
            return
        observation = Observation(t_obs_ns=assembled.t_obs_ns, views=assembled.views, state=assembled.state,
                                  prompt=self.options.prompt, session_id=SESSION_ID, first_of_session=first)
        started = time.perf_counter()
        if first:
            self.backend.reset(self.options.prompt, SESSION_ID)
        prediction = self.backend.infer(observation)
        self.latencies.append(time.perf_counter() - started)
        relative = np.asarray(prediction.relative, dtype=bool)
        self.predicted.append(chunk_to_ros(prediction.actions, relative,
                                           anchor_from_state(assembled.state, relative, self.spec),
                                           self.spec.action_names, self.spec))
        self.t_obs.append(assembled.t_obs_ns)
        for key, used in assembled.frame_stamps.items():
            self.frame_offsets[key] += np.abs(used - assembled.wanted_stamps[key]).tolist()
        self.next_query_ns = assembled.t_obs_ns + self.every_ns
        if prediction.frames is not None:
            step_ns = round(self.spec.timing.frame_stride * self.spec.timing.dt * 1e9)
            self.pending_video += [(assembled.t_obs_ns + (i + 1) * step_ns, f) for i, f in enumerate(prediction.frames)]

    def _write_video(self, flush: bool = False) -> None:
        """Pair predicted frames whose time has come with the recorded mosaic now."""
        if self.video is None or len(self.latest) < len(self.spec.cameras):
            return
        due = [item for item in self.pending_video if flush or item[0] <= self.clock_ns]
        if not due:
            return
        self.pending_video = self.pending_video[len(due):]
        recorded = stitch_frames({key: rgb[None] for key, rgb in self.latest.items()}, self.spec)[0]
        for _, frame in due:
            self.video.write(side_by_side(recorded, frame))

    def done(self) -> bool:
        return 0 < self.options.max_chunks <= len(self.t_obs)

    def result(self, messages: int) -> EvalResult:
        self._write_video(flush=True)
        spec, recorded = self.spec, self.recorded
        horizon, width = spec.timing.horizon, len(spec.action_names)
        t_obs = np.array(self.t_obs, dtype=np.int64)
        times = np.array([step_times_ns(t, horizon, spec.timing.dt) for t in t_obs], dtype=np.int64).reshape(-1)
        series = {name: recorded.series(name) for name in spec.action_names}
        state_reference = np.stack([interpolate(times, *series[name][:1], series[name][1][:, None])[:, 0]
                                    for name in spec.action_names], axis=1)
        command_reference = np.full((len(times), width), np.nan)
        index = {name: d for d, name in enumerate(spec.action_names)}
        for group in spec.controller_groups:
            if group.name in recorded.commands and len(recorded.commands[group.name][0]):
                held = hold(times, *recorded.commands[group.name])
                for j, name in enumerate(group.names):
                    command_reference[:, index[name]] = held[:, j]
        shape = (len(t_obs), horizon, width)
        return EvalResult(t_obs_ns=t_obs, predicted=np.array(self.predicted).reshape(shape),
                          state_reference=state_reference.reshape(shape),
                          command_reference=command_reference.reshape(shape),
                          latencies_s=np.array(self.latencies),
                          frame_offsets_ns={key: np.array(v, dtype=np.int64) for key, v in self.frame_offsets.items()},
                          state_series=series, blocked=self.blocked,
                          blocked_example=self.blocked_example,
                          video_frames=self.video.frames if self.video is not None else 0, messages=messages,
                          topics=recorded.topics)


def _checked_topics(reader: Reader, spec: EmbodimentSpec, options: EvalOptions) -> BagTopics:
    if not 0 <= options.execute_steps <= spec.timing.horizon:
        raise EvalError(f"execute_steps must be in 0..{spec.timing.horizon} (0: the horizon), got {options.execute_steps}")
    return find_topics({c.topic: c.msgtype for c in reader.connections}, spec, options)


def check_bag(path: Path, spec: EmbodimentSpec, options: EvalOptions) -> BagTopics:
    """What :func:`evaluate_bag` will read, or the EvalError it would raise; cheap (metadata only), so a
    command can refuse a bag before it loads a model."""
    with Reader(path) as reader:
        return _checked_topics(reader, spec, options)


def evaluate_bag(path: Path, spec: EmbodimentSpec, backend: PolicyBackend, options: EvalOptions,
                 video: Mp4Writer | None = None) -> EvalResult:
    """Run ``backend`` over the bag at ``path`` (see module docstring); raises EvalError on a bag that
    lacks the embodiment's topics, and whatever the backend raises."""
    with Reader(path) as reader:
        topics = _checked_topics(reader, spec, options)
        cameras = [c for c in reader.connections if c.topic in set(topics.cameras.values())]
        robot = [c for c in reader.connections if c.topic in {topics.joint_states, *topics.commands.values()}]
        recorded = RecordedRobot(spec, topics, round(options.max_future_stamp_s * 1e9))
        messages = 0
        with tqdm(total=sum(c.msgcount for c in cameras + robot), unit="msg", disable=not options.progress,
                  desc=f"eval-bag {path.name}") as progress:
            for connection, receive_ns, raw in reader.messages(robot):
                recorded.add(connection.topic, deserialize_message(raw, message_class(connection.msgtype)), receive_ns)
                messages += 1
                progress.update()
            recorded.finish()
            run = _Run(spec, backend, options, recorded, video)
            for connection, receive_ns, raw in reader.messages(cameras):
                run.on_frame(connection.topic, deserialize_message(raw, message_class(connection.msgtype)), receive_ns)
                messages += 1
                progress.update()
                progress.set_postfix(chunks=len(run.t_obs), refresh=False)
                if run.done():
                    break
        return run.result(messages)
