"""The scores of ``dreamzero eval-sim`` (sim/scoring.py): the Wilson interval against known values and scipy,
and the goal distance against the tasks' success tests on hand-made states (no stepping, about 2 s)."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import binomtest

from dreamzero_embodiments.limits import limits_from_urdf
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.sim.demonstrator import plan_from_initial_scene
from dreamzero_embodiments.sim.droid_world import OBJECT_NAMES, DroidWorld, WorldState
from dreamzero_embodiments.sim.scoring import DISTANCE_SEARCH_M, goal_distance, wilson_interval
from dreamzero_embodiments.sim.tasks import TASKS, TOUCH_DISTANCE_M, Task, find_task
from dreamzero_embodiments.spec import load_embodiment

SEED = 1_000_003
URDF = Path(__file__).resolve().parents[2] / "urdf" / "droid.urdf.xacro"
# 10 rad/s^2: control_mux's default acceleration limit
LIMITS = limits_from_urdf(load_embodiment("droid").state_names, load_joint_limits(URDF), 10.0)


def test_wilson_interval_of_8_of_10_is_the_textbook_value() -> None:
    low, high = wilson_interval(8, 10)
    assert (round(low, 3), round(high, 3)) == (0.490, 0.943)


@pytest.mark.parametrize(("successes", "trials"), [(0, 1), (1, 1), (0, 10), (3, 10), (10, 10), (17, 50), (99, 100)])
def test_wilson_interval_matches_scipy(successes: int, trials: int) -> None:
    expected = binomtest(successes, trials).proportion_ci(0.95, method="wilson")
    np.testing.assert_allclose(wilson_interval(successes, trials), (expected.low, expected.high), atol=1e-12)


def test_wilson_interval_holds_its_rate_and_narrows_with_more_trials() -> None:
    widths = []
    for trials in (10, 100, 1000):
        low, high = wilson_interval(trials // 2, trials)
        assert low < 0.5 < high
        widths.append(high - low)
    assert widths[0] > widths[1] > widths[2]
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=0.01)  # the normal limit


@pytest.mark.parametrize(("successes", "trials"), [(0, 0), (3, 2), (-1, 4)])
def test_wilson_interval_refuses_impossible_counts(successes: int, trials: int) -> None:
    with pytest.raises(ValueError, match="successes <= trials"):
        wilson_interval(successes, trials)


@pytest.fixture(scope="module")
def world():
    built = DroidWorld(SEED)
    yield built
    built.close()


def _with_cube_at(state: WorldState, cube: str, xyz: np.ndarray) -> WorldState:
    poses = state.object_poses.copy()
    poses[OBJECT_NAMES.index(cube), :3] = xyz
    return WorldState(state.time_s, state.robot_q, poses)


@pytest.mark.parametrize("name", ["touch_red_cube", "touch_blue_cube"])
def test_touch_distance_is_what_the_success_test_compares(world: DroidWorld, name: str) -> None:
    task = find_task(name)
    start = world.state()
    try:
        far = goal_distance(world, task)
        assert 0.1 < far < DISTANCE_SEARCH_M and not task.success(world)  # the ready pose, high above the table
        touch = plan_from_initial_scene(world, task, LIMITS)  # moves the model's arm
        world.show(WorldState(start.time_s, np.concatenate([touch.arm_q[-1], [0.0, 0.0]]), start.object_poses))
        pressed = goal_distance(world, task)  # the plan's last pose presses the closed fingertips onto the cube
        assert pressed <= TOUCH_DISTANCE_M and task.success(world)
        assert pressed == world.gripper_distance(task.target, TOUCH_DISTANCE_M)
    finally:
        world.show(start)


def test_tray_distance_is_the_horizontal_distance_of_the_centres(world: DroidWorld) -> None:
    start = world.state()
    tray = world.object_pose("tray")
    try:
        world.show(_with_cube_at(start, "blue_cube", tray[:3] + [0.03, -0.04, 0.2]))  # above the tray: no success
        task = find_task("Put the blue cube in the tray.")
        assert goal_distance(world, task) == pytest.approx(0.05, abs=1e-9)
        assert not task.success(world)
        assert goal_distance(world, find_task("put_red_cube_in_tray")) > 0.25  # the red cube stays on the table
    finally:
        world.show(start)


def test_every_task_kind_has_a_goal_distance_and_others_are_refused(world: DroidWorld) -> None:
    assert all(np.isfinite(goal_distance(world, task)) for task in TASKS)
    with pytest.raises(ValueError, match="no goal distance for kind 'stack'"):
        goal_distance(world, Task("stack_cubes", "Stack the cubes.", "stack", "red_cube"))
