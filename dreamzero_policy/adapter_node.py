"""adapter_node: turns ActionChunks into safe controller commands for one robot (ARCHITECTURE.md §2-3).

Graph: subscribes the chunk topic (``policy_node/action_chunk``), ``joint_states`` (to seed the first
command) and ``~/estop`` (std_msgs/Bool; true latches a hold until the ``~/clear_estop`` Trigger
service). Publishes per controller group of the embodiment YAML on ``policy/<group>``: joint groups
as ``std_msgs/Float64MultiArray`` or single-point ``trajectory_msgs/JointTrajectory`` (``stream``), or
the remaining chunk as one multi-point ``JointTrajectory`` (``trajectory``, for ros2_control's
JointTrajectoryController); twist groups (a mobile base) as ``geometry_msgs/Twist``. Diagnostics:
clamps, dropped steps, blends, rejected chunks, hold reason. Parameters:
:data:`dreamzero_policy.params.ADAPTER_NODE_PARAMS`.

Per chunk (all maths in ``dreamzero_embodiments``): relative + anchor -> absolute, unit maps -> ROS
units, Savitzky-Golay smoothing with the executed history, then the time-indexed execution buffer
(past steps dropped, cross-fade into the new chunk). Per tick at ``command_rate_hz``: the buffer's
interpolated command for now, velocity/acceleration/position limits from the URDF over the measured
time since the previous tick, publish.

Safe behaviour: a malformed or non-finite chunk, one of another embodiment or another ``dt``, or one
stamped more than ``max_future_stamp_s`` ahead is rejected whole. An implausible chunk
(``plausibility.check_chunk``: a target outside the URDF range, an anchor that disagrees with the
measured state at t_obs, a first executed target further from the arm than it can move) is refused
and the node holds, naming the joint, value, bound and chunk id (log and diagnostics: WARN, ERROR
after ``safety.refusals_for_error`` in a row). Implausible joint readings (``JointStateGate``) are
refused and never used. With nothing valid for now, an overdue chunk (watchdog), an e-stop or after
deactivation the node holds the last command (joint groups) and commands zero velocity (twist groups). It never commands zeros to joints and never
extrapolates; before the first chunk it publishes nothing.
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import Twist
from sensor_msgs.msg import JointState
from std_msgs.msg import Bool, Float64MultiArray
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from dreamzero_embodiments.actions import chunk_to_ros
from dreamzero_embodiments.buffers import StampedRingBuffer
from dreamzero_embodiments.execution import ExecutionBuffer
from dreamzero_embodiments.limits import JointLimitSet, RateLimiter, tick_interval_s
from dreamzero_embodiments.plausibility import ImplausibleError, JointStateGate, check_chunk
from dreamzero_embodiments.smoothing import SmoothingConfig, smooth_chunk
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.watchdog import ChunkWatchdog
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.conversions import (command_message, joint_state_arrays, message_to_chunk, ns_to_stamp,
                                          stamp_to_ns)
from dreamzero_policy.diagnostics import ERROR, OK, WARN, diagnostic_array
from dreamzero_policy.lifecycle import ManagedNode, spin_node
from dreamzero_policy.params import ADAPTER_NODE_PARAMS, declare, read
from dreamzero_policy.qos import reliable_qos
from dreamzero_policy.robot_limits import LimitSettings, robot_embodiment, robot_limits
STATE_HISTORY = 2000  # joint states kept to check a chunk's anchor: 4 s at 500 Hz


def _holding_plan_lock(method):
    """Run ``method`` holding the node's plan lock. The plan (execution buffer, limiter, e-stop) is changed by
    chunk and e-stop callbacks and by lifecycle transitions, which may run in another thread than the command
    timer (``lifecycle.serving`` deactivates from the main thread while the executor still spins)."""
    @functools.wraps(method)
    def locked(self, *args):
        with self._plan_lock:
            return method(self, *args)
    return locked


@dataclass(frozen=True)
class AdapterSettings:
    """The adapter's parameters, read once in ``on_configure`` (dotted names become underscores)."""

    embodiment: str
    limits: LimitSettings
    chunk_topic: str
    command_rate_hz: float
    output_mode: str
    stream_message: str
    smoothing: SmoothingConfig
    blend_steps: int
    watchdog_periods: float
    joint_state_timeout_s: float
    max_future_stamp_s: float
    diagnostics_rate_hz: float

    @classmethod
    def from_node(cls, node: ManagedNode) -> AdapterSettings:
        v = read(node, ADAPTER_NODE_PARAMS)
        defaults = SmoothingConfig()
        smoothing = SmoothingConfig(enabled=v["smoothing.enabled"],
                                    window=v["smoothing.window"] or defaults.window,
                                    polyorder=v["smoothing.polyorder"] or defaults.polyorder)
        return cls(embodiment=v["embodiment"], limits=LimitSettings.from_values(v), chunk_topic=v["chunk_topic"],
                   command_rate_hz=v["command_rate_hz"], output_mode=v["output_mode"],
                   stream_message=v["stream_message"], smoothing=smoothing, blend_steps=v["blend.steps"],
                   watchdog_periods=v["watchdog.periods"],
                   joint_state_timeout_s=v["joint_state_timeout_s"], max_future_stamp_s=v["max_future_stamp_s"],
                   diagnostics_rate_hz=v["diagnostics_rate_hz"])


class AdapterNode(ManagedNode):
    """See module docstring."""

    def __init__(self, **kwargs) -> None:
        super().__init__("adapter_node", **kwargs)
        declare(self, ADAPTER_NODE_PARAMS)
        self._settings: AdapterSettings | None = None
        self._spec: EmbodimentSpec | None = None
        self._limits: JointLimitSet | None = None
        self._buffer: ExecutionBuffer | None = None
        self._watchdog: ChunkWatchdog | None = None
        self._limiter: RateLimiter | None = None
        self._group_pubs: dict[str, object] = {}
        self._group_index: dict[str, np.ndarray] = {}
        self._twist_mask: np.ndarray | None = None
        self._entities: list = []
        self._diagnostics_pub = None
        self._active = False
        self._estop = False
        self._plan_lock = threading.Lock()
        self._command: np.ndarray | None = None
        self._last_tick_ns: int | None = None
        self._joint_state: tuple[int, dict[str, float]] | None = None
        self._states: StampedRingBuffer[dict[str, float]] = StampedRingBuffer(STATE_HISTORY)  # by header stamp
        self._state_gate: JointStateGate | None = None
        self._hold_reason = "no chunk yet"
        self._published_hold: str | None = None  # trajectory mode: the hold already sent as a trajectory
        self._counters = {"chunks_accepted": 0, "chunks_rejected": 0, "chunks_refused": 0, "steps_dropped": 0,
                          "blends": 0, "ticks_limited": 0, "joint_states_refused": 0}
        self._consecutive_refusals = 0
        self._last_rejection = ""
        self._last_state_refusal = ""

    # ---------------------------------------------------------------- lifecycle
    def _setup(self) -> None:
        settings = self._settings = AdapterSettings.from_node(self)
        spec = self._spec = robot_embodiment(settings.embodiment, settings.limits)
        self._limits = robot_limits(spec, settings.limits)
        self._state_gate = JointStateGate(self._limits, spec.safety)
        self._buffer = ExecutionBuffer(spec.timing.dt, settings.blend_steps, spec.timing.horizon)
        self._watchdog = ChunkWatchdog(spec.timing.dt, settings.watchdog_periods)
        names = spec.action_names
        self._twist_mask = np.array([any(n in g.names for g in spec.controller_groups if g.kind == "twist")
                                     for n in names])
        for group in spec.controller_groups:
            self._group_index[group.name] = np.array([names.index(n) for n in group.names])
            if group.kind == "twist":
                msg_type = Twist
            elif settings.output_mode == "trajectory" or settings.stream_message == "joint_trajectory":
                msg_type = JointTrajectory
            else:
                msg_type = Float64MultiArray
            self._group_pubs[group.name] = self.create_lifecycle_publisher(msg_type, f"policy/{group.name}",
                                                                           reliable_qos())
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, "diagnostics", reliable_qos())
        self._entities = [
            self.create_subscription(ActionChunk, settings.chunk_topic, self._on_chunk, reliable_qos()),
            self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos()),
            self.create_subscription(Bool, "~/estop", self._on_estop, reliable_qos()),
            self.create_service(Trigger, "~/clear_estop", self._on_clear_estop),
            self.create_timer(1.0 / settings.command_rate_hz, self._tick),
            self.create_timer(1.0 / settings.diagnostics_rate_hz, self._publish_diagnostics),
        ]
        self.get_logger().info(f"configured: {spec.name}, {len(names)} action dims, output {settings.output_mode}")

    @_holding_plan_lock
    def _set_active(self, active: bool) -> None:
        self._active = active
        if not active:
            self._buffer.clear()
            self._hold_reason = "inactive"
    def _teardown(self) -> None:
        self._active = False
        self.destroy_entities(self._entities)
        for publisher in self._group_pubs.values():
            self.destroy_lifecycle_publisher(publisher)
        if self._diagnostics_pub is not None:
            self.destroy_publisher(self._diagnostics_pub)
        self._entities, self._group_pubs, self._diagnostics_pub = [], {}, None
        self._command = self._limiter = self._last_tick_ns = None

    # ---------------------------------------------------------------- callbacks
    def _on_joint_state(self, msg: JointState) -> None:
        """Keep a plausible reading (newest for seeding and the first-target check, history by stamp for
        the anchor check); an implausible one is counted, named in the log and never used."""
        try:
            names, positions = joint_state_arrays(msg)
            by_name = dict(zip(names, positions.tolist()))
            self._state_gate.check(stamp_to_ns(msg.header.stamp), by_name)
        except ValueError as error:  # ImplausibleError too
            self._counters["joint_states_refused"] += 1
            self._last_state_refusal = str(error)
            self.get_logger().warning(f"refused joint state: {error}", throttle_duration_sec=2.0)
            return
        self._joint_state = (self.get_clock().now().nanoseconds, by_name)
        self._states.push(stamp_to_ns(msg.header.stamp), by_name)

    @_holding_plan_lock
    def _on_estop(self, msg: Bool) -> None:
        if msg.data and not self._estop:
            self.get_logger().warning("e-stop: holding until ~/clear_estop")
            self._estop = True
            self._buffer.clear()

    @_holding_plan_lock
    def _on_clear_estop(self, request: Trigger.Request, response: Trigger.Response) -> Trigger.Response:
        self._estop = False
        self._watchdog.reset()
        response.success, response.message = True, "e-stop cleared; waiting for the next chunk"
        return response

    @_holding_plan_lock
    def _on_chunk(self, msg: ActionChunk) -> None:
        now_ns = self.get_clock().now().nanoseconds
        if self._estop or not self._active:
            return
        try:
            chunk = message_to_chunk(msg)
            self._check_header(chunk.embodiment, chunk.dt, chunk.t_obs_ns, now_ns)
            targets = chunk_to_ros(chunk.values, chunk.relative, chunk.anchor, chunk.names, self._spec)
        except ValueError as error:
            self._counters["chunks_rejected"] += 1
            self._last_rejection = f"chunk {msg.chunk_id}: {error}"
            self.get_logger().warning(f"rejected {self._last_rejection}", throttle_duration_sec=2.0)
            return
        try:
            self._check_plausible(targets, chunk.relative, chunk.anchor, chunk.t_obs_ns, now_ns)
        except ImplausibleError as error:
            self._refuse(msg.chunk_id, error)
            return
        history = self._buffer.history(chunk.t_obs_ns, self._settings.smoothing.history_steps)
        result = self._buffer.accept(smooth_chunk(targets, self._settings.smoothing, history=history),
                                     chunk.t_obs_ns, now_ns)
        if not result.accepted:
            self._counters["chunks_rejected"] += 1
            self._last_rejection = f"chunk {msg.chunk_id}: {result.reason}"
            return
        self._consecutive_refusals = 0
        self._counters["chunks_accepted"] += 1
        self._counters["steps_dropped"] += result.dropped_steps
        self._counters["blends"] += int(result.blended)
        self._watchdog.on_chunk(now_ns)
        if self._settings.output_mode == "trajectory":
            self._publish_trajectories(now_ns)

    def _check_header(self, embodiment: str, dt_s: float, t_obs_ns: int, now_ns: int) -> None:
        """Raise ValueError for a chunk of another robot, another step period, or from the future."""
        if embodiment != self._spec.name:
            raise ValueError(f"chunk for embodiment {embodiment!r}, this adapter drives {self._spec.name!r}")
        if not abs(dt_s - self._spec.timing.dt) <= 1e-9 * self._spec.timing.dt:
            raise ValueError(f"dt {dt_s:g} s differs from the embodiment's {self._spec.timing.dt:g} s "
                             f"({self._spec.timing.action_rate_hz:g} Hz)")
        ahead_s = (t_obs_ns - now_ns) * 1e-9
        if ahead_s > self._settings.max_future_stamp_s:
            raise ValueError(f"stamped {ahead_s:.3f} s in the future (more than max_future_stamp_s "
                             f"{self._settings.max_future_stamp_s:g} s ahead of this node's clock)")

    def _check_plausible(self, targets: np.ndarray, relative: np.ndarray, anchor: np.ndarray, t_obs_ns: int,
                         now_ns: int) -> None:
        """Raise ImplausibleError unless the chunk passes ``plausibility.check_chunk`` against the measured
        joint states (the one nearest t_obs, the newest)."""
        if self._joint_state is None:
            raise ImplausibleError("implausible chunk: no joint state yet to check it against")
        near = self._states.nearest(t_obs_ns, round(self._settings.joint_state_timeout_s * 1e9))
        first = min(self._buffer.first_step(t_obs_ns, now_ns, len(targets)), len(targets) - 1)
        check_chunk(targets, first, relative, anchor, None if near is None else near[1], self._joint_state[1],
                    self._spec, self._limits, self._spec.safety)

    def _refuse(self, chunk_id: int, error: ImplausibleError) -> None:
        """Hold (the plan is dropped) and report: WARN, ERROR after ``safety.refusals_for_error`` in a row."""
        self._buffer.clear()
        self._consecutive_refusals += 1
        self._counters["chunks_refused"] += 1
        self._last_rejection = f"refused chunk {chunk_id}: {error}"
        self._hold_reason = self._last_rejection
        self.get_logger().warning(f"{self._last_rejection}; holding", throttle_duration_sec=1.0)

    # ---------------------------------------------------------------- command loop
    def _seed(self, now_ns: int) -> np.ndarray | None:
        """The first command: the measured joint positions (zero velocity on twist dimensions)."""
        if self._joint_state is None or now_ns - self._joint_state[0] > self._settings.joint_state_timeout_s * 1e9:
            self._hold_reason = "no recent joint state to start from"
            return None
        positions = self._joint_state[1]
        missing = [n for n, twist in zip(self._spec.action_names, self._twist_mask) if not twist and n not in positions]
        if missing:
            self._hold_reason = f"joint state lacks {missing}"
            return None
        return np.array([0.0 if twist else positions[n] for n, twist in zip(self._spec.action_names, self._twist_mask)])

    def _target(self, now_ns: int) -> np.ndarray | None:
        if self._estop:
            self._hold_reason = "e-stop"
        elif self._watchdog.expired(now_ns):
            self._hold_reason = "watchdog: next chunk overdue"
            self._buffer.clear()
        else:
            target = self._buffer.sample(now_ns)
            if target is not None:
                self._hold_reason = ""
                return target
            self._hold_reason = self._hold_reason or "no chunk step covers now"
        return None

    @_holding_plan_lock
    def _tick(self) -> None:
        if not self._active:
            return
        now_ns = self.get_clock().now().nanoseconds
        dt_s = tick_interval_s(self._last_tick_ns, now_ns, 1.0 / self._settings.command_rate_hz)
        self._last_tick_ns = now_ns
        target = self._target(now_ns)
        if self._limiter is None:
            if target is None:
                return  # nothing to hold yet: publish nothing before the first valid step
            seed = self._seed(now_ns)
            if seed is None:
                return
            self._limiter, self._command = RateLimiter(self._limits, initial=seed), seed
        if self._estop:  # e-stop: freeze at the last command at once (no deceleration ramp), base stopped
            command = np.where(self._twist_mask, 0.0, self._command)
            self._limiter.reset(command)
            self._command = command
            self._publish_stream(now_ns, command)
            return
        if target is None:  # hold: the last command for joints, zero velocity for the base
            target = np.where(self._twist_mask, 0.0, self._command)
        try:
            command, limited = self._limiter.step(target, dt_s)
        except ValueError as error:  # non-finite target: hold
            self._hold_reason = f"refused target: {error}"
            command, limited = self._command, np.zeros_like(target, dtype=bool)
        self._counters["ticks_limited"] += int(np.any(limited))
        self._command = command
        self._publish_stream(now_ns, command)

    # ---------------------------------------------------------------- output
    def _publish_stream(self, now_ns: int, command: np.ndarray) -> None:
        trajectory_mode = self._settings.output_mode == "trajectory"
        for group in self._spec.controller_groups:
            values = command[self._group_index[group.name]]
            publisher = self._group_pubs[group.name]
            if group.kind == "twist" or not (trajectory_mode or self._settings.stream_message == "joint_trajectory"):
                publisher.publish(command_message(group.kind, values))
            elif not trajectory_mode or (self._hold_reason and self._hold_reason != self._published_hold):
                # a single-point stream, or in trajectory mode the hold point (once per hold)
                publisher.publish(self._trajectory(group.names, now_ns, [0], values[None]))
        if trajectory_mode:
            self._published_hold = self._hold_reason

    def _trajectory(self, names: tuple[str, ...], now_ns: int, offsets_ns, positions: np.ndarray) -> JointTrajectory:
        """Points at now + offset (the first strictly after now), zero velocity at the last point."""
        period_ns = round(1e9 / self._settings.command_rate_hz)
        message = JointTrajectory(joint_names=list(names))
        message.header.stamp = ns_to_stamp(now_ns)
        for index, (offset, row) in enumerate(zip(offsets_ns, positions)):
            offset = max(int(offset), period_ns * (index + 1))
            point = JointTrajectoryPoint(positions=row.tolist(),
                                         time_from_start=Duration(sec=offset // 10**9, nanosec=offset % 10**9))
            if index == len(positions) - 1:
                point.velocities = [0.0] * len(names)
            message.points.append(point)
        return message

    def _publish_trajectories(self, now_ns: int) -> None:
        times_ns, values = self._buffer.remaining(now_ns)
        if len(times_ns) == 0 or self._limiter is None:
            return
        limiter = RateLimiter(self._limits, initial=self._command)
        limited, previous = [], now_ns
        for t_ns, row in zip(times_ns, values):
            limited.append(limiter.step(row, max(t_ns - previous, 1) * 1e-9)[0])
            previous = t_ns
        limited = np.array(limited)
        for group in self._spec.controller_groups:
            if group.kind == "joints":
                index = self._group_index[group.name]
                self._group_pubs[group.name].publish(
                    self._trajectory(group.names, now_ns, times_ns - now_ns, limited[:, index]))

    def _publish_diagnostics(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        level, message = (WARN, f"holding: {self._hold_reason}") if self._hold_reason else (OK, "executing chunks")
        if self._consecutive_refusals >= self._spec.safety.refusals_for_error:
            level, message = ERROR, f"{self._consecutive_refusals} chunks refused in a row: {self._last_rejection}"
        values = {**self._counters, "consecutive_refusals": self._consecutive_refusals, "estop": self._estop,
                  "hold_reason": self._hold_reason or "none", "last_rejection": self._last_rejection or "none",
                  "last_joint_state_refusal": self._last_state_refusal or "none"}
        self._diagnostics_pub.publish(diagnostic_array(now_ns, f"{self.get_name()}: adapter", self._spec.name, level,
                                                       message, values))


def main(args: list[str] | None = None) -> None:
    """Console script ``adapter_node``."""
    spin_node(AdapterNode, args, threads=1)  # short callbacks that never block: the cheapest executor (executor.py)

