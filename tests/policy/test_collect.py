"""``dreamzero collect`` in-process: two short touch episodes through the graph (demonstrator -> teleop/<group>
-> control_mux -> sim_droid), one from the ready pose and one from a random start (``--random-start 0.5``:
seeds 2 and 3 draw one of each), one bag and one metadata.json per episode, which ``dreamzero dataset`` then
turns into a training dataset as they are, on which ``dreamzero train`` trains the tiny model a few steps
into a checkpoint that the policy node's local backend runs on the recorded frames (issue 15's whole chain:
ROS bag in, checkpoint out).

The graph runs in this process (console scripts would run the installed copy of the package). Cameras
at 5 Hz in one render process, so it fits the 2-core CI machine; about 30-60 s there, most of it
the two episodes' ~4 simulated seconds each with the cameras rendered in lockstep.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from rclpy.serialization import deserialize_message
from rosbags.rosbag2 import Reader
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.sim.droid_world import READY_Q
from dreamzero_embodiments.sim.tasks import find_task
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.bags.dataset import DatasetOptions, convert_bags
from dreamzero_policy.bags.record import receive_stamp_ns
from dreamzero_policy.cli import build_parser, main
from dreamzero_policy.collect import TICK_RATE_HZ, CollectOptions, demonstration_limits, recorded_topics, run_collect
from dreamzero_policy.conversions import image_to_rgb, stamp_to_ns

SPEC = load_embodiment("droid")
CAMERA_RATE_HZ = 5.0
TIMEOUT_S = 10.0  # simulated; a touch takes ~3 s
HOLD_S = 1.0  # simulated seconds after the touch
RANDOM_START = 0.5  # seed 2 starts at the ready pose, seed 3 at a random pose (collect.start_pose)


def _read_bag(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    """Topic -> [(bag stamp ns, raw CDR)] in bag order."""
    messages: dict[str, list[tuple[int, bytes]]] = {}
    with Reader(path) as reader:
        for connection, stamp_ns, raw in reader.messages():
            messages.setdefault(connection.topic, []).append((stamp_ns, bytes(raw)))
    return messages


@pytest.mark.slow
def test_collected_bags_become_a_dataset_and_a_trained_checkpoint(ros_context, tmp_path: Path,
                                                                   unique_name: str) -> None:
    tasks = (find_task("Touch the red cube."), find_task("Touch the blue cube."))
    options = CollectOptions(tmp_path / "demos", episodes=2, tasks=tasks, seed_start=2, camera_rate_hz=CAMERA_RATE_HZ,
                             render_processes=1, timeout_s=TIMEOUT_S, namespace=unique_name,
                             random_start=RANDOM_START, hold_s=HOLD_S)
    results = run_collect(options)
    print({"wall_s": [round(r.wall_s, 1) for r in results], "sim_s": [round(r.sim_s, 2) for r in results]})
    limits = demonstration_limits("")
    topics = recorded_topics(SPEC, unique_name)
    arm_topic, gripper_topic = (f"/{unique_name}/{g.command_topic}" for g in SPEC.controller_groups)
    for index, (result, task) in enumerate(zip(results, tasks)):
        folder = tmp_path / "demos" / f"episode_{index:04d}"
        metadata = json.loads((folder / "metadata.json").read_text())
        assert metadata == result.metadata
        assert {k: metadata[k] for k in ("instruction", "seed", "success", "task")} == {
            "instruction": task.instruction, "seed": 2 + index, "success": True, "task": task.name}
        assert 1.0 + HOLD_S < metadata["duration_s"] < TIMEOUT_S
        start_q = np.array(metadata["start_q"])
        assert (np.abs(start_q - READY_Q).max() > 0.1) == (index == 1)  # the ready pose, then a random start

        messages = _read_bag(folder / "bag")
        assert set(messages) == set(topics)
        assert {t: len(m) for t, m in messages.items()} == result.counts
        states = [deserialize_message(raw, JointState) for _, raw in messages[f"/{unique_name}/joint_states"]]
        state_s = np.array([stamp_to_ns(m.header.stamp) for m in states]) * 1e-9
        span_s = state_s[-1] - state_s[0]
        np.testing.assert_allclose(states[0].position[:7], start_q, atol=0.02)  # the sim started there
        assert metadata["duration_s"] < span_s < 60.0  # simulated time, from the pre-roll on
        assert len(states) >= 0.95 * span_s * TICK_RATE_HZ  # one per tick, hardly any lost
        assert abs(len(messages["/clock"]) - len(states)) <= 3
        frames = {c.key: [deserialize_message(raw, Image) for _, raw in messages[f"/{unique_name}/{c.topic}"]]
                  for c in SPEC.cameras}
        frame_s = {key: [stamp_to_ns(m.header.stamp) * 1e-9 for m in images] for key, images in frames.items()}
        assert len({tuple(s) for s in frame_s.values()}) == 1  # the three cameras of each frame share its stamp
        stamps = next(iter(frame_s.values()))
        assert abs(len(stamps) - span_s * CAMERA_RATE_HZ) <= 2
        np.testing.assert_allclose(np.diff(stamps), 1.0 / CAMERA_RATE_HZ, atol=1e-6)  # lockstep: none skipped
        assert all((m.height, m.width) == tuple(SPEC.cameras[0].resolution) for m in frames[SPEC.cameras[0].key])
        arm = np.array([deserialize_message(raw, Float64MultiArray).data for _, raw in messages[arm_topic]])
        gripper = np.array([deserialize_message(raw, Float64MultiArray).data for _, raw in messages[gripper_topic]])
        assert len(arm) >= 0.5 * metadata["duration_s"] * TICK_RATE_HZ  # the mux skips a tick now and then
        assert len(gripper) == pytest.approx(len(arm), abs=3)
        assert np.all(arm >= limits.lower[:7]) and np.all(arm <= limits.upper[:7])
        assert np.ptp(arm, axis=0).max() > 0.3  # the arm moved
        assert gripper.max() == pytest.approx(limits.upper[7], abs=0.01)  # closed for the touch
        assert np.abs(states[-1].position[7] - gripper[-1, 0]) < 0.05
        assert np.ptp(arm[-round(0.5 * HOLD_S * TICK_RATE_HZ):], axis=0).max() < 1e-6  # held still after the touch

    # the collected bags are a training dataset as they are (issue 15's chain: collect -> dataset)
    summary = convert_bags([tmp_path / "demos" / f"episode_{i:04d}" / "bag" for i in range(2)], tmp_path / "dataset",
                           SPEC, DatasetOptions(namespace=unique_name, progress=False))
    episodes = [json.loads(line) for line in (tmp_path / "dataset" / "meta" / "episodes.jsonl").read_text().splitlines()]
    assert summary["episodes"] == 2 and not summary["skipped"], summary["skipped"]
    assert [e["tasks"] for e in episodes] == [[t.instruction] for t in tasks]  # from each episode's metadata.json
    for episode in episodes:  # rows at the action rate over the recorded span
        data = pq.read_table(tmp_path / "dataset" / "data" / "chunk-000" /
                             f"episode_{episode['episode_index']:06d}.parquet")
        assert data.num_rows == episode["length"] >= SPEC.timing.horizon + 1
        np.testing.assert_allclose(np.diff(data.column("timestamp").to_numpy()), SPEC.timing.dt, atol=1e-4)

    # ... and `dreamzero train` trains on it: a checkpoint that the policy node's backend runs on a recorded frame
    from dreamzero_model.training.cli import main as train_main
    from dreamzero_model.training.metrics import MetricsLog
    from dreamzero_policy.backends.base import Observation
    from dreamzero_policy.backends.local import LocalBackend

    run = tmp_path / "run"
    assert train_main([str(tmp_path / "dataset"), "--output", str(run), "--init", "tiny", "--steps", "2",
                       "--batch-size", "2", "--vae-steps", "1", "--workers", "0", "--save-every", "2",
                       "--val-every", "0", "--no-augment", "--quiet"]) == 0
    losses = [line["loss"] for line in MetricsLog(run, True).read() if "loss" in line]
    assert len(losses) == 2 and np.isfinite(losses).all()
    views = {key: image_to_rgb(images[0])[None] for key, images in frames.items()}  # the last episode's first frame
    backend = LocalBackend(SPEC, checkpoint=str(run))
    backend.reset(tasks[1].instruction, "session")
    prediction = backend.infer(Observation(t_obs_ns=0, views=views, state=np.array(states[0].position),
                                           prompt=tasks[1].instruction, session_id="session", first_of_session=True))
    assert prediction.actions.shape == (SPEC.timing.horizon, 8) and np.isfinite(prediction.actions).all()


def test_collect_command_line_parses_and_rejects_an_unknown_task(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["collect", "--episodes", "3", "--task", "Touch the red cube.", "--task",
                                      "put_red_cube_in_tray", "-o", str(tmp_path), "--seed-start", "7",
                                      "--camera-rate", "5"])
    assert (args.episodes, args.task, args.seed_start, args.camera_rate) == (
        3, ["Touch the red cube.", "put_red_cube_in_tray"], 7, 5.0)
    assert main(["collect", "--task", "Touch the green cube.", "-o", str(tmp_path / "out")]) == 2
    assert "unknown task 'Touch the green cube.'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    args = build_parser().parse_args(["collect", "--task", "touch_red_cube", "-o", str(tmp_path), "--random-start",
                                      "0.5", "--hold", "1.5"])
    assert (args.random_start, args.hold) == (0.5, 1.5)
    assert main(["collect", "--task", "touch_red_cube", "-o", str(tmp_path / "out"), "--random-start", "1.5"]) == 2
    assert "random_start is the fraction of episodes from a random pose, in [0, 1]" in capsys.readouterr().err
    assert main(["collect", "--task", "touch_red_cube", "-o", str(tmp_path / "out"), "--hold", "-1"]) == 2
    assert "hold_s must be at least 0" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_recorder_stamps_never_go_below_zero_near_the_start_of_sim_time() -> None:
    """Regression: a message that waited 100 ms (wall) in the queue while sim time was 20 ms old got a
    negative bag stamp, and the MCAP writer failed on close ("can't convert negative int to unsigned")."""
    ms, wall = 1_000_000, 1_800_000_000 * 10**9
    assert receive_stamp_ns(now_ns=20 * ms, wall_ns=wall, received_ns=wall - 100 * ms, previous_ns=None) == 0
    assert receive_stamp_ns(now_ns=20 * ms, wall_ns=wall, received_ns=wall - 100 * ms, previous_ns=0) == 1


def test_lockstep_cameras_need_the_sim_clock(ros_context, unique_name: str) -> None:
    from rclpy.parameter import Parameter

    from dreamzero_policy.sim_droid import SimDroid

    with pytest.raises(ValueError, match="lockstep_cameras needs use_sim_clock"):
        SimDroid(namespace=unique_name, parameter_overrides=[Parameter("lockstep_cameras", value=True),
                                                             Parameter("render_processes", value=0)])


def test_the_sim_start_pose_needs_seven_joint_offsets(ros_context, unique_name: str) -> None:
    from rclpy.parameter import Parameter

    from dreamzero_policy.sim_droid import SimDroid

    with pytest.raises(ValueError, match="start_offset_rad must hold 7 joint offsets"):
        SimDroid(namespace=unique_name, parameter_overrides=[Parameter("start_offset_rad", value=[0.1, 0.2]),
                                                             Parameter("render_processes", value=0)])
