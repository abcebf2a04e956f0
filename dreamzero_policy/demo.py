"""``dreamzero demo`` (``make demo``): the closed-loop simulated DROID robot driven by the policy.

Runs the graph of ``dreamzero bringup --sim`` (sim_droid -> policy_node with the tiny local model ->
adapter_node -> control_mux in policy mode -> the simulated arm) for ``duration_s`` of closed loop,
counted from the first chunk (loading the model does not eat into it; at most ``FIRST_CHUNK_TIMEOUT_S``),
prints a live status line (chunks, chunk rate, latency, joint motion), then writes a run folder:
``cameras.mp4`` (the three cameras side by side with the newest predicted-video mosaic),
``joints.png`` (commanded and measured joint trajectories) and ``summary.json``.
The tiny model has random weights (no trained tiny checkpoint exists yet): the arm moves, but not
purposefully.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.bringup import GraphOptions, running
from dreamzero_policy.conversions import image_to_rgb, joint_state_arrays, message_to_chunk
from dreamzero_policy.qos import camera_qos, reliable_qos
from dreamzero_policy.video import Mp4Writer, camera_row

VIDEO_FPS = 5  # the model's own video rate for DROID (facts §1.8)
FIRST_CHUNK_TIMEOUT_S = 300.0  # model process start and first inference on a slow or busy machine


@dataclass
class Recording:
    """What the demo keeps: camera frames (decimated), predicted mosaics, joints, chunk latencies."""

    frames: list[np.ndarray] = field(default_factory=list)
    cameras: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: np.ndarray | None = None
    joint_times: list[float] = field(default_factory=list)
    joints: list[np.ndarray] = field(default_factory=list)
    command_times: list[float] = field(default_factory=list)
    commands: list[np.ndarray] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    chunk_times: list[float] = field(default_factory=list)


class DemoRecorder(Node):
    """Listens to the running graph and keeps a :class:`Recording`."""

    def __init__(self, namespace: str = "") -> None:
        super().__init__("demo_recorder", namespace=namespace)
        self.spec = load_embodiment("droid")
        self.recording = Recording()
        self.lock = threading.Lock()
        self.started = time.monotonic()
        for camera in self.spec.cameras:
            self.create_subscription(Image, camera.topic, lambda m, k=camera.key: self._on_camera(k, m),
                                     camera_qos("reliable"))
        self.create_subscription(Image, "policy_node/predicted_video", self._on_predicted, reliable_qos(depth=8))
        self.create_subscription(JointState, self.spec.joint_states_topic, self._on_joints, reliable_qos())
        self.create_subscription(Float64MultiArray, self.spec.controller_groups[0].command_topic, self._on_command,
                                 reliable_qos())
        self.create_subscription(ActionChunk, "policy_node/action_chunk", self._on_chunk, reliable_qos())
        self.create_timer(1.0 / VIDEO_FPS, self._snapshot)

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def _on_camera(self, key: str, msg: Image) -> None:
        with self.lock:
            self.recording.cameras[key] = image_to_rgb(msg)

    def _on_predicted(self, msg: Image) -> None:
        with self.lock:
            self.recording.predicted = image_to_rgb(msg)

    def _on_joints(self, msg: JointState) -> None:
        names, positions = joint_state_arrays(msg)
        index = {n: i for i, n in enumerate(names)}
        arm = [positions[index[n]] for n in self.spec.controller_groups[0].names if n in index]
        with self.lock:
            self.recording.joint_times.append(self._elapsed())
            self.recording.joints.append(np.array(arm))

    def _on_command(self, msg: Float64MultiArray) -> None:
        with self.lock:
            self.recording.command_times.append(self._elapsed())
            self.recording.commands.append(np.asarray(msg.data))

    def _on_chunk(self, msg: ActionChunk) -> None:
        chunk = message_to_chunk(msg)
        with self.lock:
            self.recording.latencies.append(chunk.latency)
            self.recording.chunk_times.append(self._elapsed())

    def _snapshot(self) -> None:
        """One video frame: the cameras side by side, the predicted mosaic scaled to their height."""
        with self.lock:
            views = [self.recording.cameras.get(c.key) for c in self.spec.cameras]
            predicted = self.recording.predicted
        if any(v is None for v in views):
            return
        row = camera_row(views, predicted)
        with self.lock:
            self.recording.frames.append(row)

    def chunks(self) -> int:
        with self.lock:
            return len(self.recording.chunk_times)

    def status(self) -> str:
        with self.lock:
            r = self.recording
            span = r.chunk_times[-1] - r.chunk_times[0] if len(r.chunk_times) > 1 else 0.0
            rate = (len(r.chunk_times) - 1) / span if span > 0 else 0.0
            latency = float(np.median(r.latencies)) if r.latencies else float("nan")
            motion = float(np.abs(r.joints[-1] - r.joints[0]).max()) if len(r.joints) > 1 else 0.0
        return (f"t={self._elapsed():5.1f}s  chunks={len(r.chunk_times):3d}  rate={rate:4.2f}/s  "
                f"latency={latency:5.2f}s  joint motion={motion:6.4f} rad")


def write_run_folder(recording: Recording, folder: Path, duration_s: float, limits) -> dict:
    """cameras.mp4, joints.png and summary.json; returns the summary."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    size = (max((f.shape[1] for f in recording.frames), default=0), max((f.shape[0] for f in recording.frames), default=0))
    with Mp4Writer(folder / "cameras.mp4", VIDEO_FPS, size) as video:  # early frames lack the predicted mosaic
        for frame in recording.frames:
            video.write(frame)
    if recording.frames:
        cv2.imwrite(str(folder / "last_frame.png"), cv2.cvtColor(recording.frames[-1], cv2.COLOR_RGB2BGR))
    joints = np.array(recording.joints) if recording.joints else np.zeros((0, 7))
    commands = np.array(recording.commands) if recording.commands else np.zeros((0, 7))
    figure, axes = plt.subplots(7, 1, figsize=(8, 12), sharex=True)
    for j, axis in enumerate(axes):
        if len(joints):
            axis.plot(recording.joint_times, joints[:, j], label="measured")
        if len(commands):
            axis.plot(recording.command_times, commands[:, j], "--", label="commanded")
        axis.set_ylabel(f"joint {j + 1} (rad)")
    axes[0].legend(loc="upper right")
    axes[-1].set_xlabel("time (s)")
    figure.tight_layout()
    figure.savefig(folder / "joints.png", dpi=80)
    plt.close(figure)
    within = bool(len(commands) == 0 or np.all((commands >= limits.lower[:7] - 1e-9) & (commands <= limits.upper[:7] + 1e-9)))
    span = recording.chunk_times[-1] - recording.chunk_times[0] if len(recording.chunk_times) > 1 else 0.0
    summary = {
        "duration_s": duration_s,
        "model": "tiny, random weights (the arm moves but not purposefully)",
        "chunks": len(recording.chunk_times),
        "chunk_rate_hz": (len(recording.chunk_times) - 1) / span if span > 0 else 0.0,
        "latency_p50_s": float(np.median(recording.latencies)) if recording.latencies else None,
        "latency_p95_s": float(np.percentile(recording.latencies, 95)) if recording.latencies else None,
        "commands": len(commands),
        "commands_within_urdf_limits": within,
        "joint_motion_rad": float(np.abs(joints[-1] - joints[0]).max()) if len(joints) > 1 else 0.0,
        "max_command_gap_s": float(np.diff(recording.command_times).max()) if len(commands) > 1 else None,
        "video_frames": len(recording.frames),
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _run_closed_loop(recorder: DemoRecorder, duration_s: float, min_chunks: int = 0) -> float:
    """Wait for the first chunk, then run ``duration_s`` more and until ``min_chunks`` chunks came (at most
    FIRST_CHUNK_TIMEOUT_S longer; Ctrl-C ends early); returns when the closed loop started (time.monotonic()).
    Raises RuntimeError when no chunk came in time."""
    waited = time.monotonic()
    while recorder.chunks() == 0:
        if time.monotonic() - waited > FIRST_CHUNK_TIMEOUT_S:
            raise RuntimeError(f"no chunk from the policy within {FIRST_CHUNK_TIMEOUT_S:g} s; see the node logs")
        print("\rwaiting for the first chunk (loading the model) " + recorder.status(), end="", flush=True)
        time.sleep(0.5)
    started = time.monotonic()
    try:
        while (time.monotonic() - started < duration_s or (
                recorder.chunks() < min_chunks and time.monotonic() - started < duration_s + FIRST_CHUNK_TIMEOUT_S)):
            time.sleep(1.0)
            print("\r" + recorder.status(), end="", flush=True)
    except KeyboardInterrupt:
        pass
    print()
    return started


def run_demo(duration_s: float, output_dir: Path, prompt: str, camera_rate_hz: float,
             embodiment: str | Path = "droid", min_chunks: int = 0) -> dict:
    """Run the closed loop and write the run folder; returns the summary. ``embodiment``: DROID, or a
    variant YAML of it (same cameras, joints and topics as the simulation; e.g. another action rate).
    ``min_chunks``: run on past ``duration_s`` until that many chunks came (a loaded machine computes slowly)."""
    from dreamzero_policy.paths import share_dir
    from dreamzero_policy.robot_limits import LimitSettings, robot_limits

    options = GraphOptions(embodiment=str(embodiment), with_sim=True, prompt=prompt,
                           params_file=str(share_dir() / "launch" / "params" / "droid.yaml"), overrides={
        # 50 Hz commands (robots: 100): the whole graph shares one Python process and, on 2 cores, the CPU with
        # the renderer and the model; at 100 Hz the executor lagged and chunks came later (latency p50 1.7 s
        # against 1.3 s, the horizon being 1.6 s).
        "control_mux": {"initial_mode": "policy", "command_rate_hz": 50.0},
        "adapter_node": {"command_rate_hz": 50.0},
        "policy_node": {"execute_steps": 12, "solver": "euler", "num_inference_steps": 1, "cfg_scale": 1.0,
                        "cpu_threads": 1, "model_nice": 0,
                        "camera_timeout_s": 3.0 / camera_rate_hz, "frame_tolerance_s": 0.5},
        "sim_droid": {"camera_rate_hz": camera_rate_hz, "render_processes": 1}})  # one renderer: 2-core machines
    spec = load_embodiment("droid")
    limits = robot_limits(spec, LimitSettings("", (), (), 10.0, 0.5, 0.5))
    folder = output_dir / datetime.now().strftime("demo-%Y%m%d-%H%M%S")
    owns_context = not rclpy.ok()  # tests run it inside their own rclpy context
    if owns_context:
        rclpy.init()
    try:
        recorder = DemoRecorder()
        with running(options) as (_, executor):
            executor.add_node(recorder)
            started = _run_closed_loop(recorder, duration_s, min_chunks)
            executor.remove_node(recorder)
        summary = write_run_folder(recorder.recording, folder, time.monotonic() - started, limits)
        recorder.destroy_node()
    finally:
        if owns_context:
            rclpy.shutdown()
    print(f"run folder: {folder}")
    print(json.dumps(summary, indent=2))
    return summary
