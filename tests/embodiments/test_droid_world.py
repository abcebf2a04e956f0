"""The simulated DROID world (dreamzero_embodiments.sim.droid_world): determinism, control, gripper map,
cameras, limits, the render process and the silent import.

Tolerances: a target counts as reached within 0.01 rad after 3 s of simulated time (the position
motors settle to ~1e-4 rad within about 1 s for the moves below, measured on pybullet 3.2.7).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dreamzero_embodiments.limits import JointLimitSet, limits_from_urdf
from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.sim.droid_world import READY_Q, DroidWorld, RenderProcess
from dreamzero_embodiments.spec import load_embodiment

SPEC = load_embodiment("droid")
MOVE = np.array([0.3, 0.2, -0.3, 0.3, 0.4, -0.3, 0.5])  # rad, well inside the limits from READY_Q
REACHED_RAD = 0.01
CLOSED_RAD = SPEC.state[1].unit_map.ros[1]  # 0.81: droid.yaml gripper_position unit_map


@pytest.fixture
def world() -> DroidWorld:
    world = DroidWorld(seed=0)
    yield world
    world.close()


def _run(seed: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Joint positions after a fixed command sequence, and the first frames after it."""
    world = DroidWorld(seed=seed)
    try:
        world.set_targets(READY_Q + MOVE, CLOSED_RAD)
        world.step(0.5)
        return world.joint_positions()[1], world.render()
    finally:
        world.close()


def test_same_seed_gives_identical_joint_positions_and_frames() -> None:
    (q_a, frames_a), (q_b, frames_b) = _run(7), _run(7)
    assert np.array_equal(q_a, q_b)
    assert list(frames_a) == list(frames_b)
    for key in frames_a:
        assert np.array_equal(frames_a[key], frames_b[key]), key


def test_different_seeds_place_the_objects_differently() -> None:
    worlds = [DroidWorld(seed=s) for s in (0, 1, 0)]
    try:
        poses = [w.state().object_poses for w in worlds]  # tray, red cube, blue cube: x y z qx qy qz qw
    finally:
        for w in worlds:
            w.close()
    assert np.array_equal(poses[0], poses[2])
    moved = np.linalg.norm(poses[0][:, :2] - poses[1][:, :2], axis=1)
    assert moved.max() > 0.05, moved
    on_table = poses[1][1:, 2]
    assert np.all(np.abs(on_table - on_table[0]) < 1e-3)  # both cubes rest at the same height


def test_arm_reaches_commanded_targets(world: DroidWorld) -> None:
    names, start = world.joint_positions()
    assert names == list(SPEC.state_names)
    target = READY_Q + MOVE
    assert np.abs(start[:7] - target).max() > 0.25
    applied, _ = world.set_targets(target)
    assert np.allclose(applied, target)
    assert world.step(3.0) == 720  # 3 s of 1/240 s steps
    assert world.time_s == pytest.approx(3.0)
    np.testing.assert_allclose(world.joint_positions()[1][:7], target, atol=REACHED_RAD)


def test_gripper_closes_at_0_81_and_opens_at_0(world: DroidWorld) -> None:
    world.set_targets(gripper=CLOSED_RAD)
    world.step(1.0)
    fingers_m = world.state().robot_q[7:]
    assert np.all(fingers_m < 0.002), fingers_m  # both fingers near 0 m: closed
    assert world.joint_positions()[1][7] == pytest.approx(CLOSED_RAD, abs=0.03)
    world.set_targets(gripper=0.0)
    world.step(1.0)
    fingers_m = world.state().robot_q[7:]
    assert np.all(fingers_m > 0.038), fingers_m  # 0.04 m: open
    assert world.joint_positions()[1][7] == pytest.approx(0.0, abs=0.03)
    _, half = world.set_targets(gripper=CLOSED_RAD / 2)
    world.step(1.0)
    assert half == pytest.approx(CLOSED_RAD / 2)
    assert world.state().robot_q[7:] == pytest.approx([0.02, 0.02], abs=0.002)  # linear map: half-way is 2 cm


def test_renders_are_rgb_frames_of_the_yaml_size_with_content(world: DroidWorld) -> None:
    frames = world.render()
    assert list(frames) == [c.key for c in SPEC.cameras]
    for camera in SPEC.cameras:
        frame = frames[camera.key]
        assert frame.shape == (*camera.resolution, 3) and frame.dtype == np.uint8
        assert frame.std() > 10.0, camera.key  # a scene, not a blank or constant image
        assert len(np.unique(frame.reshape(-1, 3), axis=0)) > 100, camera.key


def test_wrist_camera_follows_the_hand_and_exterior_cameras_stay(world: DroidWorld) -> None:
    before = world.render()
    world.set_targets(READY_Q + np.array([0.6, 0, 0, 0, 0, 0, 0]))  # swing the base joint
    world.step(2.0)
    after = world.render()
    changed = {k: np.mean(np.abs(after[k].astype(int) - before[k].astype(int)) > 30) for k in before}
    assert changed["wrist_image_left"] > 0.2, changed  # most of the wrist view moved with the hand
    for key in ("exterior_image_1_left", "exterior_image_2_left"):
        assert 0.0 < changed[key] < 0.1, changed  # only the arm moved in the fixed views


def test_camera_size_is_configurable() -> None:
    world = DroidWorld(seed=0, camera_size=(90, 160))
    try:
        assert {k: f.shape for k, f in world.render().items()} == {c.key: (90, 160, 3) for c in SPEC.cameras}
    finally:
        world.close()


def test_targets_outside_the_urdf_limits_are_clipped(world: DroidWorld) -> None:
    upper, lower = world.upper[:7], world.lower[:7]
    applied, gripper = world.set_targets(np.full(7, 10.0), 5.0)
    assert np.array_equal(applied, upper)
    assert gripper == CLOSED_RAD
    world.step(4.0)
    q = world.joint_positions()[1]
    assert np.all(q[:7] <= upper + 1e-3) and np.abs(q[:7] - upper).max() < 0.02
    applied, gripper = world.set_targets(np.full(7, -10.0), -1.0)
    assert np.array_equal(applied, lower)
    assert gripper == 0.0


@pytest.mark.parametrize("arm_q", [np.zeros(6), np.array([0, 0, 0, np.nan, 0, 0, 0])])
def test_malformed_arm_targets_raise_and_keep_the_previous_targets(world: DroidWorld, arm_q: np.ndarray) -> None:
    _, before = world.joint_positions()
    with pytest.raises(ValueError, match="7 finite values"):
        world.set_targets(arm_q)
    with pytest.raises(ValueError, match="finite"):
        world.set_targets(gripper=float("nan"))
    world.step(1.0)
    np.testing.assert_allclose(world.joint_positions()[1], before, atol=1e-3)


def test_render_process_renders_the_same_frames_as_the_world(world: DroidWorld) -> None:
    world.set_targets(READY_Q + MOVE, CLOSED_RAD)
    world.step(1.0)
    keys = ("wrist_image_left", "exterior_image_2_left")
    renderer = RenderProcess(seed=0, keys=keys)
    try:
        frames = renderer.render(world.state())
    finally:
        renderer.close()
    expected = world.render(keys)
    assert list(frames) == list(keys)
    for key in keys:
        assert np.array_equal(frames[key], expected[key]), key
    with pytest.raises(RuntimeError, match="closed"):
        renderer.submit(world.state())


def test_render_process_reports_an_unknown_camera() -> None:
    renderer = RenderProcess(seed=0, keys=("no_such_camera",))
    with pytest.raises(RuntimeError, match="no_such_camera"):
        renderer.wait_ready()


def test_import_prints_nothing() -> None:
    """pybullet's C-level build banner (environment.md G15) must not reach stdout or stderr."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    result = subprocess.run([sys.executable, "-c", "import dreamzero_embodiments.sim.droid_world"],
                            capture_output=True, text=True, env=env, timeout=60, check=True)
    assert (result.stdout, result.stderr) == ("", "")


def droid_urdf_limits() -> JointLimitSet:
    """urdf/droid.urdf.xacro's limits of the DROID state names, read as sim_droid's ``robot_limits`` reads them
    (the acceleration is a deployment parameter the world does not use)."""
    urdf = load_joint_limits(Path(__file__).resolve().parents[2] / "urdf" / SPEC.robot_description)
    return limits_from_urdf(SPEC.state_names, urdf, acceleration=10.0)


def test_the_robots_own_arm_limits_stop_a_pushed_joint_where_its_readings_are_checked() -> None:
    # sim_droid gives the world urdf/droid.urdf.xacro's limits: a wrist pushed hard (as by a hand pressed on the
    # table) stops at the URDF's 3.7525 rad instead of panda.urdf's 3.8223, past which the policy node and the
    # adapter refuse every reading.
    import pybullet as p

    highest = {}
    for limits in (None, droid_urdf_limits()):
        world = DroidWorld(seed=0, limits=limits)
        start = READY_Q.copy()
        start[5] = 3.70
        world.reset(start)
        world.set_targets(start)
        readings = []
        for _ in range(240):  # 1 s of physics steps, each with the push
            p.applyExternalTorque(world._robot, int(world._joints[5]), (0, 60, 0), p.LINK_FRAME,
                                  physicsClientId=world._client)
            world.step(world.physics_dt_s)
            readings.append(world.joint_positions()[1][5])
        highest[limits is not None] = max(readings)
        world.close()
    assert highest[False] > 3.80  # panda.urdf's limit lets the push through
    assert highest[True] < droid_urdf_limits().upper[5] + 0.01  # well within the policy node's tolerance (0.0377 rad)
    with pytest.raises(ValueError, match="panda_gripper_joint"):
        DroidWorld(seed=0, limits=droid_urdf_limits().select(SPEC.state_names[:7]))


def test_the_gripper_closes_within_the_urdf_velocity_when_given_it() -> None:
    # panda.urdf's fingers snap shut at about 19 rad/s in gripper units; the 2F-85's URDF allows 2.0 rad/s,
    # and the policy node refuses a reading that moved faster. sim_droid passes that limit.
    fastest = {}
    for limits in (None, droid_urdf_limits()):
        world = DroidWorld(seed=0, limits=limits)
        world.set_targets(READY_Q, 0.0)
        world.step(0.5)
        world.set_targets(None, CLOSED_RAD)
        previous, speeds = world.joint_positions()[1][7], []
        for _ in range(90):  # 1 s, read every 1/90 s
            world.step(1 / 90)
            reading = world.joint_positions()[1][7]
            speeds.append(abs(reading - previous) * 90)
            previous = reading
        fastest[limits is not None] = max(speeds)
        assert previous == pytest.approx(CLOSED_RAD, abs=0.01)  # closed all the same (no cube in the way)
        world.close()
    assert fastest[False] > 5.0 and fastest[True] <= droid_urdf_limits().max_velocity[7]  # 2.0 rad/s
