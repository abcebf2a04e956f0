"""``dreamzero demo`` (``make demo``): one closed-loop task episode of a policy in the simulated DROID world.

The episode is one of ``dreamzero eval-sim`` (:func:`dreamzero_policy.eval_sim.evaluate_episode`, its module
docstring): sim_droid -> policy_node -> adapter_node -> control_mux in policy mode -> the sim, on simulated
time, with the world held while the model computes, so a slow machine runs the same episode, only slower.
The policy (``checkpoint``) is by default the shipped trained tiny model ``sim_touch``
(:func:`dreamzero_policy.paths.shipped_checkpoint`, passed on as its directory); else ``tiny`` (random
weights), ``demonstrator`` (the scripted demonstrator, eval-sim's sanity row) or a checkpoint directory. The
prompt chooses the task: a task's instruction (or name, ``sim/tasks.py``) is that task; any other text is told
to the policy on the task :data:`FREE_TEXT_TASK` (eval-sim's prompt override: success and distance stay
that task's). The seed (evaluation seeds only) places the tray and the cubes.

While it runs, a status line (simulated time, chunks, wall latency, commands). A :class:`DemoRecorder` joins the
episode's graph (``evaluate_episode``'s ``observers``) and keeps the joint states, the commands and the chunks'
wall latencies in a :class:`Recording`. The run folder ``<output>/demo-YYYYmmdd-HHMMSS/`` holds:

* ``episode_0000.mp4``: eval-sim's episode video, the three cameras side by side with the newest
  predicted-video mosaic, one frame per camera frame from the episode's start (simulated time);
* ``joints.png``: commanded and measured joints (arm and gripper) over simulated seconds from the start;
* ``summary.json``: :func:`summarise`.

Whether the model's predicted video shows the scene: each predicted mosaic frame (``policy_node/predicted_video``,
stamped at the future camera instant it predicts) is compared with the mosaic of the camera frames that arrive at
that instant (the live image path, :func:`~dreamzero_model.mosaics.model_mosaics`, at the predicted frame's size):
their pixel correlation is near 1 for a prediction that shows the scene and near 0 for noise (a random model).
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.limits import JointLimitSet
from dreamzero_embodiments.sim.tasks import EVALUATION_SEED_START, find_task
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_model.mosaics import model_mosaics
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy import eval_report
from dreamzero_policy.conversions import image_to_rgb, joint_state_arrays, stamp_to_ns
from dreamzero_policy.eval_sim import DEMONSTRATOR, EpisodeResult, EvalOptions, evaluate_episode
from dreamzero_policy.paths import SHIPPED_CHECKPOINT, shipped_checkpoint
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.sim_episode import SIM_EMBODIMENT, demonstration_limits

FREE_TEXT_TASK = "touch_red_cube"  # the task a prompt that is no task's instruction is told on
STATUS_PERIOD_S = 1.0  # wall s between status lines
STATUS_WIDTH = 80  # characters a status line is padded to, so a shorter one overwrites a longer one
LIMIT_TOLERANCE = 1e-9  # rad or m: float rounding of a command clamped onto a bound
PENDING_FRAME_SETS = 8  # incomplete camera frame sets kept (newest stamps) while the other cameras' frames arrive


def demo_checkpoint(checkpoint: str) -> str:
    """``checkpoint`` as eval-sim takes it: the shipped name becomes its installed directory, others are unchanged.

    Raises:
        ValueError: the shipped checkpoint is not installed.
    """
    if checkpoint != SHIPPED_CHECKPOINT:
        return checkpoint
    folder = shipped_checkpoint()
    if not folder.is_dir():
        raise ValueError(f"the shipped checkpoint {SHIPPED_CHECKPOINT!r} is not installed (no folder {folder}); "
                         f"reinstall the package, or choose --checkpoint tiny, {DEMONSTRATOR} or a directory")
    return str(folder)


def run_folder(output_dir: Path) -> Path:
    """The run folder of a demo started now: ``output_dir/demo-YYYYmmdd-HHMMSS``."""
    return output_dir / datetime.now().strftime("demo-%Y%m%d-%H%M%S")


def demo_options(folder: Path, checkpoint: str, prompt: str, seed: int | None, *, timeout_s: float, sampler: str,
                 steps: int | None, camera_rate_hz: float, render_processes: int, namespace: str = "") -> EvalOptions:
    """The demo's episode as eval-sim's episode 0 (module docstring), written into ``folder``; runs nothing.
    ``seed`` None: the first evaluation seed; the rest as :class:`~dreamzero_policy.eval_sim.EvalOptions`.

    Raises:
        ValueError: as ``EvalOptions`` (seeds, checkpoint, sampler, camera rate, timeout, render processes), or the
            shipped checkpoint missing (:func:`demo_checkpoint`).
    """
    try:
        task, prompt_override = find_task(prompt), ""
    except ValueError:  # free text: told to the policy on FREE_TEXT_TASK
        task, prompt_override = find_task(FREE_TEXT_TASK), prompt
    return EvalOptions(folder, demo_checkpoint(checkpoint), (task,),
                       seed_start=EVALUATION_SEED_START if seed is None else seed, sampler=sampler, steps=steps,
                       prompt_override=prompt_override, timeout_s=timeout_s, camera_rate_hz=camera_rate_hz,
                       render_processes=render_processes, namespace=namespace)


@dataclass
class Recording:
    """What the :class:`DemoRecorder` saw, guarded by ``lock`` (its callbacks write, the status line reads).
    Times are simulated seconds; ``names``: the J joints of the embodiment's joint controller groups.

    Attributes:
        joint_times, joints: each joint state's stamp and float64[J] positions (rad, gripper in its ROS unit;
            NaN for a joint the message lacks).
        command_times, commands: per controller group, the receive time and float64[G] command of each command.
        start_s: the first chunk's t_obs (the episode's start, eval-sim), None before it.
        chunks: chunks received; latencies_s: wall seconds from the arrival of the camera frame stamped t_obs to
            the arrival of the chunk, per chunk whose frame was seen.
        frame_arrivals: camera frame stamp (ns) -> wall arrival (``time.monotonic``), the first camera's.
        predicted: predicted mosaic frames waiting for their instant: stamp (ns) -> uint8[h, w, 3] frames.
        frame_sets: camera frames of predicted instants not yet complete: stamp (ns) -> camera key ->
            uint8[H, W, 3] (frames of instants nothing predicted are not decoded).
        video_correlations: per predicted frame whose instant's camera frames all arrived, the pixel correlation
            of the two mosaics (module docstring).
    """

    names: tuple[str, ...]
    lock: threading.Lock = field(default_factory=threading.Lock)
    joint_times: list[float] = field(default_factory=list)
    joints: list[np.ndarray] = field(default_factory=list)
    command_times: dict[str, list[float]] = field(default_factory=dict)
    commands: dict[str, list[np.ndarray]] = field(default_factory=dict)
    start_s: float | None = None
    chunks: int = 0
    latencies_s: list[float] = field(default_factory=list)
    frame_arrivals: dict[int, float] = field(default_factory=dict)
    predicted: dict[int, list[np.ndarray]] = field(default_factory=dict)
    frame_sets: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    video_correlations: list[float] = field(default_factory=list)

    def status(self) -> str:
        """One status line."""
        with self.lock:
            if self.start_s is None:
                return "waiting for the first chunk (the model loads; simulated time waits for it)"
            sim_s = (self.joint_times[-1] if self.joint_times else self.start_s) - self.start_s
            latency = f"{np.median(self.latencies_s):5.2f} s" if self.latencies_s else "  -   "
            chunks, commands = self.chunks, sum(len(times) for times in self.command_times.values())
        return f"simulated {sim_s:5.1f} s  chunks {chunks:3d}  latency p50 {latency} (wall)  commands {commands:5d}"


class DemoRecorder(Node):
    """Keeps a :class:`Recording` of one episode: joint states, the joint groups' commands and the chunks, on
    simulated time (``use_sim_time``) like the rest of the episode's graph."""

    def __init__(self, spec: EmbodimentSpec, recording: Recording, namespace: str = "") -> None:
        super().__init__("demo_recorder", namespace=namespace,
                         parameter_overrides=[Parameter("use_sim_time", value=True)])
        self._spec = spec
        self._recording = recording
        self._index = {name: i for i, name in enumerate(recording.names)}
        self.create_subscription(JointState, spec.joint_states_topic, self._on_joint_state, reliable_qos())
        for group in (g for g in spec.controller_groups if g.kind == "joints"):
            recording.command_times[group.name], recording.commands[group.name] = [], []
            self.create_subscription(Float64MultiArray, group.command_topic,
                                     lambda msg, name=group.name: self._on_command(name, msg), reliable_qos())
        self.create_subscription(ActionChunk, "policy_node/action_chunk", self._on_chunk, reliable_qos())
        for camera in spec.cameras:
            self.create_subscription(Image, camera.topic, lambda msg, key=camera.key: self._on_frame(key, msg),
                                     camera_qos("reliable"))
        self.create_subscription(Image, "policy_node/predicted_video", self._on_predicted_frame, reliable_qos())

    def _on_joint_state(self, msg: JointState) -> None:
        names, positions = joint_state_arrays(msg)
        joints = np.full(len(self._index), np.nan)
        for name, position in zip(names, positions):
            if name in self._index:
                joints[self._index[name]] = position
        with self._recording.lock:
            self._recording.joint_times.append(stamp_to_ns(msg.header.stamp) * 1e-9)
            self._recording.joints.append(joints)

    def _on_command(self, group: str, msg: Float64MultiArray) -> None:
        now_s = self.get_clock().now().nanoseconds * 1e-9
        with self._recording.lock:
            self._recording.command_times[group].append(now_s)
            self._recording.commands[group].append(np.asarray(msg.data, dtype=np.float64))

    def _on_frame(self, key: str, msg: Image) -> None:
        stamp_ns, recording = stamp_to_ns(msg.header.stamp), self._recording
        with recording.lock:
            if key == self._spec.cameras[0].key:
                recording.frame_arrivals[stamp_ns] = time.monotonic()
            if stamp_ns not in recording.predicted:  # predictions come before their instant: nothing to compare
                return
            frames = recording.frame_sets.setdefault(stamp_ns, {})
            frames[key] = image_to_rgb(msg)
            if len(frames) < len(self._spec.cameras):
                for old in sorted(recording.frame_sets)[:-PENDING_FRAME_SETS]:
                    del recording.frame_sets[old]
                return
            del recording.frame_sets[stamp_ns]
            predictions = recording.predicted.pop(stamp_ns, [])
        for predicted in predictions:  # outside the lock: resizing and correlating take a few ms
            correlation = mosaic_correlation(predicted, frames, self._spec)
            with recording.lock:
                recording.video_correlations.append(correlation)

    def _on_predicted_frame(self, msg: Image) -> None:
        with self._recording.lock:
            self._recording.predicted.setdefault(stamp_to_ns(msg.header.stamp), []).append(image_to_rgb(msg))

    def _on_chunk(self, msg: ActionChunk) -> None:
        t_obs_ns = stamp_to_ns(msg.header.stamp)
        with self._recording.lock:
            recording = self._recording
            recording.chunks += 1
            if recording.start_s is None:
                recording.start_s = t_obs_ns * 1e-9
            if t_obs_ns in recording.frame_arrivals:
                recording.latencies_s.append(time.monotonic() - recording.frame_arrivals[t_obs_ns])


def mosaic_correlation(predicted: np.ndarray, frames: dict[str, np.ndarray], spec: EmbodimentSpec) -> float:
    """Pixel correlation (Pearson, over every pixel and channel) of a predicted mosaic uint8[h, w, 3] with the
    mosaic of the camera ``frames`` (key -> uint8[H, W, 3]) of its instant at its size; 0 when either is flat."""
    actual = model_mosaics({key: image[None] for key, image in frames.items()}, spec, predicted.shape[:2])[0]
    a, b = predicted.astype(np.float64).ravel(), actual.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    norm = np.sqrt((a @ a) * (b @ b))
    return float(a @ b / norm) if norm > 0 else 0.0


def commands_within_limits(recording: Recording, spec: EmbodimentSpec, limits: JointLimitSet) -> bool:
    """Whether every recorded command of every joint group lies within ``limits`` (names as the groups')."""
    for group in (g for g in spec.controller_groups if g.name in recording.commands):
        index = [limits.names.index(name) for name in group.names]
        commands = np.array(recording.commands[group.name]).reshape(-1, len(index))  # N, G
        if np.any(commands < limits.lower[index] - LIMIT_TOLERANCE) or np.any(
                commands > limits.upper[index] + LIMIT_TOLERANCE):
            return False
    return True


def plot_joints(path: Path, recording: Recording, spec: EmbodimentSpec) -> None:
    """``joints.png``: per joint, measured and commanded position over simulated seconds from the start."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    start_s = recording.start_s or 0.0
    joints = np.array(recording.joints).reshape(-1, len(recording.names))  # N, J
    figure, axes = plt.subplots(len(recording.names), 1, figsize=(8, 1.5 * len(recording.names)), sharex=True)
    for j, (axis, name) in enumerate(zip(axes, recording.names)):
        axis.plot(np.array(recording.joint_times) - start_s, joints[:, j], label="measured")
        group = next(g for g in spec.controller_groups if name in g.names)
        commands = np.array(recording.commands[group.name]).reshape(-1, len(group.names))  # N, G
        axis.plot(np.array(recording.command_times[group.name]) - start_s, commands[:, group.names.index(name)],
                  "--", label="commanded")
        axis.set_ylabel(name.removeprefix("panda_"), fontsize=8)
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("simulated time from the episode's start (s)")
    figure.tight_layout()
    figure.savefig(path, dpi=80)
    plt.close(figure)


def summarise(options: EvalOptions, result: EpisodeResult, recording: Recording, within_limits: bool) -> dict:
    """``summary.json``: the episode (eval-sim's record) and what the recorder saw. Distances are the task's goal
    distance (``sim/scoring.py``; touch: gripper to the cube, <= 0 in contact) at the first and the last judged
    state and its smallest, metres; ``latency_p50_s``: wall (:class:`Recording`); ``predicted_video_correlation``: the
    median of :attr:`Recording.video_correlations` (module docstring), None without predicted video."""
    record, distances = result.record, result.distances[:, 1]

    def metres(value: float) -> float:
        return round(float(value), eval_report.DIGITS)

    return {"checkpoint": options.checkpoint, "prompt": record["prompt"], "task": record["task"],
            "seed": record["seed"], "sampler": None if options.checkpoint == DEMONSTRATOR else options.sampler,
            "success": record["success"], "time_to_success_s": record["time_to_success_s"],
            "distance_start_m": metres(distances[0]) if len(distances) else None,
            "distance_end_m": metres(distances[-1]) if len(distances) else None,
            "distance_min_m": record["min_distance_m"], "chunks": record["chunks"],
            "latency_p50_s": round(float(np.median(recording.latencies_s)), 3) if recording.latencies_s else None,
            "commands": sum(len(times) for times in recording.command_times.values()),
            "commands_within_urdf_limits": within_limits,
            "predicted_video_correlation": (round(float(np.median(recording.video_correlations)), 3)
                                            if recording.video_correlations else None),
            "predicted_video_frames_compared": len(recording.video_correlations),
            "sim_s": record["sim_s"], "wall_s": record["wall_s"],
            "video": record["video"], "video_frames": record["video_frames"], "run_folder": str(options.output_dir)}


def _print_status(recording: Recording, stop: threading.Event) -> None:
    while not stop.wait(STATUS_PERIOD_S):
        print("\r" + recording.status().ljust(STATUS_WIDTH), end="", flush=True)


def run_demo(options: EvalOptions) -> dict:
    """Run the episode of :func:`demo_options` (rclpy must be initialised) with a live status line and write the
    run folder ``options.output_dir`` (module docstring); returns the summary.

    Raises:
        FileExistsError: the run folder exists. As :func:`~dreamzero_policy.eval_sim.evaluate_episode`:
            PlanningError, TimeoutError, RuntimeError (the folder then holds the video so far).
    """
    spec = load_embodiment(SIM_EMBODIMENT)
    limits = demonstration_limits(options.params_file)
    recording = Recording(tuple(n for g in spec.controller_groups if g.kind == "joints" for n in g.names))
    options.output_dir.mkdir(parents=True)
    stop = threading.Event()
    status = threading.Thread(target=_print_status, args=(recording, stop), name="demo-status", daemon=True)
    status.start()
    try:
        result = evaluate_episode(options, 0, limits, lambda: [DemoRecorder(spec, recording, options.namespace)])
    finally:
        stop.set()
        status.join()
        print()
    plot_joints(options.output_dir / "joints.png", recording, spec)
    summary = summarise(options, result, recording, commands_within_limits(recording, spec, limits))
    (options.output_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


__all__ = ["FREE_TEXT_TASK", "DemoRecorder", "Recording", "commands_within_limits", "demo_checkpoint",
           "demo_options", "mosaic_correlation", "plot_joints", "run_demo", "run_folder", "summarise"]
