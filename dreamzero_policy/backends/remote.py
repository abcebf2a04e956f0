"""The ``remote`` backend: a client for the DreamZero / RoboArena WebSocket policy protocol (facts §3.3).

A GPU box runs the official DreamZero server (``socket_test_optimized_AR.py`` with
``eval_utils/policy_server.py``) or ours (``dreamzero serve``, :mod:`dreamzero_model.serving`); this module
turns :class:`~dreamzero_policy.backends.base.Observation` into its requests and its replies into
:class:`~dreamzero_policy.backends.base.BackendPrediction`. The wire format itself (request keys, the
handshake check, request and reply maps) lives in :mod:`dreamzero_model.serving.protocol`, shared with
our server; this module owns the connection and the session logic around it.

* On connect the server first sends its metadata (``PolicyServerConfig``); ``check_server_config``
  compares it with the embodiment before anything is sent. A server that takes 9 frames at the training
  spacing per continuation query says so with ``frame_mode: "training"`` (``FRAME_MODE_KEY``); the
  official server has no such key and keeps only the last 4 frames it receives (facts §3.4), so without
  the key the server takes the official 4 (:attr:`RemoteBackend.frame_mode`). A server that answers the
  connection with a text frame instead (ours, for an unknown embodiment path) refused it; the text says why.
* The URL's path picks the embodiment on our server (``ws://host:port/agibot``): a URL without a path gets
  ``/<embodiment tag>``; the official server ignores the path.
* ``infer`` replies with a float32[24, A] ndarray of ABSOLUTE targets (the server adds the state to
  relative keys itself), so every returned dimension is marked absolute. ``reset`` replies with the text
  frame ``"reset successful"``. An error is a text frame holding the server's cause, then close code 1011;
  one that starts with ``"session lost"`` (our server evicted the session or it timed out) raises
  :class:`~dreamzero_policy.backends.base.SessionLostError`, so the caller starts a new session.
* The official server holds ONE global model state and frame buffer keyed by ``session_id``; ours one per
  session id. A new session id or ``reset`` starts a new context (facts §3.4).

Connections are lazy (first call) and direct (no HTTP proxy). One connection attempt (TCP, upgrade,
handshake) takes at most ``connect_timeout_s``; a call that finds no open connection makes one attempt
and, when it fails, raises at once naming the cause, so a dead server is an error within one attempt,
not after ``call_timeout_s``. Failed attempts back off (``reconnect_backoff_s``): a call before the next
attempt is due raises at once without trying. ``call_timeout_s`` bounds the exchange once connected.

A request is never run twice: a call whose connection drops (or times out) after its request was sent
raises and is counted (:attr:`ConnectionStatus.lost_calls`), and the caller queries again with a fresh
observation. Only a request that never left (the connection was already closed when sending) goes out
once on a new connection. A new connection may reach a restarted server with no context, so the server
holds none of ours until a ``reset`` or a session's first query: a continuation query on such a
connection first sends ``reset`` for its session and then only its newest frame, which the server takes
as the session's first frame (facts §3.4); our context and the server's agree again. A timed-out or
failed call drops the connection, because a late reply would otherwise answer the next request. A lock
keeps at most one request in flight. An optional token goes out as ``Authorization: Bearer <token>``;
the official server ignores it (it has no authentication, facts §3.3), so it only helps behind a proxy
that checks it.

Plain Python: imports numpy, openpi_client, websockets, the embodiment layer and the (torch-free) protocol
module of the model layer, never rclpy. Logs
through :mod:`logging` under ``dreamzero_policy.backends`` (the node routes it to its own log,
:func:`~dreamzero_policy.backends.base.route_backend_logs`). Dimensions: H horizon (24), A action dims,
S state dims, T frames, V views.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import numpy as np
from openpi_client import msgpack_numpy
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from dreamzero_embodiments.frames import FRAME_MODES, FrameSchedule
from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_model.serving.protocol import (ENDPOINT_INFER, ENDPOINT_RESET, FRAME_MODE_KEY, RESET_REPLY, ReplyError,
                                              WireKeys, build_request, check_server_config, embodiment_url,
                                              is_session_lost, parse_actions, server_frame_mode, wire_keys)
from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation, SessionLostError

logger = logging.getLogger(__name__)
R = TypeVar("R")

FRAME_MODE_CHOICES = ("auto", *FRAME_MODES)
# The server runs inference inside its event loop and cannot answer pings meanwhile (seconds, minutes
# during warm-up); these are the reference client's keep-alive values (facts §3.3).
PING_INTERVAL_S = 60.0
PING_TIMEOUT_S = 600.0
# How long dropping a connection waits for the server's close frame. A server busy with inference
# cannot answer (facts §3.3), so this bounds the wait after a timeout rather than waiting politely.
CLOSE_TIMEOUT_S = 1.0
# Pauses after failed connection attempts; the last repeats. A restarted server is found within a few
# seconds, and a host that stays down gets one attempt (and one log line) per 4 s.
RECONNECT_BACKOFF_S = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class ConnectionStatus:
    """The connection to the server, for diagnostics.

    Attributes:
        url: the server.
        connected: a connection is open.
        frame_mode: what continuation queries must carry (:attr:`RemoteBackend.frame_mode`); None before
            the first handshake when it is ``auto``.
        failed_attempts: connection attempts failed since the last successful one.
        last_failure: why the last attempt failed ("" after a success).
        reconnects: connections made after the first.
        lost_calls: requests sent whose reply never came (connection dropped, or ``call_timeout_s``):
            never resent.
    """

    url: str
    connected: bool
    frame_mode: str | None
    failed_attempts: int
    last_failure: str
    reconnects: int
    lost_calls: int

    def diagnostic_values(self) -> dict[str, object]:
        """The fields as ``server.<field>`` diagnostic values."""
        return {"server.url": self.url, "server.connected": self.connected,
                "server.frame_mode": self.frame_mode or "unknown (not connected yet)",
                "server.failed_connection_attempts": self.failed_attempts,
                "server.last_connection_failure": self.last_failure or "none",
                "server.reconnects": self.reconnects, "server.lost_calls": self.lost_calls}


class _NotSent(Exception):
    """The connection was closed before the request left: it can go out on a new connection."""


def _request(observation: Observation, spec: EmbodimentSpec, keys: WireKeys) -> dict[str, Any]:
    """The ``infer`` request map for ``observation`` (:func:`~dreamzero_model.serving.protocol.build_request`)."""
    return build_request(observation.views, observation.state, observation.prompt, observation.session_id, spec, keys)


def newest_frame_only(observation: Observation) -> Observation:
    """``observation`` with each view cut to its newest frame (T = 1), as a session's first query."""
    return replace(observation, views={key: frames[-1:] for key, frames in observation.views.items()},
                   first_of_session=True)


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class RemoteBackend:
    """:class:`~dreamzero_policy.backends.base.PolicyBackend` that asks a DreamZero server over WebSocket.

    Args:
        spec: the embodiment; fixes cameras, resolution, state split, horizon and action dims.
        url: ``ws://host:port`` or ``wss://host:port`` of the server.
        token: sent as ``Authorization: Bearer <token>`` when given (the official server ignores it).
        call_timeout_s: one ``reset``/``infer`` once connected: sending and waiting for the reply.
        connect_timeout_s: one connection attempt: TCP, WebSocket upgrade and reading the handshake.
        reconnect_backoff_s: pauses after failed connection attempts; the last repeats.
        frame_mode: what continuation queries carry: ``auto`` (as the server's handshake says,
            :attr:`frame_mode`), ``training`` or ``official`` (forced; a server that announces otherwise
            is warned about).

    Raises:
        ValueError: bad url, timeouts, backoff or frame mode, or the embodiment has no request key table.
    """

    def __init__(self, spec: EmbodimentSpec, url: str, token: str | None = None, call_timeout_s: float = 30.0,
                 connect_timeout_s: float = 10.0, reconnect_backoff_s: tuple[float, ...] = RECONNECT_BACKOFF_S,
                 frame_mode: str = "auto") -> None:
        try:
            parse_uri(url)
        except InvalidURI as error:
            raise ValueError(f"remote backend: url: expected ws://host:port or wss://host:port, got {url!r}") \
                from error
        if not call_timeout_s > 0 or not connect_timeout_s > 0:
            raise ValueError(f"remote backend: call_timeout_s and connect_timeout_s must be > 0, got "
                             f"{call_timeout_s} and {connect_timeout_s}")
        if not reconnect_backoff_s or any(not d >= 0 for d in reconnect_backoff_s):
            raise ValueError(f"remote backend: reconnect_backoff_s must be non-empty and >= 0, "
                             f"got {reconnect_backoff_s}")
        if frame_mode not in FRAME_MODE_CHOICES:
            raise ValueError(f"remote backend: frame_mode must be one of {', '.join(FRAME_MODE_CHOICES)}, "
                             f"got {frame_mode!r}")
        self._spec = spec
        self._keys = wire_keys(spec)
        self._url = embodiment_url(url, spec.embodiment_tag)
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        if token and url.startswith("ws://"):
            logger.warning("remote backend: the token goes to %s unencrypted (use wss:// to protect it)", url)
        self._call_timeout_s = float(call_timeout_s)
        self._connect_timeout_s = float(connect_timeout_s)
        self._backoff_s = tuple(float(d) for d in reconnect_backoff_s)
        self._frame_mode = frame_mode
        # frames per camera a continuation query carries in each mode (first query of a session: 1)
        self._frames_per_query = {mode: len(FrameSchedule.from_spec(spec, mode).step_offsets) for mode in FRAME_MODES}
        self._request_lock = threading.Lock()   # held for a whole call: one request in flight
        self._state_lock = threading.Lock()     # guards _ws and _closed; close() takes only this one
        self._ws: ClientConnection | None = None
        self._closed = False
        self._server_config: dict[str, Any] | None = None
        self._session_id: str | None = None        # the session of the last request
        self._context_session: str | None = None   # the session the server holds context for, on this connection
        self._connections = 0
        self._failed_attempts = 0
        self._first_failure_s = 0.0
        self._last_failure = ""
        self._next_attempt_s = 0.0
        self._lost_calls = 0
        self._warned_prompt_session: str | None = None
        self._warned_frames: tuple[str, int] | None = None

    @property
    def server_config(self) -> dict[str, Any] | None:
        """The handshake of the current (or last) connection, None before the first connection."""
        return self._server_config

    @property
    def frame_mode(self) -> str | None:
        """What continuation queries must carry: ``training`` (9 frames at the training spacing) or
        ``official`` (4 frames at steps -23/-16/-8/0). Forced by the constructor, or with ``auto`` read
        from the handshake (:data:`FRAME_MODE_KEY`; absent: ``official``), None before the first one.
        A session's first query carries 1 frame in either mode, so the caller needs it only later."""
        if self._frame_mode != "auto":
            return self._frame_mode
        config = self._server_config
        return None if config is None else server_frame_mode(config)

    @property
    def connection_status(self) -> ConnectionStatus:
        """The connection now, for diagnostics."""
        ws = self._ws
        return ConnectionStatus(url=self._url, connected=ws is not None and ws.state is State.OPEN,
                                frame_mode=self.frame_mode, failed_attempts=self._failed_attempts,
                                last_failure=self._last_failure, reconnects=max(self._connections - 1, 0),
                                lost_calls=self._lost_calls)

    def reset(self, prompt: str, session_id: str) -> None:
        """Send ``endpoint: reset`` with the prompt and session id; the server starts a new context.

        Raises:
            BackendError: no connection, a timeout, or a reply other than ``"reset successful"``.
        """
        payload = msgpack_numpy.packb({"endpoint": ENDPOINT_RESET, "prompt": prompt, "session_id": session_id})
        with self._request_lock:
            self._note_session(session_id, prompt, "a reset")
            self._on_connection(lambda ws, deadline: self._reset_on(ws, payload, session_id, deadline))

    def infer(self, observation: Observation) -> BackendPrediction:
        """Ask the server for the chunk following ``observation``; the request goes out at most once.

        Returns:
            actions float64[H, A], model units, absolute (``relative`` all False: the server returns
            absolute targets, facts §3.3); no predicted frames; ``seconds["round_trip"]``.

        Raises:
            ValueError: the observation does not match the spec.
            BackendError: no connection, a timeout, a lost connection, a server error (its traceback in
                the message) or a malformed reply.
        """
        request = _request(observation, self._spec, self._keys)
        with self._request_lock:
            self._note_session(observation.session_id, observation.prompt, "its first query")
            self._check_frames(observation)
            start = time.monotonic()
            reply = self._on_connection(lambda ws, deadline: self._infer_on(ws, observation, request, deadline))
            round_trip_s = time.monotonic() - start
        if isinstance(reply, str):
            raise BackendError(f"infer: expected a binary reply from {self._url}, got the text {reply!r:.200}")
        try:
            decoded = msgpack_numpy.unpackb(reply)
        except (ValueError, TypeError) as error:
            raise BackendError(f"infer: cannot decode the reply from {self._url}: {error}") from error
        try:
            actions = parse_actions(decoded, self._spec.timing.horizon, len(self._spec.action_names))
        except ReplyError as error:
            raise BackendError(str(error)) from error
        return BackendPrediction(actions=actions, relative=np.zeros(actions.shape[1], dtype=bool), frames=None,
                                 seconds={"round_trip": round_trip_s})

    def close(self) -> None:
        """Close the connection; a call in flight ends with :class:`BackendError`, later calls too."""
        with self._state_lock:
            self._closed = True
            ws, self._ws = self._ws, None
        if ws is not None:
            ws.close()
            logger.info("remote backend: closed the connection to %s", self._url)

    # ------------------------------------------------------------------------------------- sessions
    def _note_session(self, session_id: str, prompt: str, how: str) -> None:
        """Log a session change; warn once per session that starts without an instruction."""
        if session_id != self._session_id:
            was = f" (was {self._session_id})" if self._session_id is not None else ""
            logger.info("remote backend: session %s starts with %s%s", session_id, how, was)
            self._session_id = session_id
        if not prompt.strip() and self._warned_prompt_session != session_id:
            self._warned_prompt_session = session_id
            logger.warning("remote backend: session %s starts without an instruction: the server gets an empty "
                           "prompt", session_id)

    def _check_frames(self, observation: Observation) -> None:
        """Warn (once per case) when a continuation query carries other than what the server takes."""
        config = self._server_config
        if observation.first_of_session or config is None or server_frame_mode(config) not in FRAME_MODES:
            return
        mode = server_frame_mode(config)
        frames = next(iter(observation.views.values())).shape[0]
        if frames != self._frames_per_query[mode] and self._warned_frames != (mode, frames):
            self._warned_frames = (mode, frames)
            logger.warning("remote backend: a continuation query carries %d frames per camera, but the server at "
                           "%s takes %d (%s %s): its model does not see the frames chosen for it", frames, self._url,
                           self._frames_per_query[mode], FRAME_MODE_KEY, mode)

    def _reset_on(self, ws: ClientConnection, payload: bytes, session_id: str, deadline: float) -> None:
        self._check_session_id(session_id, ENDPOINT_RESET)
        reply = self._exchange(ws, payload, ENDPOINT_RESET, deadline)
        if reply != RESET_REPLY:
            self._drop(ws)
            raise BackendError(f"reset: expected the reply {RESET_REPLY!r} from {self._url}, got {reply!r:.200}")
        self._context_session = session_id
        logger.info("remote backend: reset, session %s", session_id)

    def _infer_on(self, ws: ClientConnection, observation: Observation, request: dict[str, Any],
                  deadline: float) -> bytes | str:
        """Send ``request`` on ``ws``; a continuation of a session the server holds no context for on this
        connection (a new connection: it may have restarted) first resets the session and sends only the
        newest frame, which the server takes as the session's first (module docstring)."""
        self._check_session_id(observation.session_id, ENDPOINT_INFER)
        if not observation.first_of_session and self._context_session != observation.session_id:
            logger.warning("remote backend: the server at %s holds no context for session %s on this connection "
                           "(new connection; the server may have restarted): reset, and this query sends its "
                           "newest frame only", self._url, observation.session_id)
            reset = {"endpoint": ENDPOINT_RESET, "prompt": observation.prompt, "session_id": observation.session_id}
            self._reset_on(ws, msgpack_numpy.packb(reset), observation.session_id, deadline)
            request = _request(newest_frame_only(observation), self._spec, self._keys)
        reply = self._exchange(ws, msgpack_numpy.packb(request), ENDPOINT_INFER, deadline)
        self._context_session = observation.session_id
        return reply

    def _check_session_id(self, session_id: str, endpoint: str) -> None:
        if self._server_config and self._server_config.get("needs_session_id", False) and not session_id:
            raise BackendError(f"{endpoint}: the server needs a session id (needs_session_id) and got none")

    # ------------------------------------------------------------------------------------ transport
    def _on_connection(self, call: Callable[[ClientConnection, float], R]) -> R:
        """``call(ws, deadline)`` on the open connection (made if needed); once more on a new connection
        only if the request never left (:class:`_NotSent`)."""
        for attempt in range(2):
            ws = self._connection()
            try:
                return call(ws, time.monotonic() + self._call_timeout_s)
            except _NotSent as error:
                if attempt == 1:
                    raise BackendError(f"the connection to {self._url} closed twice before a request could be "
                                       f"sent: {error}") from error
                logger.warning("remote backend: the connection to %s closed before the request was sent (%s); "
                               "sending it on a new connection", self._url, error)
        raise AssertionError("unreachable: the loop returns or raises")

    def _exchange(self, ws: ClientConnection, payload: bytes, endpoint: str, deadline: float) -> bytes | str:
        """Send one request and return the raw reply. A text reply is returned only for ``reset`` when it
        is ``"reset successful"``; any other text is the server's traceback and raises.

        Raises:
            _NotSent: the request did not leave (the server cannot have run it).
            BackendError: anything else; the request is not sent again.
        """
        try:
            ws.send(payload)
        except (ConnectionClosed, OSError) as error:  # not sent whole: the server cannot have decoded it
            self._drop(ws)
            if self._is_closed():
                raise BackendError(f"remote backend for {self._url} is closed") from error
            raise _NotSent(_describe(error)) from error
        try:
            reply = ws.recv(timeout=max(deadline - time.monotonic(), 0.0))
        except TimeoutError as error:
            self._drop(ws)
            self._lost_calls += 1
            raise BackendError(f"{endpoint}: no reply from {self._url} within {self._call_timeout_s:g} s "
                               f"(call_timeout_s); not sent again") from error
        except (ConnectionClosed, OSError) as error:
            self._drop(ws)
            if self._is_closed():
                raise BackendError(f"{endpoint}: the remote backend for {self._url} was closed during the call") \
                    from error
            self._lost_calls += 1
            raise BackendError(f"{endpoint}: connection to {self._url} lost after the request was sent "
                               f"({_describe(error)}); not sent again, as the server may have run it") from error
        if isinstance(reply, str) and not (endpoint == ENDPOINT_RESET and reply == RESET_REPLY):
            self._drop(ws)  # the server closes with 1011 after an error (facts §3.3)
            if is_session_lost(reply):
                raise SessionLostError(f"{endpoint}: {self._url}: {reply}")
            raise BackendError(f"{endpoint}: server error from {self._url}:\n{reply}")
        return reply

    def _connection(self) -> ClientConnection:
        """The open connection, or one new attempt to make it (unless the back-off says wait).

        Raises:
            BackendError: closed; the attempt failed (the cause named); or the next attempt is not due yet.
        """
        with self._state_lock:
            if self._closed:
                raise BackendError(f"remote backend for {self._url} is closed")
            ws = self._ws
        if ws is not None:
            if ws.state is State.OPEN:
                return ws
            self._drop(ws)
            logger.warning("remote backend: the connection to %s was closed (code %s%s); reconnecting", self._url,
                           ws.close_code, f", {ws.close_reason}" if ws.close_reason else "")
        now = time.monotonic()
        if self._failed_attempts and now < self._next_attempt_s:
            raise BackendError(f"server at {self._url} unreachable: {self._failed_attempts} failed connection "
                               f"attempt(s) in {now - self._first_failure_s:.1f} s, the last: {self._last_failure}; "
                               f"next attempt in {self._next_attempt_s - now:.1f} s")
        try:
            return self._connect()
        except (OSError, InvalidHandshake, ConnectionClosed) as error:  # refused, timed out, restarting, cut off
            now = time.monotonic()
            delay = self._backoff_s[min(self._failed_attempts, len(self._backoff_s) - 1)]
            if not self._failed_attempts:
                self._first_failure_s = now
            self._failed_attempts += 1
            self._last_failure = _describe(error)
            self._next_attempt_s = now + delay
            logger.warning("remote backend: cannot connect to %s (%s); attempt %d failed, next in %.1f s",
                           self._url, self._last_failure, self._failed_attempts, delay)
            raise BackendError(f"cannot connect to {self._url}: {self._last_failure}; next attempt in "
                               f"{delay:g} s") from error

    def _connect(self) -> ClientConnection:
        """Open one connection and check its handshake; a mismatch raises :class:`BackendError`."""
        timeout_s = self._connect_timeout_s
        # legacy=True: a plain long-lived connection that this class reconnects itself (websockets 17
        # otherwise wants a context manager per connection).
        ws = connect(self._url, compression=None, max_size=None, additional_headers=self._headers, proxy=None,
                     open_timeout=timeout_s, ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                     close_timeout=CLOSE_TIMEOUT_S, legacy=True)
        try:
            message = ws.recv(timeout=timeout_s)
        except TimeoutError as error:
            ws.close()
            raise TimeoutError(f"no handshake within {timeout_s:g} s (connect_timeout_s)") from error
        except ConnectionClosed:
            ws.close()
            raise
        if isinstance(message, str):  # our server says why it refused (e.g. an unknown embodiment path)
            ws.close()
            raise BackendError(f"server at {self._url} refused the connection: {message}")
        try:
            config = msgpack_numpy.unpackb(message)
        except (ValueError, TypeError) as error:
            ws.close()
            raise BackendError(f"server at {self._url}: cannot decode the handshake: {error}") from error
        problems = check_server_config(config, self._spec, self._keys)
        if problems:
            ws.close()
            raise BackendError(f"server at {self._url} does not match embodiment {self._spec.name!r}:\n  "
                               + "\n  ".join(problems))
        with self._state_lock:
            if self._closed:
                ws.close()
                raise BackendError(f"remote backend for {self._url} was closed while connecting")
            self._ws = ws
        previous, self._server_config = self._server_config, config
        self._connections += 1
        self._context_session = None  # a new connection may reach a restarted server (module docstring)
        after = (f" after {self._failed_attempts} failed attempt(s) in "
                 f"{time.monotonic() - self._first_failure_s:.1f} s" if self._failed_attempts else "")
        self._failed_attempts, self._last_failure = 0, ""
        logger.info("remote backend: connected to %s%s (server metadata %s)", self._url, after, config)
        self._log_frame_mode(config, previous)
        return ws

    def _log_frame_mode(self, config: dict[str, Any], previous: dict[str, Any] | None) -> None:
        mode = server_frame_mode(config)
        if self._frame_mode != "auto":
            if mode != self._frame_mode:
                logger.warning("remote backend: frame_mode is %s, but the server at %s takes %s (handshake %s: %s)",
                               self._frame_mode, self._url, mode, FRAME_MODE_KEY, config.get(FRAME_MODE_KEY, "absent"))
        elif previous is None or server_frame_mode(previous) != mode:
            why = (f"the handshake says {FRAME_MODE_KEY}: {mode}" if FRAME_MODE_KEY in config else
                   f"no {FRAME_MODE_KEY} in the handshake: the official server keeps the last 4 frames")
            logger.info("remote backend: frame_mode auto -> %s (%s)", mode, why)

    def _drop(self, ws: ClientConnection) -> None:
        """Forget and close ``ws``, so the next call reconnects."""
        with self._state_lock:
            if self._ws is ws:
                self._ws = None
        ws.close()

    def _is_closed(self) -> bool:
        with self._state_lock:
            return self._closed
