"""A fake DreamZero policy server on loopback that speaks the wire protocol of facts §3.3 exactly.

On connect it sends its ``PolicyServerConfig`` map first; requests and replies are msgpack with
openpi's ``msgpack_numpy``. ``infer`` checks the RoboArena request keys, dtypes and shapes (state as
(7,)/(1,) or (1, 7)/(1, 1), as the official server takes either; ``observation/cartesian_position``, when
sent, float (6,)) and replies a float32[24, 8] chunk computed from the request: row k =
joint_position ++ gripper_position + k * STEP_INCREMENT, so a test can see that the state arrived
intact. ``reset`` replies the text frame ``"reset successful"``. Anything wrong (bad request, or
``fail_infer_with`` set) sends the Python traceback as a text frame and closes with 1011, as the
official server does. Every request is recorded.

Like the official server (``ARDroidRoboarenaPolicy``, facts §3.4) it keeps ONE frame buffer per camera
for the whole server: a new ``session_id`` or ``reset`` clears it and marks the next ``infer`` as a
session's first, which uses only the newest frame; later calls use only the last 4 buffered frames
(left-padded with the oldest). What the model would see is recorded in ``model_frames``. :meth:`kill`
dies as a crashed process does (no close frame, no reply to a call in progress); a new instance on the
same port is the restarted server, with empty buffers.

Not part of the product; used by tests/policy/test_remote_backend.py. Imports no rclpy.
"""
from __future__ import annotations

import socket
import threading
import traceback
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from openpi_client import msgpack_numpy
from websockets.exceptions import ConnectionClosed
from websockets.frames import CloseCode
from websockets.sync.server import Server, ServerConnection, serve

HORIZON = 24                    # facts §3.3: (24, 8) replies
STEP_INCREMENT = 0.01           # what row k adds to the state, so rows differ
IMAGE_KEYS = ("observation/exterior_image_0_left", "observation/exterior_image_1_left",
              "observation/wrist_image_left")
STATE_SHAPES = {"observation/joint_position": (7,), "observation/gripper_position": (1,)}
CARTESIAN_KEY = "observation/cartesian_position"   # (6,), sent by the official clients (facts §3.3)
FRAMES_PER_CHUNK = 4            # facts §3.4: the official server uses the last 4 buffered frames


def droid_server_config(**overrides: Any) -> dict[str, Any]:
    """The handshake of the official DROID server (facts §3.3), with ``overrides`` applied."""
    config = {"image_resolution": [180, 320], "needs_wrist_camera": True, "n_external_cameras": 2,
              "needs_stereo_camera": False, "needs_session_id": True, "action_space": "joint_position"}
    config.update(overrides)
    return config


def expected_actions(joint_position: np.ndarray, gripper_position: np.ndarray) -> np.ndarray:
    """The float32[24, 8] chunk the fake replies for a given state."""
    state = np.concatenate([np.ravel(joint_position), np.ravel(gripper_position)]).astype(np.float32)
    return state[None, :] + STEP_INCREMENT * np.arange(HORIZON, dtype=np.float32)[:, None]


def check_infer_request(request: dict[str, Any], resolution: tuple[int, int]) -> None:
    """Raise ValueError unless ``request`` is a valid RoboArena ``infer`` request (facts §3.3)."""
    for key in IMAGE_KEYS:
        image = request.get(key)
        if not (isinstance(image, np.ndarray) and image.dtype == np.uint8
                and (image.shape == (*resolution, 3) or (image.ndim == 4 and image.shape[1:] == (*resolution, 3)))):
            raise ValueError(f"{key}: expected uint8 {(*resolution, 3)} or (T, {resolution[0]}, {resolution[1]}, 3), "
                             f"got {getattr(image, 'dtype', type(image).__name__)} {getattr(image, 'shape', '')}")
    for key, shape in STATE_SHAPES.items():
        value = request.get(key)
        if not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape in (shape, (1, *shape))):
            raise ValueError(f"{key}: expected a float array {shape} or {(1, *shape)}, got {value!r}")
    if CARTESIAN_KEY in request:
        value = request[CARTESIAN_KEY]
        if not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape == (6,)):
            raise ValueError(f"{CARTESIAN_KEY}: expected a float array (6,), got {value!r}")
    for key in ("prompt", "session_id"):
        if not isinstance(request.get(key), str):
            raise ValueError(f"{key}: expected a string, got {request.get(key)!r}")


@dataclass
class FakeDreamZeroServer:
    """A threaded websockets server; use as a context manager or call :meth:`start`/:meth:`stop`.

    Attributes:
        port: 0 picks a free port; after :meth:`start` it holds the bound port.
        config: the handshake map sent on connect.
        replies: False: record ``infer`` requests but never answer them.
        fail_infer_with: raise ``RuntimeError(<this>)`` inside ``infer`` (the traceback goes to the client).
        reply_delay_s: wait before each ``infer`` reply (stands in for inference time; :meth:`kill` ends it).
        reply_actions: when set, every ``infer`` gets this array instead of the computed chunk.
        reset_reply: the text a ``reset`` gets (the official server's is "reset successful").
        requests: every decoded request, in arrival order.
        handshakes: connections that received the handshake.
        authorizations: the ``Authorization`` header of each connection (None when absent).
        model_frames: per answered ``infer``, camera request key -> uint8[T, H, W, 3], the frames the
            official server's model would see (T = 1 on a session's first call, else 4).
    """

    port: int = 0
    config: dict[str, Any] = field(default_factory=droid_server_config)
    replies: bool = True
    fail_infer_with: str | None = None
    reply_delay_s: float = 0.0
    reply_actions: np.ndarray | None = None
    reset_reply: str = "reset successful"
    requests: list[dict[str, Any]] = field(default_factory=list)
    handshakes: int = 0
    authorizations: list[str | None] = field(default_factory=list)
    model_frames: list[dict[str, np.ndarray]] = field(default_factory=list)
    _server: Server | None = None
    _thread: threading.Thread | None = None
    _killed: threading.Event = field(default_factory=threading.Event)
    _connections: list[ServerConnection] = field(default_factory=list)
    _buffers: dict[str, list[np.ndarray]] = field(default_factory=dict)
    _session_id: str | None = None
    _first_call: bool = True

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self) -> FakeDreamZeroServer:
        self._server = serve(self._handle, "127.0.0.1", self.port, compression=None, max_size=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the listening socket and every connection (code 1001), as a server going down does."""
        if self._server is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._server = None

    def kill(self) -> None:
        """Die as a crashed server process does: every connection is cut without a close frame, a call in
        progress gets no reply, and the port is free for a restarted server."""
        self._killed.set()
        for ws in list(self._connections):
            try:
                ws.socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already gone
        if self._server is not None:
            self._server.shutdown(close_connections=False)
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeDreamZeroServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, ws: ServerConnection) -> None:
        self.handshakes += 1
        self._connections.append(ws)
        self.authorizations.append(ws.request.headers.get("Authorization"))
        ws.send(msgpack_numpy.packb(self.config))
        try:
            for message in ws:
                try:
                    reply = self._reply(message)
                    if self._killed.is_set():
                        return
                except Exception:  # noqa: BLE001 - the protocol's error path: traceback text, then 1011
                    ws.send(traceback.format_exc())
                    ws.close(code=CloseCode.INTERNAL_ERROR,
                             reason="Internal server error. Traceback included in previous frame.")
                    return
                if reply is not None:
                    ws.send(reply)
        except ConnectionClosed:
            return

    def _reply(self, message: bytes | str) -> bytes | str | None:
        request = msgpack_numpy.unpackb(message)
        self.requests.append(request)
        endpoint = request["endpoint"]
        if endpoint == "reset":
            self._new_context(request.get("session_id"))
            return self.reset_reply
        if endpoint != "infer":
            raise ValueError(f"unknown endpoint {endpoint!r}")
        check_infer_request(request, tuple(self.config["image_resolution"]))
        if self.fail_infer_with is not None:
            raise RuntimeError(self.fail_infer_with)
        if not self.replies:
            return None
        self._killed.wait(self.reply_delay_s)
        self.model_frames.append(self._frames_for_model(request))
        if self.reply_actions is not None:
            return msgpack_numpy.packb(self.reply_actions)
        return msgpack_numpy.packb(expected_actions(request["observation/joint_position"],
                                                    request["observation/gripper_position"]))

    def _new_context(self, session_id: str | None) -> None:
        self._buffers = {key: [] for key in IMAGE_KEYS}
        self._session_id, self._first_call = session_id, True

    def _frames_for_model(self, request: dict[str, Any]) -> dict[str, np.ndarray]:
        """Buffer the request's frames; return what the model uses (facts §3.4)."""
        if request["session_id"] != self._session_id or not self._buffers:
            self._new_context(request["session_id"])
        for key in IMAGE_KEYS:
            image = request[key]
            self._buffers[key].extend(image if image.ndim == 4 else [image])
            del self._buffers[key][:-FRAMES_PER_CHUNK]  # older frames are never used again
        first, self._first_call = self._first_call, False
        used = {}
        for key, frames in self._buffers.items():
            if first:
                used[key] = np.stack(frames[-1:])
            else:
                last = frames[-FRAMES_PER_CHUNK:]
                used[key] = np.stack([last[0]] * (FRAMES_PER_CHUNK - len(last)) + last)  # left-padded
        return used
