"""``dreamzero demo`` (``make demo``): one closed-loop task episode through the whole graph, its run folder and
its command line.

The episode runs in this process (console scripts would run the installed copy of the package), cameras at
5 Hz in one render process to fit the 2-core CI machine. The closed-loop test runs the demo's default policy, the
shipped trained model ``sim_touch`` (``checkpoints/sim_touch``, installed by ``make setup``) with the standard
sampler: its chunks must bring the arm toward the prompted cube and its predicted video must show the scene.
That does not show that it reads the prompt: it does not (it goes to the cube nearer the robot, its model card),
and in this scene both cubes lie ahead of and below the gripper's start.
"""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START, find_task
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_model.mosaics import model_mosaics
from dreamzero_policy import demo
from dreamzero_policy.cli import build_parser, main
from dreamzero_policy.eval_sim import EvalOptions
from dreamzero_policy.sim_episode import demonstration_limits

CHECKPOINT = "sim_touch"  # the policy of the closed-loop test: the demo's default
PROMPT = "Touch the blue cube."
TIMEOUT_S = 8.0  # simulated: the shipped model touches a cube after ~3-4 s (its model card)
SCENE_CORRELATION = 0.3  # predicted vs actual mosaic: sim_touch ~0.6, a random model's noise ~0.06
SPEC = load_embodiment("droid")


def _options(folder: Path, checkpoint: str = "tiny", prompt: str = PROMPT, seed: int | None = None,
             **chosen) -> EvalOptions:
    settings = {"timeout_s": TIMEOUT_S, "sampler": "standard", "steps": None, "camera_rate_hz": 5.0,
                "render_processes": 1, **chosen}
    return demo.demo_options(folder, checkpoint, prompt, seed, **settings)


@pytest.mark.slow
def test_demo_episode_moves_the_arm_toward_the_prompted_cube_within_limits(ros_context, tmp_path: Path,
                                                                          unique_name: str, monkeypatch) -> None:
    monkeypatch.setenv("DREAMZERO_CACHE", str(tmp_path / "cache"))
    options = _options(demo.run_folder(tmp_path / "runs"), CHECKPOINT, namespace=unique_name)
    summary = demo.run_demo(options)
    print(summary)
    (folder,) = (tmp_path / "runs").iterdir()
    assert folder.name.startswith("demo-") and summary["run_folder"] == str(folder)
    assert {"episode_0000.mp4", "joints.png", "summary.json"} == {p.name for p in folder.iterdir()}
    assert json.loads((folder / "summary.json").read_text()) == summary
    assert (folder / summary["video"]).stat().st_size > 10_000 and summary["video_frames"] >= 2
    assert (summary["prompt"], summary["task"], summary["seed"]) == (PROMPT, "touch_blue_cube", EVALUATION_SEED_START)
    assert summary["chunks"] >= 1 and summary["latency_p50_s"] > 0
    assert summary["commands"] > 0 and summary["commands_within_urdf_limits"]
    # the chunks move the arm toward the prompted cube
    assert summary["distance_end_m"] < summary["distance_start_m"], summary
    assert summary["distance_min_m"] <= summary["distance_end_m"]
    # its predicted video shows the scene the cameras then see
    assert summary["predicted_video_frames_compared"] >= 2
    assert summary["predicted_video_correlation"] > SCENE_CORRELATION, summary


def test_predicted_mosaic_correlation_is_one_for_the_scene_and_near_zero_for_noise() -> None:
    rng = np.random.default_rng(0)
    frames = {c.key: cv2.GaussianBlur(rng.integers(0, 256, (*c.resolution, 3), dtype=np.uint8), (31, 31), 8)
              for c in SPEC.cameras}  # smooth, scene-like
    scene = model_mosaics({key: image[None] for key, image in frames.items()}, SPEC, (64, 128))[0]
    assert demo.mosaic_correlation(scene, frames, SPEC) == pytest.approx(1.0)
    assert demo.mosaic_correlation(255 - scene, frames, SPEC) == pytest.approx(-1.0)
    noise = rng.integers(0, 256, scene.shape, dtype=np.uint8)
    assert abs(demo.mosaic_correlation(noise, frames, SPEC)) < 0.05
    assert demo.mosaic_correlation(np.zeros_like(scene), frames, SPEC) == 0.0


def test_commands_outside_the_urdf_limits_are_reported() -> None:
    limits = demonstration_limits("")
    arm = [limits.names.index(name) for name in SPEC.controller_groups[0].names]
    recording = demo.Recording(tuple(n for g in SPEC.controller_groups for n in g.names))
    recording.commands = {"arm": [limits.lower[arm] + 0.1, limits.upper[arm]], "gripper": [np.array([0.0])]}
    assert demo.commands_within_limits(recording, SPEC, limits)
    recording.commands["arm"].append(limits.upper[arm] + np.eye(7)[3] * 1e-3)  # joint 4 a mrad beyond its bound
    assert not demo.commands_within_limits(recording, SPEC, limits)


def test_demo_checkpoint_and_prompt_choose_the_policy_and_the_task(tmp_path: Path, monkeypatch) -> None:
    red, blue = find_task("Touch the red cube."), find_task("Touch the blue cube.")
    options = _options(tmp_path, "tiny")  # random weights: passed on as eval-sim's 'tiny'
    assert (options.checkpoint, options.tasks, options.prompt_override, options.seed_start) == (
        "tiny", (blue,), "", EVALUATION_SEED_START)
    options = _options(tmp_path, "tiny", prompt="Touch the cube.")  # no task's instruction: told on touch_red_cube
    assert (options.tasks, options.prompt_override) == ((red,), "Touch the cube.")
    assert _options(tmp_path, str(tmp_path), seed=EVALUATION_SEED_START + 3).checkpoint == str(tmp_path)
    shipped = tmp_path / "share" / "checkpoints" / "sim_touch"
    monkeypatch.setattr(demo, "shipped_checkpoint", lambda: shipped)
    with pytest.raises(ValueError, match="the shipped checkpoint 'sim_touch' is not installed"):
        _options(tmp_path, "sim_touch")
    shipped.mkdir(parents=True)
    assert _options(tmp_path, "sim_touch").checkpoint == str(shipped)  # on as a directory checkpoint
    assert not list(tmp_path.glob("demo-*"))  # nothing runs, nothing is written


def test_demo_command_line_defaults_and_one_line_errors(tmp_path: Path, capsys) -> None:
    args = build_parser().parse_args(["demo"])
    assert (args.checkpoint, args.prompt, args.seed, args.timeout, args.sampler, args.steps, args.camera_rate,
            args.render_processes, args.output) == (
        "sim_touch", "Touch the red cube.", None, 20.0, "standard", None, 5.0, 3, "runs")
    bad = {("--checkpoint", "sim_tuch"): "is neither 'tiny', 'sim_touch', 'demonstrator' nor a directory",
           ("--seed", "5"): "include training seeds",
           ("--steps", "2"): "the standard sampler takes the official 16",
           ("--camera-rate", "4"): "must divide the tick rate",
           ("--prompt", "Wave."): "the demonstrator follows task instructions only"}
    for (flag, value), message in bad.items():
        chosen = {"--checkpoint": "demonstrator", flag: value}
        argv = ["demo", *[part for pair in chosen.items() for part in pair], "--output", str(tmp_path / "runs")]
        assert main(argv) == 2, argv
        error = capsys.readouterr().err
        assert message in error and error.count("\n") == 1, error
    assert not (tmp_path / "runs").exists()
