"""``dreamzero serve`` under concurrent DROID sessions: calls/s, round-trip percentiles, server overhead.

For each session count N (``--sessions``, default 1 2 4) and each ``--max-batch`` B (default 1 4: batching
off and on, side by side) a fresh server runs as a subprocess
(``python -m dreamzero_model.serving --checkpoint tiny --port 0 --quiet --no-warmup --max-batch B``), gets one
untimed 2-call warm-up session, then N sessions in N separate processes start together (a barrier)
and each makes ``--calls`` infer calls. A session is built like the official DROID client: a sync
websockets connection to ``/oxe_droid`` (no compression, no size limit), the handshake read first,
requests from ``protocol.build_request`` packed with openpi's ``msgpack_numpy``. Its observations are
random uint8 frames of the three DROID cameras (180x320): 1 frame per camera on the first call, then
9-frame continuations. A round trip is pack + send + receive + unpack (the official ``infer``);
frames are made before the clock starts.

Per (N, B): calls/s over the wall time of all sessions (first start to last end), p50/p95 round trip, and
the server's own figures from ``GET /metrics`` after the run (summaries over every call of that
server, the 2 warm-up calls included): infer, model, overhead (infer minus model: decoding, queueing,
``model_mosaics`` stitching, encoding) and queue-wait p50, and the calls by batch size (how many calls'
chunks were denoised together; the warm-up calls ran alone).

Client-side overhead (issue target: <= 5 ms per DROID call), measured first and in pairs: the same
checkpoint loaded in this process as ``WamPolicy.from_pretrained(..., "oxe_droid", decode_video=False)``
runs call k as the server runs it (``model_mosaics`` + ``WamPolicy.infer``), then call k goes through a
fresh server (1 session, batching off), call after call (``--paired-calls``), each side after its own
2-call warm-up. The overhead is the median of the per-call differences (round trip - direct): both sides
of a pair see the same machine load, which on this shared machine moves call times by tens of ms within
a minute (medians taken minutes apart, as before 2026-12-07, differed by -22 to +69 ms run to run).
The server's own part is its ``infer`` p50 (from receipt to reply) minus the direct p50. Because the two
processes' model times differ by several ms from process to process, the same run also splits the server
path without a second process, call by call: the paired server logs each call's total, model and mosaics
times (``--log-level debug``), and the overhead excluding the model is the median of round trip - model -
mosaics, split into the transport (round trip - total) and the server's own work (total - model - mosaics:
decoding, checks, queueing, the reply). For scale, the
same run measures the transport floor: a websockets echo server (another process) that only unpacks the
request and answers, so pack + send + reply of a 4.7 MB DROID request with no model and no server logic.
``--malloc`` (default ``keep-freed``, the server's default) is given to every server and the echo server and
applied to this process too; ``--malloc default`` measures glibc's defaults.

Threads: the server and the direct reference both run torch with ``--threads`` (default 1) intra-op
threads, so they compare like for like and the client processes keep the other core; numpy in the
clients is pinned to 1 thread (``OMP_NUM_THREADS=1``). Figures are relative, on a shared 2-core
machine: compare rows of one run, not runs; the load average is printed with them.

Usage:
    PYTHONPATH=embodiments:model:. .venv/bin/python bench/serve_bench.py [--sessions 1 2 4] [--max-batch 1 4]
        [--calls 20] [--paired-calls 40] [--malloc keep-freed|default] [--json]
Figures measured go to bench/RESULTS.md together with the command.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before numpy: every client process single-threaded

import argparse
import json
import multiprocessing as mp
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from openpi_client import msgpack_numpy
from websockets.sync.client import connect

from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_model.mosaics import model_mosaics
from dreamzero_model.serving.allocator import keep_freed_buffers
from dreamzero_model.serving.protocol import build_request, embodiment_url, wire_keys

PROMPT = "Pick up the cup."
CONTINUATION_FRAMES = 9  # facts §1.8: the training frame count of a continuation
WARMUP_CALLS = 2         # untimed: a first call and one continuation
START_TIMEOUT_S = 300.0
LISTENING = "listening on "
METRICS = ("infer", "model", "overhead", "preprocess", "queue_wait")
# the server's debug line per call (dreamzero_model.serving.server, ModelServer._answer)
CALL_LOG = re.compile(r"total ([\d.]+) ms = model ([\d.]+) ms \+ overhead [\d.]+ ms \(mosaics ([\d.]+) ms")


def observation(spec: EmbodimentSpec, seed: int, call: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Camera key -> uint8[T, 180, 320, 3] (T = 1 on call 0, else 9) and float64[S] state of call ``call``."""
    rng = np.random.default_rng([seed, call])
    frames = 1 if call == 0 else CONTINUATION_FRAMES
    views = {c.key: rng.integers(0, 256, (frames, *c.resolution, 3), dtype=np.uint8) for c in spec.cameras}
    return views, rng.uniform(-0.5, 0.5, len(spec.state_names))


def run_session(url: str, session_id: str, calls: int, seed: int, barrier=None) -> tuple[float, float, list[float]]:
    """One DROID session of ``calls`` calls; (start, end, round-trip seconds per call), monotonic clock."""
    spec = load_embodiment("droid")
    keys = wire_keys(spec)
    requests = [build_request(*observation(spec, seed, k), PROMPT, session_id, spec, keys) for k in range(calls)]
    with connect(embodiment_url(url, spec.embodiment_tag), compression=None, max_size=None, proxy=None) as ws:
        msgpack_numpy.unpackb(ws.recv(timeout=120))  # handshake
        if barrier is not None:
            barrier.wait()
        rtts = []
        start = time.perf_counter()
        for request in requests:
            sent = time.perf_counter()
            ws.send(msgpack_numpy.packb(request))
            reply = ws.recv(timeout=600)
            if isinstance(reply, str):
                raise RuntimeError(f"session {session_id}: server error:\n{reply}")
            msgpack_numpy.unpackb(reply)
            rtts.append(time.perf_counter() - sent)
        return start, time.perf_counter(), rtts


def _session_worker(url: str, index: int, calls: int, barrier, results) -> None:
    results.put((index, run_session(url, f"bench-{index}", calls, seed=index, barrier=barrier)))


class Server:
    """``dreamzero serve --checkpoint tiny`` on a free port; stderr goes to a temporary log."""

    def __init__(self, threads: int, max_sessions: int, max_batch: int, malloc: str, log_level: str = "info") -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="serve-bench-", suffix=".log", delete=False)  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "dreamzero_model.serving", "--checkpoint", "tiny", "--port", "0", "--quiet",
             "--no-warmup", "--cpu-threads", str(threads), "--max-sessions", str(max_sessions),
             "--max-batch", str(max_batch), "--malloc", malloc, "--log-level", log_level],
            stdout=subprocess.PIPE, stderr=self.log, text=True,
            env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.process.stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        if not line or not line[0].startswith(LISTENING):
            self.process.kill()
            raise RuntimeError(f"server did not start ({line!r}); log:\n{Path(self.log.name).read_text()[-3000:]}")
        self.url = line[0][len(LISTENING):].strip()

    def metrics(self) -> tuple[dict[str, float], dict[int, int]]:
        """From ``/metrics``: summary name -> its p50 in ms, and batch size -> calls answered in batches of it."""
        with urllib.request.urlopen("http" + self.url[2:] + "/metrics", timeout=30) as response:  # noqa: S310
            text = response.read().decode()
        samples = dict(line.rsplit(" ", 1) for line in text.splitlines() if not line.startswith("#"))
        batches = {int(name.split('"')[1]): int(float(n)) for name, n in samples.items()
                   if name.startswith("dreamzero_batched_calls_total") and float(n)}
        return {m: 1e3 * float(samples[f'dreamzero_{m}_seconds{{quantile="0.5"}}']) for m in METRICS}, batches

    def call_timings(self, session_id: str) -> list[dict[str, float]]:
        """Per answered call of ``session_id``, in order, from the server's debug log (``--log-level debug``):
        its total, model and mosaics ms."""
        lines = Path(self.log.name).read_text().splitlines()
        return [{name: float(value) for name, value in zip(("total", "model", "mosaics"), match.groups())}
                for match in (CALL_LOG.search(line) for line in lines if f"/{session_id}: " in line) if match]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(60)
        finally:
            self.process.kill()
            self.process.stdout.close()
            self.log.close()
            os.unlink(self.log.name)


def run_concurrent(sessions: int, calls: int, threads: int, max_sessions: int, max_batch: int, malloc: str) -> dict:
    """N sessions in N processes against a fresh server: calls/s, round-trip p50/p95, the server's p50s and
    calls by batch size."""
    server = Server(threads, max_sessions, max_batch, malloc)
    try:
        run_session(server.url, "warmup", WARMUP_CALLS, seed=1000)
        context = mp.get_context("spawn")
        barrier, results = context.Barrier(sessions), context.Queue()
        workers = [context.Process(target=_session_worker, args=(server.url, i, calls, barrier, results))
                   for i in range(sessions)]
        for worker in workers:
            worker.start()
        outcomes = [results.get(timeout=3600)[1] for _ in workers]
        for worker in workers:
            worker.join()
        server_ms, batches = server.metrics()
    finally:
        server.stop()
    rtts = sorted(r for _, _, session in outcomes for r in session)
    wall = max(end for _, end, _ in outcomes) - min(start for start, _, _ in outcomes)
    return {"sessions": sessions, "max_batch": max_batch, "batched_calls": batches,
            "calls_per_s": len(rtts) / wall, "p50_ms": 1e3 * statistics.median(rtts),
            "p95_ms": 1e3 * rtts[min(len(rtts) - 1, int(np.ceil(0.95 * len(rtts))) - 1)],
            **{f"server_{m}_p50_ms": v for m, v in server_ms.items()}}


def run_paired(calls: int, threads: int, malloc: str) -> dict:
    """The client-side overhead, measured in pairs: call k of a direct context, then call k through a fresh
    server (1 session, batching off), alternating, so that both see the same machine load.

    The direct context runs what the server runs per call (``model_mosaics`` + ``WamPolicy.infer`` of a
    context made as the engine makes one) in this process; both get the same observations and their own
    2-call warm-up. Returns per call the direct ``model_mosaics`` and infer seconds and the round trip.
    """
    import torch

    from dreamzero_model.policy import WamPolicy
    from dreamzero_model.serving.engine import resolve_checkpoint

    torch.set_num_threads(threads)
    spec = load_embodiment("droid")
    keys = wire_keys(spec)
    loaded = WamPolicy.from_pretrained(resolve_checkpoint("tiny"), spec.embodiment_tag, decode_video=False,
                                       progress=False)
    size = loaded.model.config.mosaic_size
    server = Server(threads, max_sessions=2, max_batch=1, malloc=malloc, log_level="debug")
    try:
        run_session(server.url, "warmup", WARMUP_CALLS, seed=1000)
        warmup = WamPolicy(loaded.model, loaded.metadata, loaded.tokenizer, decode_video=False)
        for k in range(WARMUP_CALLS):
            views, state = observation(spec, 1000, k)
            warmup.infer(model_mosaics(views, spec, size), state, prompt=PROMPT)
        policy = WamPolicy(loaded.model, loaded.metadata, loaded.tokenizer, decode_video=False)  # as Engine does
        mosaics_s, infer_s, round_trip_s = [], [], []
        with connect(embodiment_url(server.url, spec.embodiment_tag), compression=None, max_size=None,
                     proxy=None) as ws:
            msgpack_numpy.unpackb(ws.recv(timeout=120))  # handshake
            for k in range(calls):
                views, state = observation(spec, 0, k)
                started = time.perf_counter()
                video = model_mosaics(views, spec, size)
                stitched = time.perf_counter()
                policy.infer(video, state, prompt=PROMPT)
                mosaics_s.append(stitched - started)
                infer_s.append(time.perf_counter() - stitched)
                request = build_request(views, state, PROMPT, "paired", spec, keys)
                sent = time.perf_counter()
                ws.send(msgpack_numpy.packb(request))
                reply = ws.recv(timeout=600)
                if isinstance(reply, str):
                    raise RuntimeError(f"server error:\n{reply}")
                msgpack_numpy.unpackb(reply)
                round_trip_s.append(time.perf_counter() - sent)
        server_ms, _ = server.metrics()
        timings = server.call_timings("paired")
    finally:
        server.stop()
    if len(timings) != calls:
        raise RuntimeError(f"the server's debug log holds {len(timings)} timed calls of the paired session, not {calls}")
    direct = [a + b for a, b in zip(mosaics_s, infer_s)]
    rtt_ms = [1e3 * r for r in round_trip_s]
    return {"direct_p50_ms": 1e3 * statistics.median(direct),
            "direct_mosaics_p50_ms": 1e3 * statistics.median(mosaics_s),
            "direct_infer_p50_ms": 1e3 * statistics.median(infer_s),
            "round_trip_p50_ms": 1e3 * statistics.median(round_trip_s),
            "client_overhead_ms": 1e3 * statistics.median(r - d for r, d in zip(round_trip_s, direct)),
            "overhead_excluding_model_ms": statistics.median(r - t["model"] - t["mosaics"]
                                                             for r, t in zip(rtt_ms, timings)),
            "transport_ms": statistics.median(r - t["total"] for r, t in zip(rtt_ms, timings)),
            "server_own_ms": statistics.median(t["total"] - t["model"] - t["mosaics"] for t in timings),
            **{f"server_{m}_p50_ms": v for m, v in server_ms.items()}}


def _echo_server(malloc: str, ports, stop) -> None:
    """The transport floor's server (a spawned process): unpack each request, answer a 24 x 8 chunk."""
    import asyncio

    from websockets.asyncio.server import serve

    if malloc == "keep-freed":
        keep_freed_buffers()

    async def echo(ws) -> None:
        async for message in ws:
            msgpack_numpy.unpackb(message)
            await ws.send(msgpack_numpy.packb(np.zeros((24, 8), np.float32)))

    async def serve_until_stopped() -> None:
        async with serve(echo, "127.0.0.1", 0, compression=None, max_size=None) as server:
            ports.put(server.sockets[0].getsockname()[1])
            while not stop.is_set():
                await asyncio.sleep(0.05)

    asyncio.run(serve_until_stopped())


def run_transport_floor(calls: int, malloc: str) -> dict:
    """What the protocol alone costs a DROID call: a websockets echo server (same library, no compression, no
    size limit, the server's ``--malloc``) in another process that unpacks each request and answers a 24 x 8
    chunk. Per call: the client's ``packb`` of a 9-frame DROID request (4.7 MB), and send + reply + ``unpackb``
    (median ms)."""
    context = mp.get_context("spawn")
    ports, stop = context.Queue(), context.Event()
    echo = context.Process(target=_echo_server, args=(malloc, ports, stop), daemon=True)
    echo.start()
    spec = load_embodiment("droid")
    request = build_request(*observation(spec, 0, 1), PROMPT, "floor", spec, wire_keys(spec))
    pack_s, exchange_s = [], []
    try:
        with connect(f"ws://127.0.0.1:{ports.get(timeout=START_TIMEOUT_S)}", compression=None, max_size=None,
                     proxy=None) as ws:
            for _ in range(calls + WARMUP_CALLS):
                started = time.perf_counter()
                payload = msgpack_numpy.packb(request)
                packed = time.perf_counter()
                ws.send(payload)
                msgpack_numpy.unpackb(ws.recv(timeout=60))
                pack_s.append(packed - started)
                exchange_s.append(time.perf_counter() - packed)
    finally:
        stop.set()
        echo.join(10)
    pack_s, exchange_s = pack_s[WARMUP_CALLS:], exchange_s[WARMUP_CALLS:]
    return {"bytes": len(payload), "pack_p50_ms": 1e3 * statistics.median(pack_s),
            "exchange_p50_ms": 1e3 * statistics.median(exchange_s),
            "total_p50_ms": 1e3 * statistics.median(a + b for a, b in zip(pack_s, exchange_s))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4], help="concurrent session counts")
    parser.add_argument("--max-batch", type=int, nargs="+", default=[1, 4],
                        help="server --max-batch values, each run per session count (1: batching off)")
    parser.add_argument("--calls", type=int, default=20, help="infer calls per session")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and the direct run")
    parser.add_argument("--paired-calls", type=int, default=40,
                        help="calls of the paired overhead measurement (0: skip it)")
    parser.add_argument("--malloc", default="keep-freed", choices=("keep-freed", "default"),
                        help="the servers' --malloc, also applied to this process (the direct reference and the paired "
                             "client) so that both sides of a pair allocate alike")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()
    if args.malloc == "keep-freed":
        keep_freed_buffers()

    paired = run_paired(args.paired_calls, args.threads, args.malloc) if args.paired_calls else None
    if paired is not None:
        paired["transport_floor"] = run_transport_floor(args.paired_calls, args.malloc)
    rows = [run_concurrent(n, args.calls, args.threads, max_sessions=max(args.sessions) + 1, max_batch=b,
                           malloc=args.malloc)
            for n in args.sessions for b in args.max_batch]
    result = {"calls_per_session": args.calls, "threads": args.threads, "malloc": args.malloc, "rows": rows,
              "paired": paired,
              "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{args.calls} calls per session, torch threads {args.threads}, malloc {args.malloc}, "
          f"load average {result['loadavg']}")
    print("| sessions | max batch | calls/s | p50 ms | p95 ms | server infer p50 | server model p50 "
          "| server overhead p50 | server queue wait p50 | calls by batch size |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        batches = ", ".join(f"{size}: {n}" for size, n in sorted(r["batched_calls"].items()))
        print(f"| {r['sessions']} | {r['max_batch']} | {r['calls_per_s']:.2f} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} "
              f"| {r['server_infer_p50_ms']:.1f} | {r['server_model_p50_ms']:.1f} "
              f"| {r['server_overhead_p50_ms']:.1f} | {r['server_queue_wait_p50_ms']:.1f} | {batches} |")
    if paired is not None:
        print(f"paired, {args.paired_calls} calls: direct model_mosaics + infer p50 {paired['direct_p50_ms']:.1f} ms "
              f"(model_mosaics {paired['direct_mosaics_p50_ms']:.1f}, infer {paired['direct_infer_p50_ms']:.1f}), "
              f"round trip p50 {paired['round_trip_p50_ms']:.1f} ms (server infer {paired['server_infer_p50_ms']:.1f},"
              f" model {paired['server_model_p50_ms']:.1f}, overhead {paired['server_overhead_p50_ms']:.1f}); "
              f"client-side overhead, median of the pairs' differences: {paired['client_overhead_ms']:.1f} ms "
              f"(target <= 5 ms); the server's own (server infer p50 - direct p50): "
              f"{paired['server_infer_p50_ms'] - paired['direct_p50_ms']:.1f} ms")
        print(f"the same calls, per call from the server's debug log: round trip - server (model + mosaics), "
              f"median {paired['overhead_excluding_model_ms']:.1f} ms (target <= 5 ms); of it the transport (round "
              f"trip - server infer) {paired['transport_ms']:.1f} ms and the server's own work (decode, checks, "
              f"queue, reply) {paired['server_own_ms']:.1f} ms (medians of the per-call values); the server's "
              f"mosaics p50 {paired['server_preprocess_p50_ms']:.1f} ms against {paired['direct_mosaics_p50_ms']:.1f} "
              f"ms direct")
        floor = paired["transport_floor"]
        print(f"transport floor (websockets echo server, same packing): {floor['bytes']:,} bytes per request, "
              f"pack p50 {floor['pack_p50_ms']:.1f} ms, send + reply p50 {floor['exchange_p50_ms']:.1f} ms, "
              f"total p50 {floor['total_p50_ms']:.1f} ms")


if __name__ == "__main__":
    main()
