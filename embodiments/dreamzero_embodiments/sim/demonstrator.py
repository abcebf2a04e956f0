"""A scripted demonstrator that solves every task of ``sim/tasks.py``: a smooth joint trajectory from IK.

:func:`plan_demonstration` turns a task and a world state (start joints, object poses) into a
:class:`Plan`: the arm and gripper positions to command at each time from its start, in ROS units
(7 arm joints in rad, gripper 0 rad open .. 0.81 rad closed). ``dreamzero collect`` publishes it
as a teleoperator would (teleop/arm, teleop/gripper through control_mux), ``dreamzero eval-sim`` as the
policy of its sanity row (``dreamzero_policy/backends/demonstrator.py``); :func:`rollout` executes it
on a stepped :class:`DroidWorld` directly, without ROS.

How a plan is made. A task is a short script of segments: ``hold`` (stand still), ``move`` (the grasp
frame, ``droid_world.GRASP_LINK``, along a straight line to a pose with the hand pointing down at a
yaw, the gripper going to a value meanwhile) and ``grip`` (only the gripper moves). A move follows a
minimum-jerk profile s(t) = 10 t^3 - 15 t^4 + 6 t^5 of its duration (zero velocity and acceleration
at both ends, so segments join smoothly). Its poses are sampled at :data:`PLAN_RATE_HZ` and each one
is solved with pybullet's IK (``DroidWorld.inverse_kinematics``) on a *model* world, a DroidWorld of
the same seed that is never stepped, starting from the previous sample's solution, so consecutive
samples stay close (damped least squares takes the smallest joint step; pybullet's null-space option
was tried and left out: it trades about 1 mm of accuracy for posture and its solutions jitter from
sample to sample, which finite differences turn into accelerations). Solutions are clipped into
the robot's position limits and checked against the wanted pose (:data:`IK_TOLERANCE_M`,
:data:`IK_TOLERANCE_RAD`). A segment lasts long enough that the grasp frame moves at most
:data:`MAX_SPEED_M_S`, and is stretched until every joint moves within :data:`VELOCITY_FRACTION` of its
URDF velocity limit and :data:`ACCELERATION_FRACTION` of the acceleration limit (finite differences of
the samples). The limits are the robot's (``urdf/droid.urdf.xacro``, a ``JointLimitSet`` over the
YAML's state names: 7 arm joints then the gripper), not pybullet_data's ``panda.urdf``.

Scripts (heights are of the grasp frame, which lies :data:`FINGERTIP_BELOW_GRASP_M` above the fingertips):

* touch: close the gripper while moving over the cube (:data:`APPROACH_HEIGHT_M` above its top),
  then descend until the closed fingertips press :data:`TOUCH_PRESS_M` into its top face.
* put in tray: open gripper over the cube, descend around it, close (:data:`GRIP_HOLD_S`), lift to
  :data:`CARRY_HEIGHT_M` above the table, move over the tray's centre, lower the cube to
  :data:`RELEASE_HEIGHT_M` above the tray floor, open, and rise again.

Both scripts begin with a ``rise`` when the grasp frame starts lower than the approach height over the cube
(a start away from the ready pose, :func:`random_start`): straight up first, so the way over to the cube
passes above the other objects. The hand's yaw is the cube's yaw plus a multiple of 90 degrees, the one
nearest the start yaw, so the fingers close on two faces. Plans are open loop: they rely on the position controllers tracking and
on the cube staying where it was until it is grasped (the approach comes from above).

Random starts. :func:`random_start` draws a start pose for a demonstration that does not begin at the
ready pose (``dreamzero collect --random-start``): the grasp frame anywhere in :data:`START_BOX_M` over
the table, the hand pointing down at a yaw within :data:`START_YAW_RAD` of the ready pose's, solved with
the same IK from the ready pose. Such demonstrations show the way to a cube from states a policy reaches
when it strays (the arm low beside a cube, the wrist turned), which demonstrations from the ready pose
alone never visit.

Imports numpy, scipy and the sim modules (pybullet) only; never a clock: times are plan times.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.droid_world import (CUBE_HALF_M, READY_Q, TABLE_TOP_Z_M, TRAY_FLOOR_TOP_M, DroidWorld,
                                                   WorldState)
from dreamzero_embodiments.sim.tasks import Task

PLAN_RATE_HZ = 50.0  # samples per second of a plan; commands in between are interpolated linearly
VELOCITY_FRACTION = 0.5  # of each joint's URDF velocity limit: demonstrations move calmly
ACCELERATION_FRACTION = 0.5  # of the limit set's acceleration (control_mux's limits.max_acceleration)
MAX_SPEED_M_S = 0.25  # peak speed of the grasp frame along a move
MAX_TURN_RAD_S = 1.0  # peak rotation rate of the hand along a move
MIN_SEGMENT_S = 0.3
START_HOLD_S = 0.3  # stand still first: the bag starts at rest
GRIP_HOLD_S = 0.4  # after closing on a cube, before lifting (the fingers squeeze it)
# Geometry, measured in the model world (pybullet 3.2.7, panda.urdf): the closed fingertips' closest-point
# distance to a cube's top face is 0 when the grasp frame is 8 mm above it.
FINGERTIP_BELOW_GRASP_M = 0.008
APPROACH_HEIGHT_M = 0.10  # fingertips above the cube's top before the last, vertical, move
TOUCH_PRESS_M = 0.002  # a light press: position control leaves the contact at about -1 mm
GRASP_HEIGHT_M = 0.01  # grasp frame above the cube's centre: fingers hold the upper part, clear of the table
CARRY_HEIGHT_M = 0.20  # fingertips above the table top while carrying
RELEASE_HEIGHT_M = 0.02  # cube bottom above the tray floor when the gripper opens
# IK refines each sample to IK_PRECISION (so the error differs little between samples: sample-to-sample
# jitter of the joints would show as acceleration) and fails a sample beyond IK_TOLERANCE.
IK_PRECISION_M, IK_PRECISION_RAD = 1e-4, 1e-3
IK_TOLERANCE_M, IK_TOLERANCE_RAD = 1e-3, 1e-2
IK_REFINEMENTS = 6  # IK calls per sample at most, each from the previous clipped solution
LIMIT_MARGIN_RAD = 0.01  # solutions are clipped this far inside the position limits
STRETCH_TRIES = 4
DOWN = Rotation.from_euler("x", math.pi)  # the hand's z axis (along the fingers) pointing down
# Random starts: where the grasp frame may start (world x, y and height above the table top, m): over the cubes'
# area and around it, from just above a cube's top (fingertips 2 cm above it) to well above the approach height.
START_BOX_M = ((0.15, 0.55), (-0.35, 0.35), (0.08, 0.35))
START_YAW_RAD = math.pi / 2  # the hand's yaw within this of the ready pose's
START_TRIES = 20  # samples before random_start gives up


class PlanningError(ValueError):
    """No plan: a pose is out of reach within the limits; the message names the segment and the pose."""


@dataclass(frozen=True)
class Plan:
    """Commands over time (ROS units; see module docstring). N samples at :data:`PLAN_RATE_HZ`.

    Attributes:
        times_s: float64[N], s since the plan's start, increasing from 0.
        arm_q: float64[N, 7], rad, panda_joint1..7.
        gripper: float64[N], rad, 0 open .. 0.81 closed.
        phases: (name, start time s) of each segment, in order.
    """

    times_s: np.ndarray
    arm_q: np.ndarray
    gripper: np.ndarray
    phases: tuple[tuple[str, float], ...]

    @property
    def duration_s(self) -> float:
        return float(self.times_s[-1])

    def at(self, t_s: float) -> tuple[np.ndarray, float]:
        """(float64[7] rad, gripper rad) at ``t_s`` s from the start: linear between samples, the first sample
        before 0 and the last after the end."""
        t_s = float(np.clip(t_s, 0.0, self.duration_s))
        arm = np.array([np.interp(t_s, self.times_s, self.arm_q[:, j]) for j in range(self.arm_q.shape[1])])
        return arm, float(np.interp(t_s, self.times_s, self.gripper))


def minimum_jerk(tau: np.ndarray) -> np.ndarray:
    """s(tau) = 10 tau^3 - 15 tau^4 + 6 tau^5, tau in [0, 1]: 0 -> 1, zero velocity and acceleration at both ends."""
    return tau ** 3 * (10.0 - 15.0 * tau + 6.0 * tau ** 2)


# peak of s'(tau) and |s''(tau)| (minimum-jerk profile): 15/8 and 10/sqrt(3)
PEAK_VELOCITY, PEAK_ACCELERATION = 1.875, 10.0 / math.sqrt(3.0)


def hand_down(yaw_rad: float) -> Rotation:
    """The hand pointing down (its z axis along -z of the world), turned by ``yaw_rad`` about the world's z."""
    return Rotation.from_euler("z", yaw_rad) * DOWN


def grasp_yaw(cube_quaternion: np.ndarray, near_yaw_rad: float) -> float:
    """The yaw at which the fingers (closing along the hand's y axis) meet two faces of the cube: the cube's
    yaw plus the multiple of 90 degrees nearest ``near_yaw_rad``."""
    cube_yaw = Rotation.from_quat(cube_quaternion).as_euler("xyz")[2]
    turns = np.round((near_yaw_rad - cube_yaw) / (np.pi / 2))
    return float(cube_yaw + turns * np.pi / 2)


def hand_yaw(orientation: Rotation) -> float:
    """The yaw of the hand's x axis in the world's xy plane."""
    x_axis = orientation.as_matrix()[:, 0]
    return float(math.atan2(x_axis[1], x_axis[0]))


class _PlanBuilder:
    """Appends segments to a plan, tracking the commanded pose (see module docstring)."""

    def __init__(self, model: DroidWorld, limits: JointLimitSet, start_q: np.ndarray, start_gripper: float) -> None:
        self.model = model
        self.lower, self.upper = limits.lower[:7] + LIMIT_MARGIN_RAD, limits.upper[:7] - LIMIT_MARGIN_RAD
        self.max_velocity = VELOCITY_FRACTION * limits.max_velocity
        self.max_acceleration = ACCELERATION_FRACTION * limits.max_acceleration
        self.gripper_range = (float(limits.lower[7]), float(limits.upper[7]))
        start_q = np.clip(start_q, self.lower, self.upper)
        self.arm = [start_q]
        self.grip = [float(np.clip(start_gripper, *self.gripper_range))]
        self.phases: list[tuple[str, float]] = []
        model.place_arm(start_q)
        position, quaternion = model.grasp_pose()
        self.position, self.orientation = position, Rotation.from_quat(quaternion)

    @property
    def yaw(self) -> float:
        return hand_yaw(self.orientation)

    def _time(self) -> float:
        return (len(self.arm) - 1) / PLAN_RATE_HZ

    def hold(self, name: str, seconds: float) -> None:
        self.phases.append((name, self._time()))
        for _ in range(max(1, round(seconds * PLAN_RATE_HZ))):
            self.arm.append(self.arm[-1])
            self.grip.append(self.grip[-1])

    def gripper(self, name: str, value: float) -> None:
        self.move(name, self.position, self.orientation, value)

    def move(self, name: str, position: np.ndarray, orientation: Rotation, gripper: float | None = None) -> None:
        """Straight line of the grasp frame to ``position`` (m, world) and ``orientation``, min-jerk timed."""
        position = np.asarray(position, dtype=np.float64)
        start_gripper = self.grip[-1]
        gripper = start_gripper if gripper is None else float(np.clip(gripper, *self.gripper_range))
        distance = float(np.linalg.norm(position - self.position))
        turn = float((orientation * self.orientation.inv()).magnitude())
        duration = max(MIN_SEGMENT_S, PEAK_VELOCITY * distance / MAX_SPEED_M_S, PEAK_VELOCITY * turn / MAX_TURN_RAD_S,
                       PEAK_VELOCITY * abs(gripper - start_gripper) / self.max_velocity[7])
        slerp = Slerp([0.0, 1.0], Rotation.concatenate([self.orientation, orientation]))
        for _ in range(STRETCH_TRIES):
            count = max(2, math.ceil(duration * PLAN_RATE_HZ))
            s = minimum_jerk(np.arange(1, count + 1) / count)
            arm = self.solve(name, self.position + s[:, None] * (position - self.position), slerp(s))
            ratio = self._excess(np.vstack([self.arm[-1], arm]))
            if ratio <= 1.0:
                break
            duration *= ratio * 1.02
        else:
            raise PlanningError(f"{name}: joint velocities stay {ratio:.2f}x over the limit after stretching")
        self.phases.append((name, self._time()))
        self.arm.extend(arm)
        self.grip.extend((start_gripper + s * (gripper - start_gripper)).tolist())
        self.position, self.orientation = position, orientation

    def solve(self, name: str, positions: np.ndarray, orientations: Rotation) -> np.ndarray:
        """IK of every sample, each seeded with the previous solution: float64[S, 7] rad."""
        q, solutions = self.arm[-1], []
        for position, wanted in zip(positions, orientations.as_quat()):
            for _ in range(IK_REFINEMENTS):
                self.model.place_arm(q)
                q = np.clip(self.model.inverse_kinematics(position, wanted), self.lower, self.upper)
                self.model.place_arm(q)
                reached, quaternion = self.model.grasp_pose()
                error_m = float(np.linalg.norm(reached - position))
                error_rad = 2.0 * math.acos(min(1.0, abs(float(np.dot(quaternion, wanted)))))
                if error_m <= IK_PRECISION_M and error_rad <= IK_PRECISION_RAD:
                    break
            if error_m > IK_TOLERANCE_M or error_rad > IK_TOLERANCE_RAD:
                yaw = hand_yaw(Rotation.from_quat(wanted))
                raise PlanningError(f"{name}: no IK solution within the limits for the grasp frame at "
                                    f"{np.round(position, 3).tolist()} m, yaw {yaw:.2f} rad "
                                    f"(off by {error_m * 1000:.1f} mm, {error_rad:.3f} rad)")
            solutions.append(q)
        return np.array(solutions)

    def _excess(self, arm: np.ndarray) -> float:
        """Largest ratio of a joint's sampled velocity (or the square root of its acceleration) to its bound."""
        velocity = np.abs(np.diff(arm, axis=0)) * PLAN_RATE_HZ
        ratio = float((velocity / self.max_velocity[:7]).max())
        if len(arm) > 2:
            acceleration = np.abs(np.diff(arm, n=2, axis=0)) * PLAN_RATE_HZ ** 2
            ratio = max(ratio, math.sqrt(float((acceleration / self.max_acceleration[:7]).max())))
        return ratio

    def plan(self) -> Plan:
        times = np.arange(len(self.arm)) / PLAN_RATE_HZ
        return Plan(times, np.array(self.arm), np.array(self.grip), tuple(self.phases))


def plan_demonstration(model: DroidWorld, task: Task, state: WorldState, limits: JointLimitSet,
                       gripper_closed_rad: float) -> Plan:
    """The plan that solves ``task`` from ``state`` (see module docstring).

    Args:
        model: a DroidWorld used as a kinematic model (its arm is moved around; never step it for a run).
        task: what to do. state: the world to do it in: ``robot_q`` (start joints, fingers) and
            ``object_poses`` (rows as ``droid_world.OBJECT_NAMES``), e.g. ``world.state()`` of the run's world.
        limits: the robot's limits over 7 arm joints then the gripper (ROS units), from ``urdf/droid.urdf.xacro``.
        gripper_closed_rad: the gripper's closed position in ROS units (``droid.yaml`` unit map; 0.81).

    Raises:
        PlanningError: a pose out of reach within the limits.
        ValueError: an unknown task kind, or limits that are not 8 dimensions.
    """
    if len(limits.names) != 8:
        raise ValueError(f"limits must cover 7 arm joints and the gripper, got {list(limits.names)}")
    model.show(state)
    start_gripper = model.joint_positions()[1][7]
    builder = _PlanBuilder(model, limits, state.robot_q[:7], start_gripper)
    cube = model.object_pose(task.target)
    yaw = grasp_yaw(cube[3:], builder.yaw)
    down = hand_down(yaw)
    top = cube[2] + CUBE_HALF_M + FINGERTIP_BELOW_GRASP_M  # grasp frame height with the fingertips on the top face
    builder.hold("start", START_HOLD_S)
    approach_z = top + APPROACH_HEIGHT_M
    if builder.position[2] < approach_z:
        builder.move("rise", [builder.position[0], builder.position[1], approach_z], builder.orientation)
    if task.kind == "touch":
        builder.move("approach", [cube[0], cube[1], approach_z], down, gripper_closed_rad)
        builder.move("touch", [cube[0], cube[1], top - TOUCH_PRESS_M], down)
    elif task.kind == "put_in_tray":
        tray = model.object_pose("tray")
        carry = TABLE_TOP_Z_M + CARRY_HEIGHT_M + FINGERTIP_BELOW_GRASP_M
        grasp = cube[2] + GRASP_HEIGHT_M
        release = tray[2] + TRAY_FLOOR_TOP_M + RELEASE_HEIGHT_M + CUBE_HALF_M + GRASP_HEIGHT_M
        builder.move("approach", [cube[0], cube[1], approach_z], down, 0.0)
        builder.move("descend", [cube[0], cube[1], grasp], down)
        builder.gripper("close", gripper_closed_rad)
        builder.hold("squeeze", GRIP_HOLD_S)
        builder.move("lift", [cube[0], cube[1], carry], down)
        builder.move("carry", [tray[0], tray[1], carry], down)
        builder.move("lower", [tray[0], tray[1], release], down)
        builder.gripper("open", 0.0)
        builder.move("retreat", [tray[0], tray[1], carry], down)
    else:
        raise ValueError(f"task {task.name}: no script for kind {task.kind!r}")
    return builder.plan()


def plan_from_initial_scene(model: DroidWorld, task: Task, limits: JointLimitSet) -> Plan:
    """The plan that solves ``task`` from ``model``'s state as built: a fresh DroidWorld of the episode's seed,
    never stepped (the ready pose, the objects where the seed put them: what an operator sees before starting).
    ``dreamzero collect`` teleoperates with it, and ``dreamzero eval-sim``'s demonstrator policy answers with it.
    The gripper closes to the closed position of the world's spec (``droid.yaml``'s gripper unit map).

    Raises:
        PlanningError: a pose out of reach within the limits (see :func:`plan_demonstration`).
    """
    gripper = next(k for k in model.spec.state if k.key == "gripper_position")  # DroidWorld checked it exists
    return plan_demonstration(model, task, model.state(), limits, gripper.unit_map.ros[1])


def random_start(model: DroidWorld, limits: JointLimitSet, rng: np.random.Generator) -> np.ndarray:
    """A random start pose of the arm (module docstring, "Random starts"): float64[7] rad within the limits.

    Args:
        model: a DroidWorld used as a kinematic model (its arm is moved; the objects do not matter).
        limits: as for :func:`plan_demonstration`. rng: draws the pose.

    Raises:
        PlanningError: no sample of :data:`START_TRIES` had an IK solution within the limits.
    """
    (x_low, x_high), (y_low, y_high), (z_low, z_high) = START_BOX_M
    builder = _PlanBuilder(model, limits, READY_Q, 0.0)  # every IK starts from the ready pose
    for _ in range(START_TRIES):
        position = np.array([rng.uniform(x_low, x_high), rng.uniform(y_low, y_high),
                             TABLE_TOP_Z_M + rng.uniform(z_low, z_high)])
        orientation = hand_down(builder.yaw + rng.uniform(-START_YAW_RAD, START_YAW_RAD))
        try:
            return builder.solve("start", position[None], Rotation.concatenate([orientation]))[0]
        except PlanningError:
            continue
    raise PlanningError(f"start: no IK solution within the limits for {START_TRIES} random poses in {START_BOX_M}")


@dataclass(frozen=True)
class Rollout:
    """What :func:`rollout` saw. success_s: simulated time of the first success (None: never);
    end_s: when it stopped; arm_q: float64[K, 7] rad and gripper: float64[K] rad, the measured positions
    after each control step; commands: float64[K, 8], what was commanded (arm, gripper)."""

    success_s: float | None
    end_s: float
    arm_q: np.ndarray
    gripper: np.ndarray
    commands: np.ndarray


def rollout(world: DroidWorld, plan: Plan, success: Callable[[DroidWorld], bool], control_dt_s: float,
            hold_s: float, timeout_s: float) -> Rollout:
    """Execute ``plan`` on ``world`` by stepping it directly (no ROS): every ``control_dt_s`` command
    ``plan.at(t)``, step, test ``success(world)``; stop ``hold_s`` after the first success or at ``timeout_s``
    (simulated seconds from the start)."""
    success_s, measured, commands = None, [], []
    steps = 0
    while True:
        t_s = steps * control_dt_s
        arm, gripper = plan.at(t_s)
        commands.append(np.append(arm, gripper))
        world.set_targets(arm, gripper)
        world.step(control_dt_s)
        steps += 1
        measured.append(world.joint_positions()[1])
        now_s = steps * control_dt_s
        if success_s is None and success(world):
            success_s = now_s
        if (success_s is not None and now_s - success_s >= hold_s) or now_s >= timeout_s:
            break
    positions = np.array(measured)
    return Rollout(success_s, now_s, positions[:, :7], positions[:, 7], np.array(commands))


__all__ = ["Plan", "PlanningError", "Rollout", "grasp_yaw", "hand_down", "minimum_jerk", "plan_demonstration",
           "plan_from_initial_scene", "random_start", "rollout"]
