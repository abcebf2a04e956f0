"""adapter_node per embodiment: ActionChunk + joint states in, controller commands out on the YAML's topics."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import pytest
from geometry_msgs.msg import Twist
from rclpy.lifecycle import TransitionCallbackReturn
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from diagnostic_msgs.msg import DiagnosticArray

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.adapter_node import AdapterNode
from dreamzero_policy.conversions import Chunk, chunk_to_message, ns_to_stamp
from dreamzero_policy.qos import reliable_qos
from ros_testing import PATIENCE_S, MessageCollector, spinning, wait_until

DELTA = 0.005  # relative step of every relative dimension (model units): small enough for the slowest joint


def _home(spec: EmbodimentSpec, xacro_args: dict[str, str] | None = None) -> dict[str, float]:
    """A joint configuration well inside the URDF limits of every shipped robot."""
    from dreamzero_embodiments.robot_description import load_joint_limits
    from dreamzero_policy.paths import share_dir

    limits = load_joint_limits(share_dir() / "urdf" / spec.robot_description, xacro_args)
    home = {name: (limits[name].lower + limits[name].upper) / 2 for name in spec.state_names}
    for key in spec.state:  # unit-mapped dimensions are in their own ROS units (e.g. AgiBot effector raw 35..120)
        if key.unit_map is not None:
            home.update({name: sum(key.unit_map.ros) / 2 for name in key.names})
    return home


def _model_state(spec: EmbodimentSpec, home: dict[str, float]) -> np.ndarray:
    values = []
    for key in spec.state:
        raw = np.array([home[n] for n in key.names])
        values.extend(key.unit_map.to_model(raw) if key.unit_map else raw)
    return np.array(values)


def _chunk(spec: EmbodimentSpec, home: dict[str, float], t_obs_ns: int, chunk_id: int, delta: float) -> ActionChunk:
    """Relative dims: +delta on the state at t_obs; absolute dims: 0.5 in model units (grippers, base).

    The rates in these tests (commands 20 Hz, joint states 10 Hz) keep one Python process hosting the
    adapter, the driver and six listeners within what rclpy's executor sustains on a 2-core machine.
    """
    state = dict(zip(spec.state_names, _model_state(spec, home)))
    relative = spec.relative_mask
    anchor = np.array([state[n] if r else 0.0 for n, r in zip(spec.action_names, relative)])
    step = np.where(relative, delta, 0.5 if delta else 0.0)
    values = np.tile(step, (spec.timing.horizon, 1))
    return chunk_to_message(Chunk(t_obs_ns=t_obs_ns, embodiment=spec.name, session_id="test", chunk_id=chunk_id,
                                  names=spec.action_names, relative=relative, anchor=anchor, values=values,
                                  dt=spec.timing.dt, latency=0.0))


def _expected(spec: EmbodimentSpec, home: dict[str, float], delta: float) -> dict[str, float]:
    """Absolute ROS-unit targets of :func:`_chunk`."""
    state = dict(zip(spec.state_names, _model_state(spec, home)))
    expected = {}
    for key in spec.action:
        model = np.array([state[n] + delta if key.relative else 0.5 for n in key.names])
        ros = key.unit_map.to_ros(model) if key.unit_map else model
        expected.update(zip(key.names, ros))
    return expected


@contextmanager
def _adapter(namespace: str, spec: EmbodimentSpec, **overrides) -> Iterator[tuple[AdapterNode, Node]]:
    values = {"embodiment": spec.name, "command_rate_hz": 20.0, "diagnostics_rate_hz": 5.0, **overrides}
    node = AdapterNode(namespace=namespace, parameter_overrides=[Parameter(k, value=v) for k, v in values.items()])
    driver = Node("driver", namespace=namespace)
    try:
        with spinning([node, driver], threads=3):
            assert node.trigger_configure() == TransitionCallbackReturn.SUCCESS
            assert node.trigger_activate() == TransitionCallbackReturn.SUCCESS
            yield node, driver
    finally:
        node.trigger_shutdown()
        node.destroy_node()
        driver.destroy_node()


def _publish_joint_states(driver: Node, spec: EmbodimentSpec, home: dict[str, float]) -> None:
    publisher = driver.create_publisher(JointState, spec.joint_states_topic, reliable_qos())

    def tick() -> None:
        message = JointState(name=list(home), position=list(home.values()))
        message.header.stamp = ns_to_stamp(driver.get_clock().now().nanoseconds)
        publisher.publish(message)

    driver.create_timer(0.1, tick)


def _collectors(driver: Node, spec: EmbodimentSpec, joint_type) -> dict[str, MessageCollector]:
    return {g.name: MessageCollector(driver, Twist if g.kind == "twist" else joint_type, f"policy/{g.name}", 100)
            for g in spec.controller_groups}


def _values(message) -> list[float]:
    if isinstance(message, Twist):
        return [message.linear.x, message.angular.z]
    if isinstance(message, JointTrajectory):
        return list(message.points[-1].positions)
    return list(message.data)


FR3 = {"joint_name_map": ["panda_*=fr3_*"], "xacro_args": ["arm_id=fr3"]}  # DROID on a Franka FR3 (issue 12 item 11)


@pytest.mark.parametrize("name, robot", [("droid", {}), ("agibot_g1", {}), ("yam", {}), ("droid", FR3)],
                         ids=["droid", "agibot_g1", "yam", "droid-fr3"])
def test_chunk_becomes_commands_on_every_group_topic_with_joint_names(ros_context, unique_name, name: str,
                                                                      robot: dict[str, list[str]]) -> None:
    """Also DROID's YAML on an FR3 without editing it: the FR3's joint states in, FR3 names and limits out."""
    spec = load_embodiment(name, robot.get("joint_name_map", ()))
    home = _home(spec, dict(a.split("=") for a in robot.get("xacro_args", ())))
    expected = _expected(spec, home, DELTA)
    with _adapter(unique_name, spec, stream_message="joint_trajectory", **robot) as (node, driver):
        _publish_joint_states(driver, spec, home)
        outputs = _collectors(driver, spec, JointTrajectory)
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        wait_until(lambda: node.count_subscribers("policy_node/action_chunk") > 0, "adapter subscription")
        wait_until(lambda: node._joint_state is not None, "joint states at the adapter")
        chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, 1, DELTA))

        def reached(group, collector) -> bool:
            """Joints reach the target and hold it after the chunk; a base reaches it, then stops."""
            target = [expected[n] for n in group.names]
            messages = collector.messages
            if group.kind == "twist":
                return (any(np.allclose(_values(m), target, atol=1e-6) for m in messages)
                        and np.allclose(_values(messages[-1]), 0.0))
            return bool(messages) and np.allclose(_values(messages[-1]), target, atol=1e-6)

        wait_until(lambda: all(reached(g, outputs[g.name]) for g in spec.controller_groups),
                   "commands reaching the chunk's targets")
    for group in spec.controller_groups:
        last = outputs[group.name].messages[-1]
        if group.kind == "twist":
            assert isinstance(last, Twist)
        else:
            assert isinstance(last, JointTrajectory) and tuple(last.joint_names) == group.names


def test_float_arrays_carry_one_value_per_group_joint(ros_context, unique_name) -> None:
    spec = load_embodiment("droid")
    home = _home(spec)
    with _adapter(unique_name, spec) as (node, driver):
        _publish_joint_states(driver, spec, home)
        outputs = _collectors(driver, spec, Float64MultiArray)
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        wait_until(lambda: node.count_subscribers("policy_node/action_chunk") > 0, "adapter subscription")
        wait_until(lambda: node._joint_state is not None, "joint states at the adapter")
        chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, 1, DELTA))
        outputs["arm"].wait_for(5)
    assert all(len(m.data) == 7 for m in outputs["arm"].messages)
    assert all(len(m.data) == 1 for m in outputs["gripper"].messages)


def test_estop_holds_through_new_chunks_until_cleared(ros_context, unique_name) -> None:
    spec = load_embodiment("droid")
    home = _home(spec)
    with _adapter(unique_name, spec) as (node, driver):
        _publish_joint_states(driver, spec, home)
        outputs = _collectors(driver, spec, Float64MultiArray)
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        estop = driver.create_publisher(Bool, "adapter_node/estop", reliable_qos())
        clear = driver.create_client(Trigger, "adapter_node/clear_estop")
        wait_until(lambda: node.count_subscribers("policy_node/action_chunk") > 0, "adapter subscription")
        wait_until(lambda: node._joint_state is not None, "joint states at the adapter")
        chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, 1, DELTA))
        first_target = [home[n] + DELTA for n in spec.controller_groups[0].names]
        wait_until(lambda: outputs["arm"].messages and np.allclose(outputs["arm"].messages[-1].data, first_target,
                                                                   atol=1e-6), "first chunk executed")

        estop.publish(Bool(data=True))
        wait_until(lambda: node._estop, "e-stop latched")
        held = list(outputs["arm"].messages[-1].data)
        chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, 2, -5 * DELTA))
        count = len(outputs["arm"].messages)
        outputs["arm"].wait_for(count + 20)
        assert all(np.allclose(m.data, held) for m in outputs["arm"].messages[count:]), "e-stop must hold"

        assert clear.wait_for_service(timeout_sec=PATIENCE_S)
        future = clear.call_async(Trigger.Request())
        wait_until(future.done, "clear_estop reply")
        chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, 3, -DELTA))
        target = [home[n] - DELTA for n in spec.controller_groups[0].names]
        wait_until(lambda: np.allclose(outputs["arm"].messages[-1].data, target, atol=1e-6), "moving again")


def test_trajectory_mode_sends_the_remaining_chunk_for_a_trajectory_controller(ros_context, unique_name) -> None:
    spec = load_embodiment("droid")
    home = _home(spec)
    with _adapter(unique_name, spec, output_mode="trajectory") as (node, driver):
        _publish_joint_states(driver, spec, home)
        outputs = _collectors(driver, spec, JointTrajectory)
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        wait_until(lambda: node.count_subscribers("policy_node/action_chunk") > 0, "adapter subscription")
        wait_until(lambda: node._joint_state is not None, "joint states at the adapter")
        # the first chunk seeds the command; the second is sent whole as a trajectory
        for chunk_id in (1, 2):
            chunks.publish(_chunk(spec, home, driver.get_clock().now().nanoseconds, chunk_id, DELTA))
            wait_until(lambda: node._counters["chunks_accepted"] >= chunk_id and node._command is not None,
                       "chunk accepted")
        plans = [m for m in outputs["arm"].wait_for(1) if len(m.points) > 1]
    assert plans, "a multi-point trajectory"
    plan = plans[-1]
    assert tuple(plan.joint_names) == spec.controller_groups[0].names
    offsets = [p.time_from_start.sec + p.time_from_start.nanosec * 1e-9 for p in plan.points]
    assert offsets[0] > 0 and all(b > a for a, b in zip(offsets, offsets[1:]))
    assert list(plan.points[-1].velocities) == [0.0] * 7
    target = [home[n] + DELTA for n in plan.joint_names]
    assert np.allclose(plan.points[-1].positions, target, atol=1e-6)


def _raw_chunk(spec: EmbodimentSpec, t_obs_ns: int, chunk_id: int, per_step: np.ndarray, relative: np.ndarray,
               anchor: np.ndarray, dt: float | None = None) -> ActionChunk:
    return chunk_to_message(Chunk(t_obs_ns=t_obs_ns, embodiment=spec.name, session_id="test", chunk_id=chunk_id,
                                  names=spec.action_names, relative=relative, anchor=anchor,
                                  values=np.tile(per_step, (spec.timing.horizon, 1)),
                                  dt=spec.timing.dt if dt is None else dt, latency=0.0))


def test_implausible_chunks_and_joint_states_are_refused_and_the_arm_holds(ros_context, unique_name) -> None:
    """The faults that drove a live arm to its limits when clamping was the only check (issue 12 items 1, 2,
    5, 6): each chunk is refused or rejected by name, the arm holds, diagnostics turn ERROR after
    ``safety.refusals_for_error`` refusals in a row, and a glitching joint reading is refused."""
    spec = load_embodiment("droid")
    home = _home(spec)  # panda_joint4 at -1.57 rad
    relative, anchor = spec.relative_mask, np.where(spec.relative_mask, _model_state(spec, home), 0.0)
    absolute = np.zeros(8, dtype=bool)
    with _adapter(unique_name, spec) as (node, driver):
        _publish_joint_states(driver, spec, home)
        outputs = _collectors(driver, spec, Float64MultiArray)
        diagnostics = MessageCollector(driver, DiagnosticArray, "diagnostics", 50)
        chunks = driver.create_publisher(ActionChunk, "policy_node/action_chunk", reliable_qos())
        states = driver.create_publisher(JointState, spec.joint_states_topic, reliable_qos())
        wait_until(lambda: node.count_subscribers("policy_node/action_chunk") > 0, "adapter subscription")
        wait_until(lambda: node._joint_state is not None, "joint states at the adapter")
        now = driver.get_clock().now
        chunks.publish(_chunk(spec, home, now().nanoseconds, 1, DELTA))
        target = [home[n] + DELTA for n in spec.controller_groups[0].names]
        wait_until(lambda: outputs["arm"].messages and np.allclose(outputs["arm"].messages[-1].data, target,
                                                                   atol=1e-6), "the good chunk executed")
        held = list(outputs["arm"].messages[-1].data)

        refused = [  # (chunk id, per-step values, relative, anchor): refused as implausible
            (2, np.array([10.0] * 7 + [0.5]), relative, anchor),  # a 10 rad relative jump
            (3, np.array([-10.0] * 7 + [0.5]), absolute, np.zeros(8)),  # -10 rad absolute
            (4, np.array([1e308] * 7 + [0.5]), absolute, np.zeros(8)),
            (5, np.array([DELTA] * 7 + [0.5]), relative, np.zeros(8)),  # anchored at zeros, arm at -1.57
        ]
        for count, (chunk_id, values, flags, chunk_anchor) in enumerate(refused, start=1):
            # stamped as the newest joint state the adapter holds, so a state at t_obs is there to check the anchor
            # against however late the 10 Hz states arrive on a loaded machine
            observed_ns = node._states.newest_stamp
            chunks.publish(_raw_chunk(spec, observed_ns, chunk_id, values, flags, chunk_anchor))
            wait_until(lambda: node._counters["chunks_refused"] == count, f"chunk {chunk_id} refused")
            assert f"refused chunk {chunk_id}: implausible chunk" in node._last_rejection
        assert "anchor panda_joint4=0 but the measured state at t_obs is -1.5708 (bound 0.05)" in node._last_rejection
        wait_until(lambda: _diagnostic_level(diagnostics) == 2 and "4 chunks refused in a row" in
                   diagnostics.messages[-1].status[0].message, "diagnostics ERROR after refusals in a row")

        rejected = [(6, 0.0, 0.0, "dt 0 s differs from the embodiment's 0.0666667 s"),
                    (7, -0.5, 0.0, "dt -0.5 s differs"),
                    (8, None, 10.0, "s in the future (more than max_future_stamp_s 0.2 s")]
        for count, (chunk_id, dt, ahead_s, message) in enumerate(rejected, start=1):
            stamp = now().nanoseconds + round(ahead_s * 1e9)
            chunks.publish(_raw_chunk(spec, stamp, chunk_id, np.array([DELTA] * 7 + [0.5]), relative, anchor, dt))
            wait_until(lambda: node._counters["chunks_rejected"] == count, f"chunk {chunk_id} rejected")
            assert message in node._last_rejection, node._last_rejection

        glitch = JointState(name=list(home), position=[1e6, *list(home.values())[1:]])
        glitch.header.stamp = ns_to_stamp(now().nanoseconds)
        states.publish(glitch)
        wait_until(lambda: node._counters["joint_states_refused"] >= 1, "the glitching joint state refused")
        assert "panda_joint1=1e+06 is outside" in node._last_state_refusal
        count = len(outputs["arm"].messages)
        outputs["arm"].wait_for(count + 10)
    assert all(np.allclose(m.data, held) for m in outputs["arm"].messages[count - 1:]), "the arm must hold"
    assert node._joint_state[1]["panda_joint1"] == home["panda_joint1"]  # the glitch was never used


def _diagnostic_level(collector: MessageCollector) -> int | None:
    return collector.messages[-1].status[0].level[0] if collector.messages else None
