"""A fake DreamZero policy server on loopback that speaks the wire protocol of facts §3.3 exactly.

On connect it sends its ``PolicyServerConfig`` map first; requests and replies are msgpack with
openpi's ``msgpack_numpy``. ``infer`` checks the RoboArena request keys, dtypes and shapes and replies
a float32[24, 8] chunk computed from the request: row k = joint_position ++ gripper_position + k *
STEP_INCREMENT, so a test can see that the state arrived intact. ``reset`` replies the text frame
``"reset successful"``. Anything wrong (bad request, or ``fail_infer_with`` set) sends the Python
traceback as a text frame and closes with 1011, as the official server does. Every request is recorded.

Not part of the product; used by tests/policy/test_remote_backend.py. Imports no rclpy.
"""
from __future__ import annotations

import threading
import time
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


def droid_server_config(**overrides: Any) -> dict[str, Any]:
    """The handshake of the official DROID server (facts §3.3), with ``overrides`` applied."""
    config = {"image_resolution": [180, 320], "needs_wrist_camera": True, "n_external_cameras": 2,
              "needs_stereo_camera": False, "needs_session_id": True, "action_space": "joint_position"}
    config.update(overrides)
    return config


def expected_actions(joint_position: np.ndarray, gripper_position: np.ndarray) -> np.ndarray:
    """The float32[24, 8] chunk the fake replies for a given state."""
    state = np.concatenate([joint_position, gripper_position]).astype(np.float32)
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
        if not (isinstance(value, np.ndarray) and value.dtype.kind == "f" and value.shape == shape):
            raise ValueError(f"{key}: expected a float array {shape}, got {value!r}")
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
        reply_delay_s: sleep before each ``infer`` reply (stands in for inference time).
        reply_actions: when set, every ``infer`` gets this array instead of the computed chunk.
        reset_reply: the text a ``reset`` gets (the official server's is "reset successful").
        requests: every decoded request, in arrival order.
        handshakes: connections that received the handshake.
        authorizations: the ``Authorization`` header of each connection (None when absent).
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
    _server: Server | None = None
    _thread: threading.Thread | None = None

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

    def __enter__(self) -> FakeDreamZeroServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _handle(self, ws: ServerConnection) -> None:
        self.handshakes += 1
        self.authorizations.append(ws.request.headers.get("Authorization"))
        ws.send(msgpack_numpy.packb(self.config))
        try:
            for message in ws:
                try:
                    reply = self._reply(message)
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
            return self.reset_reply
        if endpoint != "infer":
            raise ValueError(f"unknown endpoint {endpoint!r}")
        check_infer_request(request, tuple(self.config["image_resolution"]))
        if self.fail_infer_with is not None:
            raise RuntimeError(self.fail_infer_with)
        if not self.replies:
            return None
        time.sleep(self.reply_delay_s)
        if self.reply_actions is not None:
            return msgpack_numpy.packb(self.reply_actions)
        return msgpack_numpy.packb(expected_actions(request["observation/joint_position"],
                                                    request["observation/gripper_position"]))
