"""DroidWorld: the DROID robot in pybullet, for closed-loop runs without hardware (ARCHITECTURE.md §2).

Owns the scene, joint position control, the gripper unit map and the three DROID cameras, plus
:class:`RenderProcess`, which renders cameras in child processes. The ROS node around it is
``dreamzero_policy/sim_droid.py``; nothing here reads a clock: :meth:`DroidWorld.step` advances
simulated time in fixed physics steps.

Scene: pybullet_data's Franka Panda (``franka_panda/panda.urdf``, fixed base) on the edge of a table,
facing +x, with a tray and two cubes (red, blue) placed on the table by the seed. The same seed and
the same calls give identical physics and identical images (TinyRenderer is pure software;
environment.md G15). World frame: z up, metres, radians. For the tasks and the scripted demonstrator
(``sim/tasks.py``, ``sim/demonstrator.py``) a world also answers queries: object poses by name
(:data:`OBJECT_NAMES`), the gripper's distance to an object, the grasp frame's pose, and IK on a
world used as a kinematic model (:meth:`DroidWorld.place_arm`, :meth:`DroidWorld.inverse_kinematics`).

Names come from the embodiment YAML (``robots/droid.yaml``), never from this file: the state names
(``panda_joint1..7``, ``panda_gripper_joint``) and the camera keys. This file only decides which
view each camera key gets (:data:`EXTERIOR_VIEWS`, :data:`WRIST_VIEWS`).

Gripper mapping. DROID's ROS gripper unit is the Robotiq 2F-85 ``finger_joint`` angle, 0 rad open ..
0.81 rad closed (``droid.yaml`` ``gripper_position.unit_map.ros``; ``urdf/droid.urdf.xacro``). The
simulated Panda has a parallel gripper instead: two prismatic fingers, each 0.04 m (open) .. 0 m
(closed) (``panda.urdf`` limits). The map is linear and clipped at both ends::

    finger_m = open_m * (1 - gripper_rad / closed_rad)      (command: both fingers get finger_m)
    gripper_rad = closed_rad * (1 - mean(finger_m) / open_m) (measurement)

so a gripper closed on a 5 cm cube reads about 0.30 rad, not 0.81.

Limits: targets are clipped to the arm's position limits, and the same limits stop the joints
mechanically (pybullet's joint-limit constraint), so a joint pushed by contact never reads beyond them.
They are pybullet_data's ``panda.urdf`` limits unless ``limits`` gives the robot's own: ``sim_droid``
passes those of ``urdf/droid.urdf.xacro`` (narrower by up to 0.07 rad), so the simulated arm stays inside
the range that the policy node and the adapter check its readings against; with panda.urdf's, a hand
pressed on the table pushed joint 6 to 3.822 rad, beyond the URDF's 3.7525, and every reading after that
was refused. Motors use the URDF's effort limits as their maximum forces.

Rendering cost (measured on the 2-core development machine, pybullet 3.2.7): TinyRenderer takes
40-60 ms per 320x180 camera and holds the GIL for the whole call, so a process that renders stalls all
its other threads meanwhile. :class:`RenderProcess` moves that work to child processes.

A world is not thread-safe: callers serialise their calls (``sim_droid`` holds a lock).

Imports numpy, pybullet, pybullet_data and ``dreamzero_embodiments.spec`` and ``.limits`` only.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pybullet_data

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment


def _import_pybullet_quietly():
    """``import pybullet`` without its C-level "pybullet build time: ..." banner (environment.md G15).

    The banner is written by C code (stdout per G15; the 3.2.7 wheel here writes it to stderr), so
    Python's ``redirect_stdout`` cannot catch it: file descriptors 1 and 2 point at /dev/null for the
    duration of the import, and C's stdio buffers are flushed before they are restored.
    """
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    try:
        saved = [os.dup(1), os.dup(2)]
    except OSError:  # no usable descriptors (a detached process): nothing to protect
        import pybullet

        return pybullet
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        import pybullet

        ctypes.CDLL(None).fflush(None)  # the banner may still sit in C's buffer when stdout is a pipe
    finally:
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, devnull):
            os.close(fd)
    return pybullet


p = _import_pybullet_quietly()

DATA = Path(pybullet_data.getDataPath())
PHYSICS_DT_S = 1.0 / 240.0  # pybullet's default fixed time step (pybullet quickstart guide)
GRAVITY_M_S2 = 9.81
TABLE_POSITION = (0.45, 0.0, 0.0)  # table/table.urdf: 1.5 m (x) by 1 m (y); the robot sits at its -x end
TABLE_TOP_Z_M = 0.625  # table/table.urdf: a 0.05 m thick top centred at z = 0.6
ROBOT_BASE = (-0.2, 0.0, TABLE_TOP_Z_M)
FINGER_JOINTS = ("panda_finger_joint1", "panda_finger_joint2")  # panda.urdf
# pybullet's velocity cap of a position motor is soft: capped at the limit, the fingers peaked 12 % above it
# (a 0 -> 0.81 rad close read every 1/90 s), at 90 % still 1 % above; at 85 % they stay below it
GRIPPER_VELOCITY_FRACTION = 0.85
HAND_LINK = "panda_hand"
GRASP_LINK = "panda_grasptarget"  # panda.urdf: 0.105 m along the hand's z axis, between the fingertips
GRIPPER_LINKS = ("panda_hand", "panda_leftfinger", "panda_rightfinger")  # what touches objects
TRAY_SCALE = 0.5  # tray/traybox.urdf is 0.6 m square; half of it fits the reachable workspace
CUBE_HALF_M = 0.025  # cube_small.urdf: 0.05 m cube
CUBE_COLORS = ((0.85, 0.15, 0.1, 1.0), (0.1, 0.3, 0.85, 1.0))
OBJECT_NAMES = ("tray", "red_cube", "blue_cube")  # the rows of WorldState.object_poses, in load order
# traybox.urdf, scaled by TRAY_SCALE: the floor box (0.02 m thick, centred 0.005 m above the tray's origin)
# ends 0.015 m up; the sloped rims (0.575 rad) meet the floor 0.2 m from the centre.
TRAY_FLOOR_TOP_M = 0.015 * TRAY_SCALE
TRAY_INNER_HALF_M = 0.2 * TRAY_SCALE
# Where the seed may put things (world x, y ranges in m): in front of the robot, within the Panda's
# ~0.85 m reach from its base at x = -0.2.
TRAY_X_RANGE, TRAY_ABS_Y_RANGE = (0.35, 0.45), (0.15, 0.25)
CUBE_X_RANGE, CUBE_Y_RANGE = (0.2, 0.5), (-0.3, 0.3)
MIN_CUBE_TRAY_DISTANCE_M = 0.25  # keeps cubes off the tray's sloped rim (scaled tray: 0.3 m square)
MIN_CUBE_DISTANCE_M = 0.1
PLACEMENT_TRIES = 1000
# A pose over the table with the hand pointing down, the wrist camera looking at the workspace.
# Not DROID's calibrated reset pose; within the limits of panda.urdf and urdf/droid.urdf.xacro.
READY_Q = np.array([0.0, -0.1, 0.0, -2.4, 0.0, 2.3, 0.785])
CLIP_NEAR_M, CLIP_FAR_M = 0.02, 5.0
READY = "ready"  # first reply of a render process


@dataclass(frozen=True)
class ExteriorView:
    """A fixed camera: eye and target in the world frame (m), vertical field of view (degrees)."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    fov_deg: float


@dataclass(frozen=True)
class WristView:
    """A camera fixed to the hand link: eye, target and up vector in the hand frame (hand z points
    along the fingers), vertical field of view (degrees)."""

    eye: tuple[float, float, float]
    target: tuple[float, float, float]
    up: tuple[float, float, float]
    fov_deg: float


# DROID's two exterior cameras stand at the left and right front of the table, facing the robot;
# the wrist camera sits on the hand, looking past the fingers. Placements chosen to frame the workspace.
EXTERIOR_VIEWS = {
    "exterior_image_1_left": ExteriorView(eye=(0.85, 0.55, 1.15), target=(0.15, 0.0, 0.85), fov_deg=55.0),
    "exterior_image_2_left": ExteriorView(eye=(0.85, -0.55, 1.15), target=(0.15, 0.0, 0.85), fov_deg=55.0),
}
WRIST_VIEWS = {
    "wrist_image_left": WristView(eye=(0.1, 0.0, -0.03), target=(0.0, 0.0, 0.3), up=(1.0, 0.0, 0.0), fov_deg=80.0),
}


@dataclass(frozen=True)
class WorldState:
    """The kinematic state a renderer needs (what :class:`RenderProcess` sends to its child).

    Attributes:
        time_s: simulated seconds since the last reset.
        robot_q: float64[J], rad or m: every movable Panda joint, arm joints then the two fingers.
        object_poses: float64[K, 7]: per object x, y, z (m) and quaternion x, y, z, w, world frame.
    """

    time_s: float
    robot_q: np.ndarray
    object_poses: np.ndarray


class DroidWorld:
    """The DROID robot in a pybullet ``DIRECT`` world (see module docstring).

    Args:
        seed: places the tray and the cubes; the same seed gives the same world.
        camera_size: (height, width) of every camera image; default: the YAML's resolution, which
            must be the same for all cameras (DROID: 180 x 320).
        physics_dt_s: fixed physics time step.
        spec: the embodiment; default ``load_embodiment("droid")``.
        limits: the robot's own limits in ROS units (``dreamzero_policy.robot_limits``: its URDF's, those the
            adapter and the policy node check), covering ``joint_names``. The arm's positions replace panda.urdf's
            as the joints' mechanical limits (pybullet's joint-limit constraint: a push, e.g. the hand pressed
            on the table, stops there) and as the clip of the targets; the gripper's velocity caps the fingers
            (mapped to m/s by the gripper mapping of the module docstring; :data:`GRIPPER_VELOCITY_FRACTION` of
            it). Default: panda.urdf's positions, fingers as fast as their motors push them.

    Raises:
        ValueError: the spec's names or camera keys do not match this scene, or ``limits`` lacks one of them.
    """

    def __init__(self, seed: int, camera_size: tuple[int, int] | None = None, physics_dt_s: float = PHYSICS_DT_S,
                 spec: EmbodimentSpec | None = None, limits: JointLimitSet | None = None) -> None:
        self.spec = spec if spec is not None else load_embodiment("droid")
        self.seed = int(seed)
        self.physics_dt_s = float(physics_dt_s)
        self.camera_size = tuple(camera_size) if camera_size is not None else self._yaml_camera_size(self.spec)
        self.joint_names, self.camera_keys, self._gripper_closed_rad = self._spec_facts(self.spec)
        self._limits = limits.select(self.joint_names) if limits is not None else None  # names a missing joint
        self._steps = 0
        self._client = p.connect(p.DIRECT)
        try:
            self._build_scene()
        except Exception:
            self.close()
            raise

    # ---------------------------------------------------------------- construction
    @staticmethod
    def _yaml_camera_size(spec: EmbodimentSpec) -> tuple[int, int]:
        sizes = {tuple(c.resolution) for c in spec.cameras}
        if len(sizes) != 1:
            raise ValueError(f"{spec.name}: cameras have different resolutions {sorted(sizes)}; pass camera_size")
        return sizes.pop()

    @staticmethod
    def _spec_facts(spec: EmbodimentSpec) -> tuple[tuple[str, ...], tuple[str, ...], float]:
        """(state names: 7 arm joints + gripper, camera keys in model order, gripper closed angle in rad)."""
        arm = next((k for k in spec.state if k.key == "joint_position"), None)
        gripper = next((k for k in spec.state if k.key == "gripper_position"), None)
        if arm is None or arm.dim != 7 or gripper is None or gripper.dim != 1 or gripper.unit_map is None:
            raise ValueError(f"{spec.name}: expected state keys joint_position (7 names) and gripper_position "
                             f"(1 name with a unit_map), got {[(k.key, k.names) for k in spec.state]}")
        keys = tuple(c.key for c in spec.cameras)
        known = {*EXTERIOR_VIEWS, *WRIST_VIEWS}
        if set(keys) != known:
            raise ValueError(f"{spec.name}: the scene has views for cameras {sorted(known)}, "
                             f"the spec names {list(keys)}")
        open_rad, closed_rad = gripper.unit_map.ros
        if open_rad != 0.0 or closed_rad <= 0.0:
            raise ValueError(f"{spec.name}: gripper ROS range must be [0, closed], got {gripper.unit_map.ros}")
        return (*arm.names, *gripper.names), keys, float(closed_rad)

    def _build_scene(self) -> None:
        cid = self._client
        p.setGravity(0.0, 0.0, -GRAVITY_M_S2, physicsClientId=cid)
        p.setTimeStep(self.physics_dt_s, physicsClientId=cid)
        p.loadURDF(str(DATA / "table/table.urdf"), TABLE_POSITION, physicsClientId=cid)
        self._robot = p.loadURDF(str(DATA / "franka_panda/panda.urdf"), ROBOT_BASE, useFixedBase=True,
                                 flags=p.URDF_USE_INERTIA_FROM_FILE, physicsClientId=cid)
        info = {p.getJointInfo(self._robot, j, physicsClientId=cid)[1].decode(): j
                for j in range(p.getNumJoints(self._robot, physicsClientId=cid))}
        links = {p.getJointInfo(self._robot, j, physicsClientId=cid)[12].decode(): j
                 for j in range(p.getNumJoints(self._robot, physicsClientId=cid))}
        wanted = (*self.joint_names[:7], *FINGER_JOINTS)
        missing = [n for n in wanted if n not in info]
        missing_links = [n for n in (HAND_LINK, GRASP_LINK, *GRIPPER_LINKS) if n not in links]
        if missing or missing_links:
            raise ValueError(f"panda.urdf lacks joints {missing} or links {missing_links}")
        self._joints = np.array([info[n] for n in wanted])  # 7 arm joints then 2 fingers
        self._hand = links[HAND_LINK]
        self._grasp = links[GRASP_LINK]
        self._gripper_links = [links[n] for n in GRIPPER_LINKS]
        details = [p.getJointInfo(self._robot, int(j), physicsClientId=cid) for j in self._joints]
        self.lower = np.array([d[8] for d in details])  # float64[9], rad (arm) and m (fingers)
        self.upper = np.array([d[9] for d in details])
        self._max_force = np.array([d[10] for d in details])
        if self._limits is not None:
            self.lower[:7], self.upper[:7] = self._limits.lower[:7], self._limits.upper[:7]
            for joint, lower, upper in zip(self._joints[:7], self.lower[:7], self.upper[:7]):
                p.changeDynamics(self._robot, int(joint), jointLowerLimit=float(lower), jointUpperLimit=float(upper),
                                 physicsClientId=cid)
        self._finger_open_m = float(self.upper[7])
        gripper_rad_s = self._limits.max_velocity[7] if self._limits is not None else np.inf
        self._finger_max_m_s = (GRIPPER_VELOCITY_FRACTION * gripper_rad_s * self._finger_open_m
                                / self._gripper_closed_rad) if np.isfinite(gripper_rad_s) else None
        self._objects = self._place_objects(np.random.default_rng(self.seed))
        self._initial_poses = self._object_poses()
        self.reset(READY_Q)

    def _place_objects(self, rng: np.random.Generator) -> list[int]:
        """The tray (on a random side) and two cubes (random spots away from the tray and each other)."""
        cid = self._client
        tray_xy = np.array([rng.uniform(*TRAY_X_RANGE), rng.choice((-1.0, 1.0)) * rng.uniform(*TRAY_ABS_Y_RANGE)])
        tray = p.loadURDF(str(DATA / "tray/traybox.urdf"), (*tray_xy, TABLE_TOP_Z_M), globalScaling=TRAY_SCALE,
                          physicsClientId=cid)
        objects, placed = [tray], []
        for color in CUBE_COLORS:
            for _ in range(PLACEMENT_TRIES):  # rejection sampling; the ranges leave room for both cubes
                xy = np.array([rng.uniform(*CUBE_X_RANGE), rng.uniform(*CUBE_Y_RANGE)])
                if (np.linalg.norm(xy - tray_xy) >= MIN_CUBE_TRAY_DISTANCE_M
                        and all(np.linalg.norm(xy - q) >= MIN_CUBE_DISTANCE_M for q in placed)):
                    break
            else:
                raise ValueError(f"seed {self.seed}: no free spot for a cube after {PLACEMENT_TRIES} tries")
            placed.append(xy)
            yaw = rng.uniform(-np.pi, np.pi)
            cube = p.loadURDF(str(DATA / "cube_small.urdf"), (*xy, TABLE_TOP_Z_M + CUBE_HALF_M),
                              p.getQuaternionFromEuler((0.0, 0.0, yaw)), physicsClientId=cid)
            p.changeVisualShape(cube, -1, rgbaColor=color, physicsClientId=cid)
            objects.append(cube)
        return objects

    # ---------------------------------------------------------------- state
    def _object_poses(self) -> np.ndarray:
        poses = [p.getBasePositionAndOrientation(o, physicsClientId=self._client) for o in self._objects]
        return np.array([(*position, *orientation) for position, orientation in poses], dtype=np.float64)

    def reset(self, home: np.ndarray) -> None:
        """Arm to ``home`` (float64[7], rad; clipped to the limits) at rest, gripper open, objects back at
        their seeded places, simulated time 0. The targets become the home pose.

        Raises:
            ValueError: ``home`` is not 7 finite values.
        """
        home = self._checked_arm(home)
        cid = self._client
        q = np.concatenate([home, [self._finger_open_m] * 2])
        for joint, value in zip(self._joints, q):
            p.resetJointState(self._robot, int(joint), float(value), 0.0, physicsClientId=cid)
        for body, pose in zip(self._objects, self._initial_poses):
            p.resetBasePositionAndOrientation(body, pose[:3], pose[3:], physicsClientId=cid)
            p.resetBaseVelocity(body, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), physicsClientId=cid)
        self._targets = q
        self._steps = 0

    def _checked_arm(self, arm_q: np.ndarray) -> np.ndarray:
        arm_q = np.asarray(arm_q, dtype=np.float64)
        if arm_q.shape != (7,) or not np.all(np.isfinite(arm_q)):
            raise ValueError(f"arm positions must be 7 finite values (rad), got {arm_q.tolist()}")
        return np.clip(arm_q, self.lower[:7], self.upper[:7])

    def set_targets(self, arm_q: np.ndarray | None = None, gripper: float | None = None) -> tuple[np.ndarray, float]:
        """Position targets for the next :meth:`step` calls; None keeps a target as it is.

        Args:
            arm_q: float64[7], rad, ``panda_joint1..7``; clipped to the URDF limits.
            gripper: ROS units, 0 rad open .. ``closed`` rad (0.81 for DROID); clipped to that range and
                mapped to both finger joints (module docstring).

        Returns:
            The targets in force after clipping: (float64[7] rad, gripper rad).

        Raises:
            ValueError: non-finite values or a wrong arm length; the targets stay as they were.
        """
        arm = self._checked_arm(arm_q) if arm_q is not None else self._targets[:7]
        if gripper is not None:
            if not np.isfinite(gripper):
                raise ValueError(f"gripper position must be finite, got {gripper}")
            finger = self._finger_open_m * (1.0 - np.clip(gripper, 0.0, self._gripper_closed_rad)
                                            / self._gripper_closed_rad)
            fingers = np.array([finger, finger])
        else:
            fingers = self._targets[7:]
        self._targets = np.concatenate([arm, fingers])
        return arm.copy(), self._gripper_rad(fingers)

    def _gripper_rad(self, fingers_m: np.ndarray) -> float:
        closed = 1.0 - float(np.mean(fingers_m)) / self._finger_open_m
        return float(np.clip(closed, 0.0, 1.0) * self._gripper_closed_rad)

    def step(self, seconds: float) -> int:
        """Advance simulated time by ``seconds``, rounded to whole physics steps; returns the step count.

        Raises:
            ValueError: negative or non-finite ``seconds``.
        """
        if not np.isfinite(seconds) or seconds < 0:
            raise ValueError(f"step seconds must be finite and >= 0, got {seconds}")
        count = int(round(seconds / self.physics_dt_s))
        if count == 0:
            return 0
        cid = self._client
        p.setJointMotorControlArray(self._robot, self._joints.tolist(), p.POSITION_CONTROL,
                                    targetPositions=self._targets.tolist(), forces=self._max_force.tolist(),
                                    physicsClientId=cid)
        if self._finger_max_m_s is not None:  # the same targets, with the fingers' speed capped
            for index in (7, 8):
                p.setJointMotorControl2(self._robot, int(self._joints[index]), p.POSITION_CONTROL,
                                        targetPosition=float(self._targets[index]),
                                        force=float(self._max_force[index]), maxVelocity=self._finger_max_m_s,
                                        physicsClientId=cid)
        for _ in range(count):
            p.stepSimulation(physicsClientId=cid)
        self._steps += count
        return count

    @property
    def time_s(self) -> float:
        """Simulated seconds since the last reset (a whole number of physics steps)."""
        return self._steps * self.physics_dt_s

    def _robot_q(self) -> np.ndarray:
        states = p.getJointStates(self._robot, self._joints.tolist(), physicsClientId=self._client)
        return np.array([s[0] for s in states], dtype=np.float64)

    def joint_positions(self) -> tuple[list[str], np.ndarray]:
        """(the YAML's state names, float64[8]): 7 arm joints in rad, then the gripper in ROS units (rad)."""
        q = self._robot_q()
        return list(self.joint_names), np.append(q[:7], self._gripper_rad(q[7:]))

    def state(self) -> WorldState:
        """A snapshot for :meth:`show` (in another world) or a :class:`RenderProcess`."""
        return WorldState(time_s=self.time_s, robot_q=self._robot_q(), object_poses=self._object_poses())

    def show(self, state: WorldState) -> None:
        """Put every body where ``state`` says, at rest: for a render-only replica that never steps.

        Raises:
            ValueError: ``state`` does not fit this world's bodies.
        """
        if state.robot_q.shape != self._joints.shape or state.object_poses.shape != (len(self._objects), 7):
            raise ValueError(f"state with {state.robot_q.shape} joints and {state.object_poses.shape} object poses "
                             f"does not fit {self._joints.shape} joints and {len(self._objects)} objects")
        cid = self._client
        for joint, value in zip(self._joints, state.robot_q):
            p.resetJointState(self._robot, int(joint), float(value), 0.0, physicsClientId=cid)
        for body, pose in zip(self._objects, state.object_poses):
            p.resetBasePositionAndOrientation(body, pose[:3], pose[3:], physicsClientId=cid)

    # ---------------------------------------------------------------- queries for sim/tasks.py, sim/demonstrator.py
    def object_pose(self, name: str) -> np.ndarray:
        """float64[7]: position (m) and quaternion x, y, z, w of object ``name`` (:data:`OBJECT_NAMES`), world frame.

        Raises:
            KeyError: an unknown name.
        """
        return self._object_poses()[self._object_index(name)]

    def _object_index(self, name: str) -> int:
        if name not in OBJECT_NAMES:
            raise KeyError(f"unknown object {name!r}; known: {list(OBJECT_NAMES)}")
        return OBJECT_NAMES.index(name)

    def gripper_distance(self, name: str, within_m: float) -> float:
        """Smallest distance (m) between the gripper (:data:`GRIPPER_LINKS`) and object ``name`` at the current
        poses; <= 0 when they touch (pybullet's contact distance), +inf when farther apart than ``within_m``.
        A query: nothing moves."""
        body = self._objects[self._object_index(name)]
        distances = [point[8] for link in self._gripper_links
                     for point in p.getClosestPoints(self._robot, body, float(within_m), linkIndexA=link,
                                                     physicsClientId=self._client)]
        return float(min(distances)) if distances else float("inf")

    def grasp_pose(self) -> tuple[np.ndarray, np.ndarray]:
        """(float64[3] m, float64[4] quaternion x, y, z, w) of the grasp frame (:data:`GRASP_LINK`, between the
        fingertips, z along the fingers) at the current joint positions, world frame."""
        position, orientation = p.getLinkState(self._robot, self._grasp, computeForwardKinematics=True,
                                               physicsClientId=self._client)[4:6]
        return np.array(position, dtype=np.float64), np.array(orientation, dtype=np.float64)

    def place_arm(self, arm_q: np.ndarray) -> None:
        """Put the arm at ``arm_q`` (float64[7], rad; clipped to the limits) at rest, without stepping and without
        changing the targets: for a kinematic model of the robot (planning), not for a world that is stepped."""
        p.resetJointStatesMultiDof(self._robot, self._joints[:7].tolist(), [[v] for v in self._checked_arm(arm_q)],
                                   physicsClientId=self._client)

    def inverse_kinematics(self, position: np.ndarray, orientation: np.ndarray, iterations: int = 20,
                           residual_m: float = 1e-5) -> np.ndarray:
        """pybullet's damped-least-squares IK of the grasp frame, starting from the current joint positions (so
        a nearby start gives a nearby solution). Position limits are not enforced: the caller clips and checks.

        Args:
            position: float64[3], m, world frame. orientation: float64[4], quaternion x, y, z, w.
        Returns:
            float64[7], rad, panda_joint1..7.
        """
        q = p.calculateInverseKinematics(self._robot, self._grasp, list(map(float, position)),
                                         list(map(float, orientation)), maxNumIterations=int(iterations),
                                         residualThreshold=float(residual_m), physicsClientId=self._client)
        return np.array(q[:7], dtype=np.float64)

    # ---------------------------------------------------------------- cameras
    def render(self, keys: Sequence[str] | None = None) -> dict[str, np.ndarray]:
        """Camera key -> uint8[H, W, 3] RGB, for ``keys`` (default: every camera, model order).

        Raises:
            KeyError: an unknown camera key.
        """
        keys = self.camera_keys if keys is None else self.check_cameras(keys)
        return {key: self._render_camera(key) for key in keys}

    def check_cameras(self, keys: Sequence[str]) -> tuple[str, ...]:
        """``keys`` as a tuple; raises KeyError naming the unknown ones and the known ones."""
        unknown = [k for k in keys if k not in self.camera_keys]
        if unknown:
            raise KeyError(f"unknown cameras {unknown}; known: {list(self.camera_keys)}")
        return tuple(keys)

    def _render_camera(self, key: str) -> np.ndarray:
        height, width = self.camera_size
        cid = self._client
        if key in EXTERIOR_VIEWS:
            view = EXTERIOR_VIEWS[key]
            eye, target, up, fov = view.eye, view.target, (0.0, 0.0, 1.0), view.fov_deg
        else:
            wrist = WRIST_VIEWS[key]
            position, orientation = p.getLinkState(self._robot, self._hand, computeForwardKinematics=True,
                                                   physicsClientId=cid)[4:6]
            rotation = np.array(p.getMatrixFromQuaternion(orientation)).reshape(3, 3)  # hand -> world
            eye = np.asarray(position) + rotation @ wrist.eye
            target = np.asarray(position) + rotation @ wrist.target
            up, fov = rotation @ wrist.up, wrist.fov_deg
        view_matrix = p.computeViewMatrix(list(eye), list(target), list(up), physicsClientId=cid)
        projection = p.computeProjectionMatrixFOV(fov, width / height, CLIP_NEAR_M, CLIP_FAR_M, physicsClientId=cid)
        _, _, rgba, _, _ = p.getCameraImage(width, height, view_matrix, projection, shadow=0,
                                            renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                                            physicsClientId=cid)
        return np.asarray(rgba, dtype=np.uint8).reshape(height, width, 4)[:, :, :3].copy()

    def close(self) -> None:
        """Disconnect; safe to call twice."""
        if self._client is not None and self._client >= 0:
            try:
                p.disconnect(physicsClientId=self._client)
            except p.error:  # already disconnected
                pass
        self._client = None


# ------------------------------------------------------------------------------------ render process
def _serve(connection, seed: int, camera_size: tuple[int, int] | None, keys: tuple[str, ...]) -> None:
    """Child process of :class:`RenderProcess`: a never-stepped replica that renders each state it gets.

    Replies "ready" once, then one images dict per state; any failure is sent back as text. SIGINT is
    ignored: Ctrl-C reaches the whole process group, and the parent decides when the child stops.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        world = DroidWorld(seed, camera_size=camera_size)
        world.check_cameras(keys)
    except Exception:  # noqa: BLE001 - a process boundary: the parent raises it
        connection.send(f"render process failed to start:\n{traceback.format_exc()}")
        return
    connection.send(READY)
    try:
        while (state := connection.recv()) is not None:
            try:
                world.show(state)
                connection.send(world.render(keys))
            except Exception:  # noqa: BLE001 - a process boundary: the parent raises it
                connection.send(f"render failed:\n{traceback.format_exc()}")
    except (EOFError, OSError):  # the parent went away
        pass
    finally:
        world.close()


class RenderProcess:
    """Renders some cameras of a :class:`DroidWorld` replica in a child process.

    TinyRenderer holds the GIL for its whole call (about 40-60 ms per 320x180 camera), so rendering in
    the process that also steps physics and serves ROS callbacks stalls all of them meanwhile. The
    child builds its own world from the same seed (so the same bodies), never steps it, and renders
    each :class:`WorldState` it is sent: the images equal the parent world's own :meth:`DroidWorld.render`.
    One process per camera renders the cameras in parallel, which is what three cameras at 15 Hz
    need (about 1.8 cores). The child is started with ``spawn`` (never ``fork``: the parent may run
    DDS threads) as a daemon; it also exits when the parent's end of the pipe closes.

    Any failure (the child failed or died, or a timeout) closes the process and raises; a closed
    process raises RuntimeError on every later call, it never restarts by itself.

    Args:
        seed: the parent world's seed. keys: the cameras this process renders.
        camera_size: (height, width), as for :class:`DroidWorld`.
    """

    def __init__(self, seed: int, keys: Sequence[str], camera_size: tuple[int, int] | None = None) -> None:
        self.keys = tuple(keys)
        context = multiprocessing.get_context("spawn")
        self._connection, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, int(seed), camera_size, self.keys), daemon=True,
                                        name=f"droid-render-{'-'.join(self.keys)}")
        self._process.start()
        child.close()
        self._ready = self._pending = self._closed = False

    def _receive(self, timeout_s: float, what: str):
        try:
            if not self._connection.poll(timeout_s):
                raise TimeoutError(f"render process {self.keys}: no {what} within {timeout_s:.1f} s")
            reply = self._connection.recv()
            if isinstance(reply, str) and reply != READY:
                raise RuntimeError(f"render process {self.keys}: {reply}")
            return reply
        except (EOFError, OSError) as error:
            self._process.join(1.0)
            self.close()
            raise RuntimeError(f"render process {self.keys} exited (code {self._process.exitcode})") from error
        except (TimeoutError, RuntimeError):
            self.close()
            raise

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"render process {self.keys} is closed")

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Block until the child has built its world (a spawned child takes about 1 s, more on a busy machine).

        Raises:
            TimeoutError, RuntimeError: the child is too slow, failed or died (the message says which).
        """
        self._check_open()
        if not self._ready:
            self._receive(timeout_s, "start-up")
            self._ready = True

    def submit(self, state: WorldState, start_timeout_s: float = 60.0) -> None:
        """Send ``state`` to the child; collect its images with :meth:`result`. Waits for start-up first."""
        self.wait_ready(start_timeout_s)
        if self._pending:
            raise RuntimeError(f"render process {self.keys}: the previous result was not collected")
        self._connection.send(state)
        self._pending = True

    def result(self, timeout_s: float = 10.0) -> dict[str, np.ndarray]:
        """The images of the submitted state: camera key -> uint8[H, W, 3]. Waiting releases the GIL.

        Raises:
            TimeoutError, RuntimeError: as for :meth:`wait_ready`, or nothing was submitted.
        """
        self._check_open()
        if not self._pending:
            raise RuntimeError(f"render process {self.keys}: nothing submitted")
        images = self._receive(timeout_s, "images")
        self._pending = False
        return images

    def render(self, state: WorldState, timeout_s: float = 10.0) -> dict[str, np.ndarray]:
        """:meth:`submit` then :meth:`result`."""
        self.submit(state)
        return self.result(timeout_s)

    def close(self, timeout_s: float = 2.0) -> None:
        """Stop the child (asked first, then terminated); safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._process.is_alive():
            try:
                self._connection.send(None)
            except OSError:  # the child already closed its end
                pass
            self._process.join(timeout_s)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout_s)
        self._connection.close()
