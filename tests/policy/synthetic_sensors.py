"""A node that plays a robot's sensors for policy-node tests: cameras at their own rates with jittered
stamps (Image or CompressedImage as the embodiment says) and joint states from a known function of
time, so a test can check which state a chunk was anchored to. Cameras can be stopped and joint
values poisoned to exercise the fault paths."""
from __future__ import annotations

import threading

import numpy as np
from rclpy.node import Node
from sensor_msgs.msg import CompressedImage, Image, JointState

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_policy.conversions import ns_to_stamp, rgb_to_compressed, rgb_to_image
from dreamzero_policy.qos import camera_qos, reliable_qos

JITTER_NS = 5_000_000  # +-5 ms on camera stamps


def joint_value(index: int, t_ns: int) -> float:
    """Position of joint ``index`` at time ``t_ns``: distinct per joint and changing with time."""
    return 0.1 * (index + 1) + 0.2 * np.sin(t_ns * 1e-9 + index)


class SyntheticSensors(Node):
    def __init__(self, name: str, spec: EmbodimentSpec, camera_rates_hz: dict[str, float], state_rate_hz: float = 50.0,
                 camera_types: dict[str, str] | None = None, namespace: str = "") -> None:
        super().__init__(name, namespace=namespace)
        self.spec = spec
        self.rng = np.random.default_rng(0)
        self.stopped: set[str] = set()
        self.poisoned: str | None = None
        self.published_states: list[tuple[int, np.ndarray]] = []
        self._lock = threading.Lock()
        self.state_names = list(spec.state_names) + ["unrelated_joint"]  # extra joints must be ignored
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
        message = rgb_to_compressed(frame, stamp) if kind == "CompressedImage" else rgb_to_image(frame, stamp)
        publisher.publish(message)

    def _publish_state(self) -> None:
        now = self.get_clock().now().nanoseconds
        positions = np.array([joint_value(i, now) for i in range(len(self.state_names))])
        if self.poisoned is not None:
            positions[self.state_names.index(self.poisoned)] = np.nan
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
