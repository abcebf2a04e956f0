"""Host time per chunk to publish: the ActionChunk and the 8 predicted-video frames (rclpy).

Completes bench/host_bench.py (decode, select, crop, resize, stitch, pack) with the last stage of the
policy node's per-chunk work: message conversion (``dreamzero_policy.conversions``) and ``publish``
with one subscriber matched (Fast DDS, loopback), so the message is really serialised and sent.
Frames are the 14B model's 352x640 mosaic; the chunk is DROID's 24 x 8.

Usage (from the repository root, in the venv, with ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST):
    .venv/bin/python bench/publish_bench.py [--repeats 50]
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import rclpy
from rclpy.node import Node
from sensor_msgs.msg import Image

from dreamzero_msgs.msg import ActionChunk
from dreamzero_policy.conversions import Chunk, chunk_to_message, rgb_to_image
from dreamzero_policy.qos import reliable_qos

FRAMES, HEIGHT, WIDTH = 8, 352, 640
HORIZON, DIMS = 24, 8


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (FRAMES, HEIGHT, WIDTH, 3), dtype=np.uint8)
    chunk = Chunk(t_obs_ns=1, embodiment="droid", session_id="bench", chunk_id=1, names=tuple(f"j{i}" for i in range(DIMS)),
                  relative=np.ones(DIMS, bool), anchor=np.zeros(DIMS), values=rng.normal(size=(HORIZON, DIMS)),
                  dt=1 / 15, latency=0.1)
    with rclpy.init():
        node, sink = Node("publish_bench"), Node("publish_bench_sink")
        chunk_pub = node.create_publisher(ActionChunk, "bench/action_chunk", reliable_qos())
        video_pub = node.create_publisher(Image, "bench/predicted_video", reliable_qos(depth=8))
        sink.create_subscription(ActionChunk, "bench/action_chunk", lambda _: None, reliable_qos())
        sink.create_subscription(Image, "bench/predicted_video", lambda _: None, reliable_qos(depth=8))
        deadline = time.monotonic() + 10.0
        while (chunk_pub.get_subscription_count() == 0 or video_pub.get_subscription_count() == 0) and \
                time.monotonic() < deadline:
            rclpy.spin_once(sink, timeout_sec=0.05)
        timings: dict[str, list[float]] = {"action_chunk": [], "predicted_video (8 frames)": []}
        for _ in range(args.repeats + 3):
            start = time.perf_counter()
            chunk_pub.publish(chunk_to_message(chunk))
            middle = time.perf_counter()
            for index, frame in enumerate(frames):
                video_pub.publish(rgb_to_image(frame, index, "droid"))
            end = time.perf_counter()
            timings["action_chunk"].append((middle - start) * 1e3)
            timings["predicted_video (8 frames)"].append((end - middle) * 1e3)
            rclpy.spin_once(sink, timeout_sec=0.0)
        print(f"| stage | ms (median of {args.repeats}) |\n|---|---|")
        for stage, values in timings.items():
            print(f"| publish {stage} | {statistics.median(values[3:]):.2f} |")


if __name__ == "__main__":
    main()
