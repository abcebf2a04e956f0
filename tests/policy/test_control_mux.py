"""control_mux: teleop drives, handoff to the policy blends, teleop overrides at once, deadman holds."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from diagnostic_msgs.msg import DiagnosticArray

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.srv import SetControlMode
from dreamzero_policy.control_mux import ControlMux
from dreamzero_policy.conversions import ns_to_stamp
from dreamzero_policy.qos import latched_qos, reliable_qos
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until

RATE_HZ = 20.0
BLEND_S = 1.0
HOME = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.5])


@contextmanager
def _mux(namespace: str, state: list[np.ndarray] | None = None, **overrides) -> Iterator[tuple[ControlMux, Node]]:
    """The mux with a driver node publishing joint states at 10 Hz: ``state[0]`` (8 values; default HOME, gripper 0),
    which the test may change."""
    state = state if state is not None else [np.array([*HOME, 0.0])]
    values = {"embodiment": "droid", "command_rate_hz": RATE_HZ, "blend_time_s": BLEND_S, "deadman_timeout_s": 0.5,
              "initial_mode": "teleop", "diagnostics_rate_hz": 5.0, **overrides}
    node = ControlMux(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    driver = Node("driver", namespace=namespace)
    spec = load_embodiment("droid")
    states = driver.create_publisher(JointState, spec.joint_states_topic, reliable_qos())
    names = list(spec.state_names)

    def publish_state() -> None:
        message = JointState(name=names, position=state[0].tolist())
        message.header.stamp = ns_to_stamp(driver.get_clock().now().nanoseconds)
        states.publish(message)

    driver.create_timer(0.1, publish_state)
    try:
        with spinning([node, driver], threads=3):
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            yield node, driver
    finally:
        node.trigger_shutdown()
        node.destroy_node()
        driver.destroy_node()


def _streamer(driver: Node, topic: str, values: list[np.ndarray]):
    """Publish values[0] at 20 Hz on ``topic`` (the test changes values[0] to steer); returns the timer."""
    publisher = driver.create_publisher(Float64MultiArray, topic, reliable_qos())
    return driver.create_timer(1.0 / RATE_HZ, lambda: publisher.publish(Float64MultiArray(data=values[0].tolist())))


def test_handoff_blends_teleop_override_is_immediate_and_deadman_holds(ros_context, unique_name) -> None:
    resets = []
    with _mux(unique_name) as (node, driver):
        driver.create_service(Trigger, "policy_node/reset",
                              lambda request, response: (resets.append(1), setattr(response, "success", True))[1] or response)
        output = MessageCollector(driver, Float64MultiArray, "arm_controller/commands", 200)
        mode = MessageCollector(driver, String, "control_mux/mode", latched_qos())
        teleop, policy = [HOME + 0.05], [HOME + 0.25]
        teleop_timer = _streamer(driver, "teleop/arm", teleop)
        set_mode = driver.create_client(SetControlMode, "control_mux/set_mode")

        # 1. teleop drives
        wait_until(lambda: output.messages and np.allclose(output.messages[-1].data, teleop[0], atol=1e-6),
                   "teleop command forwarded")

        # 2. switch to policy once the teleop stream has stopped (a teleop command arriving after the switch would
        #    take control back: auto_override); the policy blends in from where the arm was
        driver.destroy_timer(teleop_timer)
        wait_until(lambda: "deadman" in (node._reasons.get("arm") or ""), "teleop stream stopped")
        _streamer(driver, "policy/arm", policy)
        assert set_mode.wait_for_service(timeout_sec=PATIENCE_S)
        start, requested_ns = len(output.messages), driver.get_clock().now().nanoseconds
        future = set_mode.call_async(SetControlMode.Request(mode="policy"))
        wait_until(future.done, "set_mode reply")
        assert future.result().success and future.result().mode == "policy"
        wait_until(lambda: np.allclose(output.messages[-1].data, policy[0], atol=1e-6), "policy reached")
        _assert_blended(output.messages[start - 1:], output.arrivals_ns[start - 1:], requested_ns, teleop[0],
                        policy[0])
        assert resets, "a switch to policy starts a new policy session"

        # 3. a teleop command overrides at once (auto_override)
        teleop[0] = HOME - 0.02
        teleop_timer = _streamer(driver, "teleop/arm", teleop)
        wait_until(lambda: mode.messages and mode.messages[-1].data == "teleop", "mode teleop")

        # 4. deadman: once the arm reached the teleop command, teleop stops and the arm holds its last command
        wait_until(lambda: np.allclose(output.messages[-1].data, teleop[0], atol=1e-6), "teleop reached")
        driver.destroy_timer(teleop_timer)
        wait_until(lambda: "deadman" in (node._reasons.get("arm") or ""), "deadman hold")
        held = output.messages[-1].data
        count = len(output.messages)
        output.wait_for(count + 10)
        assert all(np.allclose(m.data, held) for m in output.messages[count:])


def _assert_blended(messages: list, arrivals_ns: list[int], requested_ns: int, start: np.ndarray,
                    target: np.ndarray) -> None:
    """The arm went from ``start`` to ``target`` along the straight line, never back, no faster than the blend.

    The rate is asserted against the measured time, never per tick: a command received at time r
    (the test's clock, which is the mux's: one machine) has progressed at most (r - requested) / BLEND_S
    of the way, since the blend cannot start before the switch was requested and a delivery can only
    be late. A late tick makes one step bigger without changing this. Without the blend the arm
    would jump the full 0.2 rad at once.
    """
    values = np.array([m.data for m in messages])
    fraction = (values - start) / (target - start)  # per joint: 0 where the arm was, 1 at the policy's command
    progress = fraction[:, 0]
    np.testing.assert_allclose(fraction, np.repeat(progress[:, None], fraction.shape[1], axis=1), atol=1e-6)
    assert progress[0] < 1e-6 and progress[-1] > 1 - 1e-6
    assert np.all(np.diff(progress) >= -1e-9), "the blend never goes back"
    elapsed_s = np.maximum(np.array(arrivals_ns) - requested_ns, 0) * 1e-9  # the first is from before the request
    assert np.all(progress <= elapsed_s / BLEND_S + 1e-6), np.max(progress - elapsed_s / BLEND_S)


def test_a_glitching_joint_reading_never_seeds_a_command(ros_context, unique_name) -> None:
    """Issue 12 item 1 at the mux: readings with panda_joint1 = 1e6 are refused (counted and named in diagnostics),
    so a teleop stream is not forwarded until a plausible reading comes; the first command then starts at that
    reading. Seeded from the glitch, the limiter would have started at joint 1's limit, 2.9 rad away."""
    glitch = np.array([1e6, *HOME[1:], 0.0])
    state = [glitch]
    with _mux(unique_name, state) as (node, driver):
        output = MessageCollector(driver, Float64MultiArray, "arm_controller/commands", 200)
        diagnostics = MessageCollector(driver, DiagnosticArray, "diagnostics", 50)
        _streamer(driver, "teleop/arm", [HOME + 0.05])

        def refusals() -> dict[str, str]:
            return {v.key: v.value for m in diagnostics.messages[-1:] for s in m.status for v in s.values}

        wait_until(lambda: int(refusals().get("joint_states_refused", 0)) >= 5, "refused readings in diagnostics")
        assert "panda_joint1" in refusals()["last_joint_state_refusal"]
        assert output.messages == [], "nothing may be commanded from a refused reading"
        state[0] = np.array([*HOME, 0.0])
        wait_until(lambda: output.messages, "a command once the readings are plausible")
        assert abs(output.messages[0].data[0] - HOME[0]) < 0.05 + 1e-6, output.messages[0].data[0]


def test_unknown_mode_is_refused_and_mode_kept(ros_context, unique_name) -> None:
    with _mux(unique_name, initial_mode="hold") as (_, driver):
        client = driver.create_client(SetControlMode, "control_mux/set_mode")
        assert client.wait_for_service(timeout_sec=PATIENCE_S)
        future = client.call_async(SetControlMode.Request(mode="autopilot"))
        wait_until(future.done, "reply")
    reply = future.result()
    assert not reply.success and reply.mode == "hold" and "autopilot" in reply.message
