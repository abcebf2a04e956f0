"""The simulated tasks (sim/tasks.py) and the scripted demonstrator (sim/demonstrator.py), without ROS.

Placement per seed, success tests on hand-made states (the gripper put on a cube or the cube put into the
tray kinematically), and the demonstrator solving each task on a stepped world for a few seeds within
the limits of ``urdf/droid.urdf.xacro``. About 20 s on the 2-core development machine (the put-in-tray
rollouts simulate ~12 s each).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dreamzero_embodiments.limits import limits_from_urdf
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.sim import demonstrator as demo
from dreamzero_embodiments.sim.droid_world import (CUBE_HALF_M, OBJECT_NAMES, READY_Q, ROBOT_BASE, TABLE_TOP_Z_M,
                                                   TRAY_FLOOR_TOP_M, DroidWorld)
from dreamzero_embodiments.sim.tasks import TASKS, Task, cube_in_tray, find_task
from dreamzero_embodiments.spec import load_embodiment

SPEC = load_embodiment("droid")
URDF = Path(__file__).resolve().parents[2] / "urdf" / "droid.urdf.xacro"
LIMITS = limits_from_urdf(SPEC.state_names, load_joint_limits(URDF), 10.0)  # 10 rad/s^2: control_mux's default
CLOSED_RAD = LIMITS.upper[7]  # 0.81, droid.yaml gripper unit map
CONTROL_DT_S = 1.0 / 30.0  # dreamzero collect's tick
REACH_M = 0.75  # horizontal reach from the base with the hand pointing down at table height (Panda: 0.855 m)
TASK = {t.name: t for t in TASKS}


class Worlds:
    """DroidWorlds by seed, each built on first use and reused (tests reset them when done)."""

    def __init__(self) -> None:
        self._built: dict[int, DroidWorld] = {}

    def __getitem__(self, seed: int) -> DroidWorld:
        if seed not in self._built:
            self._built[seed] = DroidWorld(seed)
        return self._built[seed]

    def close(self) -> None:
        for world in self._built.values():
            world.close()


@pytest.fixture(scope="module")
def worlds() -> Worlds:
    cache = Worlds()
    yield cache
    cache.close()


def _poses(world: DroidWorld) -> np.ndarray:
    return np.array([world.object_pose(name) for name in OBJECT_NAMES])


def test_placement_is_deterministic_per_seed_and_differs_across_seeds(worlds: Worlds) -> None:
    again = DroidWorld(3)
    try:
        np.testing.assert_array_equal(_poses(worlds[3]), _poses(again))
    finally:
        again.close()
    xy = np.array([_poses(worlds[seed])[:, :2] for seed in range(6)])  # seed, object, x y
    for a in range(6):
        for b in range(a + 1, 6):
            assert np.linalg.norm(xy[a] - xy[b], axis=1).max() > 0.05, (a, b)


@pytest.mark.parametrize("seed", range(12))
def test_objects_lie_on_the_table_within_reach_and_apart(worlds: Worlds, seed: int) -> None:
    world = worlds[seed]
    tray, red, blue = (world.object_pose(n) for n in OBJECT_NAMES)
    for cube in (red, blue):
        assert np.linalg.norm(cube[:2] - np.array(ROBOT_BASE[:2])) <= REACH_M
        assert cube[2] == pytest.approx(TABLE_TOP_Z_M + CUBE_HALF_M, abs=2e-3)  # resting on the table
        assert np.abs(cube[:2] - tray[:2]).max() > 0.15 + CUBE_HALF_M * np.sqrt(2)  # clear of the 0.3 m tray
    assert np.linalg.norm(red[:2] - blue[:2]) > 2 * CUBE_HALF_M * np.sqrt(2)  # no overlap at any yaw
    assert not cube_in_tray(world, "red_cube") and not cube_in_tray(world, "blue_cube")


def test_find_task_takes_instructions_or_names_and_rejects_others() -> None:
    assert find_task("Touch the red cube.") is TASK["touch_red_cube"]
    assert find_task("  touch the BLUE cube ") is TASK["touch_blue_cube"]
    assert find_task("put_red_cube_in_tray").instruction == "Put the red cube in the tray."
    with pytest.raises(ValueError, match="Touch the red cube"):
        find_task("Touch the green cube.")


def _fingertips_on(world: DroidWorld, cube: str, height_m: float) -> None:
    """Put the closed gripper straight above ``cube``, fingertips ``height_m`` above its top (negative: pressed in)."""
    pose = world.object_pose(cube)
    state = world.state()
    fingers_closed = np.concatenate([state.robot_q[:7], [0.0, 0.0]])
    world.show(type(state)(state.time_s, fingers_closed, state.object_poses))
    target = pose[:3] + [0.0, 0.0, CUBE_HALF_M + demo.FINGERTIP_BELOW_GRASP_M + height_m]
    wanted = demo.hand_down(demo.grasp_yaw(pose[3:], 0.0)).as_quat()
    q = READY_Q
    for _ in range(20):
        world.place_arm(q)
        q = world.inverse_kinematics(target, wanted)
    world.place_arm(q)
    assert np.linalg.norm(world.grasp_pose()[0] - target) < 1e-3


def test_touch_succeeds_on_the_named_cube_only_and_not_from_above(worlds: Worlds) -> None:
    world = worlds[0]
    world.reset(READY_Q)
    assert not any(task.success(world) for task in TASKS)  # at the start nothing is done
    _fingertips_on(world, "red_cube", -0.001)
    assert TASK["touch_red_cube"].success(world)
    assert not TASK["touch_blue_cube"].success(world)
    _fingertips_on(world, "red_cube", 0.01)  # hovering 1 cm above
    assert not TASK["touch_red_cube"].success(world)
    _fingertips_on(world, "blue_cube", 0.0)
    assert TASK["touch_blue_cube"].success(world) and not TASK["touch_red_cube"].success(world)
    world.reset(READY_Q)


def test_put_in_tray_needs_the_cube_in_the_tray_and_released(worlds: Worlds) -> None:
    world = worlds[1]
    world.reset(READY_Q)
    state = world.state()
    poses = state.object_poses.copy()
    tray = poses[OBJECT_NAMES.index("tray")]
    red = OBJECT_NAMES.index("red_cube")
    poses[red, :3] = tray[:3] + [0.03, -0.02, TRAY_FLOOR_TOP_M + CUBE_HALF_M]  # resting on the tray floor
    world.show(type(state)(state.time_s, state.robot_q, poses))
    assert TASK["put_red_cube_in_tray"].success(world)
    assert not TASK["put_blue_cube_in_tray"].success(world)
    _fingertips_on(world, "red_cube", -0.001)  # still held (touched): not released
    assert not TASK["put_red_cube_in_tray"].success(world)
    poses[red, :3] = tray[:3] + [0.03, -0.02, 0.12]  # above the tray, not in it
    world.show(type(state)(state.time_s, state.robot_q, poses))
    assert not TASK["put_red_cube_in_tray"].success(world)
    poses[red, :3] = tray[:3] + [0.16, 0.0, TRAY_FLOOR_TOP_M + CUBE_HALF_M]  # beside the tray
    world.show(type(state)(state.time_s, state.robot_q, poses))
    assert not TASK["put_red_cube_in_tray"].success(world)
    world.reset(READY_Q)


def _other(task: Task) -> Task:
    return next(t for t in TASKS if t.kind == task.kind and t.target != task.target)


@pytest.mark.parametrize(("name", "seed"), [("touch_red_cube", 0), ("touch_red_cube", 1), ("touch_blue_cube", 0),
                                            ("touch_blue_cube", 2), ("put_red_cube_in_tray", 0),
                                            ("put_blue_cube_in_tray", 1)])
def test_demonstrator_solves_the_task_on_a_stepped_world_within_the_urdf_limits(worlds: Worlds, name: str,
                                                                                seed: int) -> None:
    task, world = TASK[name], worlds[seed]
    world.reset(READY_Q)
    model = DroidWorld(seed)
    try:
        plan = demo.plan_demonstration(model, task, world.state(), LIMITS, CLOSED_RAD)
    finally:
        model.close()
    result = demo.rollout(world, plan, task.success, CONTROL_DT_S, hold_s=0.5, timeout_s=plan.duration_s + 3.0)
    try:
        assert result.success_s is not None and result.success_s <= plan.duration_s + 1.0, (result.success_s, plan)
        assert task.success(world) and not _other(task).success(world)  # still true after the hold
        # the plan: inside the position limits, within VELOCITY_FRACTION of the velocity limits and smooth
        samples = np.column_stack([plan.arm_q, plan.gripper])
        assert np.all(samples >= LIMITS.lower) and np.all(samples <= LIMITS.upper)
        velocity = np.abs(np.diff(samples, axis=0)) * demo.PLAN_RATE_HZ
        assert np.all(velocity <= demo.VELOCITY_FRACTION * LIMITS.max_velocity + 1e-9)
        acceleration = np.abs(np.diff(plan.arm_q, n=2, axis=0)) * demo.PLAN_RATE_HZ ** 2
        assert acceleration.max() <= demo.ACCELERATION_FRACTION * LIMITS.max_acceleration[0] + 1e-9
        # what was commanded and what the simulated robot did: within the URDF's limits
        assert np.all(result.commands >= LIMITS.lower) and np.all(result.commands <= LIMITS.upper)
        assert np.all(np.abs(np.diff(result.commands, axis=0)) / CONTROL_DT_S <= LIMITS.max_velocity)
        measured_velocity = np.abs(np.diff(result.arm_q, axis=0)) / CONTROL_DT_S
        assert np.all(measured_velocity <= LIMITS.max_velocity[:7]), measured_velocity.max(axis=0)
        assert np.all(result.arm_q >= LIMITS.lower[:7] - 1e-3) and np.all(result.arm_q <= LIMITS.upper[:7] + 1e-3)
    finally:
        world.reset(READY_Q)


def test_plans_are_deterministic_and_start_where_the_robot_is(worlds: Worlds) -> None:
    world = worlds[2]
    world.reset(READY_Q)
    world.step(0.3)  # the arm sags a little under gravity: the plan starts from the measured joints
    plans = []
    for _ in range(2):
        model = DroidWorld(2)
        try:
            plans.append(demo.plan_demonstration(model, TASK["touch_blue_cube"], world.state(), LIMITS, CLOSED_RAD))
        finally:
            model.close()
    np.testing.assert_array_equal(plans[0].arm_q, plans[1].arm_q)
    arm, gripper = plans[0].at(0.0)
    np.testing.assert_allclose(arm, world.joint_positions()[1][:7], atol=1e-12)
    assert plans[0].at(-1.0)[0].tolist() == arm.tolist()
    assert plans[0].at(plans[0].duration_s + 5.0)[0].tolist() == plans[0].arm_q[-1].tolist()
    world.reset(READY_Q)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_starts_lie_over_the_table_and_the_demonstrator_touches_from_them(worlds: Worlds, seed: int) -> None:
    """A random start (``dreamzero collect --random-start``): the grasp frame in the start box, the hand pointing
    down, the joints within the limits; from it the plan rises first when it starts below the approach height
    (so it passes above the other objects) and touches the cube, leaving the other cube where it was."""
    task, world = TASK[("touch_red_cube", "touch_blue_cube")[seed % 2]], worlds[seed]
    model = DroidWorld(seed)
    try:
        start_q = demo.random_start(model, LIMITS, np.random.default_rng(seed))
        assert np.all(start_q >= LIMITS.lower[:7]) and np.all(start_q <= LIMITS.upper[:7])
        model.place_arm(start_q)
        position, quaternion = model.grasp_pose()
        (x_low, x_high), (y_low, y_high), (z_low, z_high) = demo.START_BOX_M
        assert x_low - 1e-3 <= position[0] <= x_high + 1e-3 and y_low - 1e-3 <= position[1] <= y_high + 1e-3
        assert z_low - 1e-3 <= position[2] - TABLE_TOP_Z_M <= z_high + 1e-3
        hand_z = demo.Rotation.from_quat(quaternion).as_matrix()[:, 2]
        assert hand_z[2] < -0.99  # pointing down
        world.reset(start_q)
        plan = demo.plan_demonstration(model, task, world.state(), LIMITS, CLOSED_RAD)
    finally:
        model.close()
    cube_top = world.object_pose(task.target)[2] + CUBE_HALF_M
    low_start = position[2] < cube_top + demo.FINGERTIP_BELOW_GRASP_M + demo.APPROACH_HEIGHT_M
    assert ("rise" in [name for name, _ in plan.phases]) == low_start
    np.testing.assert_allclose(plan.at(0.0)[0], start_q, atol=1e-12)
    other = _other(task).target
    before = world.object_pose(other)
    result = demo.rollout(world, plan, task.success, CONTROL_DT_S, hold_s=0.5, timeout_s=plan.duration_s + 3.0)
    try:
        assert result.success_s is not None, plan.phases
        assert np.all(result.commands >= LIMITS.lower) and np.all(result.commands <= LIMITS.upper)
        np.testing.assert_allclose(world.object_pose(other)[:3], before[:3], atol=1e-3)  # the other cube untouched
    finally:
        world.reset(READY_Q)
