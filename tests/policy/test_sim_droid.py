"""sim_droid in-process: joint states and cameras on the YAML's topics, commands move the simulated arm,
malformed commands are dropped, and the simulated clock.

Rates are low (cameras 5 Hz rendered in one child process, or 2 Hz in-process for the clock test) so
the node and the listener fit the 2-core CI machine next to the render process.
"""
from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.conversions import image_to_rgb, stamp_to_ns
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.sim_droid import SimDroid
from ros_testing import MessageCollector, spinning, wait_until

SPEC = load_embodiment("droid")
GROUPS = {g.name: g for g in SPEC.controller_groups}
REACHED_RAD = 0.02
_namespaces = itertools.count()


class Rig:
    """A running SimDroid and a listener node with collectors on every output topic."""

    def __init__(self, sim: SimDroid, listener: Node) -> None:
        self.sim, self.listener = sim, listener
        self.started_ns = listener.get_clock().now().nanoseconds
        self.joint_states = MessageCollector(listener, JointState, SPEC.joint_states_topic, reliable_qos())
        self.cameras = {c.key: MessageCollector(listener, Image, c.topic, camera_qos("best_effort"))
                        for c in SPEC.cameras}
        self.commands = {name: listener.create_publisher(Float64MultiArray, g.command_topic, reliable_qos())
                         for name, g in GROUPS.items()}

    def latest_positions(self) -> np.ndarray:
        message = self.joint_states.messages[-1]
        assert list(message.name) == list(SPEC.state_names)
        return np.asarray(message.position)

    def settled(self) -> np.ndarray:
        """The joint positions once the arm is at rest (no joint moved 1e-4 rad over 10 ticks)."""
        def still() -> bool:
            messages = self.joint_states.messages
            return len(messages) > 10 and np.ptp([m.position for m in messages[-11:]], axis=0).max() < 1e-4

        wait_until(still, "the arm at rest")
        return self.latest_positions()

    def command(self, group: str, values: list[float]) -> None:
        wait_until(lambda: self.commands[group].get_subscription_count() > 0, f"sim subscribed to {group}")
        self.commands[group].publish(Float64MultiArray(data=values))


@contextmanager
def _rig(namespace: str, **parameters) -> Iterator[Rig]:
    sim = SimDroid(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in parameters.items()])
    listener = Node("listener", namespace=namespace)
    try:
        rig = Rig(sim, listener)
        with spinning([sim, listener], threads=4):
            yield rig
    finally:
        sim.destroy_node()
        listener.destroy_node()


@pytest.fixture(scope="module")
def rig(ros_context) -> Iterator[Rig]:
    """One sim for the tests below (spawning its render process is the slow part); each test works
    relative to the state it finds."""
    with _rig(f"sim_droid_test_{os.getpid()}_{next(_namespaces)}", camera_rate_hz=5.0, render_processes=1) as rig:
        yield rig


def test_publishes_joint_states_and_all_cameras(rig: Rig) -> None:
    states = rig.joint_states.wait_for(5)
    assert [list(m.name) for m in states[-3:]] == [list(SPEC.state_names)] * 3
    assert all(len(m.position) == 8 and np.all(np.isfinite(m.position)) for m in states)
    stamps = [stamp_to_ns(m.header.stamp) for m in states]
    assert all(b > a for a, b in zip(stamps, stamps[1:]))
    # the node clock (the listener's, on this machine), not a sim clock: stamped after the rig started
    assert rig.started_ns <= stamps[0] and stamps[-1] <= rig.listener.get_clock().now().nanoseconds
    for camera in SPEC.cameras:
        message = rig.cameras[camera.key].wait_for(2)[-1]
        assert (message.height, message.width) == tuple(camera.resolution)
        assert (message.encoding, message.step, message.header.frame_id) == ("rgb8", 3 * message.width, camera.key)
        rgb = image_to_rgb(message)
        assert rgb.shape == (*camera.resolution, 3) and rgb.std() > 10.0, camera.key
    stamps_per_camera = [{stamp_to_ns(m.header.stamp) for m in rig.cameras[c.key].messages} for c in SPEC.cameras]
    assert set.intersection(*stamps_per_camera)  # the cameras of one frame share its snapshot's stamp


def test_arm_command_moves_the_joints_toward_it(rig: Rig) -> None:
    rig.joint_states.wait_for(1)
    start = rig.latest_positions()
    target = start[:7] + np.array([0.25, -0.2, 0.2, 0.25, -0.3, 0.2, -0.3])
    rig.command("arm", target.tolist())
    rig.command("gripper", [0.81])
    wait_until(lambda: np.abs(rig.latest_positions()[:7] - target).max() < REACHED_RAD,
               "the arm reaching its commanded position")
    wait_until(lambda: rig.latest_positions()[7] > 0.75, "the gripper closing")
    assert np.abs(start[:7] - target).max() > 0.2


@pytest.mark.parametrize("values", [[0.1] * 6, [0.1, 0.1, 0.1, float("nan"), 0.1, 0.1, 0.1]])
def test_malformed_arm_commands_are_dropped_and_the_sim_goes_on(rig: Rig, values: list[float]) -> None:
    hold = rig.settled()
    rig.command("arm", values)
    count = len(rig.joint_states.messages)
    rig.joint_states.wait_for(count + 25)  # half a second of ticks after the bad command
    np.testing.assert_allclose(rig.latest_positions()[:7], hold[:7], atol=1e-3)
    target = hold[:7] + 0.1  # a good command still works afterwards
    rig.command("arm", target.tolist())
    wait_until(lambda: np.abs(rig.latest_positions()[:7] - target).max() < REACHED_RAD,
               "the arm following a valid command after a malformed one")


def test_sim_clock_is_published_and_stamps_joint_states_and_images(ros_context, unique_name: str) -> None:
    with _rig(unique_name, use_sim_clock=True, camera_rate_hz=2.0, render_processes=0,
              joint_state_rate_hz=50.0) as rig:
        clock = MessageCollector(rig.listener, Clock, "clock", reliable_qos())
        ticks = clock.wait_for(10)
        image = rig.cameras["wrist_image_left"].wait_for(1)[0]
        states = rig.joint_states.wait_for(10)
    stamps = np.array([stamp_to_ns(m.header.stamp) for m in states]) * 1e-9
    assert 0.0 < stamps[0] < 60.0  # simulated seconds since start, not wall time (~1.7e9 s)
    steps = np.diff(stamps)
    np.testing.assert_allclose(steps, 1.0 / 50.0, atol=1.0 / 240.0)  # one tick period per tick, in physics steps
    clock_s = {round(stamp_to_ns(m.clock) * 1e-9, 6) for m in ticks}
    assert {round(s, 6) for s in stamps} & clock_s  # joint states carry the published clock values
    assert 0.0 < stamp_to_ns(image.header.stamp) * 1e-9 < 60.0
