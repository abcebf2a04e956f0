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

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.srv import SetControlMode
from dreamzero_policy.control_mux import ControlMux
from dreamzero_policy.conversions import ns_to_stamp
from dreamzero_policy.qos import latched_qos, reliable_qos
from ros_testing import MessageCollector, spinning, wait_until

RATE_HZ = 20.0
BLEND_S = 1.0
HOME = np.array([0.0, -0.5, 0.0, -2.0, 0.0, 1.5, 0.5])


@contextmanager
def _mux(namespace: str, **overrides) -> Iterator[tuple[ControlMux, Node]]:
    values = {"embodiment": "droid", "command_rate_hz": RATE_HZ, "blend_time_s": BLEND_S, "deadman_timeout_s": 0.5,
              "initial_mode": "teleop", "diagnostics_rate_hz": 5.0, **overrides}
    node = ControlMux(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    driver = Node("driver", namespace=namespace)
    spec = load_embodiment("droid")
    states = driver.create_publisher(JointState, spec.joint_states_topic, reliable_qos())
    names = list(spec.state_names)

    def publish_state() -> None:
        message = JointState(name=names, position=[*HOME.tolist(), 0.0])
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
        wait_until(lambda: output.messages and np.allclose(output.messages[-1].data, teleop[0], atol=1e-6), 15.0,
                   "teleop command forwarded")

        # 2. switch to policy once the teleop stream has stopped (a teleop command arriving after the switch would
        #    take control back: auto_override); the policy blends in from where the arm was
        driver.destroy_timer(teleop_timer)
        wait_until(lambda: "deadman" in (node._reasons.get("arm") or ""), 5.0, "teleop stream stopped")
        _streamer(driver, "policy/arm", policy)
        assert set_mode.wait_for_service(timeout_sec=5.0)
        future = set_mode.call_async(SetControlMode.Request(mode="policy"))
        wait_until(future.done, 5.0, "set_mode reply")
        assert future.result().success and future.result().mode == "policy"
        start = len(output.messages)
        wait_until(lambda: np.allclose(output.messages[-1].data, policy[0], atol=1e-6), 15.0, "policy reached")
        blended = np.array([m.data for m in output.messages[start - 1:]])
        # Without the blend the arm would jump by the full 0.2 rad. With it, a step is the blend rate times the
        # time between ticks; allow ticks up to 0.25 s apart on a loaded machine.
        largest_step = np.abs(np.diff(blended, axis=0)).max()
        assert largest_step <= 0.2 * 0.25 / BLEND_S, largest_step
        assert resets, "a switch to policy starts a new policy session"

        # 3. a teleop command overrides at once (auto_override)
        teleop[0] = HOME - 0.02
        teleop_timer = _streamer(driver, "teleop/arm", teleop)
        wait_until(lambda: mode.messages and mode.messages[-1].data == "teleop", 5.0, "mode teleop")

        # 4. deadman: once the arm reached the teleop command, teleop stops and the arm holds its last command
        wait_until(lambda: np.allclose(output.messages[-1].data, teleop[0], atol=1e-6), 15.0, "teleop reached")
        driver.destroy_timer(teleop_timer)
        wait_until(lambda: "deadman" in (node._reasons.get("arm") or ""), 5.0, "deadman hold")
        held = output.messages[-1].data
        count = len(output.messages)
        output.wait_for(count + 10, timeout_s=5.0)
        assert all(np.allclose(m.data, held) for m in output.messages[count:])


def test_unknown_mode_is_refused_and_mode_kept(ros_context, unique_name) -> None:
    with _mux(unique_name, initial_mode="hold") as (_, driver):
        client = driver.create_client(SetControlMode, "control_mux/set_mode")
        assert client.wait_for_service(timeout_sec=5.0)
        future = client.call_async(SetControlMode.Request(mode="autopilot"))
        wait_until(future.done, 5.0, "reply")
    reply = future.result()
    assert not reply.success and reply.mode == "hold" and "autopilot" in reply.message
