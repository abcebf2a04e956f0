"""``dreamzero eval-sim``: closed-loop episodes through the whole graph (sim_droid -> policy_node -> adapter_node ->
control_mux -> sim_droid) in this process, the report folder, the seed split and the pieces without ROS.

The graph runs in this process (console scripts would run the installed copy of the package), cameras at 5 Hz in
one render process so that it fits the 2-core CI machine. Measured on the 2-core development machine with other
work running (load 4-8): the demonstrator's two touch episodes 33-35 s, its prompt-override episode 18-22 s; a
model's episodes take longer, most of it loading the model in its process (simulated time waits for it).
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dreamzero_embodiments.sim.demonstrator import plan_from_initial_scene
from dreamzero_embodiments.sim.droid_world import DroidWorld, WorldState
from dreamzero_embodiments.sim.scoring import wilson_interval
from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START, TOUCH_DISTANCE_M, check_seeds, find_task
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.backends.base import BackendError, Observation
from dreamzero_policy.backends.demonstrator import DemonstratorBackend
from dreamzero_policy.cli import build_parser, main
from dreamzero_policy.collect import CollectOptions
from dreamzero_policy.eval_sim import EvalOptions, HeldSimBackend, run_eval
from dreamzero_policy.sim_episode import HOLD_S, TICK_RATE_HZ, demonstration_limits
from dreamzero_policy.video import FrameSetVideo

SPEC = load_embodiment("droid")
RED, BLUE = find_task("Touch the red cube."), find_task("Touch the blue cube.")
CAMERA_RATE_HZ = 5.0
CAMERAS_WIDTH = sum(c.resolution[1] for c in SPEC.cameras)  # the three 320-pixel views side by side
SHIPPED_TIMEOUT_S = 6.0  # simulated: the shipped model touches a cube after ~3-4 s


def _options(tmp_path: Path, namespace: str, checkpoint: str, tasks, **chosen) -> EvalOptions:
    return EvalOptions(tmp_path / "report", checkpoint, tasks, camera_rate_hz=CAMERA_RATE_HZ, render_processes=1,
                       namespace=namespace, **chosen)


def _records(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "episodes.jsonl").read_text().splitlines()]


def _video_frames(path: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def _judge_again(record: dict) -> tuple[bool, bool]:
    """Whether the recorded final state satisfies the touch tasks of the red and the blue cube, judged on a fresh
    world of the episode's seed (independent of the run's referee)."""
    state = record["final_state"]
    world = DroidWorld(record["seed"])
    try:
        world.show(WorldState(state["time_s"], np.array(state["robot_q"]), np.array(state["object_poses"])))
        return RED.success(world), BLUE.success(world)
    finally:
        world.close()


@pytest.mark.slow
def test_demonstrator_touches_both_cubes_and_the_report_agrees_with_the_simulator(ros_context, tmp_path: Path,
                                                                                 unique_name: str) -> None:
    options = _options(tmp_path, unique_name, "demonstrator", (RED, BLUE), episodes=2, timeout_s=8.0)
    results = run_eval(options)
    folder = options.output_dir
    print({"wall_s": [r.record["wall_s"] for r in results], "sim_s": [r.record["sim_s"] for r in results]})
    assert {"episodes.jsonl", "episode_0000.mp4", "episode_0001.mp4", "summary.json", "summary.md",
            "plot.png"} <= {p.name for p in folder.iterdir()}
    records = _records(folder)
    assert records == [r.record for r in results]
    for index, (record, task) in enumerate(zip(records, (RED, BLUE))):
        assert {k: record[k] for k in ("index", "seed", "task", "instruction", "prompt", "success")} == {
            "index": index, "seed": EVALUATION_SEED_START + index, "task": task.name,
            "instruction": task.instruction, "prompt": task.instruction, "success": True}
        assert "reached_prompted_object" not in record  # no prompt override
        assert (record["min_distance_m"] <= TOUCH_DISTANCE_M) == record["success"]
        assert _judge_again(record) == (task is RED, task is BLUE)  # the final state touches that cube only
        assert 1.0 < record["time_to_success_s"] < 6.0  # a touch plan lasts ~3 s
        assert record["sim_s"] == pytest.approx(record["time_to_success_s"] + HOLD_S, abs=3 / TICK_RATE_HZ)
        assert record["chunks"] >= record["sim_s"] / (SPEC.timing.horizon * SPEC.timing.dt)
        frames = _video_frames(folder / record["video"])
        assert len(frames) == record["video_frames"]
        assert abs(len(frames) - record["sim_s"] * CAMERA_RATE_HZ) <= 2  # one per camera frame, simulated time
        assert frames[0].shape == (SPEC.cameras[0].resolution[0], CAMERAS_WIDTH, 3)  # no predicted video
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["complete"], summary["episodes"], summary["successes"], summary["success_rate"]) == (
        True, 2, 2, 1.0)
    assert summary["success_rate_ci95"] == pytest.approx(wilson_interval(2, 2), abs=1e-4)
    assert {task: scores["successes"] for task, scores in summary["per_task"].items()} == {
        "touch_red_cube": 1, "touch_blue_cube": 1}
    assert "| touch_blue_cube | 1 | 1 | 100% (" in (folder / "summary.md").read_text()


@pytest.mark.slow
def test_prompt_override_is_judged_against_the_task_and_the_prompted_object(ros_context, tmp_path: Path,
                                                                           unique_name: str) -> None:
    """The demonstrator follows its prompt: told to touch the blue cube on the task touch_red_cube, it fails the
    task and reaches the prompted object."""
    options = _options(tmp_path, unique_name, "demonstrator", (RED,), prompt_override=BLUE.instruction,
                       timeout_s=5.0)
    (result,) = run_eval(options)
    record = _records(options.output_dir)[0]
    assert record == result.record
    assert (record["task"], record["prompt"], record["success"], record["reached_prompted_object"]) == (
        RED.name, BLUE.instruction, False, True)
    assert record["time_to_success_s"] is None and record["min_distance_m"] > TOUCH_DISTANCE_M
    assert record["sim_s"] == pytest.approx(options.timeout_s, abs=2 / TICK_RATE_HZ)
    assert _judge_again(record) == (False, True)
    summary = json.loads((options.output_dir / "summary.json").read_text())
    assert (summary["successes"], summary["reached_prompted_object"]) == (0, 1)


@pytest.mark.slow
def test_shipped_checkpoint_episodes_agree_with_the_simulator_and_show_its_predicted_video(
        ros_context, tmp_path: Path, unique_name: str) -> None:
    """The shipped trained model (``sim_touch``, standard sampler) on one scene of each task: whatever it
    achieves (success rates are measured by its model card's table, not here), each record's success agrees with
    its distance and its end (a failed episode's final state, judged afresh, touches nothing it was told to) and
    its video shows the predicted mosaic beside the cameras."""
    options = _options(tmp_path, unique_name, "sim_touch", (RED, BLUE), episodes=2, timeout_s=SHIPPED_TIMEOUT_S)
    results = run_eval(options)
    print([{k: r.record[k] for k in ("success", "time_to_success_s", "min_distance_m", "chunks", "sim_s", "wall_s")}
           for r in results])
    folder = options.output_dir
    assert {"episodes.jsonl", "episode_0000.mp4", "episode_0001.mp4", "summary.json", "summary.md",
            "plot.png"} <= {p.name for p in folder.iterdir()}
    records = _records(folder)
    assert records == [r.record for r in results]
    for record, task in zip(records, (RED, BLUE)):
        assert (record["task"], record["prompt"]) == (task.name, task.instruction)
        assert record["chunks"] >= 1
        assert (record["min_distance_m"] <= TOUCH_DISTANCE_M) == record["success"]
        if record["success"]:  # ended HOLD_S after the touch or at the timeout (the arm may leave the cube then)
            assert 0 < record["time_to_success_s"] <= record["sim_s"]
            assert record["sim_s"] == pytest.approx(min(record["time_to_success_s"] + HOLD_S, options.timeout_s),
                                                    abs=3 / TICK_RATE_HZ)
        else:  # ran to the timeout, and its final state does not touch the prompted cube
            assert not _judge_again(record)[(RED, BLUE).index(task)], record
            assert record["sim_s"] == pytest.approx(options.timeout_s, abs=2 / TICK_RATE_HZ)
        frames = _video_frames(folder / record["video"])
        assert len(frames) == record["video_frames"] >= 2
        assert frames[-1].shape[1] > CAMERAS_WIDTH and frames[-1][:, CAMERAS_WIDTH:].std() > 5.0  # the mosaic
    summary = json.loads((folder / "summary.json").read_text())
    assert (summary["complete"], summary["episodes"], summary["settings"]["sampler"]) == (True, 2, "standard")
    assert summary["successes"] == sum(r["success"] for r in records)


def test_training_and_evaluation_seeds_never_overlap(tmp_path: Path, capsys) -> None:
    check_seeds(0, EVALUATION_SEED_START, "training")
    check_seeds(EVALUATION_SEED_START, 10, "evaluation")
    with pytest.raises(ValueError, match="reach the evaluation seeds"):
        check_seeds(EVALUATION_SEED_START - 1, 2, "training")
    with pytest.raises(ValueError, match="include training seeds"):
        check_seeds(EVALUATION_SEED_START - 1, 2, "evaluation")
    with pytest.raises(ValueError, match="include training seeds"):
        EvalOptions(tmp_path, "demonstrator", (RED,), seed_start=0)
    with pytest.raises(ValueError, match="reach the evaluation seeds"):
        CollectOptions(tmp_path, 1, (RED,), seed_start=EVALUATION_SEED_START)
    assert EvalOptions(tmp_path, "demonstrator", (RED,)).seed_start == EVALUATION_SEED_START  # the default
    assert main(["eval-sim", "--checkpoint", "demonstrator", "--task", RED.name, "--seed-start", "5",
                 "-o", str(tmp_path / "eval")]) == 2
    assert "include training seeds" in capsys.readouterr().err
    assert main(["collect", "--task", RED.name, "--seed-start", str(EVALUATION_SEED_START),
                 "-o", str(tmp_path / "demos")]) == 2
    assert "reach the evaluation seeds" in capsys.readouterr().err
    assert not (tmp_path / "eval").exists() and not (tmp_path / "demos").exists()


def test_eval_sim_command_line_parses_and_names_bad_choices(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["eval-sim", "--checkpoint", "tiny", "--task", RED.instruction, "--task",
                                      BLUE.name, "--episodes", "4", "--sampler", "flash", "--steps", "2",
                                      "--prompt-override", "Touch the cube.", "-o", str(tmp_path)])
    assert (args.checkpoint, args.task, args.episodes, args.seed_start, args.sampler, args.steps,
            args.prompt_override, args.timeout, args.camera_rate) == (
        "tiny", [RED.instruction, BLUE.name], 4, None, "flash", 2, "Touch the cube.", 30.0, 5.0)
    bad = {("--task", "Touch the green cube."): "unknown task 'Touch the green cube.'",
           ("--checkpoint", str(tmp_path / "missing")): "is neither 'tiny', 'sim_touch', 'demonstrator' nor a directory",
           ("--steps", "4"): "the standard sampler takes the official 16",
           ("--camera-rate", "4"): "must divide the tick rate",
           ("--prompt-override", "Wave."): "the demonstrator follows task instructions only"}
    for (flag, value), message in bad.items():
        chosen = {"--checkpoint": "demonstrator", "--task": RED.name, flag: value}
        argv = ["eval-sim", *[part for pair in chosen.items() for part in pair], "-o", str(tmp_path / "out")]
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _observation(t_obs_s: float) -> Observation:
    return Observation(t_obs_ns=round(t_obs_s * 1e9), views={}, state=np.zeros(8), prompt=RED.instruction,
                       session_id="s", first_of_session=False)


def test_demonstrator_backend_answers_the_plan_from_each_t_obs_on_in_model_units() -> None:
    seed = EVALUATION_SEED_START
    limits = demonstration_limits("")
    backend = DemonstratorBackend.for_episode(SPEC, seed, RED, limits)
    model = DroidWorld(seed)
    try:
        plan = plan_from_initial_scene(model, RED, limits)
    finally:
        model.close()
    backend.reset(RED.instruction, "s")
    first, later = backend.infer(_observation(0.4)), backend.infer(_observation(1.4))  # plan time 0 at t_obs 0.4 s
    dt, closed_rad = SPEC.timing.dt, SPEC.state[1].unit_map.ros[1]
    for prediction, plan_s in ((first, 0.0), (later, 1.0)):
        assert prediction.actions.shape == (SPEC.timing.horizon, 8) and not prediction.relative.any()
        for step in (0, 5, SPEC.timing.horizon - 1):
            arm, gripper = plan.at(plan_s + step * dt)
            np.testing.assert_allclose(prediction.actions[step], [*arm, gripper / closed_rad], atol=1e-12)
    assert later.actions[:, 7].max() == pytest.approx(1.0)  # closed: 0.81 rad is 1 in model units
    with pytest.raises(BackendError, match="planned for 'Touch the red cube.'"):
        backend.reset(BLUE.instruction, "s")
    with pytest.raises(BackendError, match="known task instructions only"):
        backend.reset("Wave.", "s")


def test_held_backend_stops_simulated_time_for_each_call_even_a_failing_one() -> None:
    calls: list[object] = []

    class Backend:
        restarts = 3

        def reset(self, prompt: str, session_id: str) -> None:
            calls.append("reset")

        def infer(self, observation: Observation):
            calls.append("infer")
            raise BackendError("no chunk")

        def close(self) -> None:
            calls.append("close")

    held = HeldSimBackend(Backend(), calls.append)
    held.reset("p", "s")
    with pytest.raises(BackendError):
        held.infer(_observation(0.0))
    held.close()
    assert calls == [True, "reset", False, True, "infer", False, "close"]
    assert held.restarts == 3  # the policy node reads such attributes through the wrapper


def test_frame_set_video_writes_complete_sets_from_the_start_and_waits_for_the_mosaic(tmp_path: Path) -> None:
    keys = [c.key for c in SPEC.cameras]
    video = FrameSetVideo(tmp_path / "v.mp4", CAMERA_RATE_HZ, keys, mosaic_wait_frames=2)
    frame = np.full((180, 320, 3), 200, dtype=np.uint8)
    for stamp in (1, 2, 3):
        for key in keys if stamp != 2 else keys[:2]:  # set 2 stays incomplete: no frame for it
            video.add_camera(key, stamp, frame)
    video.start(3)  # set 1 is before the start
    assert video.frames == 0  # set 3 waits for the mosaic
    video.add_predicted(np.full((32, 64, 3), 90, dtype=np.uint8))
    for key in keys:
        video.add_camera(key, 4, frame)
    assert video.close() == 2
    frames = _video_frames(tmp_path / "v.mp4")
    assert [f.shape for f in frames] == [(180, CAMERAS_WIDTH + 360, 3)] * 2  # sized for the 2:1 mosaic
    assert frames[0][:, CAMERAS_WIDTH:].max() < 20 and abs(frames[1][:, CAMERAS_WIDTH:].mean() - 90) < 10
    with pytest.raises(ValueError, match="unknown camera 'depth'"):
        FrameSetVideo(tmp_path / "w.mp4", CAMERA_RATE_HZ, keys).add_camera("depth", 1, frame)
