"""The ``remote`` backend: a client for the DreamZero / RoboArena WebSocket policy protocol (facts §3.3).

A GPU box runs the official DreamZero server (``socket_test_optimized_AR.py`` with
``eval_utils/policy_server.py``); this module turns :class:`~dreamzero_policy.backends.base.Observation`
into its requests and its replies into :class:`~dreamzero_policy.backends.base.BackendPrediction`.

Protocol, as implemented here (facts §3.3-3.4):

* WebSocket, binary frames, no compression, no message size limit; msgpack with openpi's
  ``msgpack_numpy`` (ndarrays as ``{__ndarray__, data, dtype, shape}`` maps).
* On connect the server first sends its ``PolicyServerConfig`` map; :func:`check_server_config` compares
  it with the embodiment before anything is sent.
* One request map per message, ``endpoint`` = ``"infer"`` or ``"reset"``. ``infer`` replies with a
  float32[24, 8] ndarray of ABSOLUTE targets (the server adds the state to relative keys itself), so
  every returned dimension is marked absolute. ``reset`` replies with the text frame
  ``"reset successful"``. An error is a text frame holding the server's traceback, then close code 1011.
* The server holds ONE global model state and frame buffer keyed by ``session_id``; a new session id or
  ``reset`` starts a new context (facts §3.4). It does not care which connection a request comes on,
  so a reconnect keeps the session.

Request keys are data (:data:`WIRE_KEYS`): ``oxe_droid`` uses the RoboArena names the official server
maps to the model's keys (facts §1.4). Every other embodiment uses generic ``observation/<camera key>``
and ``observation/<state key>`` names, which only our own server (the future ``dreamzero serve``)
accepts: the official server is DROID-only (facts §0).

Connections are lazy (first call), direct (no HTTP proxy) and re-made after a drop: a call that finds
the connection gone reconnects with ``reconnect_backoff_s`` between attempts, re-reads and re-checks the
handshake, and retries its request once, all within ``call_timeout_s``. A timed-out or failed call
drops the connection, because a late reply would otherwise answer the next request. A lock keeps at
most one request in flight. An optional token goes out as ``Authorization: Bearer <token>``; the
official server ignores it (it has no authentication, facts §3.3), so it only helps behind a proxy
that checks it.

Plain Python: imports numpy, openpi_client, websockets and the embodiment spec, never rclpy. Logs
through :mod:`logging` (the node routes it). Dimensions: H horizon (24), A action dims, S state dims,
T frames, V views.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from openpi_client import msgpack_numpy
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation

logger = logging.getLogger(__name__)

ENDPOINT_INFER = "infer"                # facts §3.3
ENDPOINT_RESET = "reset"
RESET_REPLY = "reset successful"        # the server's text reply to a reset (facts §3.3)
ACTION_SPACE = "joint_position"         # the only action space whose replies we can use (facts §3.3)
# The server runs inference inside its event loop and cannot answer pings meanwhile (seconds, minutes
# during warm-up); these are the reference client's keep-alive values (facts §3.3).
PING_INTERVAL_S = 60.0
PING_TIMEOUT_S = 600.0
# How long dropping a connection waits for the server's close frame. A server busy with inference
# cannot answer (facts §3.3), so this bounds the wait after a timeout rather than waiting politely.
CLOSE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class WireKeys:
    """Request key names for one embodiment.

    Attributes:
        views: spec camera key -> request key.
        state: spec state key -> request key.
        wrist_views: spec camera keys the server counts as wrist cameras (``needs_wrist_camera``), the
            rest count as ``n_external_cameras``; None when the table does not say (generic keys), in
            which case only the total number of cameras is checked.
    """

    views: Mapping[str, str]
    state: Mapping[str, str]
    wrist_views: frozenset[str] | None


# Request keys per embodiment tag (facts §1.4, §3.3). Tags not listed use generic keys
# (:func:`wire_keys`), accepted only by our own server.
WIRE_KEYS: Mapping[str, WireKeys] = {
    "oxe_droid": WireKeys(
        views={"exterior_image_1_left": "observation/exterior_image_0_left",
               "exterior_image_2_left": "observation/exterior_image_1_left",
               "wrist_image_left": "observation/wrist_image_left"},
        state={"joint_position": "observation/joint_position",
               "gripper_position": "observation/gripper_position"},
        wrist_views=frozenset({"wrist_image_left"})),
}


def wire_keys(spec: EmbodimentSpec) -> WireKeys:
    """The request keys for ``spec``: its tag's row of :data:`WIRE_KEYS`, else ``observation/<key>``.

    Raises:
        ValueError: the tag's table does not cover the spec's cameras or state keys, or two keys collide.
    """
    camera_keys = [c.key for c in spec.cameras]
    state_keys = [k.key for k in spec.state]
    keys = WIRE_KEYS.get(spec.embodiment_tag)
    if keys is None:
        keys = WireKeys(views={k: f"observation/{k}" for k in camera_keys},
                        state={k: f"observation/{k}" for k in state_keys}, wrist_views=None)
    problems = []
    if sorted(keys.views) != sorted(camera_keys):
        problems.append(f"cameras: table has {sorted(keys.views)}, spec has {sorted(camera_keys)}")
    if sorted(keys.state) != sorted(state_keys):
        problems.append(f"state: table has {sorted(keys.state)}, spec has {sorted(state_keys)}")
    names = [*keys.views.values(), *keys.state.values(), "endpoint", "prompt", "session_id"]
    if len(set(names)) != len(names):
        problems.append(f"request keys collide: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if problems:
        raise ValueError(f"remote backend: request keys for embodiment {spec.name!r} "
                         f"(tag {spec.embodiment_tag!r}): " + "; ".join(problems))
    return keys


def check_server_config(config: Any, spec: EmbodimentSpec, keys: WireKeys) -> list[str]:
    """Compare the server's handshake (``PolicyServerConfig``, facts §3.3) with the embodiment.

    Returns:
        One ``"<field>: server <value>, embodiment <name> <value>"`` line per problem; empty when they match.
        Fields the server adds beyond ``PolicyServerConfig`` are ignored.
    """
    if not isinstance(config, dict):
        return [f"handshake: expected a msgpack map, got {type(config).__name__}"]
    problems = []
    where = f"embodiment {spec.name!r}"
    missing = [f for f in ("image_resolution", "needs_wrist_camera", "n_external_cameras", "action_space")
               if f not in config]
    problems += [f"{f}: missing from the handshake" for f in missing]
    resolutions = sorted({tuple(c.resolution) for c in spec.cameras})
    served = config.get("image_resolution")
    if len(resolutions) != 1:
        problems.append(f"image_resolution: the protocol has one resolution, {where} has {resolutions}")
    elif served is not None and "image_resolution" in config:  # None: the server takes any size
        if not (isinstance(served, (list, tuple)) and [*served] == [*resolutions[0]]):
            problems.append(f"image_resolution: server {served!r}, {where} {[*resolutions[0]]}")
    if not missing:
        n_cameras = len(spec.cameras)
        wrist, external = config["needs_wrist_camera"], config["n_external_cameras"]
        if not isinstance(external, int) or isinstance(external, bool):
            problems.append(f"n_external_cameras: server {external!r}, expected an integer")
        elif keys.wrist_views is None:
            if int(bool(wrist)) + external != n_cameras:
                problems.append(f"n_external_cameras + needs_wrist_camera: server {external} + {wrist}, "
                                f"{where} {n_cameras} cameras")
        else:
            if bool(wrist) != bool(keys.wrist_views):
                problems.append(f"needs_wrist_camera: server {wrist!r}, {where} {bool(keys.wrist_views)}")
            if external != n_cameras - len(keys.wrist_views):
                problems.append(f"n_external_cameras: server {external!r}, {where} "
                                f"{n_cameras - len(keys.wrist_views)}")
        if config["action_space"] != ACTION_SPACE:
            problems.append(f"action_space: server {config['action_space']!r}, {where} {ACTION_SPACE!r}")
    if config.get("needs_stereo_camera", False):
        problems.append(f"needs_stereo_camera: server True, {where} False (only left images are sent)")
    return problems


def build_request(observation: Observation, spec: EmbodimentSpec, keys: WireKeys) -> dict[str, Any]:
    """The ``infer`` request map for ``observation`` (facts §3.3).

    Frames go out as uint8[T, H, W, 3], or uint8[H, W, 3] when T == 1 (the server appends either to
    its buffer, facts §3.4); the state float64[S] is split per spec state key (model units).

    Raises:
        ValueError: views or state do not match the spec (names the key, expected and received).
    """
    if sorted(observation.views) != sorted(c.key for c in spec.cameras):
        raise ValueError(f"observation.views: expected cameras {[c.key for c in spec.cameras]}, "
                         f"got {sorted(observation.views)}")
    request: dict[str, Any] = {"endpoint": ENDPOINT_INFER}
    for camera in spec.cameras:
        frames = observation.views[camera.key]
        expected = (*camera.resolution, 3)
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[0] >= 1 and frames.shape[1:] == expected):
            got = (f"{frames.dtype}{list(frames.shape)}" if isinstance(frames, np.ndarray)
                   else type(frames).__name__)
            raise ValueError(f"observation.views[{camera.key!r}]: expected uint8[T, {expected[0]}, "
                             f"{expected[1]}, 3] with T >= 1, got {got}")
        request[keys.views[camera.key]] = frames[0] if frames.shape[0] == 1 else frames
    state = np.asarray(observation.state, dtype=np.float64)
    n_state = len(spec.state_names)
    if state.shape != (n_state,) or not np.all(np.isfinite(state)):
        raise ValueError(f"observation.state: expected finite float64[{n_state}], got {state.shape} {state}")
    start = 0
    for key in spec.state:
        request[keys.state[key.key]] = state[start:start + key.dim].copy()
        start += key.dim
    request["prompt"] = observation.prompt
    request["session_id"] = observation.session_id
    return request


def parse_actions(reply: Any, horizon: int, action_dim: int) -> np.ndarray:
    """The chunk in an ``infer`` reply: float64[H, A], absolute, model units.

    Raises:
        BackendError: the reply is not a finite numeric array of shape (H, A).
    """
    if not isinstance(reply, np.ndarray):
        raise BackendError(f"infer reply: expected an ndarray, got {type(reply).__name__}")
    if reply.shape != (horizon, action_dim) or reply.dtype.kind not in "fiu":
        raise BackendError(f"infer reply: expected a float array of shape ({horizon}, {action_dim}), "
                           f"got {reply.dtype}{list(reply.shape)}")
    actions = reply.astype(np.float64)
    if not np.all(np.isfinite(actions)):
        raise BackendError(f"infer reply: {int(np.sum(~np.isfinite(actions)))} non-finite values")
    return actions


class RemoteBackend:
    """:class:`~dreamzero_policy.backends.base.PolicyBackend` that asks a DreamZero server over WebSocket.

    Args:
        spec: the embodiment; fixes cameras, resolution, state split, horizon and action dims.
        url: ``ws://host:port`` or ``wss://host:port`` of the server.
        token: sent as ``Authorization: Bearer <token>`` when given (the official server ignores it).
        call_timeout_s: the whole of one ``reset``/``infer``: reconnecting, sending, waiting for the reply.
        connect_timeout_s: one connection attempt: TCP, WebSocket upgrade and reading the handshake.
        reconnect_backoff_s: pauses between failed connection attempts; the last repeats.

    Raises:
        ValueError: bad url, timeouts or backoff, or the embodiment has no request key table.
    """

    def __init__(self, spec: EmbodimentSpec, url: str, token: str | None = None, call_timeout_s: float = 30.0,
                 connect_timeout_s: float = 10.0,
                 reconnect_backoff_s: tuple[float, ...] = (0.5, 1, 2, 4)) -> None:
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
        self._spec = spec
        self._keys = wire_keys(spec)
        self._url = url
        self._headers = {"Authorization": f"Bearer {token}"} if token else None
        if token and url.startswith("ws://"):
            logger.warning("remote backend: the token goes to %s unencrypted (use wss:// to protect it)", url)
        self._call_timeout_s = float(call_timeout_s)
        self._connect_timeout_s = float(connect_timeout_s)
        self._backoff_s = tuple(float(d) for d in reconnect_backoff_s)
        self._request_lock = threading.Lock()   # held for a whole call: one request in flight
        self._state_lock = threading.Lock()     # guards _ws and _closed; close() takes only this one
        self._ws: ClientConnection | None = None
        self._closed = False
        self._server_config: dict[str, Any] | None = None
        self._session_id: str | None = None

    @property
    def server_config(self) -> dict[str, Any] | None:
        """The handshake of the current (or last) connection, None before the first connection."""
        return self._server_config

    def reset(self, prompt: str, session_id: str) -> None:
        """Send ``endpoint: reset`` with the prompt and session id; the server starts a new context.

        Raises:
            BackendError: no connection, a timeout, or a reply other than ``"reset successful"``.
        """
        reply = self._call({"endpoint": ENDPOINT_RESET, "prompt": prompt, "session_id": session_id},
                           ENDPOINT_RESET)
        if reply != RESET_REPLY:
            raise BackendError(f"reset: expected the reply {RESET_REPLY!r} from {self._url}, got {reply!r:.200}")
        self._session_id = session_id
        logger.info("remote backend: reset, session %s", session_id)

    def infer(self, observation: Observation) -> BackendPrediction:
        """Ask the server for the chunk following ``observation``.

        Returns:
            actions float64[H, A], model units, absolute (``relative`` all False: the server returns
            absolute targets, facts §3.3); no predicted frames; ``seconds["round_trip"]``.

        Raises:
            ValueError: the observation does not match the spec.
            BackendError: no connection, a timeout, a server error (its traceback in the message) or a
                malformed reply.
        """
        request = build_request(observation, self._spec, self._keys)
        if observation.session_id != self._session_id:
            logger.info("remote backend: session %s -> %s (the server starts a new context)",
                        self._session_id, observation.session_id)
            self._session_id = observation.session_id
        start = time.monotonic()
        reply = self._call(request, ENDPOINT_INFER)
        round_trip_s = time.monotonic() - start
        if isinstance(reply, str):
            raise BackendError(f"infer: expected a binary reply from {self._url}, got the text {reply!r:.200}")
        try:
            decoded = msgpack_numpy.unpackb(reply)
        except (ValueError, TypeError) as error:
            raise BackendError(f"infer: cannot decode the reply from {self._url}: {error}") from error
        actions = parse_actions(decoded, self._spec.timing.horizon, len(self._spec.action_names))
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

    # ----------------------------------------------------------------------------------- transport
    def _call(self, request: dict[str, Any], endpoint: str) -> bytes | str:
        """Send one request and return the raw reply; reconnect and retry once if the connection drops.

        A text reply is returned only for ``reset`` when it is ``"reset successful"``; any other text is
        the server's traceback and raises.
        """
        payload = msgpack_numpy.packb(request)
        with self._request_lock:
            deadline = time.monotonic() + self._call_timeout_s
            for attempt in range(2):
                ws = self._connection(deadline)
                if self._needs_session_id() and not request.get("session_id"):
                    raise BackendError(f"{endpoint}: the server needs a session id (needs_session_id) and got none")
                try:
                    ws.send(payload)
                    reply = ws.recv(timeout=max(deadline - time.monotonic(), 0.0))
                except TimeoutError as error:
                    self._drop(ws)
                    raise BackendError(f"{endpoint}: no reply from {self._url} within "
                                       f"{self._call_timeout_s:g} s") from error
                except (ConnectionClosed, OSError) as error:
                    self._drop(ws)
                    if attempt == 0 and not self._is_closed():
                        logger.warning("remote backend: connection to %s lost during %s (%s); reconnecting",
                                       self._url, endpoint, error)
                        continue
                    raise BackendError(f"{endpoint}: connection to {self._url} lost: {error}") from error
                if isinstance(reply, str) and not (endpoint == ENDPOINT_RESET and reply == RESET_REPLY):
                    self._drop(ws)  # the server closes with 1011 after an error (facts §3.3)
                    raise BackendError(f"{endpoint}: server error from {self._url}:\n{reply}")
                return reply
        raise AssertionError("unreachable: the loop returns or raises")

    def _connection(self, deadline: float) -> ClientConnection:
        """The open connection, or a new one checked against the spec; attempts back off until ``deadline``."""
        with self._state_lock:
            if self._closed:
                raise BackendError(f"remote backend for {self._url} is closed")
            if self._ws is not None:
                return self._ws
        attempt, error = 0, None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"cannot connect to {self._url} within {self._call_timeout_s:g} s: {error}")
            try:
                return self._connect(min(self._connect_timeout_s, remaining))
            except (OSError, InvalidHandshake, ConnectionClosed) as failure:  # refused, restarting, cut off
                error = failure  # (TimeoutError is an OSError)
            delay = self._backoff_s[min(attempt, len(self._backoff_s) - 1)]
            attempt += 1
            logger.info("remote backend: cannot connect to %s (%s); next attempt in %.1f s", self._url, error, delay)
            time.sleep(max(min(delay, deadline - time.monotonic()), 0.0))

    def _connect(self, timeout_s: float) -> ClientConnection:
        """Open one connection and check its handshake; a mismatch raises :class:`BackendError` (no retry)."""
        # legacy=True: a plain long-lived connection that this class reconnects itself (websockets 17
        # otherwise wants a context manager per connection).
        ws = connect(self._url, compression=None, max_size=None, additional_headers=self._headers, proxy=None,
                     open_timeout=timeout_s, ping_interval=PING_INTERVAL_S, ping_timeout=PING_TIMEOUT_S,
                     close_timeout=CLOSE_TIMEOUT_S, legacy=True)
        try:
            message = ws.recv(timeout=timeout_s)
        except (TimeoutError, ConnectionClosed):
            ws.close()
            raise
        try:
            config = msgpack_numpy.unpackb(message) if isinstance(message, bytes) else message
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
        self._server_config = config
        logger.info("remote backend: connected to %s, server config %s", self._url, config)
        return ws

    def _drop(self, ws: ClientConnection) -> None:
        """Forget and close ``ws``, so the next call reconnects."""
        with self._state_lock:
            if self._ws is ws:
                self._ws = None
        ws.close()

    def _needs_session_id(self) -> bool:
        return bool(self._server_config and self._server_config.get("needs_session_id", False))

    def _is_closed(self) -> bool:
        with self._state_lock:
            return self._closed
