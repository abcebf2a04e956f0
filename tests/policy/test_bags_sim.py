"""Round trip from the simulation through the three bag commands, each run as its console script:
``dreamzero record`` (sqlite3) a namespaced sim_droid driven by a slow sinusoidal command stream,
``dreamzero replay`` it onto the graph (every message again, in order, with /clock), and
``dreamzero eval-bag`` on it with the tiny local model (random weights: the pipeline, not the
numbers, is under test). Marked slow: about a minute (render process, model process start)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from rclpy.node import Node
from rclpy.parameter import Parameter
from rosbags.rosbag2 import Reader
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.conversions import stamp_to_ns
from dreamzero_policy.qos import reliable_qos
from dreamzero_policy.sim_droid import SimDroid
from ros_testing import MessageCollector, spinning, wait_until

SPEC = load_embodiment("droid")
DREAMZERO = str(Path(sys.executable).parent / "dreamzero")
RECORD_S = 10.0


def _run(*args: str, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run([DREAMZERO, *args], capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"dreamzero {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result


class Commander(Node):
    """A slow sinusoid around the ready pose on the arm controller, 15 Hz (a teleoperator stand-in)."""

    def __init__(self, namespace: str) -> None:
        super().__init__("commander", namespace=namespace)
        self.publisher = self.create_publisher(Float64MultiArray, "arm_controller/commands", reliable_qos())
        self.ready: np.ndarray | None = None
        self.ticks = 0
        self.create_subscription(JointState, "joint_states", self._on_state, reliable_qos())
        self.create_timer(1.0 / 15, self._tick)

    def _on_state(self, msg: JointState) -> None:
        if self.ready is None:
            self.ready = np.asarray(msg.position[:7])

    def _tick(self) -> None:
        if self.ready is not None:
            self.ticks += 1
            offset = 0.15 * np.sin(2 * np.pi * 0.25 * self.ticks / 15) * np.array([1, -1, 1, 1, -1, 1, 1])
            self.publisher.publish(Float64MultiArray(data=(self.ready + offset).tolist()))


@pytest.mark.slow
def test_record_replay_and_evaluate_a_simulated_run(ros_context, tmp_path) -> None:
    namespace = f"/bagsim_{os.getpid()}"
    topics = [f"{namespace}/{c.topic}" for c in SPEC.cameras] + [f"{namespace}/joint_states",
                                                                   f"{namespace}/arm_controller/commands"]
    bag = tmp_path / "sim_bag"
    sim = SimDroid(namespace=namespace, parameter_overrides=[Parameter("camera_rate_hz", value=5.0),
                                                             Parameter("render_processes", value=1)])
    commander = Commander(namespace)
    try:
        with spinning([sim, commander], threads=3):
            wait_until(lambda: commander.ticks > 0, "the commander driving the sim")
            _run("record", *topics, "-o", str(bag), "-s", "sqlite3", "--duration", str(RECORD_S), timeout=60)
    finally:
        sim.destroy_node()
        commander.destroy_node()
    with Reader(bag) as reader:
        counts = {c.topic: c.msgcount for c in reader.connections}
        recorded_states = [stamp_to_ns(_joint_state(raw).header.stamp) for c, _, raw in reader.messages()
                           if c.topic.endswith("/joint_states")]
    assert set(counts) == set(topics), counts
    assert (recorded_states[-1] - recorded_states[0]) * 1e-9 > RECORD_S - 5  # less the recorder's start-up
    assert min(counts[f"{namespace}/{c.topic}"] for c in SPEC.cameras) >= 10

    listener = Node("replay_listener")
    states = MessageCollector(listener, JointState, f"{namespace}/joint_states", reliable_qos(depth=1000))
    # deep enough for the whole replay: a listener lagging on a loaded machine must not lose a frame to keep-last
    frames = MessageCollector(listener, Image, f"{namespace}/{SPEC.cameras[0].topic}", reliable_qos(depth=1000))
    clock = MessageCollector(listener, Clock, "/clock", reliable_qos(depth=1000))
    try:
        with spinning([listener]):
            _run("replay", str(bag), "--clock", "--wait-for-subscribers", "20", "--delay", "0.5", timeout=60)
            # the replay has published everything when it exits; deliveries may still be in flight
            recorded_frames = counts[f"{namespace}/{SPEC.cameras[0].topic}"]
            wait_until(lambda: len(states.messages) >= len(recorded_states) and len(frames.messages) >= recorded_frames,
                       "every joint state and camera frame replayed")
    finally:
        listener.destroy_node()
    assert [stamp_to_ns(m.header.stamp) for m in states.messages] == recorded_states  # all, in order
    assert len(frames.messages) == recorded_frames
    ticks = [stamp_to_ns(m.clock) for m in clock.messages]
    assert len(ticks) > 30 * RECORD_S * 0.5 and ticks == sorted(ticks)

    output = tmp_path / "eval"
    result = _run("eval-bag", str(bag), "--embodiment", "droid", "--namespace", namespace, "--checkpoint", "tiny",
                  "--solver", "euler", "--num-inference-steps", "1", "--cfg-scale", "1", "--cpu-threads", "1",
                  "--camera-timeout", "1.0", "--frame-tolerance", "0.5", "--quiet", "--output", str(output), "--prompt", "Put the cube in the tray.",
                  timeout=240, env={"DREAMZERO_CACHE": str(tmp_path / "cache")})
    folder = next(output.iterdir())
    assert f"report folder: {folder}" in result.stdout
    report = json.loads((folder / "report.json").read_text())
    assert report["chunks"] >= 3, report  # one per 1.6 s of the recording once every topic flows
    # queries may wait for data (the sim's renderer stalls on a loaded machine), never for bad data
    timing = ("no joint state within # s of t_obs", "stale camera", "no frame within # ms of wanted stamp")
    assert all(cause.endswith(timing) for cause in report["blocked"]), report["blocked"]
    assert report["topics"]["commands"] == {"arm": f"{namespace}/arm_controller/commands"}
    assert all(row["count"] > 0 and np.isfinite(row["mae"]) for row in report["errors_vs_joint_states"])
    assert all(row["count"] > 0 for row in report["errors_vs_commands"][:7])
    assert report["latency_s"]["p50"] > 0 and report["video_frames"] >= 2 * report["chunks"]
    for name in report["files"]:
        assert (folder / name).stat().st_size > 100, name


def _joint_state(raw: bytes) -> JointState:
    from rclpy.serialization import deserialize_message

    return deserialize_message(raw, JointState)
