"""Image payloads <-> RGB arrays, without ROS types (environment.md G9, G16).

Owns the pixel side of ``sensor_msgs/Image`` and ``sensor_msgs/CompressedImage``: the ROS layer
(``dreamzero_policy/conversions.py``) passes message fields in and builds messages from what comes
out, so live, replay and record decode identically (STYLE.md items 4, 34). Every decoded image is
``uint8[H, W, 3]`` RGB, C-contiguous and owning its memory (never a view on the message buffer, which
rclpy may reuse).

Why not rosbags-image alone: it ignores ``Image.step``, so a row-padded image is silently mis-shaped,
and it has no numpy -> message direction (environment.md G9). Here rows are cut at ``step`` with
numpy and colours converted with ``cv2.cvtColor`` (OpenCV 5 behaves as 4.x for these calls, G16).

Size cap: both decoders take ``max_pixels`` and refuse a larger image from its declared size (the
``Image`` fields; the PNG/JPEG header, read by Pillow without decoding) before any pixel is touched,
so a 197 kB PNG that would decode to 8000x8000 (2.4 s, 192 MB) costs nothing.

Imports numpy, OpenCV and Pillow only: never rclpy, torch or a ROS message package (tests/test_layering.py).

Dimensions: H rows, W columns of the image; C channels of the wire encoding.
"""
from __future__ import annotations

import array
import io
from typing import NamedTuple, TypedDict

import cv2
import numpy as np
from PIL import Image as PILImage

# Wire encodings of sensor_msgs/Image we decode: channels per pixel, and the cv2 conversion to RGB
# (None: already RGB). All are 8 bits per channel, so byte order (``is_bigendian``) cannot matter.
_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_TO_RGB = {"rgb8": None, "bgr8": cv2.COLOR_BGR2RGB, "rgba8": cv2.COLOR_RGBA2RGB, "bgra8": cv2.COLOR_BGRA2RGB,
           "mono8": cv2.COLOR_GRAY2RGB}
SUPPORTED_ENCODINGS = tuple(_CHANNELS)
COMPRESSED_CODECS = ("jpeg", "png")
_CODEC_ALIASES = {"jpeg": "jpeg", "jpg": "jpeg", "png": "png"}
_EXTENSIONS = {"jpeg": ".jpg", "png": ".png"}

# What rclpy, rosbags and tests hand us as ``data``: bytes-like or a flat uint8 array.
ImageData = bytes | bytearray | memoryview | array.array | np.ndarray


class ImageFields(TypedDict):
    """Fields of an ``sensor_msgs/Image`` (same names), so ``Image(header=..., **fields)`` builds one.

    ``data`` is ``step * height`` bytes, rows of ``width * 3`` RGB bytes without padding.
    """

    height: int
    width: int
    encoding: str
    is_bigendian: int
    step: int
    data: bytes


class CompressedFields(NamedTuple):
    """Fields of a ``sensor_msgs/CompressedImage``: ``format`` as image_transport writes it, and the bytes."""

    format: str
    data: bytes


class ImageTooLargeError(ValueError):
    """An image declares more pixels than the cap; the message gives its size and the cap."""


def _check_size(height: int, width: int, max_pixels: int | None, where: str) -> None:
    if max_pixels is not None and height * width > max_pixels:
        raise ImageTooLargeError(f"{where}: {height}x{width} = {height * width} pixels is over the cap of "
                                 f"{max_pixels} pixels; refused before decoding")


def compressed_image_size(data: ImageData) -> tuple[int, int]:
    """(height, width) a JPEG or PNG declares in its header, read without decoding the pixels.

    Raises:
        ValueError: the bytes have no readable image header.
    """
    try:
        with PILImage.open(io.BytesIO(bytes(_as_bytes_view(data, "CompressedImage")))) as header:
            width, height = header.size
    except (OSError, PILImage.DecompressionBombError) as error:  # bombs beyond Pillow's own limit: no size
        raise ValueError(f"CompressedImage: cannot read the image header of {len(data)} bytes: {error}") from error
    return height, width


def _as_bytes_view(data: ImageData, where: str) -> np.ndarray:
    """uint8[N] view on ``data`` without copying; raises ValueError for a non-uint8 array."""
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8:
            raise ValueError(f"{where}: data must be uint8 bytes, got an array of dtype {data.dtype}")
        return data.reshape(-1)
    return np.frombuffer(data, dtype=np.uint8)


def decode_image(encoding: str, height: int, width: int, step: int, data: ImageData,
                 is_bigendian: bool = False, max_pixels: int | None = None) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/Image`` to RGB.

    Row padding is honoured: ``step`` may exceed ``width * C``; the extra bytes at the end of each row
    are skipped (rosbags-image does not do this, environment.md G9). ``mono8`` is replicated to three
    equal channels; the alpha of ``rgba8``/``bgra8`` is dropped.

    Args:
        encoding: one of ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8``, ``mono8``.
        height: rows H. width: columns W. step: bytes per row, >= W * C.
        data: ``step * H`` bytes (bytes, bytearray, memoryview, array.array or uint8[N]).
        is_bigendian: ignored: every supported encoding has one byte per channel.
        max_pixels: refuse an image whose ``H * W`` is larger (None: no cap).

    Returns:
        uint8[H, W, 3] RGB, a new C-contiguous array (never a view on ``data``).

    Raises:
        ImageTooLargeError: more than ``max_pixels`` pixels.
        ValueError: unsupported encoding (lists the supported ones), non-positive size, ``step`` below
            ``W * C``, or a data length other than ``step * H``; the message names the encoding.
    """
    del is_bigendian  # one byte per channel in every supported encoding
    if encoding not in _CHANNELS:
        raise ValueError(f"Image encoding {encoding!r} is not supported; expected one of "
                         f"{', '.join(SUPPORTED_ENCODINGS)} (convert on the camera side, e.g. to rgb8)")
    channels = _CHANNELS[encoding]
    where = f"Image ({encoding}, {height}x{width}, step {step})"
    if height <= 0 or width <= 0:
        raise ValueError(f"{where}: height and width must be positive")
    _check_size(height, width, max_pixels, where)
    if step < width * channels:
        raise ValueError(f"{where}: step must be at least width * {channels} = {width * channels} bytes")
    flat = _as_bytes_view(data, where)
    if flat.size != step * height:
        raise ValueError(f"{where}: data has {flat.size} bytes, expected step * height = {step * height}")
    rows = flat.reshape(height, step)[:, :width * channels]  # drops the row padding; still a view
    pixels = rows.reshape(height, width, channels)  # H, W, C
    conversion = _TO_RGB[encoding]
    if conversion is None:
        return pixels.copy()  # C-contiguous, owns its memory
    if channels == 1:
        pixels = pixels[..., 0]  # cv2 wants H x W for one channel
    return cv2.cvtColor(pixels, conversion)  # new array; cv2 accepts the padded row stride


def _codec(format: str) -> tuple[str, bool]:
    """(codec, stored_as_rgb) of a CompressedImage ``format`` string.

    Formats as ROS publishes them: ``jpeg``, ``png``, or image_transport's
    ``"<encoding>; <codec> compressed <pixel order>"`` (e.g. ``rgb8; jpeg compressed bgr8``). OpenCV's
    encoder takes BGR, so the compressed pixels are BGR unless the order after ``compressed`` is RGB.
    """
    words = format.strip().lower().replace(";", " ").split()
    if "compresseddepth" in words:
        raise ValueError(f"CompressedImage format {format!r}: depth images are not camera views; expected "
                         f"{' or '.join(COMPRESSED_CODECS)}")
    codecs = [_CODEC_ALIASES[w] for w in words if w in _CODEC_ALIASES]
    if not codecs:
        raise ValueError(f"CompressedImage format {format!r} is not supported; expected "
                         f"{' or '.join(COMPRESSED_CODECS)} (e.g. 'jpeg' or 'rgb8; jpeg compressed bgr8')")
    order = words[words.index("compressed") + 1:] if "compressed" in words else []
    return codecs[0], bool(order) and order[0].startswith("rgb")


def decode_compressed_image(format: str, data: ImageData, max_pixels: int | None = None) -> np.ndarray:
    """Decode the fields of a ``sensor_msgs/CompressedImage`` (jpeg or png) to RGB.

    Args:
        format: ``jpeg``, ``jpg``, ``png`` or image_transport's ``"rgb8; jpeg compressed bgr8"`` form.
        data: the compressed bytes.
        max_pixels: refuse an image whose header declares more pixels (None: no cap).

    Returns:
        uint8[H, W, 3] RGB (a grey image comes back as three equal channels; alpha is dropped).

    Raises:
        ImageTooLargeError: the header declares more than ``max_pixels`` pixels.
        ValueError: unsupported format (compressedDepth, tiff, ...) or bytes OpenCV cannot decode;
            the message names the format and the byte count.
    """
    codec, stored_as_rgb = _codec(format)
    flat = _as_bytes_view(data, f"CompressedImage ({format})")
    if max_pixels is not None:
        _check_size(*compressed_image_size(flat), max_pixels, f"CompressedImage ({format})")
    # IMREAD_COLOR gives the stored order; IMREAD_COLOR_RGB swaps it while decoding (the same values as a
    # cvtColor afterwards, without that extra pass over the image)
    flag = cv2.IMREAD_COLOR if stored_as_rgb else cv2.IMREAD_COLOR_RGB
    try:
        decoded = cv2.imdecode(flat, flag) if flat.size else None  # H, W, 3 RGB
    except cv2.error:  # some corrupt streams raise instead of returning None
        decoded = None
    if decoded is None:
        raise ValueError(f"CompressedImage format {format!r}: cannot decode {flat.size} bytes as {codec}")
    return decoded


def _check_rgb(rgb: np.ndarray, where: str) -> None:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        shape = getattr(rgb, "shape", None)
        dtype = getattr(rgb, "dtype", type(rgb).__name__)
        raise ValueError(f"{where}: expected uint8[H, W, 3] RGB, got {dtype} with shape {shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ValueError(f"{where}: image is empty, shape {rgb.shape}")


def encode_image(rgb: np.ndarray) -> ImageFields:
    """The fields of an rgb8 ``sensor_msgs/Image`` for an RGB array (environment.md G9: no helper exists).

    Args:
        rgb: uint8[H, W, 3] RGB, any strides.

    Returns:
        :class:`ImageFields` with ``encoding='rgb8'``, ``is_bigendian=0``, ``step = W * 3`` and
        ``data`` the H * W * 3 bytes in row order.

    Raises:
        ValueError: ``rgb`` is not uint8[H, W, 3].
    """
    _check_rgb(rgb, "encode_image")
    height, width = rgb.shape[:2]
    return ImageFields(height=height, width=width, encoding="rgb8", is_bigendian=0, step=width * 3,
                       data=np.ascontiguousarray(rgb).tobytes())


def encode_compressed_image(rgb: np.ndarray, format: str = "jpeg", quality: int = 90) -> CompressedFields:
    """The fields of a ``sensor_msgs/CompressedImage`` for an RGB array.

    The format string follows image_transport (``rgb8; jpeg compressed bgr8``): the source encoding,
    the codec, and the pixel order handed to the encoder (BGR, OpenCV's order), so image_transport
    subscribers and :func:`decode_compressed_image` both restore RGB.

    Args:
        rgb: uint8[H, W, 3] RGB.
        format: ``jpeg`` (or ``jpg``) or ``png``.
        quality: JPEG quality 0..100 (ignored for png, which is lossless).

    Returns:
        :class:`CompressedFields` ``(format, data)``; unpacks as a tuple.

    Raises:
        ValueError: ``rgb`` is not uint8[H, W, 3], unknown format, quality outside 0..100.
    """
    _check_rgb(rgb, "encode_compressed_image")
    codec = _CODEC_ALIASES.get(format.strip().lower())
    if codec is None:
        raise ValueError(f"encode_compressed_image: format {format!r} is not supported; expected "
                         f"{' or '.join(COMPRESSED_CODECS)}")
    if not 0 <= quality <= 100:
        raise ValueError(f"encode_compressed_image: quality must be in 0..100, got {quality}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if codec == "jpeg" else []
    ok, encoded = cv2.imencode(_EXTENSIONS[codec], cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:  # OpenCV reports no reason; the inputs were already checked
        raise ValueError(f"encode_compressed_image: OpenCV could not encode a {rgb.shape} image as {codec}")
    return CompressedFields(format=f"rgb8; {codec} compressed bgr8", data=encoded.tobytes())
