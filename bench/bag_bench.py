"""Bags on this machine: replay timing, recorder completeness, eval-bag overhead per bag second.

A DROID bag at full camera size (3 x 180x320 at 15 Hz, two rgb8 and one jpeg; joint states at
30 Hz; arm commands at 15 Hz) is written with rosbags (tests/policy/synthetic_bag.py), then:
1. ``BagPlayer`` replays it at rate 1 and 4 while ``dreamzero record`` records it (MCAP) in a child
   process: the share recorded, and the lateness of every recorded receive time against the bag's
   schedule, relative to the earliest message (player timing plus transport; not the recorder's
   executor, since it stamps with the middleware's receive time);
2. ``evaluate_bag`` runs it with a backend that returns zeros at once (decode, assembly, reference
   and report overhead alone), as seconds of work per second of bag.

Usage (from the repository root, in the venv, with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST):
    PYTHONPATH=tests .venv/bin/python bench/bag_bench.py [--seconds 10]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rclpy
from rclpy.node import Node
from rosbags.rosbag2 import Reader

from dreamzero_policy.backends.base import BackendPrediction, Observation
from dreamzero_policy.bags.evaluation import EvalOptions, evaluate_bag
from dreamzero_policy.bags.replay import BagPlayer, ReplayOptions
from policy.synthetic_bag import SPEC, START_NS, write_droid_bag


class ZeroBackend:
    """No model: zeros for every dimension, absolute."""

    def reset(self, prompt: str, session_id: str) -> None:
        pass

    def infer(self, observation: Observation) -> BackendPrediction:
        width = len(SPEC.action_names)
        return BackendPrediction(actions=np.zeros((SPEC.timing.horizon, width)), relative=np.zeros(width, bool))

    def close(self) -> None:
        pass


def _receive_times(bag: Path) -> dict[str, np.ndarray]:
    with Reader(bag) as reader:
        times: dict[str, list[int]] = {}
        for connection, stamp_ns, _ in reader.messages():
            times.setdefault(connection.topic, []).append(stamp_ns)
    return {topic: np.array(values) for topic, values in times.items()}


def replay_and_record(bag: Path, folder: Path, rate: float, counts: dict[str, int]) -> dict:
    """Replay at ``rate`` (this process) into ``dreamzero record`` (a child process, as on a robot);
    lateness (ms) of each recorded receive time against the bag's schedule, relative to the earliest
    message, and the share of messages recorded."""
    rerecorded = folder / f"rerecorded_{rate:g}"
    original = _receive_times(bag)
    span_s = (max(t[-1] for t in original.values()) - min(t[0] for t in original.values())) * 1e-9
    duration = 4.0 + span_s / rate
    recorder = subprocess.Popen([str(Path(sys.executable).parent / "dreamzero"), "record", *counts, "-o", str(rerecorded),
                                 "--duration", f"{duration + 6.0:.1f}"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    node = Node("bench_player")
    player = BagPlayer(bag, ReplayOptions(rate=rate, wait_for_subscribers_s=20.0, delay_s=1.0), node)
    try:
        player.play()
    finally:
        player.close()
        node.destroy_node()
    recorder.communicate(timeout=duration + 30)
    replayed = _receive_times(rerecorded)
    first_original = min(t[0] for t in original.values())
    first_replayed = min(t[0] for t in replayed.values())
    late = np.concatenate([(replayed[topic][:len(original[topic])] - first_replayed)
                           - (original[topic][:len(replayed[topic])] - first_original) / rate for topic in replayed])
    late_ms = (late - late.min()) * 1e-6  # relative to the earliest message: the alignment is unknown
    recorded = sum(len(t) for t in replayed.values()) / sum(counts.values())
    missing = {topic: count - len(replayed.get(topic, ())) for topic, count in counts.items()
               if count != len(replayed.get(topic, ()))}
    return {"missing": missing, "p50_ms": float(np.percentile(late_ms, 50)), "p95_ms": float(np.percentile(late_ms, 95)),
            "max_ms": float(late_ms.max()), "recorded": recorded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        counts = write_droid_bag(folder / "bag", args.seconds, storage="mcap", image_size=(180, 320))
        size_mb = sum(f.stat().st_size for f in (folder / "bag").iterdir()) / 1e6
        print(f"bag: {args.seconds:g} s, {sum(counts.values())} messages, {size_mb:.1f} MB")
        with rclpy.init():
            for rate in (1.0, 4.0):
                figures = replay_and_record(folder / "bag", folder, rate, counts)
                print(f"replay rate {rate:g}: lateness p50 {figures['p50_ms']:.2f} ms, p95 {figures['p95_ms']:.2f} ms, "
                      f"max {figures['max_ms']:.2f} ms; recorded {100 * figures['recorded']:.1f} % "
                      f"(missing: {figures['missing'] or 'none'})")
        started = time.perf_counter()
        result = evaluate_bag(folder / "bag", SPEC, ZeroBackend(), EvalOptions(
            camera_topics={"wrist_image_left": "/cameras/wrist/image_raw/compressed"}, progress=False))
        seconds = time.perf_counter() - started
        span = (result.t_obs_ns[-1] - START_NS) * 1e-9 if len(result.t_obs_ns) else float("nan")
        print(f"eval-bag without a model: {seconds:.2f} s for {args.seconds:g} s of bag "
              f"({seconds / args.seconds:.3f} s per bag second), {len(result.t_obs_ns)} chunks up to {span:.1f} s")


if __name__ == "__main__":
    main()
