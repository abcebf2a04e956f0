"""The one place where a ROS message becomes numpy and numpy becomes a message (STYLE.md item 4).

Nodes, record, replay and evaluation all call these, so live and offline runs decode identically.
Pixel work is done by :mod:`dreamzero_embodiments.images`; this module only moves fields.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Twist
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray

from dreamzero_embodiments.images import (decode_compressed_image, decode_image, encode_compressed_image,
                                          encode_image)
from dreamzero_msgs.msg import ActionChunk


def stamp_to_ns(stamp: Time) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def ns_to_stamp(t_ns: int) -> Time:
    return Time(sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)


def image_to_rgb(msg: Image | CompressedImage, max_pixels: int | None = None) -> np.ndarray:
    """uint8[H, W, 3] RGB from an Image (rgb8, bgr8, bgra8, rgba8, mono8; row padding honoured) or a
    CompressedImage (jpeg, png). Raises ValueError naming the encoding on anything else, and
    ``images.ImageTooLargeError`` (before decoding) for more than ``max_pixels`` declared pixels."""
    if isinstance(msg, CompressedImage):
        return decode_compressed_image(msg.format, bytes(msg.data), max_pixels)
    return decode_image(msg.encoding, msg.height, msg.width, msg.step, bytes(msg.data), bool(msg.is_bigendian),
                        max_pixels)


def rgb_to_image(rgb: np.ndarray, t_ns: int, frame_id: str = "") -> Image:
    """An rgb8 Image of uint8[H, W, 3]."""
    fields = encode_image(rgb)
    msg = Image(height=fields["height"], width=fields["width"], encoding=fields["encoding"], is_bigendian=0,
                step=fields["step"], data=fields["data"])
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(t_ns), frame_id
    return msg


def rgb_to_compressed(rgb: np.ndarray, t_ns: int, frame_id: str = "", fmt: str = "jpeg") -> CompressedImage:
    """A CompressedImage (jpeg or png) of uint8[H, W, 3]."""
    format_name, data = encode_compressed_image(rgb, fmt)
    msg = CompressedImage(format=format_name, data=data)
    msg.header.stamp, msg.header.frame_id = ns_to_stamp(t_ns), frame_id
    return msg


def joint_state_arrays(msg: JointState) -> tuple[list[str], np.ndarray]:
    """(joint names, float64[N] positions); raises ValueError when the lengths differ."""
    if len(msg.name) != len(msg.position):
        raise ValueError(f"JointState has {len(msg.name)} names but {len(msg.position)} positions")
    return list(msg.name), np.asarray(msg.position, dtype=np.float64)


@dataclass(frozen=True)
class Chunk:
    """An ActionChunk as arrays (ARCHITECTURE.md §5).

    Attributes:
        t_obs_ns: header stamp; step k is the command for t_obs + k dt.
        names: action dimensions. relative: bool[D]. anchor: float64[D], state at t_obs (model units).
        values: float64[H, D] de-normalised, model units. dt: seconds between steps.
    """

    t_obs_ns: int
    embodiment: str
    session_id: str
    chunk_id: int
    names: tuple[str, ...]
    relative: np.ndarray
    anchor: np.ndarray
    values: np.ndarray
    dt: float
    latency: float


def command_message(group_kind: str, values: np.ndarray) -> Float64MultiArray | Twist:
    """A controller group's command: a Twist (linear x, yaw rate) for a ``twist`` group, else the
    positions as a Float64MultiArray (embodiment YAML, controller_groups)."""
    if group_kind == "twist":
        twist = Twist()
        twist.linear.x, twist.angular.z = (float(v) for v in values[:2])
        return twist
    return Float64MultiArray(data=values.tolist())


def command_values(message: Float64MultiArray | Twist) -> np.ndarray:
    """The values of a :func:`command_message`."""
    if isinstance(message, Twist):
        return np.array([message.linear.x, message.angular.z])
    return np.asarray(message.data, dtype=np.float64)


def chunk_to_message(chunk: Chunk) -> ActionChunk:
    msg = ActionChunk(embodiment=chunk.embodiment, session_id=chunk.session_id, chunk_id=chunk.chunk_id,
                      names=list(chunk.names), relative=[bool(r) for r in chunk.relative],
                      anchor=np.asarray(chunk.anchor, dtype=np.float64), horizon=chunk.values.shape[0], dt=chunk.dt,
                      values=np.asarray(chunk.values, dtype=np.float64).reshape(-1), latency=float(chunk.latency))
    msg.header.stamp = ns_to_stamp(chunk.t_obs_ns)
    return msg


def message_to_chunk(msg: ActionChunk) -> Chunk:
    """Arrays of an ActionChunk; raises ValueError when the field lengths disagree."""
    width = len(msg.names)
    values = np.asarray(msg.values, dtype=np.float64)
    if len(msg.relative) != width or len(msg.anchor) != width or values.size != msg.horizon * width:
        raise ValueError(f"ActionChunk {msg.chunk_id}: {width} names, {len(msg.relative)} relative flags, "
                         f"{len(msg.anchor)} anchors, {values.size} values for horizon {msg.horizon}")
    return Chunk(t_obs_ns=stamp_to_ns(msg.header.stamp), embodiment=msg.embodiment, session_id=msg.session_id,
                 chunk_id=msg.chunk_id, names=tuple(msg.names), relative=np.asarray(msg.relative, dtype=bool),
                 anchor=np.asarray(msg.anchor, dtype=np.float64), values=values.reshape(msg.horizon, width),
                 dt=msg.dt, latency=msg.latency)
