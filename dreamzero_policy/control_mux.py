"""control_mux: the last gate before the controllers; arbitrates teleoperation and the policy (ARCHITECTURE §2).

Graph, per controller group of the embodiment YAML: inputs ``teleop/<group>`` and ``policy/<group>``
(``std_msgs/Float64MultiArray`` for joint groups, ``geometry_msgs/Twist`` for a base), output on the
group's ``command_topic`` (e.g. ``arm_controller/commands``). ``~/set_mode``
(dreamzero_msgs/SetControlMode: teleop | policy | hold) switches modes; ``~/mode`` (std_msgs/String,
latched) tells the current one; ``joint_states`` seeds the first command (implausible readings are
refused, ``plausibility.JointStateGate``); ``diagnostics``.
Parameters: :data:`dreamzero_policy.params.CONTROL_MUX_PARAMS`.

Behaviour (pure logic in :mod:`dreamzero_embodiments.mux`): a stale input (deadman) holds its group;
teleop -> policy resets the policy session (``policy_reset_service``), waits for the first policy
command and blends from where each group was over ``blend_time_s``; policy -> teleop is immediate,
and automatic on a teleop command when ``auto_override`` is true. Everything forwarded passes the
robot's position, velocity and acceleration limits (URDF); hold repeats the last output for joints
and sends zero velocity to a base. Rate limits use the measured time since the previous tick
(``limits.tick_interval_s``), so a late tick is neither slowed down nor allowed a stall's worth of
motion, and a command never passes its target. Nothing is published for a group before its first
command.
"""
from __future__ import annotations


import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from std_msgs.msg import Float64MultiArray, String
from std_srvs.srv import Trigger

from dreamzero_embodiments.limits import RateLimiter, clamp_twist, tick_interval_s
from dreamzero_embodiments.mux import ModeArbiter
from dreamzero_embodiments.plausibility import JointStateGate
from dreamzero_embodiments.spec import ControllerGroup, EmbodimentSpec
from dreamzero_msgs.srv import SetControlMode
from dreamzero_policy.conversions import command_message, command_values, joint_state_arrays, stamp_to_ns
from dreamzero_policy.diagnostics import OK, WARN, diagnostic_array
from dreamzero_policy.lifecycle import ManagedNode, spin_node
from dreamzero_policy.params import CONTROL_MUX_PARAMS, declare, read
from dreamzero_policy.qos import latched_qos, reliable_qos
from dreamzero_policy.robot_limits import LimitSettings, robot_embodiment, robot_limits


class ControlMux(ManagedNode):
    """See module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__("control_mux", **kwargs)
        declare(self, CONTROL_MUX_PARAMS)
        self._values: dict | None = None
        self._spec: EmbodimentSpec | None = None
        self._arbiter: ModeArbiter | None = None
        self._limiters: dict[str, RateLimiter] = {}
        self._group_limits: dict = {}
        self._outputs: dict[str, np.ndarray] = {}
        self._group_pubs: dict[str, object] = {}
        self._mode_pub = self._diagnostics_pub = self._reset_client = None
        self._entities: list = []
        self._joint_state: tuple[int, dict[str, float]] | None = None
        self._state_gate: JointStateGate | None = None
        self._last_tick_ns: int | None = None
        self._active = False
        self._reasons: dict[str, str] = {}
        self._dropped_inputs = 0
        self._refused_states = 0
        self._last_state_refusal = ""

    # ---------------------------------------------------------------- lifecycle
    def _setup(self) -> None:
        values = self._values = read(self, CONTROL_MUX_PARAMS)
        robot = LimitSettings.from_values(values)
        spec = self._spec = robot_embodiment(values["embodiment"], robot)
        limits = robot_limits(spec, robot)
        self._state_gate = JointStateGate(limits, spec.safety)  # a seed is a command: never from a glitch
        self._arbiter = ModeArbiter(tuple(g.name for g in spec.controller_groups), values["deadman_timeout_s"],
                                    values["blend_time_s"], values["auto_override"], values["initial_mode"])
        for group in spec.controller_groups:
            msg_type = Twist if group.kind == "twist" else Float64MultiArray
            self._group_limits[group.name] = limits.select(group.names)
            self._group_pubs[group.name] = self.create_lifecycle_publisher(msg_type, group.command_topic,
                                                                           reliable_qos())
            for source in ("teleop", "policy"):
                self._entities.append(self.create_subscription(
                    msg_type, f"{source}/{group.name}",
                    lambda msg, s=source, g=group: self._on_input(s, g, msg), reliable_qos()))
        self._mode_pub = self.create_publisher(String, "~/mode", latched_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "diagnostics", reliable_qos())
        self._reset_client = self.create_client(Trigger, values["policy_reset_service"])
        self._entities += [
            self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos()),
            self.create_service(SetControlMode, "~/set_mode", self._on_set_mode),
            self.create_timer(1.0 / values["command_rate_hz"], self._tick),
            self.create_timer(1.0 / values["diagnostics_rate_hz"], self._publish_diagnostics),
        ]
        self._publish_mode()

    def _set_active(self, active: bool) -> None:
        self._active = active
    def _teardown(self) -> None:
        self._active = False
        self.destroy_entities(self._entities)
        for publisher in self._group_pubs.values():
            self.destroy_lifecycle_publisher(publisher)
        for publisher in (self._mode_pub, self._diagnostics_pub):
            if publisher is not None:
                self.destroy_publisher(publisher)
        if self._reset_client is not None:
            self.destroy_client(self._reset_client)
        self._entities, self._group_pubs, self._limiters, self._outputs = [], {}, {}, {}
        self._last_tick_ns = None
        self._mode_pub = self._diagnostics_pub = self._reset_client = None

    # ---------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        try:
            names, positions = joint_state_arrays(msg)
            by_name = dict(zip(names, positions.tolist()))
            self._state_gate.check(stamp_to_ns(msg.header.stamp), by_name)
        except ValueError as error:  # plausibility.ImplausibleError too
            self._refused_states += 1
            self._last_state_refusal = str(error)
            self.get_logger().warning(f"refused joint state: {error}", throttle_duration_sec=2.0)
            return
        self._joint_state = (self.get_clock().now().nanoseconds, by_name)

    def _on_input(self, source: str, group: ControllerGroup, msg: Float64MultiArray | Twist) -> None:
        values = command_values(msg)
        if values.shape != (len(group.names),) or not np.all(np.isfinite(values)):
            self._dropped_inputs += 1
            self.get_logger().warning(f"dropped {source}/{group.name}: expected {len(group.names)} finite values, "
                                      f"got {values.tolist()}", throttle_duration_sec=2.0)
            return
        if self._arbiter.on_input(source, group.name, values, self.get_clock().now().nanoseconds):
            self.get_logger().warning(f"teleop input on {group.name}: policy overridden, mode teleop")
            self._publish_mode()

    def _on_set_mode(self, request: SetControlMode.Request,
                     response: SetControlMode.Response) -> SetControlMode.Response:
        previous = self._arbiter.mode
        ok, message = self._arbiter.set_mode(request.mode, self.get_clock().now().nanoseconds, self._outputs)
        if ok and request.mode == "policy" and previous != "policy":
            if self._reset_client.service_is_ready():
                self._reset_client.call_async(Trigger.Request())  # new policy session for the handoff
            else:
                message += f"; {self._values['policy_reset_service']} unavailable, policy session not reset"
        response.success, response.message, response.mode = ok, message, self._arbiter.mode
        self._publish_mode()
        return response

    # ---------------------------------------------------------------- command loop
    def _seed(self, group: ControllerGroup, now_ns: int) -> np.ndarray | None:
        if group.kind == "twist":
            return np.zeros(len(group.names))
        state = self._joint_state
        if state is None or now_ns - state[0] > self._values["joint_state_timeout_s"] * 1e9:
            return None
        if not all(n in state[1] for n in group.names):
            return None
        return np.array([state[1][n] for n in group.names])

    def _tick(self) -> None:
        if not self._active:
            return
        now_ns = self.get_clock().now().nanoseconds
        dt_s = tick_interval_s(self._last_tick_ns, now_ns, 1.0 / self._values["command_rate_hz"])
        self._last_tick_ns = now_ns
        for group in self._spec.controller_groups:
            decision = self._arbiter.decide(group.name, now_ns)
            self._reasons[group.name] = decision.reason
            if group.name not in self._limiters:
                seed = self._seed(group, now_ns)
                if decision.values is None or seed is None:
                    continue  # nothing forwarded yet: publish nothing
                self._limiters[group.name], self._outputs[group.name] = (
                    RateLimiter(self._group_limits[group.name], initial=seed), seed)
            limits = self._group_limits[group.name]
            if group.kind == "twist":
                target = decision.values if decision.values is not None else np.zeros(len(group.names))
                command = clamp_twist(target, limits)[0]
            else:
                target = decision.values if decision.values is not None else self._outputs[group.name]
                command = self._limiters[group.name].step(target, dt_s)[0]
            self._outputs[group.name] = command
            self._group_pubs[group.name].publish(command_message(group.kind, command))

    def _publish_mode(self) -> None:
        self._mode_pub.publish(String(data=self._arbiter.mode))

    def _publish_diagnostics(self) -> None:
        holding = {g: r for g, r in self._reasons.items() if r}
        level, message = (WARN, f"holding {', '.join(f'{g} ({r})' for g, r in holding.items())}") if holding else (
            OK, f"mode {self._arbiter.mode}")
        values = {"mode": self._arbiter.mode, "dropped_inputs": self._dropped_inputs,
                  "joint_states_refused": self._refused_states, "last_joint_state_refusal": self._last_state_refusal or "none",
                  **{f"hold.{g}": r or "no" for g, r in self._reasons.items()}}
        self._diagnostics_pub.publish(diagnostic_array(self.get_clock().now().nanoseconds, f"{self.get_name()}: mux",
                                                       self._spec.name, level, message, values))


def main(args: list[str] | None = None) -> None:
    """Console script ``control_mux``."""
    spin_node(ControlMux, args, threads=1)  # short callbacks that never block: the cheapest executor (executor.py)

