"""``dreamzero serve`` (also ``python -m dreamzero_model.serving``): options, loading, exit status.

::

    dreamzero serve --checkpoint checkpoints/DreamZero-DROID --device cuda --host 0.0.0.0 --token-file token.txt
    dreamzero serve --checkpoint tiny --port 0          # random tiny model of droid, agibot and yam (tests, demo)

Serves every embodiment of the checkpoint's ``experiment_cfg/metadata.json`` that has a shipped embodiment
YAML (``ws://host:port/<tag>``; :mod:`dreamzero_model.serving.server`). Once listening it prints
``listening on ws://host:port`` on stdout (the bound port with ``--port 0``); ``/readyz`` turns 200 after
the warm-up. Exit status: 0 after SIGINT/SIGTERM (calls in progress answered first), 2 bad input (one line
on stderr before any long work: an unknown option value, a checkpoint that does not load or does not fit
its embodiment YAML, an unreadable token file), 1 anything else (warm-up failed).
Imports the sampler's option choices, the allocator settings and the embodiment layer at module level, the
engine and server when the command runs.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from dreamzero_embodiments.spec import EmbodimentSpec, embodiment_names, load_embodiment
from dreamzero_model.config import CACHE_SCHEDULES
from dreamzero_model.serving.allocator import keep_freed_buffers

if TYPE_CHECKING:
    from dreamzero_model.serving.server import ModelServer

LOG = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dreamzero serve``."""
    parser.add_argument("--checkpoint", required=True, help="checkpoint folder (official layout), or 'tiny' "
                                                            "(random weights: droid, agibot and yam)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    parser.add_argument("--port", type=int, default=8000, help="0: a free port (printed)")
    parser.add_argument("--embodiment", default=None, metavar="TAG",
                        help="embodiment of connections without a path (default: oxe_droid when served, else the "
                             "only one)")
    access = parser.add_mutually_exclusive_group()
    access.add_argument("--token", default=None, help="require 'Authorization: Bearer <token>' (or 'Api-Key <token>')")
    access.add_argument("--token-file", default=None, help="read the token from this file (first line)")
    sessions = parser.add_argument_group("sessions")
    sessions.add_argument("--max-sessions", type=int, default=4,
                          help="live sessions at most, the memory budget: each holds a KV cache (its size is logged "
                               "and in /metrics); beyond it the least recently used idle session is evicted")
    sessions.add_argument("--session-timeout-s", type=float, default=600.0,
                          help="a session idle this many seconds is dropped (its next call must reset)")
    sessions.add_argument("--max-batch", type=int, default=4,
                          help="calls of different sessions run as one batch at most: calls that queue while the "
                               "model is busy and sit at the same chunk of their context are denoised in one "
                               "batched pass, each session still getting its solo chunk; the pass holds a copy of "
                               "their KV caches (1: one call at a time)")
    model = parser.add_argument_group("model")
    model.add_argument("--device", default="cpu", help="torch device: cpu, cuda or cuda:N")
    model.add_argument("--dtype", default="", choices=("", "float32", "bfloat16", "float16"),
                       help="default: bfloat16 on CUDA, float32 otherwise")
    model.add_argument("--tokenizer-path", default=None, help="local umT5 tokenizer (default: the checkpoint's)")
    model.add_argument("--cpu-threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    model.add_argument("--solver", default="unipc", choices=("unipc", "euler"), help="flow sampler")
    model.add_argument("--num-inference-steps", "--num-steps", dest="num_steps", type=int, default=16,
                       help="denoising steps (16 official; 1 or 4 for Flash)")
    model.add_argument("--cache-schedule", default="official", choices=CACHE_SCHEDULES,
                       help="DiT step caching (official: 8 of 16 steps)")
    model.add_argument("--cfg-scale", type=float, default=5.0, help="guidance on video (1.0: no unconditional branch)")
    model.add_argument("--seed", type=int, default=1140, help="seed of each call's initial noise (-1: fresh noise)")
    run = parser.add_argument_group("run")
    run.add_argument("--no-warmup", dest="warmup", action="store_false",
                     help="ready at once (the first calls then take the warm-up time)")
    run.add_argument("--quiet", dest="progress", action="store_false", help="no progress bars")
    run.add_argument("--malloc", default="keep-freed", choices=("keep-freed", "default"),
                     help="keep-freed: glibc keeps the request buffers it frees for the next request instead of "
                          "faulting them in again (half the transport time of a 4.7 MB DROID call here; up to "
                          "64 MiB held); "
                          "malloc settings in the environment win (dreamzero_model.serving.allocator)")
    run.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"),
                     help="debug logs every call's timing (model, overhead, mosaics, queue; websockets' own "
                          "frame traces stay off)")


def _token(args: argparse.Namespace) -> str | None:
    if args.token_file is not None:
        lines = Path(args.token_file).read_text().splitlines()
        token = lines[0].strip() if lines else ""
    else:
        token = args.token
    if token is not None and not token:
        raise ValueError("--token/--token-file: the token is empty")
    return token


def build_server(args: argparse.Namespace) -> ModelServer:
    """Load the engine for every servable embodiment of the checkpoint and make the server.

    Raises:
        ValueError: bad options, no servable embodiment, or a checkpoint that does not fit a YAML
            (CheckpointError and EmbodimentSpecError are ValueErrors). OSError: unreadable files.
    """
    import torch

    from dreamzero_model.config import SamplerConfig
    from dreamzero_model.metadata import embodiment_tags
    from dreamzero_model.serving.distributed import DistributedEngine
    from dreamzero_model.serving.engine import Engine, resolve_checkpoint
    from dreamzero_model.serving.server import ModelServer, ServerOptions, default_tag
    from dreamzero_model.tiny_checkpoint import check_layout

    token = _token(args)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {args.device}: torch sees no CUDA device")
    sampler = SamplerConfig(solver=args.solver, num_steps=args.num_steps, cfg_scale=args.cfg_scale,
                            cache_schedule=args.cache_schedule, seed=None if args.seed < 0 else args.seed)
    if args.cpu_threads > 0:
        torch.set_num_threads(args.cpu_threads)
    folder = resolve_checkpoint(args.checkpoint)
    specs = served_specs(embodiment_tags(folder))
    # the options are checked (ServerOptions) before the model loads, which may take minutes
    options = ServerOptions(host=args.host, port=args.port, default_tag=default_tag(list(specs), args.embodiment),
                            token=token, max_sessions=args.max_sessions, session_timeout_s=args.session_timeout_s,
                            max_batch=args.max_batch, warmup=args.warmup, progress=args.progress)
    # under torchrun (facts §3.2): the CFG branches on 2 processes, rank 0 serving the socket
    engine_class = DistributedEngine if int(os.environ.get("WORLD_SIZE", "1")) > 1 else Engine
    engine = engine_class.from_checkpoint(folder, list(specs), device=args.device,
                                          dtype=getattr(torch, args.dtype) if args.dtype else None, sampler=sampler,
                                          tokenizer_path=args.tokenizer_path, progress=args.progress)
    for tag, spec in specs.items():
        check_layout(spec, engine.metadata[tag])
    return ModelServer(engine, specs, options)


def served_specs(tags: list[str]) -> dict[str, EmbodimentSpec]:
    """Embodiment tag -> the shipped embodiment YAML carrying it, for the checkpoint's ``tags``; a tag without
    a YAML is skipped with a warning.

    Raises:
        ValueError: no tag has a YAML, or several YAMLs carry one tag (which of them is meant is unknown).
    """
    by_tag: dict[str, list[EmbodimentSpec]] = {}
    for name in embodiment_names():
        spec = load_embodiment(name)
        by_tag.setdefault(spec.embodiment_tag, []).append(spec)
    served = {}
    for tag in tags:
        candidates = by_tag.get(tag, [])
        if len(candidates) > 1:
            raise ValueError(f"embodiment tag {tag!r}: several embodiment YAMLs carry it "
                             f"({', '.join(s.name for s in candidates)})")
        if not candidates:
            LOG.warning("the checkpoint's embodiment %r has no embodiment YAML (tags with one: %s): not served", tag,
                        ", ".join(sorted(by_tag)))
            continue
        served[tag] = candidates[0]
    if not served:
        raise ValueError(f"none of the checkpoint's embodiments {tags} has an embodiment YAML (tags with one: "
                         f"{', '.join(sorted(by_tag))})")
    return served


async def serve(server: ModelServer) -> int:
    """Listen, print the URL, serve until SIGINT or SIGTERM; the exit status."""
    await server.start()
    print(f"listening on {server.url}", flush=True)
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, server.request_stop)
    return await server.run_until_stopped()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dreamzero serve",
                                     description="Serve DreamZero over the DreamZero / RoboArena WebSocket protocol.")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(max(logging.INFO, logging.getLogger().level))  # no per-frame traces
    if args.malloc == "keep-freed":
        LOG.info(keep_freed_buffers())
    try:
        server = build_server(args)
    except (ValueError, OSError) as error:
        print(f"dreamzero serve: {error}", file=sys.stderr)
        return 2
    engine = server.engine
    if not engine.serves_socket:  # rank 1 under torchrun: mirrors rank 0's calls
        engine.serve_forever()
        return 0
    try:
        return asyncio.run(serve(server))
    finally:
        engine.stop()  # under torchrun: ends rank 1


if __name__ == "__main__":
    sys.exit(main())
