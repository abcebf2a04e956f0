"""The ``dreamzero`` command line (ARCHITECTURE.md section 6).

One entry point with sub-commands. ``info`` reports what is installed and where, and exits non-zero
when a part the nodes need is missing, so it doubles as an installation check on a new machine.
``bringup`` and ``demo`` run the node graph, ``collect`` records scripted demonstrations in the
simulation, ``eval-sim`` measures a policy's success rates there; ``record``, ``replay``, ``eval-bag`` and ``dataset`` work with bags
(:mod:`dreamzero_policy.bags`). ``train`` hands its arguments to :mod:`dreamzero_model.training.cli`
(ROS-free, also ``python -m dreamzero_model.training`` and under ``torchrun``), ``serve`` to
:mod:`dreamzero_model.serving.cli` (ROS-free, also ``python -m dreamzero_model.serving``). ``bench`` of
the design is not built (benchmarks are scripts under ``bench/``).
"""
from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import sys
from pathlib import Path
from typing import Any

from dreamzero_policy.paths import PACKAGE, SHIPPED_CHECKPOINT, share_dir

_ROS_ENVIRONMENT = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "RMW_IMPLEMENTATION",
                    "AMENT_PREFIX_PATH", "ROS_LOG_DIR")


def _probe(report: dict[str, Any], problems: list[str], key: str, probe) -> None:
    """Store ``probe()`` under ``key``; on failure store the error and remember the problem."""
    try:
        report[key] = probe()
    except Exception as error:  # noqa: BLE001 - a diagnostic command reports every failure
        report[key] = f"MISSING: {type(error).__name__}: {error}"
        problems.append(key)


def _installed_files() -> dict[str, list[str]]:
    share = share_dir()
    return {folder: sorted(str(p.relative_to(share)) for p in (share / folder).rglob("*") if p.is_file())
            for folder in ("launch", "urdf", "embodiments")}


def _rmw() -> str:
    from rclpy.utilities import get_rmw_implementation_identifier

    return get_rmw_implementation_identifier()


def _torch() -> str:
    torch = importlib.import_module("torch")
    return f"{torch.__version__} (cuda available: {torch.cuda.is_available()})"


def run_info(args: argparse.Namespace) -> int:
    """Print the installation report; return 1 if a required part is missing."""
    report: dict[str, Any] = {"python": sys.version.split()[0], "prefix": sys.prefix}
    problems: list[str] = []
    _probe(report, problems, "version", lambda: importlib.metadata.version(PACKAGE))
    _probe(report, problems, "share_dir", lambda: str(share_dir()))
    _probe(report, problems, "files", _installed_files)
    _probe(report, problems, "rmw", _rmw)
    _probe(report, problems, "dreamzero_msgs",
           lambda: importlib.import_module("dreamzero_msgs.msg").ActionChunk.__module__)
    _probe(report, problems, "torch", _torch)
    report["environment"] = {name: os.environ.get(name) for name in _ROS_ENVIRONMENT}
    report["problems"] = problems
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        for key, value in report.items():
            print(f"{key:>16}: {value}")
    return 1 if problems else 0


def run_bringup(args: argparse.Namespace) -> int:
    """The launch graph in one process (see :mod:`dreamzero_policy.bringup`)."""
    from dreamzero_policy import bringup

    options = bringup.GraphOptions(embodiment=args.embodiment, backend=args.backend, checkpoint=args.checkpoint,
                                   server_url=args.server_url, prompt=args.prompt, with_mux=not args.no_mux,
                                   with_sim=args.sim, namespace=args.namespace, params_file=args.params_file)
    return bringup.run_bringup(options, args.duration)


def run_demo(args: argparse.Namespace) -> int:
    """One closed-loop task episode in the simulation (see :mod:`dreamzero_policy.demo`) into a run folder; exit
    status 0 when the episode ran and every command stayed within the URDF limits (success is reported, not
    required), 1 otherwise, 2 on a bad argument."""
    import rclpy

    from dreamzero_embodiments.sim.demonstrator import PlanningError
    from dreamzero_policy import demo

    try:  # an unknown checkpoint, seeds outside the evaluation seeds, a bad sampler, camera rate or timeout
        options = demo.demo_options(demo.run_folder(Path(args.output)), args.checkpoint, args.prompt, args.seed,
                                    timeout_s=args.timeout, sampler=args.sampler, steps=args.steps,
                                    camera_rate_hz=args.camera_rate, render_processes=args.render_processes)
    except ValueError as error:
        print(f"dreamzero demo: {error}", file=sys.stderr)
        return 2
    with rclpy.init():
        try:
            summary = demo.run_demo(options)
        except (FileExistsError, PlanningError, TimeoutError, RuntimeError) as error:
            print(f"dreamzero demo: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("dreamzero demo: interrupted", file=sys.stderr)
            return 1
    print(json.dumps(summary, indent=2))
    return 0 if summary["commands_within_urdf_limits"] else 1


def run_collect(args: argparse.Namespace) -> int:
    """Scripted demonstrations in the simulation into bags (see :mod:`dreamzero_policy.collect`); exit status 0
    when every episode succeeded, 1 when some did not, 2 on a bad argument."""
    import rclpy

    from dreamzero_embodiments.sim.demonstrator import PlanningError
    from dreamzero_embodiments.sim.tasks import find_task
    from dreamzero_policy import collect

    try:  # unknown tasks, no episode, seeds outside the training seeds
        options = collect.CollectOptions(Path(args.output), args.episodes, tuple(find_task(t) for t in args.task),
                                         args.seed_start, args.camera_rate, args.render_processes, args.timeout,
                                         args.storage, args.namespace, args.params_file, args.random_start,
                                         **({} if args.hold is None else {"hold_s": args.hold}))
    except ValueError as error:
        print(f"dreamzero collect: {error}", file=sys.stderr)
        return 2
    results: list = []

    def report(result) -> None:
        results.append(result)
        print(json.dumps({"episode": str(result.folder), **result.metadata, "wall_s": round(result.wall_s, 2),
                          "sim_s": round(result.sim_s, 2)}), flush=True)

    with rclpy.init():
        try:
            collect.run_collect(options, report)
        except FileExistsError as error:
            print(f"dreamzero collect: {error}; choose another --output", file=sys.stderr)
            return 2
        except PlanningError as error:  # a scene the demonstrator cannot solve: the episodes so far stay
            print(f"dreamzero collect: episode {len(results)} (seed {args.seed_start + len(results)}): {error}",
                  file=sys.stderr)
        except KeyboardInterrupt:
            print("dreamzero collect: interrupted", file=sys.stderr)
    if results:
        print(json.dumps(collect.summary(results)))
    return 0 if len(results) == args.episodes and all(r.metadata["success"] for r in results) else 1


def run_eval_sim(args: argparse.Namespace) -> int:
    """Closed-loop evaluation in the simulation (see :mod:`dreamzero_policy.eval_sim`) into the report folder; exit
    status 0 when every episode ran (the success rate is in the report), 1 when the evaluation stopped early
    (the report holds the episodes done), 2 on a bad argument."""
    import rclpy

    from dreamzero_embodiments.sim.demonstrator import PlanningError
    from dreamzero_embodiments.sim.tasks import find_task
    from dreamzero_policy import eval_sim

    seeds = {} if args.seed_start is None else {"seed_start": args.seed_start}
    try:  # unknown tasks, no episode, seeds outside the evaluation seeds, a bad checkpoint or sampler choice
        options = eval_sim.EvalOptions(
            Path(args.output), args.checkpoint, tuple(find_task(t) for t in args.task), args.episodes, **seeds,
            sampler=args.sampler, steps=args.steps, prompt_override=args.prompt_override, timeout_s=args.timeout,
            camera_rate_hz=args.camera_rate, render_processes=args.render_processes, device=args.device,
            namespace=args.namespace, params_file=args.params_file)
    except ValueError as error:
        print(f"dreamzero eval-sim: {error}", file=sys.stderr)
        return 2

    def report(result) -> None:
        print(json.dumps({k: v for k, v in result.record.items() if k != "final_state"}), flush=True)

    with rclpy.init():
        try:
            eval_sim.run_eval(options, report)
        except FileExistsError as error:
            print(f"dreamzero eval-sim: {error}; choose another --output", file=sys.stderr)
            return 2
        except (PlanningError, TimeoutError, RuntimeError) as error:  # the episodes so far are in the report
            print(f"dreamzero eval-sim: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("dreamzero eval-sim: interrupted", file=sys.stderr)
            return 1
    print((options.output_dir / "summary.md").read_text())
    return 0


def _add_policy_arguments(parser: argparse.ArgumentParser) -> None:
    """The robot and model choices of ``dreamzero.launch.py``, shared by bringup and eval-bag."""
    parser.add_argument("--embodiment", default="droid", help="droid, agibot_g1, yam, or a YAML path")
    parser.add_argument("--backend", default="local", choices=("local", "remote"))
    parser.add_argument("--checkpoint", default="tiny", help="checkpoint directory, 'tiny' (random weights) or "
                                                             "'sim_touch' (the shipped trained tiny model)")
    parser.add_argument("--server-url", default="ws://127.0.0.1:8000", help="remote backend URL")
    parser.add_argument("--prompt", default="", help="instruction")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every sub-command."""
    parser = argparse.ArgumentParser(prog="dreamzero", description="DreamZero World Action Model on ROS 2.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = commands.add_parser("info", help="show what is installed and where; non-zero exit if a part is missing")
    info.add_argument("--json", action="store_true", help="print the report as JSON")
    info.set_defaults(func=run_info)
    bringup = commands.add_parser("bringup", help="run the node graph of dreamzero.launch.py in one process")
    _add_policy_arguments(bringup)
    bringup.add_argument("--sim", action="store_true", help="also run the pybullet DROID simulation")
    bringup.add_argument("--no-mux", action="store_true", help="without control_mux")
    bringup.add_argument("--namespace", default="")
    bringup.add_argument("--params-file", default="", help="node parameters (default launch/params/<embodiment>.yaml)")
    bringup.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    bringup.set_defaults(func=run_bringup)
    _add_demo_command(commands)
    collect = commands.add_parser("collect", help="scripted demonstrations in the simulation, through the ROS "
                                                  "graph (teleop -> control_mux -> sim), one bag per episode")
    collect.add_argument("--episodes", type=int, default=1, help="number of episodes")
    collect.add_argument("--task", action="append", required=True, metavar="INSTRUCTION",
                         help='e.g. "Touch the red cube.", "Touch the blue cube.", "Put the red cube in the '
                              'tray." (or a task name); repeat to alternate tasks over the episodes')
    collect.add_argument("-o", "--output", required=True, help="folder for episode_XXXX/{bag,metadata.json}")
    collect.add_argument("--seed-start", type=int, default=0,
                         help="episode i uses seed SEED_START + i (training seeds only: below sim/tasks.py "
                              "EVALUATION_SEED_START, where eval-sim's seeds begin)")
    collect.add_argument("--camera-rate", type=float, default=15.0,
                         help="camera rate in simulated Hz (rendered in lockstep; ~40 ms per camera on a CPU)")
    collect.add_argument("--render-processes", type=int, default=3, choices=(1, 2, 3),
                         help="child processes rendering the three cameras (1 on a 2-core machine)")
    collect.add_argument("--timeout", type=float, default=30.0,
                         help="simulated seconds before an unsuccessful episode ends")
    collect.add_argument("--random-start", type=float, default=0.0, metavar="FRACTION",
                         help="fraction of the episodes that start from a random arm pose over the table instead "
                              "of the ready pose (drawn from the seed): demonstrations of the way back to a cube")
    collect.add_argument("--hold", type=float, default=None, metavar="SECONDS",
                         help="simulated seconds an episode goes on after the first success, the arm holding "
                              "(default: sim_episode.HOLD_S, half a second)")
    collect.add_argument("-s", "--storage", default="mcap", choices=("mcap", "sqlite3"))
    collect.add_argument("--namespace", default="", help="namespace of the simulated robot's topics")
    collect.add_argument("--params-file", default="", help="control_mux parameters (default launch/params/droid.yaml)")
    collect.set_defaults(func=run_collect)
    _add_eval_sim_command(commands)
    _add_bag_commands(commands)
    # Options live in dreamzero_model.training.cli (imported only when training: it loads torch); see main().
    train = commands.add_parser("train", add_help=False, help="train DreamZero on a LeRobot dataset, one process or "
                                "under torchrun ('dreamzero train --help' lists the options)")
    train.set_defaults(func=lambda args: main(["train"]))
    # Options live in dreamzero_model.serving.cli (imported only when serving: it loads torch); see main().
    serve = commands.add_parser("serve", add_help=False, help="the DreamZero WebSocket model server for official "
                                "clients and the remote backend ('dreamzero serve --help' lists the options)")
    serve.set_defaults(func=lambda args: main(["serve"]))
    return parser


def _add_demo_command(commands) -> None:
    demo = commands.add_parser("demo", help="one closed-loop task episode in the simulated DROID world, by default "
                                            "of the shipped trained tiny model (run folder: video, joints, summary)")
    demo.add_argument("--checkpoint", default=SHIPPED_CHECKPOINT, metavar="sim_touch|tiny|demonstrator|DIR",
                      help="'sim_touch' (the shipped trained tiny model), 'tiny' (random weights), 'demonstrator' "
                           "(the scripted demonstrator as the policy) or a checkpoint directory")
    demo.add_argument("--prompt", default="Touch the red cube.",
                      help='instruction; a task\'s (e.g. "Touch the blue cube.") chooses that task, other text is '
                           'told to the policy on the task "Touch the red cube."')
    demo.add_argument("--seed", type=int, default=None,
                      help="scene seed (default: the first evaluation seed, sim/tasks.py EVALUATION_SEED_START; "
                           "lower seeds are training seeds)")
    demo.add_argument("--timeout", type=float, default=20.0,
                      help="simulated seconds from the episode's start before it ends unsuccessful")
    demo.add_argument("--sampler", default="standard", choices=("standard", "flash"),
                      help="as eval-sim: standard: UniPC 16 steps, official DiT cache, CFG 5.0; flash: Euler --steps, "
                           "CFG 1.0")
    demo.add_argument("--steps", type=int, default=None, help="denoising steps of the flash sampler (default 1)")
    demo.add_argument("--camera-rate", type=float, default=5.0,
                      help="camera rate in simulated Hz, dividing 30 (5 Hz: the model's frame spacing, facts §1.8)")
    demo.add_argument("--render-processes", type=int, default=3, choices=(1, 2, 3),
                      help="child processes rendering the three cameras (1 on a 2-core machine)")
    demo.add_argument("--output", default="runs", help="folder for the run folder demo-YYYYmmdd-HHMMSS")
    demo.set_defaults(func=run_demo)


def _add_eval_sim_command(commands) -> None:
    evaluate = commands.add_parser("eval-sim", help="closed-loop success rates of a policy in the simulation, through "
                                                    "the ROS graph (sim -> policy -> adapter -> mux -> sim)")
    evaluate.add_argument("--checkpoint", required=True, metavar="DIR|tiny|sim_touch|demonstrator",
                          help="checkpoint directory, 'tiny' (random weights), 'sim_touch' (the shipped trained tiny "
                               "model) or 'demonstrator' (the scripted demonstrator as the policy: the sanity row, "
                               "about 100 %% success)")
    evaluate.add_argument("--task", action="append", required=True, metavar="INSTRUCTION",
                          help='e.g. "Touch the red cube." (or a task name); repeat to alternate tasks over episodes')
    evaluate.add_argument("--episodes", type=int, default=1, help="number of episodes")
    evaluate.add_argument("--seed-start", type=int, default=None,
                          help="episode i uses seed SEED_START + i (default: the first evaluation seed, "
                               "sim/tasks.py EVALUATION_SEED_START; lower seeds are training seeds)")
    evaluate.add_argument("--sampler", default="standard", choices=("standard", "flash"),
                          help="standard: UniPC 16 steps, official DiT cache, CFG 5.0; flash: Euler --steps, CFG 1.0, "
                               "DiT cache on every step")
    evaluate.add_argument("--steps", type=int, default=None, help="denoising steps of the flash sampler (default 1)")
    evaluate.add_argument("--prompt-override", default="", metavar="TEXT",
                          help="prompt every episode with TEXT instead of its task's instruction (success stays the "
                               "task's; the report says whether the arm reached the prompted object)")
    evaluate.add_argument("--timeout", type=float, default=30.0,
                          help="simulated seconds from an episode's start before it ends unsuccessful")
    evaluate.add_argument("--camera-rate", type=float, default=5.0,
                          help="camera rate in simulated Hz, dividing 30 (5 Hz: the model's frame spacing, facts §1.8)")
    evaluate.add_argument("--render-processes", type=int, default=3, choices=(1, 2, 3),
                          help="child processes rendering the three cameras (1 on a 2-core machine)")
    evaluate.add_argument("--device", default="cpu", help="torch device of the model, e.g. cuda:0")
    evaluate.add_argument("-o", "--output", required=True, help="report folder (new or empty)")
    evaluate.add_argument("--namespace", default="", help="namespace of the simulated robot's topics")
    evaluate.add_argument("--params-file", default="", help="node parameters (default launch/params/droid.yaml)")
    evaluate.set_defaults(func=run_eval_sim)


def _bag_command(name: str):
    """The runner ``name`` of :mod:`dreamzero_policy.bags.commands`, imported when called. A bad bag,
    option or path ends with one line naming the cause and exit status 2, not a traceback."""
    def run(args: argparse.Namespace) -> int:
        from rosbags.rosbag2 import ReaderError, WriterError

        from dreamzero_policy.bags import commands

        try:
            return getattr(commands, name)(args)
        except (ValueError, LookupError, OSError, ReaderError, WriterError) as error:
            print(f"dreamzero {args.command}: {error}", file=sys.stderr)
            return 2
    return run


def _add_bag_commands(commands) -> None:
    record = commands.add_parser("record", help="record topics to a rosbag2 bag (MCAP or sqlite3) with rosbags")
    record.add_argument("topics", nargs="*", help="topics to record")
    record.add_argument("-a", "--all", action="store_true", help="every topic but /rosout and /parameter_events")
    record.add_argument("-o", "--output", default="", help="new bag folder (default rosbag2_<date>-<time>)")
    record.add_argument("-s", "--storage", default="mcap", choices=("mcap", "sqlite3"))
    record.add_argument("--duration", type=float, default=None,
                        help="stop this many seconds after the first message written")
    record.add_argument("--use-sim-time", action="store_true", help="stamp with /clock; nothing before the first")
    record.set_defaults(func=_bag_command("run_record"))
    replay = commands.add_parser("replay", help="publish a rosbag2 bag (MCAP or sqlite3) with its original timing")
    replay.add_argument("bag", help="bag folder")
    replay.add_argument("-r", "--rate", type=float, default=1.0, help="playback rate")
    replay.add_argument("-l", "--loop", action="store_true", help="start again at the end")
    replay.add_argument("--start-offset", type=float, default=0.0, help="seconds into the bag to start at")
    replay.add_argument("-d", "--delay", type=float, default=0.5, help="seconds to wait for subscribers first")
    replay.add_argument("--wait-for-subscribers", type=float, default=0.0, metavar="SECONDS",
                        help="first wait up to this long for a subscriber on every topic")
    replay.add_argument("--clock", type=float, nargs="?", const=40.0, default=0.0,
                        help="publish the bag time on /clock at this rate (bare: 40 Hz) and before every message")
    replay.add_argument("--topics", nargs="+", default=[], help="only these topics")
    replay.add_argument("--remap", nargs="+", default=[], help="recorded:=published topic pairs")
    replay.set_defaults(func=_bag_command("run_replay"))
    evaluate = commands.add_parser("eval-bag", help="offline open-loop evaluation of the policy on a bag")
    evaluate.add_argument("bag", help="bag folder (ros2 bag record or dreamzero record; sqlite3 or MCAP)")
    _add_policy_arguments(evaluate)
    evaluate.add_argument("--output", default="eval", help="folder for the report folder")
    evaluate.add_argument("--namespace", default="", help="namespace the embodiment's topics were recorded under")
    evaluate.add_argument("--camera-topic", action="append", default=[], metavar="KEY=TOPIC",
                          help="topic of one camera, overriding the YAML (repeatable)")
    evaluate.add_argument("--joint-name-map", action="append", default=[], metavar="YAML_NAME=BAG_NAME",
                          help="rename the embodiment's joints as the bag names them, one joint or a prefix "
                               "'panda_*=fr3_*' (an FR3 on DROID; repeatable)")
    evaluate.add_argument("--execute-steps", type=int, default=0, help="steps between queries (0: the horizon)")
    evaluate.add_argument("--max-chunks", type=int, default=0, help="stop after this many chunks (0: whole bag)")
    evaluate.add_argument("--frame-mode", default="auto", choices=("auto", "training", "official"),
                          help="frames per continuation query; auto: as the remote server's handshake says "
                               "(official server: 4), else training (9)")
    evaluate.add_argument("--camera-timeout", type=float, default=0.5, help="seconds; older camera frames block")
    evaluate.add_argument("--frame-tolerance", type=float, default=0.15, help="seconds between wanted and used frame")
    evaluate.add_argument("--state-tolerance", type=float, default=0.1, help="seconds between t_obs and joint state")
    evaluate.add_argument("--device", default="cpu", help="torch device of the local backend")
    evaluate.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    evaluate.add_argument("--solver", default="unipc", choices=("unipc", "euler"))
    evaluate.add_argument("--num-inference-steps", type=int, default=16)
    evaluate.add_argument("--cfg-scale", type=float, default=5.0)
    evaluate.add_argument("--seed", type=int, default=1140, help="noise seed (-1: fresh noise every call)")
    evaluate.add_argument("--call-timeout", type=float, default=600.0, help="longest wait for one backend call, s")
    evaluate.add_argument("--no-video", action="store_true", help="skip the predicted video (faster)")
    evaluate.add_argument("--quiet", action="store_true", help="no progress bar")
    evaluate.set_defaults(func=_bag_command("run_eval_bag"))
    dataset = commands.add_parser("dataset", help="convert bags (one episode each) into a LeRobot v2.1 dataset "
                                                  "for DreamZero training")
    dataset.add_argument("bags", nargs="+", metavar="BAG", help="bag folders (sqlite3 or MCAP), one episode each")
    dataset.add_argument("-o", "--output", required=True, help="new dataset folder (written whole or not at all)")
    dataset.add_argument("--embodiment", default="droid", help="droid, agibot_g1, yam, or a YAML path")
    dataset.add_argument("--task", default="", help="instruction of every episode (default: metadata.json in or "
                                                   "beside each bag folder: {\"instruction\": ..., \"seed\": ..., "
                                                   "\"success\": ...})")
    dataset.add_argument("--namespace", default="", help="namespace the embodiment's topics were recorded under")
    dataset.add_argument("--camera-topic", action="append", default=[], metavar="KEY=TOPIC",
                         help="topic of one camera, overriding the YAML (repeatable)")
    dataset.add_argument("--command-topic", action="append", default=[], metavar="GROUP=TOPIC",
                         help="command topic of one controller group, overriding the YAML (repeatable)")
    dataset.add_argument("--joint-name-map", action="append", default=[], metavar="YAML_NAME=BAG_NAME",
                         help="rename the embodiment's joints as the bag names them (as eval-bag; repeatable)")
    dataset.add_argument("--frame-tolerance", type=float, default=0.15,
                         help="seconds between an action time and the camera frame used for it")
    dataset.add_argument("--only-success", action="store_true", help="skip episodes whose metadata.json says "
                                                                     "success: false")
    dataset.add_argument("--overwrite", action="store_true", help="replace an existing output folder when done")
    dataset.add_argument("--quiet", action="store_true", help="no progress bar")
    dataset.set_defaults(func=_bag_command("run_dataset"))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``dreamzero`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["train"]:
        from dreamzero_model.training.cli import main as train

        return train(argv[1:])
    if argv[:1] == ["serve"]:
        from dreamzero_model.serving.cli import main as serve

        return serve(argv[1:])
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
