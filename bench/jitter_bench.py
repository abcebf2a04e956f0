"""Command timing of the adapter at 100 Hz, alone and while the policy node infers in another process.

Issue 12's measure: the adapter (console script ``adapter_node``, its own process, stream mode) executes a
chunk every 1.6 s sent by this script, which also plays the robot (joint states 100 Hz, three DROID
cameras 15 Hz). With ``load``, ``policy_node`` (console script, tiny model, the local backend with its model
process) infers continuously in another process on the same cameras and state (``execute_steps: 1``: a
new query as soon as the previous chunk is out; every chunk published, however late), its model process
at the default ``model_nice`` (``load``) or at the adapter's priority (``load-nice0``). The adapter's
commands are ``JointTrajectory`` messages stamped with the adapter's own tick time, so the intervals between stamps are the adapter's command
intervals, not this script's receive times (also reported, as the robot's side sees them).

``--adapter-threads N`` runs the same adapter on an N-thread ``MultiThreadedExecutor`` instead of the
console script's single-threaded one (``dreamzero_policy.executor``), for the comparison.

Usage (from the repository root, after ``make setup``):
    AMENT_PREFIX_PATH=.venv ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST .venv/bin/python bench/jitter_bench.py \
        [--seconds 60] [--rate 100] [--cases idle load load-nice0] [--adapter-threads 2]
"""
from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import rclpy
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from sensor_msgs.msg import Image, JointState
from trajectory_msgs.msg import JointTrajectory

from dreamzero_embodiments.robot_description import load_joint_limits
from dreamzero_embodiments.spec import load_embodiment
from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.conversions import Chunk, chunk_to_message, ns_to_stamp, rgb_to_image, stamp_to_ns
from dreamzero_policy.paths import share_dir
from dreamzero_policy.qos import camera_qos, reliable_qos

SPEC = load_embodiment("droid")
NAMESPACE = "/jitter"
CHUNK_TOPIC = "bench/action_chunk"  # the adapter's input; the policy node's own chunks go unused
CHUNK_PERIOD_S = SPEC.timing.horizon * SPEC.timing.dt  # 1.6 s: one chunk executed after the other
PATIENCE_S = 180.0


def _home() -> np.ndarray:
    """Mid-range of every DROID joint (ROS units), where the readings are plausible to every node."""
    limits = load_joint_limits(share_dir() / "urdf" / SPEC.robot_description)
    return np.array([(limits[n].lower + limits[n].upper) / 2 for n in SPEC.state_names])


class Robot(Node):
    """Joint states, cameras and a chunk every 1.6 s; records the adapter's arm commands and the policy's chunks."""

    def __init__(self, state_rate_hz: float) -> None:
        super().__init__("jitter_robot", namespace=NAMESPACE)
        self.home = _home()
        self.stamps_ns: list[int] = []  # header stamps of the adapter's arm commands (its tick times)
        self.arrivals_ns: list[int] = []
        self.policy_chunks_ns: list[int] = []
        self.recording = False
        self._chunk_id = 0
        self._states = self.create_publisher(JointState, SPEC.joint_states_topic, reliable_qos())
        self._chunks = self.create_publisher(ActionChunk, CHUNK_TOPIC, reliable_qos())
        rng = np.random.default_rng(0)
        self._cameras = [(self.create_publisher(Image, camera.topic, camera_qos("best_effort")),
                          rng.integers(0, 256, (*camera.resolution, 3), dtype=np.uint8)) for camera in SPEC.cameras]
        self.create_subscription(JointTrajectory, "policy/arm", self._on_command, reliable_qos(depth=100))
        self.create_subscription(ActionChunk, "policy_node/action_chunk", self._on_policy_chunk, reliable_qos())
        self.create_timer(1.0 / state_rate_hz, self._publish_state)
        self.create_timer(1.0 / SPEC.timing.action_rate_hz, self._publish_frames)
        self.create_timer(CHUNK_PERIOD_S, self._publish_chunk)

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _publish_state(self) -> None:
        message = JointState(name=list(SPEC.state_names), position=self.home.tolist())
        message.header.stamp = ns_to_stamp(self._now_ns())
        self._states.publish(message)

    def _publish_frames(self) -> None:
        now_ns = self._now_ns()
        for publisher, rgb in self._cameras:
            publisher.publish(rgb_to_image(rgb, now_ns))

    def _publish_chunk(self) -> None:
        """Joints sway +-0.05 rad about where they are (relative); the gripper half closed (absolute)."""
        self._chunk_id += 1
        relative = SPEC.relative_mask
        model_state, offset = {}, 0
        for key in SPEC.state:
            raw = self.home[offset:offset + key.dim]
            model_state.update(zip(key.names, key.unit_map.to_model(raw) if key.unit_map else raw))
            offset += key.dim
        anchor = np.array([model_state[n] if r else 0.0 for n, r in zip(SPEC.action_names, relative)])
        steps = np.arange(SPEC.timing.horizon)[:, None]
        values = np.where(relative, 0.05 * np.sin(2 * np.pi * steps / SPEC.timing.horizon), 0.5)
        self._chunks.publish(chunk_to_message(Chunk(
            t_obs_ns=self._now_ns(), embodiment=SPEC.name, session_id="jitter", chunk_id=self._chunk_id,
            names=SPEC.action_names, relative=relative, anchor=anchor, values=values, dt=SPEC.timing.dt, latency=0.0)))

    def _on_command(self, message: JointTrajectory) -> None:
        if self.recording:
            self.stamps_ns.append(stamp_to_ns(message.header.stamp))
            self.arrivals_ns.append(self._now_ns())

    def _on_policy_chunk(self, _: ActionChunk) -> None:
        if self.recording:
            self.policy_chunks_ns.append(self._now_ns())


def _wait(condition, what: str) -> None:
    deadline = time.monotonic() + PATIENCE_S
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"jitter_bench: timed out after {PATIENCE_S:.0f} s waiting for {what}")
        time.sleep(0.1)


def _start(command: list[str], parameters: dict[str, object], log: Path) -> subprocess.Popen:
    ros_args = [arg for name, value in parameters.items() for arg in ("-p", f"{name}:={value}")]
    with log.open("w") as sink:
        return subprocess.Popen([*command, "--ros-args", "-r", f"__ns:={NAMESPACE}", *ros_args],
                                stdout=sink, stderr=subprocess.STDOUT)


def _adapter_command(threads: int) -> list[str]:
    """The ``adapter_node`` console script (a single-threaded executor), or the same node on ``threads``
    executor threads."""
    if threads == 1:
        return ["adapter_node"]
    return [sys.executable, "-c", "from dreamzero_policy.adapter_node import AdapterNode; "
            f"from dreamzero_policy.lifecycle import spin_node; spin_node(AdapterNode, threads={threads})"]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()  # SIGTERM: the ordered shutdown of lifecycle.ros_main
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _activate_adapter(robot: Node) -> None:
    client = robot.create_client(ChangeState, f"{NAMESPACE}/adapter_node/change_state")
    _wait(client.service_is_ready, "the adapter's lifecycle service")
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        future = client.call_async(ChangeState.Request(transition=Transition(id=transition)))
        _wait(future.done, f"lifecycle transition {transition}")
        if not future.result().success:
            raise SystemExit(f"jitter_bench: adapter transition {transition} failed (see its log)")


def _cpu_s(process: subprocess.Popen) -> float:
    """User + system CPU seconds of a child so far (/proc/<pid>/stat, fields 14 and 15)."""
    fields = Path(f"/proc/{process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _percentiles_ms(times_ns: list[int]) -> dict[str, float]:
    intervals = np.diff(np.array(times_ns, dtype=np.int64)) * 1e-6
    return {"p50": float(np.percentile(intervals, 50)), "p99": float(np.percentile(intervals, 99)),
            "max": float(intervals.max()), "n": len(intervals)}


CASES = {"idle": None, "load": {}, "load-nice0": {"model_nice": 0}}  # None: no policy node; else its extra parameters


def run_case(case: str, seconds: float, rate_hz: float, adapter_threads: int, logs: Path) -> dict[str, object]:
    robot = Robot(state_rate_hz=100.0)
    executor = SingleThreadedExecutor()
    executor.add_node(robot)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    load = CASES[case]
    adapter_parameters = {"command_rate_hz": rate_hz, "stream_message": "joint_trajectory", "chunk_topic": CHUNK_TOPIC}
    processes = [_start(_adapter_command(adapter_threads), adapter_parameters, logs / f"{case}-adapter.log")]
    try:
        if load is not None:
            processes.append(_start(["policy_node"], {"autostart": True, "checkpoint": "tiny", "execute_steps": 1,
                                                      "max_chunk_age_s": 600.0, "publish_predicted_video": False,
                                                      **load}, logs / f"{case}-policy.log"))
        _activate_adapter(robot)
        robot.recording = True
        _wait(lambda: len(robot.stamps_ns) > rate_hz, "the adapter's commands")
        if load is not None:
            _wait(lambda: robot.policy_chunks_ns, "the policy node's first chunk")
        robot.stamps_ns.clear(), robot.arrivals_ns.clear(), robot.policy_chunks_ns.clear()
        start, adapter_cpu = time.monotonic(), _cpu_s(processes[0])
        time.sleep(seconds)
        robot.recording = False
        elapsed = time.monotonic() - start
        adapter_cpu = _cpu_s(processes[0]) - adapter_cpu
    finally:
        for process in processes:
            _stop(process)
        executor.shutdown()
        robot.destroy_node()
    return {"case": case, "seconds": elapsed, "stamps": _percentiles_ms(robot.stamps_ns),
            "arrivals": _percentiles_ms(robot.arrivals_ns), "commands_per_s": len(robot.stamps_ns) / elapsed,
            "policy_chunks_per_s": len(robot.policy_chunks_ns) / elapsed, "adapter_cpu": adapter_cpu / elapsed,
            "load_average": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="measured time per case")
    parser.add_argument("--rate", type=float, default=100.0, help="the adapter's command_rate_hz")
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES),
                        help="idle: the adapter alone; load: the policy node inferring (its model process at the "
                             "default model_nice); load-nice0: the same at the adapter's priority")
    parser.add_argument("--adapter-threads", type=int, default=1,
                        help="1: the adapter_node console script (single-threaded executor); N > 1: the same node on "
                             "an N-thread MultiThreadedExecutor")
    parser.add_argument("--logs", default="/tmp/jitter_bench", help="folder for the nodes' logs")
    args = parser.parse_args()
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.randint(120, 200)))  # away from a test run's domains
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    period_ms = 1e3 / args.rate
    rows = []
    with rclpy.init():
        for case in args.cases:
            rows.append(run_case(case, args.seconds, args.rate, args.adapter_threads, logs))
    print(f"| case | commands/s | interval p50 ms | p99 ms | max ms | p99 - period ms | received p99 ms | "
          f"policy chunks/s | adapter CPU | load average |\n|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        stamps, arrivals = row["stamps"], row["arrivals"]
        print(f"| {row['case']} | {row['commands_per_s']:.1f} | {stamps['p50']:.2f} | {stamps['p99']:.2f} | "
              f"{stamps['max']:.2f} | {stamps['p99'] - period_ms:+.2f} | {arrivals['p99']:.2f} | "
              f"{row['policy_chunks_per_s']:.2f} | {row['adapter_cpu']:.0%} | {row['load_average']:.1f} |")


if __name__ == "__main__":
    main()
