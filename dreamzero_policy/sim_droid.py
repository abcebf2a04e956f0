"""sim_droid: the simulated DROID robot, so the node graph runs closed-loop without hardware (ARCHITECTURE.md §2).

Graph (every topic from the embodiment YAML ``droid``, relative, remappable): subscribes each joint
controller group's ``command_topic`` (``arm_controller/commands``: 7 positions in rad;
``gripper_controller/commands``: 1 position, 0 rad open .. 0.81 rad closed), both
``std_msgs/Float64MultiArray``; publishes ``joint_states`` (``sensor_msgs/JointState``, the YAML's
state names), one ``sensor_msgs/Image`` (rgb8, frame_id = camera key) per camera topic, and, with
``use_sim_clock``, ``rosgraph_msgs/Clock`` on ``clock``. Parameters: :data:`dreamzero_policy.params.SIM_DROID_PARAMS`. The
world itself (pybullet scene, gripper mapping, cameras) is ``dreamzero_embodiments.sim.droid_world``; its arm
joints stop at ``urdf/droid.urdf.xacro``'s position limits and its gripper moves within the URDF's velocity limit
(``robot_limits`` with the default robot parameters): the bounds the policy node and the adapter check its
readings against.

Timing. A physics tick at ``joint_state_rate_hz`` steps the world by the physics steps due (fixed
step 1/``physics_rate_hz``) and publishes the joint state. With ``use_sim_clock`` false the sim
follows the node clock: the steps due are the wall time elapsed (more than :data:`MAX_CATCHUP_S`
behind is dropped, so after a stall the sim runs late instead of spiralling) and stamps come from
the node clock. With ``use_sim_clock`` true the sim keeps its own time: every tick advances it by
one tick period whatever the wall clock did, publishes it on ``clock`` and stamps with it; run the
other nodes with ``use_sim_time:=true`` (remap ``clock`` to ``/clock`` under a namespace) and keep
``use_sim_time`` false on this node, whose timers must run on wall time to drive the clock. A
supervisor in the same process may stop simulated time with :meth:`SimDroid.hold_time` (``dreamzero
eval-sim`` stops it while the policy computes): held ticks do nothing at all (no physics, clock, joint
state or frame), so to every node on ``/clock`` the world waits.

Cameras. A render timer at ``camera_rate_hz`` in its own MutuallyExclusiveCallbackGroup snapshots
the world and renders all cameras of that instant; the images carry the snapshot's stamp.
TinyRenderer costs about 40-60 ms per 320x180 camera and holds the GIL, so rendering in this
process would stall the physics tick too: with ``render_processes`` > 0 the cameras are rendered
in that many child processes (:class:`~dreamzero_embodiments.sim.droid_world.RenderProcess`) and
this process only waits on pipes. Three cameras at DROID's 15 Hz need about 1.8 cores: use 3
processes there, and e.g. 5 Hz and 1 process on a 2-core CI machine. With ``lockstep_cameras`` (needs
``use_sim_clock``) there is no render timer: the physics tick that first reaches the next frame's
simulated time (k / ``camera_rate_hz``) renders and publishes the frame before it returns, so simulated
time waits for the cameras, the frames fall on the same simulated instants on a slow machine as on a
fast one, and none is skipped (``dreamzero collect`` runs the sim so). A supervisor in the same
process reads the world's state with :meth:`SimDroid.world_state`.

Safe behaviour: a command of the wrong length or with a non-finite value is dropped with a throttled
warning and the arm keeps its last target; before any command it holds its start pose (the ready pose
``droid_world.READY_Q`` plus ``start_offset_rad``, zeros by default). If rendering fails the cameras stop (an error is logged) while joint
states and commands go on, so downstream the policy node sees stale cameras and stops producing
chunks. Shutdown (:meth:`SimDroid.destroy_node`) stops the render processes.
"""
from __future__ import annotations

import math
import threading
import traceback
from dataclasses import dataclass, fields

import numpy as np
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.sim.droid_world import READY_Q, DroidWorld, RenderProcess, WorldState
from dreamzero_embodiments.spec import ControllerGroup, EmbodimentSpec, load_embodiment
from dreamzero_policy.conversions import ns_to_stamp, rgb_to_image
from dreamzero_policy.lifecycle import spin_node
from dreamzero_policy.params import LIMIT_PARAMS, SIM_DROID_PARAMS, declare, read
from dreamzero_policy.robot_limits import LimitSettings, robot_limits
from dreamzero_policy.qos import camera_qos, reliable_qos

EMBODIMENT = "droid"
MAX_CATCHUP_S = 0.25  # most simulated time one tick may add in wall-clock mode
RENDER_TIMEOUT_S = 10.0  # longest wait for one frame from a render process (a frame takes ~0.1 s)

@dataclass(frozen=True)
class SimSettings:
    """The sim's parameters, read once at construction."""

    seed: int
    physics_rate_hz: float
    camera_rate_hz: float
    joint_state_rate_hz: float
    use_sim_clock: bool
    render_processes: int
    lockstep_cameras: bool
    start_offset_rad: tuple[float, ...]

    @classmethod
    def from_node(cls, node: Node) -> SimSettings:
        values = read(node, SIM_DROID_PARAMS)
        values["start_offset_rad"] = tuple(values["start_offset_rad"])
        return cls(**{f.name: values[f.name] for f in fields(cls)})


class SimDroid(Node):
    """See module docstring. A plain node: everything is created in the constructor (which raises on bad
    parameters) and released by :meth:`destroy_node`."""

    def __init__(self, **kwargs) -> None:
        super().__init__("sim_droid", **kwargs)
        declare(self, SIM_DROID_PARAMS)
        self._settings: SimSettings | None = None
        self._spec: EmbodimentSpec | None = None
        self._world: DroidWorld | None = None
        self._renderers: list[RenderProcess] = []
        self._roles: dict[str, str] = {}  # controller group name -> "arm" | "gripper"
        self._joint_state_pub = None
        self._clock_pub = None
        self._camera_pubs: dict[str, object] = {}
        self._lock = threading.Lock()  # every call into the world holds it
        self._render_lock = threading.Lock()  # held for a whole frame: teardown never cuts into one
        self._start_ns = 0
        self._ticks = 0
        self._steps_done = 0
        self._cameras_failed = False
        self._frames = 0  # lockstep_cameras: index k of the last frame time rendered
        self._held = False  # hold_time: ticks do nothing
        try:
            self._setup()
        except Exception:
            self._teardown()
            raise

    def _setup(self) -> None:
        settings = self._settings = SimSettings.from_node(self)
        if settings.lockstep_cameras and not settings.use_sim_clock:
            raise ValueError("lockstep_cameras needs use_sim_clock: only a simulated clock can wait for the frames")
        spec = self._spec = load_embodiment(EMBODIMENT)
        limits = robot_limits(spec, LimitSettings.from_values({p.name: p.default for p in LIMIT_PARAMS}))
        world = self._world = DroidWorld(settings.seed, physics_dt_s=1.0 / settings.physics_rate_hz, spec=spec,
                                         limits=limits)
        if len(settings.start_offset_rad) != 7:
            raise ValueError(f"start_offset_rad must hold 7 joint offsets (rad), got {list(settings.start_offset_rad)}")
        if any(settings.start_offset_rad):
            world.reset(READY_Q + np.asarray(settings.start_offset_rad))
        for group in spec.controller_groups:  # the YAML's groups must map onto the simulated joints
            if group.kind == "joints" and group.names == world.joint_names[:7]:
                self._roles[group.name] = "arm"
            elif group.kind == "joints" and group.names == world.joint_names[7:]:
                self._roles[group.name] = "gripper"
            else:
                raise ValueError(f"controller group {group.name!r} ({group.kind}, {group.names}) matches neither the "
                                 f"arm {world.joint_names[:7]} nor the gripper {world.joint_names[7:]}")
        keys = world.camera_keys
        self._renderers = [RenderProcess(settings.seed, keys[i::settings.render_processes])
                           for i in range(min(settings.render_processes, len(keys)))]
        physics = MutuallyExclusiveCallbackGroup()
        self._joint_state_pub = self.create_publisher(JointState, spec.joint_states_topic, reliable_qos())
        if settings.use_sim_clock:
            self._clock_pub = self.create_publisher(Clock, "clock", reliable_qos(depth=1))
        # reliable publishers match both best-effort (the policy node's default) and reliable subscribers
        self._camera_pubs = {c.key: self.create_publisher(Image, c.topic, camera_qos("reliable")) for c in spec.cameras}
        for group in spec.controller_groups:
            self.create_subscription(Float64MultiArray, group.command_topic,
                                     lambda msg, group=group: self._on_command(group, msg), reliable_qos(),
                                     callback_group=physics)
        self._start_ns = self.get_clock().now().nanoseconds
        self.create_timer(1.0 / settings.joint_state_rate_hz, self._tick, callback_group=physics)
        if not settings.lockstep_cameras:
            self.create_timer(1.0 / settings.camera_rate_hz, self._render,
                              callback_group=MutuallyExclusiveCallbackGroup())
        self.get_logger().info(f"simulating {spec.name} (seed {settings.seed}): physics {settings.physics_rate_hz} Hz, "
                               f"cameras {settings.camera_rate_hz} Hz in {len(self._renderers)} render process(es), "
                               f"{'sim' if settings.use_sim_clock else 'node'} clock"
                               f"{', cameras in lockstep' if settings.lockstep_cameras else ''}")

    # ---------------------------------------------------------------- callbacks
    def _on_command(self, group: ControllerGroup, msg: Float64MultiArray) -> None:
        values = np.asarray(msg.data, dtype=np.float64)
        if values.shape != (len(group.names),) or not np.all(np.isfinite(values)):
            self.get_logger().warning(f"dropped a command on {group.command_topic}: expected {len(group.names)} "
                                      f"finite values, got {list(msg.data)}", throttle_duration_sec=2.0)
            return
        with self._lock:
            if self._world is None:
                return
            if self._roles[group.name] == "arm":
                self._world.set_targets(arm_q=values)
            else:
                self._world.set_targets(gripper=float(values[0]))

    def _due_steps(self, now_ns: int) -> int:
        """Physics steps to take this tick (see "Timing" in the module docstring)."""
        settings = self._settings
        if settings.use_sim_clock:
            self._ticks += 1
            due = int(self._ticks * settings.physics_rate_hz / settings.joint_state_rate_hz) - self._steps_done
            self._steps_done += due
            return due
        due = int((now_ns - self._start_ns) * 1e-9 * settings.physics_rate_hz) - self._steps_done
        self._steps_done += due  # steps beyond the cap are dropped, not owed
        return min(due, int(MAX_CATCHUP_S * settings.physics_rate_hz))

    def _stamp_ns(self, now_ns: int, sim_time_s: float) -> int:
        return round(sim_time_s * 1e9) if self._settings.use_sim_clock else now_ns

    def _tick(self) -> None:
        now_ns = self.get_clock().now().nanoseconds
        with self._lock:  # publishing inside too: after teardown nothing publishes on destroyed publishers
            if self._world is None or self._held or not self.context.ok():
                return
            self._world.step(self._due_steps(now_ns) * self._world.physics_dt_s)
            names, positions = self._world.joint_positions()
            stamp_ns = self._stamp_ns(now_ns, self._world.time_s)
            if self._clock_pub is not None:  # the clock first, so a listener's time has reached the state's stamp
                self._clock_pub.publish(Clock(clock=ns_to_stamp(stamp_ns)))
            message = JointState(name=names, position=positions.tolist())
            message.header.stamp = ns_to_stamp(stamp_ns)
            self._joint_state_pub.publish(message)
            frame_due = self._settings.lockstep_cameras and self._frame_due(self._world.time_s)
        if frame_due:  # outside the lock, which _render takes; nothing steps meanwhile (this callback group)
            self._render()

    def _frame_due(self, sim_time_s: float) -> bool:
        """lockstep_cameras: whether this tick is the first at or after a frame's simulated time k / camera_rate_hz
        (k >= 1; at most one frame per tick)."""
        frame = math.floor(sim_time_s * self._settings.camera_rate_hz + 1e-6)  # 1e-6: float round-off of the ticks
        if frame <= self._frames:
            return False
        self._frames = frame
        return True

    def hold_time(self, held: bool) -> None:
        """Stop (``held``) or restart simulated time; a tick running now finishes first (see "Timing").

        Raises:
            ValueError: without ``use_sim_clock`` (the sim then follows the node clock, which it cannot stop).
        """
        if not self._settings.use_sim_clock:
            raise ValueError("hold_time needs use_sim_clock: only a simulated clock can be stopped")
        with self._lock:
            self._held = held

    def world_state(self) -> WorldState | None:
        """A snapshot of the simulated world (joints, object poses, simulated time; ``droid_world.WorldState``)
        for a supervisor in this process, e.g. ``dreamzero collect``'s success test; None after teardown."""
        with self._lock:
            return None if self._world is None else self._world.state()

    def _render(self) -> None:
        with self._render_lock:
            if self._cameras_failed or self._world is None:
                return
            with self._lock:
                state = self._world.state()
                stamp_ns = self._stamp_ns(self.get_clock().now().nanoseconds, state.time_s)
                images = None if self._renderers else self._world.render()
            try:
                if images is None:
                    for renderer in self._renderers:  # all start, then all are collected: they render in parallel
                        renderer.submit(state)
                    images = {}
                    for renderer in self._renderers:
                        images.update(renderer.result(RENDER_TIMEOUT_S))
            except (RuntimeError, TimeoutError):
                self._cameras_failed = True
                self.get_logger().error(f"rendering failed, cameras stopped:\n{traceback.format_exc()}")
                return
            if not self.context.ok():  # Ctrl-C shut the context down while this frame rendered
                return
            for key, publisher in self._camera_pubs.items():
                publisher.publish(rgb_to_image(images[key], stamp_ns, frame_id=key))

    # ---------------------------------------------------------------- teardown
    def _teardown(self) -> None:
        """Stop the render processes and close the world; tolerates partial construction, safe twice."""
        with self._render_lock:
            for renderer in self._renderers:
                renderer.close()
            self._renderers = []
            with self._lock:
                if self._world is not None:
                    self._world.close()
                self._world = None

    def destroy_node(self) -> None:
        self._teardown()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    """Console script ``sim_droid``."""
    spin_node(SimDroid, args)


__all__ = ["SIM_DROID_PARAMS", "SimDroid", "SimSettings", "main"]
