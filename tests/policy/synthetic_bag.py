"""A DROID bag written directly with rosbags, as ``ros2 bag record`` lays it out, with a known motion.

Cameras at 15 Hz on the YAML's topics, offered best effort (sensor data QoS): the two exterior ones
as rgb8 Image, the wrist one as jpeg CompressedImage. Joint states at 30 Hz on the same time grid
(every second one shares a camera stamp) follow :func:`arm_positions`, a straight line per joint; the
gripper stays at :data:`GRIPPER_RAD`. Arm commands at 15 Hz carry the same line. Receive times are
the header stamps plus :data:`RECEIVE_DELAY_NS` (commands 1 ms less, so a command lands just before
its step's time). Options for ``dreamzero dataset`` tests: commands on every controller group's topic
(``command_groups``: the gripper follows :func:`gripper_command_rad`, a step every second), arm commands
that lead the measured line by ``command_lead_s`` (a controller tracking its target), joint states at
another rate (``joint_hz``, so action times fall between samples). Two backends that know the motion
test the evaluation's timing: the oracle predicts it exactly, the hold backend predicts no motion.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
from rosbags.rosbag2 import StoragePlugin, Writer

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments.stitching import resize_to
from dreamzero_policy.backends.base import BackendPrediction, Observation
from dreamzero_policy.bags.bag_types import typestore_for

SPEC = load_embodiment("droid")
START_NS = 1_700_000_000 * 10**9
CAMERA_HZ = 15
JOINT_HZ = 30
RECEIVE_DELAY_NS = 2_000_000
READY = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.6, 0.8])
VELOCITY = np.array([0.05, -0.04, 0.03, 0.06, -0.05, 0.04, 0.1])  # rad/s
GRIPPER_RAD = 0.2
GRIPPER_COMMANDS_RAD = (0.0, 0.6)  # open, then closed to 0.6 rad, alternating every second
IMAGE_SIZE = (90, 160)  # the assembler resizes to the checkpoint's 180x320
_ZERO = QosTime(0, 0)
BEST_EFFORT = Qos(QosHistory.KEEP_LAST, 5, QosReliability.BEST_EFFORT, QosDurability.VOLATILE, _ZERO, _ZERO,
                  QosLiveliness.AUTOMATIC, _ZERO, False)
RELIABLE = BEST_EFFORT._replace(depth=10, reliability=QosReliability.RELIABLE)


def arm_positions(t_ns: int | np.ndarray) -> np.ndarray:
    """float64[..., 7] arm joint positions at bag time ``t_ns``."""
    seconds = (np.asarray(t_ns, dtype=np.int64) - START_NS) * 1e-9
    return READY + np.multiply.outer(seconds, VELOCITY)


def gripper_command_rad(t_ns: int | np.ndarray) -> np.ndarray:
    """float64[...]: the commanded gripper position at bag time ``t_ns`` (a step every second)."""
    seconds = (np.asarray(t_ns, dtype=np.int64) - START_NS) * 1e-9
    return np.where(np.floor(seconds) % 2 == 0, *GRIPPER_COMMANDS_RAD)


def _stamp(typestore, t_ns: int):
    return typestore.types["builtin_interfaces/msg/Time"](sec=t_ns // 10**9, nanosec=t_ns % 10**9)


def _header(typestore, t_ns: int, frame_id: str):
    return typestore.types["std_msgs/msg/Header"](stamp=_stamp(typestore, t_ns), frame_id=frame_id)


def _image(index: int, size: tuple[int, int] = IMAGE_SIZE) -> np.ndarray:
    """A frame whose content changes with time: a bright column moving across a gradient."""
    height, width = size
    rgb = np.zeros((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = np.linspace(0, 200, width, dtype=np.uint8)[None, :]
    rgb[:, (index * 4) % width, :] = 255
    return rgb


def write_droid_bag(path: Path, duration_s: float, storage: str = "sqlite3",
                    image_size: tuple[int, int] = IMAGE_SIZE,
                    joint_names: tuple[str, ...] = SPEC.state_names,
                    stamp_jump: tuple[float, float, float] | None = None, command_groups: tuple[str, ...] = ("arm",),
                    command_lead_s: float = 0.0, joint_hz: float = JOINT_HZ) -> dict[str, int]:
    """Write the bag (see module docstring) with ``joint_names`` in the joint states; returns the message
    count per topic. ``stamp_jump`` (from_s, to_s, jump_s): the header stamps of messages between from_s
    and to_s into the bag are jump_s ahead of their time (a clock that stepped and came back).
    ``command_groups``: the controller groups (YAML names) whose command topics are written, at the camera
    rate; the arm carries ``arm_positions(t + command_lead_s)``."""

    def stamp_of(t_ns: int) -> int:
        if stamp_jump is not None and stamp_jump[0] <= (t_ns - START_NS) * 1e-9 < stamp_jump[1]:
            return t_ns + round(stamp_jump[2] * 1e9)
        return t_ns

    import cv2

    typestore = typestore_for(["sensor_msgs/msg/Image"])
    types = typestore.types
    plugin = StoragePlugin.SQLITE3 if storage == "sqlite3" else StoragePlugin.MCAP
    counts: dict[str, int] = {}
    messages: list[tuple[int, str, object, str]] = []  # receive time, topic, message, type
    for i in range(int(duration_s * CAMERA_HZ) + 1):
        t_ns = START_NS + round(i * 1e9 / CAMERA_HZ)
        for camera in SPEC.cameras:
            header = _header(typestore, stamp_of(t_ns), camera.key)
            rgb = _image(i, image_size)
            if camera.key == "wrist_image_left":
                ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                msg = types["sensor_msgs/msg/CompressedImage"](header=header, format="jpeg",
                                                                data=np.frombuffer(jpeg.tobytes(), dtype=np.uint8))
                messages.append((t_ns + RECEIVE_DELAY_NS, f"/{camera.topic}/compressed", msg,
                                 "sensor_msgs/msg/CompressedImage"))
            else:
                msg = types["sensor_msgs/msg/Image"](header=header, height=rgb.shape[0], width=rgb.shape[1],
                                                     encoding="rgb8", is_bigendian=0, step=rgb.shape[1] * 3,
                                                     data=rgb.reshape(-1))
                messages.append((t_ns + RECEIVE_DELAY_NS, f"/{camera.topic}", msg, "sensor_msgs/msg/Image"))
        for group in SPEC.controller_groups:
            if group.name in command_groups:
                data = (arm_positions(t_ns + round(command_lead_s * 1e9)) if group.name == "arm"
                        else np.atleast_1d(gripper_command_rad(t_ns)))
                command = types["std_msgs/msg/Float64MultiArray"](
                    layout=types["std_msgs/msg/MultiArrayLayout"](dim=[], data_offset=0), data=data)
                messages.append((t_ns + RECEIVE_DELAY_NS - 1_000_000, f"/{group.command_topic}", command,
                                 "std_msgs/msg/Float64MultiArray"))
    for j in range(int(duration_s * joint_hz) + 1):
        t_ns = START_NS + round(j * 1e9 / joint_hz)
        state = types["sensor_msgs/msg/JointState"](
            header=_header(typestore, stamp_of(t_ns), ""), name=list(joint_names),
            position=np.append(arm_positions(t_ns), GRIPPER_RAD), velocity=np.zeros(0), effort=np.zeros(0))
        messages.append((t_ns + RECEIVE_DELAY_NS, "/joint_states", state, "sensor_msgs/msg/JointState"))
    messages.sort(key=lambda item: item[0])
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        connections = {}
        for receive_ns, topic, msg, msgtype in messages:
            if topic not in connections:
                qos = BEST_EFFORT if "camera" in topic else RELIABLE
                connections[topic] = writer.add_connection(topic, msgtype, typestore=typestore,
                                                           offered_qos_profiles=[qos])
            writer.write(connections[topic], receive_ns, typestore.serialize_cdr(msg, msgtype))
            counts[topic] = counts.get(topic, 0) + 1
    return counts


def _arm_relative(observation: Observation, future_ns: np.ndarray) -> np.ndarray:
    return arm_positions(future_ns) - observation.state[:7]


class KnownMotionBackend:
    """``oracle``: relative arm actions reaching the recorded line exactly at t_obs + k dt; ``hold``:
    relative zeros (no motion). The gripper is absolute, at the recorded value (model units)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.calls: list[Observation] = []
        self.resets = 0

    def reset(self, prompt: str, session_id: str) -> None:
        self.resets += 1

    def infer(self, observation: Observation) -> BackendPrediction:
        self.calls.append(observation)
        steps = observation.t_obs_ns + np.round(np.arange(SPEC.timing.horizon) * SPEC.timing.dt * 1e9).astype(np.int64)
        arm = _arm_relative(observation, steps) if self.mode == "oracle" else np.zeros((len(steps), 7))
        gripper = np.full((len(steps), 1), GRIPPER_RAD / 0.81)
        frames = np.stack([resize_to(_image(0), (88, 160))] * 2)
        return BackendPrediction(actions=np.concatenate([arm, gripper], axis=1),
                                 relative=np.array([True] * 7 + [False]), frames=frames)

    def close(self) -> None:
        pass
