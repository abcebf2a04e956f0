"""The bag sub-commands of ``dreamzero``: ``record``, ``replay``, ``eval-bag`` and ``dataset`` (argument parsing is in ``cli``)."""
from __future__ import annotations

import argparse
import json
import time
from datetime import datetime
from pathlib import Path

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.bags.evaluation import EvalOptions, check_bag, evaluate_bag
from dreamzero_policy.bags.record import BagRecorder
from dreamzero_policy.bags.replay import BagPlayer, ReplayOptions, parse_remaps
from dreamzero_policy.bags.report import VIDEO_NAME, write_report
from dreamzero_policy.params import PolicySettings, parse_pairs
from dreamzero_policy.video import Mp4Writer


def run_record(args: argparse.Namespace) -> int:
    """Record until Ctrl-C or ``--duration`` seconds after the first message; prints the messages written per topic."""
    if not args.topics and not args.all:
        raise SystemExit("dreamzero record: name topics to record, or --all")
    output = Path(args.output or datetime.now().strftime("rosbag2_%Y_%m_%d-%H_%M_%S"))
    with rclpy.init():
        recorder = BagRecorder(output, args.topics, args.storage,
                               parameter_overrides=[Parameter("use_sim_time", value=args.use_sim_time)])
        executor = SingleThreadedExecutor()
        executor.add_node(recorder)
        started = None  # --duration counts from the first message written, not from start-up and discovery
        try:
            while args.duration is None or started is None or time.monotonic() - started < args.duration:
                executor.spin_once(timeout_sec=0.1)
                if started is None and sum(recorder.counts.values()):
                    started = time.monotonic()
        except KeyboardInterrupt:
            pass
        finally:
            executor.remove_node(recorder)
            recorder.destroy_node()
    print(json.dumps({"bag": str(output), "messages": dict(recorder.counts)}, indent=2))
    return 0


def run_replay(args: argparse.Namespace) -> int:
    """Publish the bag with its timing until done (or Ctrl-C); prints the messages published per topic."""
    options = ReplayOptions(rate=args.rate, loop=args.loop, start_offset_s=args.start_offset, delay_s=args.delay,
                            wait_for_subscribers_s=args.wait_for_subscribers,
                            clock_hz=args.clock, topics=tuple(args.topics), remap=parse_remaps(args.remap))
    with rclpy.init():
        node = Node("dreamzero_player")
        player = BagPlayer(Path(args.bag), options, node)
        try:
            player.play()
        except KeyboardInterrupt:
            player.stop()
        finally:
            player.close()
            node.destroy_node()
    print(json.dumps({"bag": args.bag, "published": dict(player.counts)}, indent=2))
    return 0


def run_eval_bag(args: argparse.Namespace) -> int:
    """Evaluate the policy on a bag and write the report folder; prints the summary and where it is."""
    from dreamzero_policy.policy_node import make_backend

    bag = Path(args.bag)
    spec = load_embodiment(args.embodiment, args.joint_name_map)
    settings = PolicySettings.from_values(
        embodiment=args.embodiment, backend=args.backend, checkpoint=args.checkpoint, server_url=args.server_url,
        prompt=args.prompt, device=args.device, cpu_threads=args.cpu_threads, solver=args.solver,
        num_inference_steps=args.num_inference_steps, cfg_scale=args.cfg_scale, seed=args.seed,
        publish_predicted_video=not args.no_video, call_timeout_s=args.call_timeout)
    options = EvalOptions(prompt=args.prompt, execute_steps=args.execute_steps, namespace=args.namespace,
                          camera_topics=parse_pairs(args.camera_topic, "=", "--camera-topic", "camera_key=topic"), frame_mode=args.frame_mode,
                          camera_timeout_s=args.camera_timeout, frame_tolerance_s=args.frame_tolerance,
                          state_tolerance_s=args.state_tolerance, max_chunks=args.max_chunks,
                          progress=not args.quiet)
    check_bag(bag, spec, options)  # before the model loads
    folder = Path(args.output) / f"{bag.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    folder.mkdir(parents=True, exist_ok=True)
    fps = 1.0 / (spec.timing.frame_stride * spec.timing.dt)
    backend = make_backend(settings, spec)
    try:
        with Mp4Writer(folder / VIDEO_NAME, fps) as video:
            result = evaluate_bag(bag, spec, backend, options, None if args.no_video else video)
    finally:
        backend.close()
    about = {"bag": str(bag), "embodiment": spec.name, "joint_name_map": args.joint_name_map, "backend": args.backend, "checkpoint": args.checkpoint,
             "prompt": args.prompt, "execute_steps": options.execute_steps or spec.timing.horizon}
    summary = write_report(result, spec, folder, about)
    print(json.dumps({k: summary[k] for k in ("chunks", "messages", "latency_s", "blocked")}, indent=2))
    print((folder / "report.md").read_text())
    print(f"report folder: {folder}")
    return 0 if summary["chunks"] > 0 else 1


def run_dataset(args: argparse.Namespace) -> int:
    """Convert bags into a LeRobot v2.1 dataset (:mod:`dreamzero_policy.bags.dataset`); prints the summary and
    the dataset folder. Bad input raises before any long work (the CLI prints one line, exit status 2)."""
    from dreamzero_policy.bags.dataset import DatasetOptions, convert_bags

    spec = load_embodiment(args.embodiment, args.joint_name_map)
    options = DatasetOptions(task=args.task, namespace=args.namespace,
                             camera_topics=parse_pairs(args.camera_topic, "=", "--camera-topic", "camera_key=topic"),
                             command_topics=parse_pairs(args.command_topic, "=", "--command-topic", "group=topic"),
                             frame_tolerance_s=args.frame_tolerance, only_success=args.only_success,
                             overwrite=args.overwrite, progress=not args.quiet)
    summary = convert_bags([Path(bag) for bag in args.bags], Path(args.output), spec, options)
    print(json.dumps(summary, indent=2))
    print(f"dataset folder: {summary['root']}")
    return 0


__all__ = ["run_dataset", "run_eval_bag", "run_record", "run_replay"]
