"""The WebSocket model server behind ``dreamzero serve`` (facts §3.3-3.4, §3.7; training-serving-facts §5).

It speaks the DreamZero / RoboArena protocol (:mod:`dreamzero_model.serving.protocol`), so the official
clients and our remote backend work against it, and departs from the official server where that one
breaks with more than one robot (training-serving-facts §5.3-5.5):

* Embodiments: one server serves every embodiment of its checkpoint; a connection picks one by URL path
  (``ws://host:port/agibot``), ``/`` meaning the default (:func:`default_tag`); an unknown path gets a text
  frame naming the served tags, then close 1008. The handshake is that embodiment's.
* Sessions: state per ``session_id`` (:mod:`dreamzero_model.serving.sessions`): frame buffers with the
  official frame rule, one model context each in the :class:`~dreamzero_model.serving.engine.Engine`;
  dropped on ``reset``, after the idle timeout, or evicted (idle ones, least recently used first) beyond
  the maximum, after which the session's next call gets a "session lost" error.
* Concurrency: inference never runs on the event loop; one worker thread owns the engine and runs calls
  first in, first out (:mod:`dreamzero_model.serving.scheduler`), so pings, handshakes and health checks
  are answered meanwhile. Calls of different sessions that queued while the worker was busy, or arrive
  while it prepares them, run as one batch (up to ``max_batch``): each is prepared in its own context, and
  those whose chunks align (the same chunk position of their context, whatever the embodiment) are
  denoised in one batched model pass, the others one after another (:mod:`dreamzero_model.serving.engine`
  says which calls batch); every session gets its solo chunk to float rounding. A client that goes away
  mid-call costs nothing but the call: its reply is dropped.
* Replies: ``infer`` -> msgpack float32[24, A] ABSOLUTE targets (relative dimensions plus the request's
  state, facts §1.9), ``reset`` -> the text "reset successful". Errors: a text frame naming the cause (a
  traceback for internal errors), then close 1011, as the official server; only that client is affected,
  and a refused request leaves its session unchanged.
* Access: binds 127.0.0.1 unless told otherwise; with a token, a connection must send
  ``Authorization: Bearer <token>`` (or openpi's ``Api-Key <token>``), else it is closed with 1008 and a
  reason before the handshake. Messages above :data:`MAX_MESSAGE_BYTES` close the connection (1009).
* HTTP on the same port: ``/healthz`` (200 while the process runs), ``/readyz`` (503 until warm-up is
  done, and while shutting down), ``/metrics`` (:mod:`dreamzero_model.serving.metrics`).
* Warm-up (facts §3.7): a first call and a continuation per served embodiment on synthetic frames, while
  the server already listens. Shutdown (:meth:`ModelServer.request_stop`, SIGINT/SIGTERM in the CLI):
  no new connections, the calls in progress and queued are answered, then connections close with 1001.

Imports torch (GPU memory figures), numpy, websockets, msgpack, tqdm and the model and embodiment layers.
"""
from __future__ import annotations

import asyncio
import hmac
import itertools
import logging
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from http import HTTPStatus
from urllib.parse import urlsplit

import numpy as np
import torch
from openpi_client import msgpack_numpy
from tqdm import tqdm
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.http11 import Request, Response

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_model.mosaics import model_mosaics
from dreamzero_model.policy import PreparedChunk
from dreamzero_model.serving.engine import Engine, ModelCall
from dreamzero_model.serving.metrics import Metrics
from dreamzero_model.serving.protocol import (ENDPOINT_INFER, ENDPOINT_RESET, RESET_REPLY, InferRequest, RequestError,
                                              WireKeys, decode_request, is_reset, parse_infer_request, reply_actions,
                                              server_handshake, session_id_of, tag_from_path, wire_keys)
from dreamzero_model.serving.scheduler import Scheduler
from dreamzero_model.serving.sessions import (TRAINING_FRAMES, ServerFull, SessionLost, SessionTable, select_frames,
                                              session_key)

LOG = logging.getLogger(__name__)
# Largest request: a 9-frame continuation of 3 cameras at 480x640 (AgiBot, YAM) is 3 x 9 x 480 x 640 x 3 bytes
# = 25 MiB; the bound leaves room for more frames or cameras and keeps a stray client from filling memory.
MAX_MESSAGE_BYTES = 64 * 2**20
PREFERRED_DEFAULT_TAG = "oxe_droid"  # the official server's embodiment (facts §3.1)
WARMUP_PROMPT = "Warm up."
WARMUP_GREY = 128                    # synthetic warm-up frames: mid-grey
EXPIRY_CHECK_MAX_S = 10.0            # idle sessions are looked for at least this often
CLOSE_REASON_BYTES = 123             # the longest close reason a close frame carries (RFC 6455 §5.5)
UNAUTHORIZED = "unauthorized: send the server's token as 'Authorization: Bearer <token>'"


@dataclass(frozen=True)
class ServerOptions:
    """How ``dreamzero serve`` runs (the CLI options of the same names).

    Attributes:
        host, port: where to listen (port 0: a free port, :attr:`ModelServer.port` after start).
        default_tag: the embodiment of a connection without a path (:func:`default_tag` picks it).
        token: the token connections must send, or None for none.
        max_sessions, session_timeout_s: :class:`~dreamzero_model.serving.sessions.SessionTable`.
        max_batch: calls of different sessions run as one batch at most (1: never batched).
        warmup: warm up before reporting ready. progress: show the warm-up progress bar.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    default_tag: str | None = None
    token: str | None = None
    max_sessions: int = 4
    session_timeout_s: float = 600.0
    max_batch: int = 4
    warmup: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.port < 0 or self.max_sessions < 1 or not self.session_timeout_s > 0 or self.max_batch < 1:
            raise ValueError(f"--port must be >= 0, --max-sessions >= 1, --session-timeout-s > 0 and --max-batch "
                             f">= 1, got {self.port}, {self.max_sessions}, {self.session_timeout_s} and "
                             f"{self.max_batch}")


@dataclass(frozen=True)
class ServedEmbodiment:
    """One embodiment the server serves: its spec, request keys and handshake frame."""

    tag: str
    spec: EmbodimentSpec
    keys: WireKeys
    handshake: bytes


@dataclass(frozen=True)
class _Call:
    """One infer call for the worker: the session's key and embodiment, the views the model sees (camera key ->
    uint8[T, H, W, 3]), the state float64[S], the prompt, and when it was submitted (perf_counter s)."""

    key: str
    served: ServedEmbodiment
    views: dict[str, np.ndarray]
    state: np.ndarray
    prompt: str
    submitted: float


@dataclass(frozen=True)
class _Answer:
    """actions: float32[24, A] absolute reply; seconds of the image preprocessing (``model_mosaics``), of the
    model forward and of the wait for the worker; batch_size: calls denoised together with it (1: alone)."""

    actions: np.ndarray
    preprocess_s: float
    model_s: float
    queue_wait_s: float
    new_context: bool
    batch_size: int


def default_tag(tags: list[str], wanted: str | None) -> str | None:
    """The embodiment of a connection without a path: ``wanted``, else oxe_droid when served, else the only one.

    Raises:
        ValueError: ``wanted`` is not served.
    """
    if wanted is not None:
        if wanted not in tags:
            raise ValueError(f"--embodiment {wanted!r}: not served (the checkpoint serves {', '.join(tags)})")
        return wanted
    if PREFERRED_DEFAULT_TAG in tags:
        return PREFERRED_DEFAULT_TAG
    return tags[0] if len(tags) == 1 else None


class ModelServer:
    """The server (module docstring): :meth:`start`, then :meth:`run_until_stopped` (or :meth:`warm_up` and
    :meth:`shutdown` step by step).

    Args:
        engine: the loaded model; its tags are what is served.
        specs: embodiment tag -> spec, for every tag of ``engine``.
        options: see :class:`ServerOptions`.

    Raises:
        ValueError: a served tag without a spec, an unserved default, or bad session limits.
    """

    def __init__(self, engine: Engine, specs: Mapping[str, EmbodimentSpec], options: ServerOptions) -> None:
        tags = engine.tags
        missing = [tag for tag in tags if tag not in specs]
        if missing:
            raise ValueError(f"no embodiment spec for the served tags {missing}")
        self.engine = engine
        self.options = options
        self.served = {tag: ServedEmbodiment(tag, specs[tag], wire_keys(specs[tag]),
                                             msgpack_numpy.packb(server_handshake(specs[tag], tag, tags)))
                       for tag in tags}
        self.default_tag = default_tag(tags, options.default_tag)
        self.sessions = SessionTable(options.max_sessions, options.session_timeout_s)
        self.scheduler = Scheduler(self._prepare_call, self._complete_calls, options.max_batch)
        self.metrics = Metrics()
        self.port = options.port
        self.ready = False
        self._stopping = False
        self._stop: asyncio.Event | None = None
        self._idle: asyncio.Event | None = None   # set while no call is in progress
        self._active_calls = 0
        self._ws_server: Server | None = None
        self._expiry: asyncio.Task | None = None
        self._request_ids = itertools.count(1)
        self._connection_ids = itertools.count(1)

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.port}"

    @property
    def stopping(self) -> bool:
        """True once the shutdown has begun: no new connections, nothing new is run."""
        return self._stopping

    # ------------------------------------------------------------------------------------ life cycle
    async def start(self) -> None:
        """Start the worker and listen (not ready until :meth:`warm_up`)."""
        self._stop, self._idle = asyncio.Event(), asyncio.Event()
        self._idle.set()
        self.scheduler.start()
        self._ws_server = await serve(self._handle, self.options.host, self.options.port, compression=None,
                                      max_size=MAX_MESSAGE_BYTES, process_request=self._http)
        self.port = self._ws_server.sockets[0].getsockname()[1]
        self._expiry = asyncio.create_task(self._expire_idle())
        kv_mib = self.engine.kv_cache_bytes_per_session() / 2**20
        LOG.info("serving %s at %s (default %s); KV cache ~%.1f MiB per session, at most %d sessions (~%.1f MiB)",
                 ", ".join(self.served), self.url, self.default_tag or "none: the path must name one", kv_mib,
                 self.options.max_sessions, kv_mib * self.options.max_sessions)

    async def run_until_stopped(self) -> int:
        """Warm up (unless disabled), serve until :meth:`request_stop`, shut down; 0, or 1 if warm-up failed."""
        def stop_if_failed(task: asyncio.Task) -> None:
            if not task.cancelled() and task.exception() is not None:
                self.request_stop()

        warmup = asyncio.create_task(self.warm_up()) if self.options.warmup else None
        if warmup is None:
            self.ready = True
        else:
            warmup.add_done_callback(stop_if_failed)
        await self._stop.wait()
        failed = warmup is not None and warmup.done() and not warmup.cancelled() and warmup.exception() is not None
        if failed:
            LOG.error("warm-up failed, stopping", exc_info=warmup.exception())
        await self.shutdown(warmup)
        return 1 if failed else 0

    async def warm_up(self) -> None:
        """A first call and a continuation per served embodiment on synthetic frames (facts §3.7), then ready."""
        calls = [(served, frames) for served in self.served.values() for frames in (1, TRAINING_FRAMES)]
        with tqdm(total=len(calls), desc="dreamzero serve: warm-up", unit="call",
                  disable=not self.options.progress) as bar:
            for served, frames in calls:
                if self._stopping:
                    return
                key = session_key(served.tag, "")  # no client's key: client session ids are non-empty
                views = {c.key: np.full((frames, *c.resolution, 3), WARMUP_GREY, np.uint8) for c in served.spec.cameras}
                state = np.zeros(len(served.spec.state_names))
                await self.scheduler.call(_Call(key, served, views, state, WARMUP_PROMPT, time.perf_counter()))
                if frames == TRAINING_FRAMES:
                    self.scheduler.post(partial(self.engine.drop, key))
                bar.update()
        self.ready = True
        LOG.info("warm-up done: ready")

    def request_stop(self) -> None:
        """Begin the graceful shutdown (signal handlers call this)."""
        if self._stop is not None:
            self._stop.set()

    async def shutdown(self, warmup: asyncio.Task | None = None) -> None:
        """Stop accepting, answer the calls in progress and queued, close connections with 1001, stop the worker."""
        self._stopping, self.ready = True, False
        LOG.info("shutting down: answering %d call(s) in progress, then closing connections", self._active_calls)
        self._ws_server.server.close()  # no new connections; opening handshakes get 503
        if warmup is not None:
            await asyncio.wait([warmup])
        await self._idle.wait()
        self._expiry.cancel()
        self._ws_server.close(close_connections=True, code=CloseCode.GOING_AWAY, reason="server shutting down")
        await self._ws_server.wait_closed()
        await asyncio.to_thread(self.scheduler.stop)
        LOG.info("stopped")

    # ------------------------------------------------------------------------------------ connections
    async def _handle(self, ws: ServerConnection) -> None:
        connection = f"c{next(self._connection_ids)}"
        if not self._authorized(ws.request.headers):
            self.metrics.errors["unauthorized"] += 1
            LOG.warning("%s from %s: refused: no or a wrong token", connection, ws.remote_address)
            await ws.close(CloseCode.POLICY_VIOLATION, UNAUTHORIZED)
            return
        served = self._served_for(ws.request.path)
        if isinstance(served, str):
            self.metrics.errors["embodiment"] += 1
            LOG.warning("%s: refused: %s", connection, served)
            await _refuse(ws, served, CloseCode.POLICY_VIOLATION, served)
            return
        LOG.info("%s from %s: embodiment %s", connection, ws.remote_address, served.tag)
        try:
            await ws.send(served.handshake)
            async for payload in ws:
                if self._stopping:
                    await ws.close(CloseCode.GOING_AWAY, "server shutting down: request not run")
                    return
                if not await self._serve_one(ws, payload, served, connection):
                    return
        except ConnectionClosed:
            pass
        finally:
            LOG.info("%s: closed (%s)", connection, ws.close_code)

    async def _serve_one(self, ws: ServerConnection, payload: bytes | str, served: ServedEmbodiment,
                         connection: str) -> bool:
        """Answer one request; False when the connection is done (refused, failed, or the client is gone)."""
        request_id = f"r{next(self._request_ids)}"
        self._active_calls += 1
        self._idle.clear()
        try:
            try:
                reply = await self._answer(payload, served, request_id)
            except RequestError as error:
                cause = "session_lost" if isinstance(error, SessionLost) else (
                    "server_full" if isinstance(error, ServerFull) else "request")
                self.metrics.errors[cause] += 1
                LOG.info("%s %s: refused: %s", connection, request_id, error)
                await _refuse(ws, str(error), CloseCode.INTERNAL_ERROR,
                              "request refused; the cause is in the previous frame")
                return False
            except Exception:  # noqa: BLE001 - one call's failure ends its connection, never the server
                self.metrics.errors["internal"] += 1
                text = traceback.format_exc()
                LOG.error("%s %s: failed:\n%s", connection, request_id, text)
                await _refuse(ws, text, CloseCode.INTERNAL_ERROR,
                              "Internal server error. Traceback included in previous frame.")
                return False
            try:
                await ws.send(reply)
            except ConnectionClosed:
                self.metrics.replies_discarded += 1
                LOG.info("%s %s: the client has gone; reply discarded", connection, request_id)
                return False
            return True
        finally:
            self._active_calls -= 1
            if not self._active_calls:
                self._idle.set()

    def _authorized(self, headers: Headers) -> bool:
        if self.options.token is None:
            return True
        scheme, _, value = headers.get("Authorization", "").partition(" ")
        return scheme.lower() in ("bearer", "api-key") and hmac.compare_digest(value.strip().encode(),
                                                                               self.options.token.encode())

    def _served_for(self, path: str) -> ServedEmbodiment | str:
        """The embodiment a connection's path names, or why there is none."""
        tag = tag_from_path(path) or self.default_tag
        if tag in self.served:
            return self.served[tag]
        known = ", ".join(f"/{t}" for t in self.served)
        if tag is None:
            return f"no embodiment in the path {path!r} and no default (--embodiment); connect to one of {known}"
        return f"unknown embodiment {tag!r} in the path {path!r}; served: {known}"

    # ------------------------------------------------------------------------------------ requests
    async def _answer(self, payload: bytes | str, served: ServedEmbodiment, request_id: str) -> bytes | str:
        received = time.perf_counter()
        message = decode_request(payload)
        if is_reset(message):
            await self._reset(session_key(served.tag, session_id_of(message)))
            self.metrics.calls[ENDPOINT_RESET] += 1
            return RESET_REPLY
        request = parse_infer_request(message, served.spec, served.keys)
        answer = await self._infer(served, request)
        reply = msgpack_numpy.packb(answer.actions)
        total_s = time.perf_counter() - received
        self.metrics.calls[ENDPOINT_INFER] += 1
        self.metrics.batch_sizes[answer.batch_size] += 1
        for name, seconds in (("infer_seconds", total_s), ("model_seconds", answer.model_s),
                              ("overhead_seconds", total_s - answer.model_s),
                              ("preprocess_seconds", answer.preprocess_s),
                              ("queue_wait_seconds", answer.queue_wait_s)):
            self.metrics.summaries[name].observe(seconds)
        LOG.debug("%s %s/%s: %s, %d frame(s), batch of %d: total %.1f ms = model %.1f ms + overhead %.1f ms "
                  "(mosaics %.1f ms, queue %.1f ms)", request_id, served.tag, request.session_id,
                  "new context" if answer.new_context else "continuation", next(iter(request.views.values())).shape[0],
                  answer.batch_size, 1e3 * total_s, 1e3 * answer.model_s, 1e3 * (total_s - answer.model_s),
                  1e3 * answer.preprocess_s, 1e3 * answer.queue_wait_s)
        return reply

    async def _infer(self, served: ServedEmbodiment, request: InferRequest) -> _Answer:
        """Run one call in its session: choose the frames, queue the model call, keep the buffers if it succeeds."""
        while True:
            session, evicted = self.sessions.open(served.tag, request.session_id, time.monotonic())
            self._drop_contexts(evicted, "evicted")
            session.busy += 1
            try:
                async with session.lock:
                    if session.closed:  # reset while this call waited: it starts the new session
                        continue
                    choice = select_frames(session.buffers, request.views)
                    if session.prompt is not None and session.prompt != request.prompt:
                        LOG.info("session %s: new prompt %r: a new context (facts §1.11)", session.key,
                                 request.prompt[:200])
                    answer = await self.scheduler.call(_Call(session.key, served, choice.views, request.state,
                                                             request.prompt, time.perf_counter()))
                    session.buffers, session.prompt = choice.buffers, request.prompt
                    return answer
            finally:
                session.busy -= 1
                session.last_used_s = time.monotonic()

    def _prepare_call(self, call: _Call) -> tuple[_Call, float, float, PreparedChunk]:
        """On the worker thread: views -> model mosaics -> the call prepared in its context (the engine's
        :meth:`~dreamzero_model.serving.engine.Engine.prepare`); with the call, when it started and the seconds
        of the mosaics."""
        started = time.perf_counter()
        video = model_mosaics(call.views, call.served.spec, self.engine.mosaic_size)
        preprocess_s = time.perf_counter() - started
        return call, started, preprocess_s, self.engine.prepare(ModelCall(call.key, call.served.tag, video,
                                                                         call.state, call.prompt))

    def _complete_calls(self, prepared: list[tuple[_Call, float, float, PreparedChunk]]) -> list[_Answer]:
        """On the worker thread: the batch's prepared calls -> the engine (which denoises the aligned ones
        together) -> absolute float32 actions."""
        predictions = self.engine.complete([chunk for *_, chunk in prepared])
        return [_Answer(actions=reply_actions(prediction.actions, prediction.relative, call.state, call.served.spec),
                        preprocess_s=preprocess_s, model_s=prediction.seconds["total"],
                        queue_wait_s=started - call.submitted, new_context=prediction.new_context,
                        batch_size=prediction.batch_size)
                for (call, started, preprocess_s, _), prediction in zip(prepared, predictions)]

    async def _reset(self, key: str) -> None:
        """Drop the session's state; a call of it in progress finishes first."""
        session = self.sessions.get(key)
        if session is not None:
            session.busy += 1
            try:
                async with session.lock:
                    self.sessions.reset(key)
            finally:
                session.busy -= 1
        else:
            self.sessions.reset(key)  # forget that it was lost, if it was
        self._drop_contexts([key], "reset")

    def _drop_contexts(self, keys: list[str], why: str) -> None:
        for key in keys:
            LOG.info("session %s: %s", key, why)
            self.scheduler.post(partial(self.engine.drop, key))

    async def _expire_idle(self) -> None:
        interval_s = min(self.sessions.timeout_s / 4, EXPIRY_CHECK_MAX_S)
        while True:
            await asyncio.sleep(interval_s)
            self._drop_contexts(self.sessions.expire(time.monotonic()), "dropped after the idle timeout")

    # ------------------------------------------------------------------------------------ HTTP
    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        """``/healthz``, ``/readyz`` and ``/metrics``; None lets any other path become a WebSocket."""
        path = urlsplit(request.path).path
        if path == "/healthz":
            return connection.respond(HTTPStatus.OK, "OK\n")
        if path == "/readyz":
            if self.ready:
                return connection.respond(HTTPStatus.OK, "ready\n")
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE,
                                      "shutting down\n" if self._stopping else "warming up\n")
        if path == "/metrics":
            response = connection.respond(HTTPStatus.OK, self._render_metrics())
            del response.headers["Content-Type"]
            response.headers["Content-Type"] = "text/plain; version=0.0.4; charset=utf-8"
            return response
        return None

    def _render_metrics(self) -> str:
        gauges = [("queue_depth", "Engine jobs queued or running.", self.scheduler.depth),
                  ("live_sessions", "Sessions holding state.", len(self.sessions)),
                  ("max_sessions", "Live sessions at most (--max-sessions).", self.options.max_sessions),
                  ("max_batch", "Calls run as one batch at most (--max-batch).", self.options.max_batch),
                  ("kv_cache_bytes_per_session", "Estimated KV-cache bytes of one session.",
                   self.engine.kv_cache_bytes_per_session()),
                  ("ready", "1 once warm-up is done, 0 before and while shutting down.", int(self.ready))]
        device = self.engine.device
        if device.type == "cuda":
            gauges += [("gpu_memory_allocated_bytes", "torch.cuda.memory_allocated of the model's device.",
                        torch.cuda.memory_allocated(device)),
                       ("gpu_memory_reserved_bytes", "torch.cuda.memory_reserved of the model's device.",
                        torch.cuda.memory_reserved(device))]
        return self.metrics.render(gauges, self.sessions.evictions, self.sessions.expirations)


async def _refuse(ws: ServerConnection, text: str, code: CloseCode, reason: str) -> None:
    """Send ``text`` as a text frame, then close with ``code`` and ``reason`` (cut to fit a close frame)."""
    try:
        await ws.send(text)
        await ws.close(code, reason.encode()[:CLOSE_REASON_BYTES].decode(errors="ignore"))
    except ConnectionClosed:
        pass  # the client has gone already
