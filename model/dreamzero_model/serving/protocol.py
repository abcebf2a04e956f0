"""The DreamZero / RoboArena WebSocket policy protocol, written once for our client and our server (facts §3.3-3.4).

* WebSocket, binary frames, no compression; msgpack with openpi's ``msgpack_numpy`` (an ndarray is a
  ``{__ndarray__, data, dtype, shape}`` map, training-serving-facts §5.2; decoded arrays are read-only).
* On connect the server first sends its metadata (``PolicyServerConfig``, facts §3.3):
  :func:`server_handshake` builds ours, :func:`check_server_config` checks any server's against an
  embodiment. Ours adds ``frame_mode: "training"`` (:data:`FRAME_MODE_KEY`: a continuation query may
  carry 9 frames at the training spacing, facts §1.8), ``embodiment`` (the tag this connection serves)
  and ``embodiments`` (every tag the server serves). The official server has none of these keys.
* One request map per message, ``endpoint`` = ``"reset"`` or anything else (``"infer"``). ``infer``
  replies a float32[H, A] ndarray of ABSOLUTE targets (:func:`reply_actions`: relative dimensions plus
  the state of the request, facts §1.9); ``reset`` replies the text frame :data:`RESET_REPLY`. An error
  is a text frame naming the cause, then close code 1011 (facts §3.3).
* Request keys are data (:data:`WIRE_KEYS`): ``oxe_droid`` uses the RoboArena names the official server
  maps to the model's keys (facts §1.4) plus ``observation/cartesian_position`` as the official clients
  send it (facts §3.3; the server ignores it). Every other embodiment uses generic
  ``observation/<camera key>`` and ``observation/<state key>`` names, which only our server accepts (the
  official server is DROID-only, facts §0).
* Embodiment selection (ours; the official server ignores the path): the URL path names the tag,
  ``ws://host:port/agibot``; :func:`embodiment_url` (client) adds it to a URL without a path and
  :func:`tag_from_path` (server) reads it back, ``/`` meaning the server's default embodiment.
* A reply text starting with :data:`SESSION_LOST` says the server no longer holds the session's context
  (evicted or timed out); the client must ``reset`` (or take a new session id) to go on.

Validation (:func:`parse_infer_request`) raises :class:`RequestError` whose message names the key, what
was expected and what was received. Imports numpy, msgpack, openpi_client and the embodiment layer only
(no torch). Dimensions: H horizon (24), A action dims, S state dims, T frames.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import msgpack
import numpy as np
from openpi_client import msgpack_numpy

from dreamzero_embodiments.actions import anchor_from_state
from dreamzero_embodiments.frames import FRAME_MODES
from dreamzero_embodiments.spec import EmbodimentSpec

ENDPOINT_INFER = "infer"                # facts §3.3
ENDPOINT_RESET = "reset"
RESET_REPLY = "reset successful"        # the server's text reply to a reset (facts §3.3)
ACTION_SPACE = "joint_position"         # the only action space whose replies we can use (facts §3.3)
FRAME_MODE_KEY = "frame_mode"
"""Handshake key a server uses to announce the frames it takes per continuation query: ``"training"`` (9 at
the training spacing, our own server) or ``"official"``. Absent (the official server): ``"official"``."""
SERVER_FRAME_MODE_DEFAULT = "official"  # the official server keeps the last 4 frames (facts §3.4)
OUR_FRAME_MODE = "training"             # our server takes 9 frames as sent (sessions.select_frames)
EMBODIMENT_KEY = "embodiment"           # our handshake: the tag this connection serves
EMBODIMENTS_KEY = "embodiments"         # our handshake: every tag the server serves
CARTESIAN_DIM = 6                       # observation/cartesian_position (6,) (facts §3.3)
SESSION_LOST = "session lost"
"""Prefix of the error text for a continuation whose session the server no longer holds."""


class RequestError(ValueError):
    """A request the server cannot run; the message names the key, what was expected and what was received."""


class ReplyError(ValueError):
    """An ``infer`` reply that is not a usable chunk; the message says what is wrong."""


@dataclass(frozen=True)
class WireKeys:
    """Request key names for one embodiment.

    Attributes:
        views: spec camera key -> request key.
        state: spec state key -> request key.
        wrist_views: spec camera keys the server counts as wrist cameras (``needs_wrist_camera``), the
            rest count as ``n_external_cameras``; None when the table does not say (generic keys), in
            which case only the total number of cameras is checked.
        cartesian_position: request key of the end-effector pose float64[6] the reference clients send
            (facts §3.3), or None when the protocol has none. Sent as zeros: an observation carries no pose.
    """

    views: Mapping[str, str]
    state: Mapping[str, str]
    wrist_views: frozenset[str] | None
    cartesian_position: str | None = None


# Request keys per embodiment tag (facts §1.4, §3.3). Tags not listed use generic keys
# (:func:`wire_keys`), accepted only by our own server.
WIRE_KEYS: Mapping[str, WireKeys] = {
    "oxe_droid": WireKeys(
        views={"exterior_image_1_left": "observation/exterior_image_0_left",
               "exterior_image_2_left": "observation/exterior_image_1_left",
               "wrist_image_left": "observation/wrist_image_left"},
        state={"joint_position": "observation/joint_position",
               "gripper_position": "observation/gripper_position"},
        wrist_views=frozenset({"wrist_image_left"}),
        cartesian_position="observation/cartesian_position"),
}


@dataclass(frozen=True)
class InferRequest:
    """A validated ``infer`` request.

    Attributes:
        views: spec camera key -> uint8[T, H, W, 3] frames, oldest first (T = 1 for a single frame).
        state: float64[S] in the spec's state order, model units.
        prompt: the instruction. session_id: the client's session (non-empty).
    """

    views: dict[str, np.ndarray]
    state: np.ndarray
    prompt: str
    session_id: str


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
    names = [*keys.views.values(), *keys.state.values(), "endpoint", "prompt", "session_id",
             *([keys.cartesian_position] if keys.cartesian_position else [])]
    if len(set(names)) != len(names):
        problems.append(f"request keys collide: {sorted(n for n in set(names) if names.count(n) > 1)}")
    if problems:
        raise ValueError(f"request keys for embodiment {spec.name!r} (tag {spec.embodiment_tag!r}): "
                         + "; ".join(problems))
    return keys


def image_resolution(spec: EmbodimentSpec) -> tuple[int, int]:
    """(H, W) of every camera: the protocol has one ``image_resolution`` (facts §3.3).

    Raises:
        ValueError: the cameras differ in resolution.
    """
    resolutions = sorted({tuple(c.resolution) for c in spec.cameras})
    if len(resolutions) != 1:
        raise ValueError(f"image_resolution: the protocol has one resolution, embodiment {spec.name!r} has "
                         f"{resolutions}")
    return resolutions[0]


# ------------------------------------------------------------------------------------ handshake
def server_handshake(spec: EmbodimentSpec, tag: str, served_tags: list[str]) -> dict[str, Any]:
    """Our server's handshake for a connection to embodiment ``tag`` (module docstring).

    The ``PolicyServerConfig`` fields (facts §3.3) for ``spec``; with generic keys (no wrist cameras
    named) every camera counts as external, as :func:`check_server_config` counts them.
    """
    keys = wire_keys(spec)
    wrist = len(keys.wrist_views) if keys.wrist_views is not None else 0
    return {"image_resolution": list(image_resolution(spec)), "needs_wrist_camera": wrist > 0,
            "n_external_cameras": len(spec.cameras) - wrist, "needs_stereo_camera": False,
            "needs_session_id": True, "action_space": ACTION_SPACE, FRAME_MODE_KEY: OUR_FRAME_MODE,
            EMBODIMENT_KEY: tag, EMBODIMENTS_KEY: list(served_tags)}


def server_frame_mode(config: Mapping[str, Any]) -> str:
    """The frames a server takes per continuation query, from its handshake (:data:`FRAME_MODE_KEY`)."""
    return config.get(FRAME_MODE_KEY, SERVER_FRAME_MODE_DEFAULT)


def check_server_config(config: Any, spec: EmbodimentSpec, keys: WireKeys) -> list[str]:
    """Compare the server's handshake (``PolicyServerConfig``, facts §3.3) with the embodiment.

    Returns:
        One ``"<field>: server <value>, embodiment <name> <value>"`` line per problem; empty when they match.
        Fields beyond ``PolicyServerConfig``, :data:`FRAME_MODE_KEY` and :data:`EMBODIMENT_KEY` are ignored.
    """
    if not isinstance(config, dict):
        return [f"handshake: expected a msgpack map, got {type(config).__name__}"]
    problems = []
    where = f"embodiment {spec.name!r}"
    missing = [f for f in ("image_resolution", "needs_wrist_camera", "n_external_cameras", "action_space")
               if f not in config]
    problems += [f"{f}: missing from the handshake" for f in missing]
    served = config.get("image_resolution")
    try:
        resolution = image_resolution(spec)
    except ValueError as error:
        problems.append(str(error))
    else:
        if served is not None and not (isinstance(served, (list, tuple)) and [*served] == [*resolution]):
            problems.append(f"image_resolution: server {served!r}, {where} {[*resolution]}")  # None: any size
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
    if server_frame_mode(config) not in FRAME_MODES:
        problems.append(f"{FRAME_MODE_KEY}: server {config[FRAME_MODE_KEY]!r}, expected one of "
                        f"{', '.join(FRAME_MODES)} (or no such key: {SERVER_FRAME_MODE_DEFAULT})")
    if EMBODIMENT_KEY in config and config[EMBODIMENT_KEY] != spec.embodiment_tag:
        problems.append(f"{EMBODIMENT_KEY}: server {config[EMBODIMENT_KEY]!r}, {where} {spec.embodiment_tag!r}")
    return problems


# ---------------------------------------------------------------------------- embodiment by URL path
def embodiment_url(url: str, tag: str) -> str:
    """``url`` with the path ``/<tag>`` when it has none (``""`` or ``"/"``); a given path is kept."""
    parts = urlsplit(url)
    if parts.path not in ("", "/"):
        return url
    return urlunsplit(parts._replace(path=f"/{tag}"))


def tag_from_path(path: str) -> str:
    """The embodiment tag a request path names: ``"/agibot?x=1"`` -> ``"agibot"``; ``"/"`` or ``""`` -> ``""``."""
    return urlsplit(path).path.strip("/")


# ------------------------------------------------------------------------------------------ requests
def build_request(views: Mapping[str, np.ndarray], state: np.ndarray, prompt: str, session_id: str,
                  spec: EmbodimentSpec, keys: WireKeys) -> dict[str, Any]:
    """The ``infer`` request map (facts §3.3).

    Frames go out as uint8[T, H, W, 3], or uint8[H, W, 3] when T == 1 (the server appends either to
    its buffer, facts §3.4); the state float64[S] is split per spec state key (model units); the
    end-effector pose, where the protocol has one, is float64[6] zeros (an observation carries none).

    Args:
        views: spec camera key -> uint8[T, H, W, 3], oldest first. state: float64[S], spec state order.

    Raises:
        ValueError: views or state do not match the spec (names the key, expected and received).
    """
    if sorted(views) != sorted(c.key for c in spec.cameras):
        raise ValueError(f"observation.views: expected cameras {[c.key for c in spec.cameras]}, got {sorted(views)}")
    request: dict[str, Any] = {"endpoint": ENDPOINT_INFER}
    for camera in spec.cameras:
        frames = views[camera.key]
        expected = (*camera.resolution, 3)
        if not (isinstance(frames, np.ndarray) and frames.dtype == np.uint8 and frames.ndim == 4
                and frames.shape[0] >= 1 and frames.shape[1:] == expected):
            raise ValueError(f"observation.views[{camera.key!r}]: expected uint8[T, {expected[0]}, "
                             f"{expected[1]}, 3] with T >= 1, got {_describe_value(frames)}")
        request[keys.views[camera.key]] = frames[0] if frames.shape[0] == 1 else frames
    state = np.asarray(state, dtype=np.float64)
    n_state = len(spec.state_names)
    if state.shape != (n_state,) or not np.all(np.isfinite(state)):
        raise ValueError(f"observation.state: expected finite float64[{n_state}], got {state.shape} {state}")
    start = 0
    for key in spec.state:
        request[keys.state[key.key]] = state[start:start + key.dim].copy()
        start += key.dim
    if keys.cartesian_position:
        request[keys.cartesian_position] = np.zeros(CARTESIAN_DIM, dtype=np.float64)
    request["prompt"] = prompt
    request["session_id"] = session_id
    return request


def decode_request(payload: bytes | str) -> dict[str, Any]:
    """One received frame -> the request map.

    Raises:
        RequestError: a text frame, bytes that are not msgpack, or msgpack that is not a map.
    """
    if isinstance(payload, str):
        raise RequestError("request: expected a binary msgpack frame, got a text frame")
    try:
        message = msgpack_numpy.unpackb(payload)
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as error:  # KeyError: a broken ndarray map
        cause = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise RequestError(f"request: malformed msgpack, cannot decode it ({cause})") from error
    if not isinstance(message, dict):
        raise RequestError(f"request: expected a msgpack map, got {type(message).__name__}")
    return message


def is_reset(message: Mapping[str, Any]) -> bool:
    """``endpoint`` is ``"reset"``; anything else (also no endpoint, as openpi clients send) is ``infer``."""
    return message.get("endpoint") == ENDPOINT_RESET


def session_id_of(message: Mapping[str, Any]) -> str:
    """The request's ``session_id`` (``needs_session_id``: required, a non-empty string).

    Raises:
        RequestError: missing, not a string, or empty.
    """
    session_id = message.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise RequestError(f"session_id: expected a non-empty string (the handshake says needs_session_id), "
                           f"got {_describe_value(session_id)}")
    return session_id


def parse_infer_request(message: Mapping[str, Any], spec: EmbodimentSpec, keys: WireKeys) -> InferRequest:
    """Validate a decoded ``infer`` request for ``spec`` (facts §3.3).

    Cameras: uint8 (H, W, 3) (one frame) or (T, H, W, 3), T >= 1, at the handshake's resolution. State
    keys: finite real numbers of shape (D,) or (1, D), as the official server takes either; unlike it, a
    missing state key is an error, not zeros (a relative chunk anchored to zeros would be wrong). Other
    keys (``observation/cartesian_position``, extras) are ignored.

    Raises:
        RequestError: the first problem, naming the key, what was expected and what was received.
    """
    views = {}
    for camera in spec.cameras:
        key = keys.views[camera.key]
        value = _required(message, key)
        height, width = camera.resolution
        if not (isinstance(value, np.ndarray) and value.dtype == np.uint8 and value.ndim in (3, 4)
                and value.shape[-3:] == (height, width, 3) and (value.ndim == 3 or value.shape[0] >= 1)):
            raise RequestError(f"{key}: expected uint8[{height}, {width}, 3] or uint8[T, {height}, {width}, 3] "
                               f"with T >= 1, got {_describe_value(value)}")
        views[camera.key] = value[None] if value.ndim == 3 else value
    parts = []
    for state_key in spec.state:
        key = keys.state[state_key.key]
        value = _required(message, key)
        array = np.asarray(value) if isinstance(value, (np.ndarray, list, tuple)) else None
        if (array is None or array.dtype.kind not in "fiu"
                or array.shape not in ((state_key.dim,), (1, state_key.dim))):
            raise RequestError(f"{key}: expected float[{state_key.dim}] or float[1, {state_key.dim}], "
                               f"got {_describe_value(value)}")
        array = array.reshape(-1).astype(np.float64)
        if not np.all(np.isfinite(array)):
            raise RequestError(f"{key}: expected finite values, got {array.tolist()}")
        parts.append(array)
    prompt = _required(message, "prompt")
    if not isinstance(prompt, str):
        raise RequestError(f"prompt: expected a string, got {_describe_value(prompt)}")
    return InferRequest(views=views, state=np.concatenate(parts), prompt=prompt, session_id=session_id_of(message))


def _required(message: Mapping[str, Any], key: str) -> Any:
    if key not in message:
        present = sorted(str(k) for k in message)
        raise RequestError(f"{key}: missing from the request (keys present: {', '.join(present)})")
    return message[key]


def _describe_value(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"{value.dtype}{list(value.shape)}"
    return f"{type(value).__name__} {value!r:.80}"


# ------------------------------------------------------------------------------------------- replies
def reply_actions(actions: np.ndarray, relative: np.ndarray, state: np.ndarray, spec: EmbodimentSpec) -> np.ndarray:
    """The ``infer`` reply: float32[H, A] absolute targets, model units (facts §1.9, §3.3).

    Args:
        actions: float64[H, A] de-normalised, relative where ``relative`` (bool[A]) is True.
        state: float64[S], the request's state (spec state order): the anchor of the relative dimensions.
    """
    return (actions + anchor_from_state(state, relative, spec)).astype(np.float32)


def parse_actions(reply: Any, horizon: int, action_dim: int) -> np.ndarray:
    """The chunk in a decoded ``infer`` reply: float64[H, A], absolute, model units.

    Raises:
        ReplyError: the reply is not a finite numeric array of shape (H, A).
    """
    if not isinstance(reply, np.ndarray):
        raise ReplyError(f"infer reply: expected an ndarray, got {type(reply).__name__}")
    if reply.shape != (horizon, action_dim) or reply.dtype.kind not in "fiu":
        raise ReplyError(f"infer reply: expected a float array of shape ({horizon}, {action_dim}), "
                         f"got {reply.dtype}{list(reply.shape)}")
    actions = reply.astype(np.float64)
    if not np.all(np.isfinite(actions)):
        raise ReplyError(f"infer reply: {int(np.sum(~np.isfinite(actions)))} non-finite values")
    return actions


def is_session_lost(text: str) -> bool:
    """An error reply saying the server no longer holds the session (:data:`SESSION_LOST`)."""
    return text.startswith(SESSION_LOST)
