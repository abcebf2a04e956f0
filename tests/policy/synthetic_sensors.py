"""A node that plays a robot's sensors for policy-node tests: cameras at their own rates with jittered
stamps (Image or CompressedImage as the embodiment says) and joint states from a known function of
time, so a test can check which state a chunk was anchored to. The joints move slowly around the
middle of their URDF range (the nodes refuse readings outside it or faster than the URDF velocity).
Cameras can be stopped and joint values poisoned to exercise the fault paths."""
from __future__ import annotations

import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_policy.conversions import ns_to_stamp, rgb_to_compressed, rgb_to_image
from dreamzero_policy.qos import camera_qos, reliable_qos

JITTER_NS = 5_000_000  # +-5 ms on camera stamps


def _ranges(spec: EmbodimentSpec) -> np.ndarray:
    """float64[S, 2]: each state joint's (lower, upper) in ROS units: the URDF's, or the unit map's ROS range."""
    from dreamzero_embodiments.robot_description import load_joint_limits
    from dreamzero_policy.paths import share_dir

    urdf = load_joint_limits(share_dir() / "urdf" / spec.robot_description)
    ranges = {name: (urdf[name].lower, urdf[name].upper) for name in spec.state_names if name in urdf}
    for key in (k for k in spec.state if k.unit_map is not None):
        ranges.update({name: sorted(key.unit_map.ros) for name in key.names})
    return np.array([ranges[name] for name in spec.state_names], dtype=np.float64)


def joint_values(ranges: np.ndarray, t_ns: int) -> np.ndarray:
    """Positions at time ``t_ns``: distinct per joint, changing with time, within the ranges (about 0.1 range/s)."""
    index = np.arange(len(ranges))
    lower, upper = ranges[:, 0], ranges[:, 1]
    return (lower + upper) / 2 + 0.1 * (upper - lower) * np.sin(t_ns * 1e-9 + index)


class SyntheticSensors(Node):
    def __init__(self, name: str, spec: EmbodimentSpec, camera_rates_hz: dict[str, float], state_rate_hz: float = 50.0,
                 camera_types: dict[str, str] | None = None, namespace: str = "") -> None:
        super().__init__(name, namespace=namespace)
        self.spec = spec
        self.rng = np.random.default_rng(0)
        self.stopped: set[str] = set()
        self.poisoned: str | None = None  # this joint reads NaN
        self.glitches: dict[str, float] = {}  # these joints read these values
        self.oversized: set[str] = set()  # these cameras send a 2000x2000 frame
        self.published_states: list[tuple[int, np.ndarray]] = []
        self._lock = threading.Lock()
        self.state_names = list(spec.state_names) + ["unrelated_joint"]  # extra joints must be ignored
        self._ranges = np.concatenate([_ranges(spec), [[0.0, 1.0]]])
        # A few random frames per camera, cycled: cheap to publish, still different from frame to frame.
        self._frames = {c.key: [self.rng.integers(0, 256, (*c.resolution, 3), dtype=np.uint8) for _ in range(4)]
                        for c in spec.cameras}
        self._frame_count = 0
        self._state_pub = self.create_publisher(JointState, spec.joint_states_topic, reliable_qos())
        self.create_timer(1.0 / state_rate_hz, self._publish_state)
        for camera in spec.cameras:
            kind = (camera_types or {}).get(camera.key, camera.type)
            publisher = self.create_publisher(CompressedImage if kind == "CompressedImage" else Image, camera.topic,
                                              camera_qos("best_effort"))
            self.create_timer(1.0 / camera_rates_hz[camera.key],
                              lambda c=camera, p=publisher, k=kind: self._publish_frame(c, p, k))

    def _publish_frame(self, camera, publisher, kind: str) -> None:
        if camera.key in self.stopped:
            return
        now = self.get_clock().now().nanoseconds
        stamp = now - int(self.rng.integers(0, JITTER_NS))
        self._frame_count += 1
        frame = self._frames[camera.key][self._frame_count % 4]
        if camera.key in self.oversized:
            frame = np.zeros((2000, 2000, 3), np.uint8)
        message = rgb_to_compressed(frame, stamp) if kind == "CompressedImage" else rgb_to_image(frame, stamp)
        publisher.publish(message)

    def _publish_state(self) -> None:
        now = self.get_clock().now().nanoseconds
        positions = joint_values(self._ranges, now)
        if self.poisoned is not None:
            positions[self.state_names.index(self.poisoned)] = np.nan
        for name, value in self.glitches.items():
            positions[self.state_names.index(name)] = value
        with self._lock:
            self.published_states.append((now, positions))
        message = JointState(name=self.state_names, position=positions.tolist())
        message.header.stamp = ns_to_stamp(now)
        self._state_pub.publish(message)

    def state_at(self, stamp_ns: int) -> np.ndarray:
        """The positions published with exactly this stamp (raw ROS units, joint order of the message)."""
        with self._lock:
            return next(p for s, p in self.published_states if s == stamp_ns)

    def states(self) -> list[tuple[int, np.ndarray]]:
        with self._lock:
            return list(self.published_states)
