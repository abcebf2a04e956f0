"""Decoding and encoding of image payloads (dreamzero_embodiments.images; environment.md G9, G16).

Wire bytes are written out by hand here (channel order, row padding), never produced by the code
under test, so a swapped channel or an ignored ``step`` fails a test.
"""
from __future__ import annotations

import array

import cv2
import numpy as np
import pytest

from dreamzero_embodiments.images import (ImageTooLargeError, compressed_image_size, decode_compressed_image,
                                          decode_image, encode_compressed_image, encode_image)

# A 3 x 4 RGB image whose every pixel differs: R = 10 * row + col, G = 100 + col, B = 200 + row.
ROWS, COLS = np.mgrid[0:3, 0:4]
RGB = np.stack([10 * ROWS + COLS, 100 + COLS, 200 + ROWS], axis=-1).astype(np.uint8)
GREY = (RGB[..., 0] * 3).astype(np.uint8)  # H, W
ALPHA = np.full((3, 4, 1), 7, dtype=np.uint8)

# encoding -> (pixels as they sit on the wire H x W x C, expected RGB)
WIRE = {
    "rgb8": (RGB, RGB),
    "bgr8": (RGB[..., ::-1], RGB),
    "rgba8": (np.concatenate([RGB, ALPHA], axis=-1), RGB),
    "bgra8": (np.concatenate([RGB[..., ::-1], ALPHA], axis=-1), RGB),
    "mono8": (GREY[..., None], np.repeat(GREY[..., None], 3, axis=-1)),
}


def _wire_bytes(pixels: np.ndarray, padding: int) -> tuple[int, bytes]:
    """(step, data) with ``padding`` junk bytes (0xEE) after every row."""
    height = pixels.shape[0]
    rows = pixels.reshape(height, -1)
    junk = np.full((height, padding), 0xEE, dtype=np.uint8)
    return rows.shape[1] + padding, np.concatenate([rows, junk], axis=1).tobytes()


@pytest.mark.parametrize("padding", [0, 5])
@pytest.mark.parametrize("encoding", sorted(WIRE))
def test_every_supported_encoding_decodes_to_the_exact_rgb_with_or_without_row_padding(encoding: str,
                                                                                       padding: int) -> None:
    pixels, expected = WIRE[encoding]
    step, data = _wire_bytes(pixels, padding)
    out = decode_image(encoding, 3, 4, step, data)
    assert out.dtype == np.uint8 and out.shape == (3, 4, 3)
    np.testing.assert_array_equal(out, expected)
    assert out.flags.c_contiguous and out.flags.writeable


def test_padded_rgb8_rows_are_cut_at_step_not_at_width() -> None:
    step, data = _wire_bytes(RGB, 6)  # 6 junk bytes = two junk "pixels" a naive reshape would shift in
    out = decode_image("rgb8", 3, 4, step, data)
    np.testing.assert_array_equal(out, RGB)
    assert not (out == 0xEE).any()


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview, lambda b: array.array("B", b),
                                  lambda b: np.frombuffer(b, dtype=np.uint8)])
def test_data_may_be_any_bytes_like_and_the_result_never_aliases_it(wrap) -> None:
    raw = bytearray(_wire_bytes(RGB, 0)[1])
    data = wrap(bytes(raw)) if wrap is not bytearray else raw
    out = decode_image("rgb8", 3, 4, 12, data)
    np.testing.assert_array_equal(out, RGB)
    if isinstance(data, bytearray):
        data[0] = 255  # the message buffer is reused by rclpy: the decoded frame must not change
        assert out[0, 0, 0] == RGB[0, 0, 0]


@pytest.mark.parametrize("encoding", ["rgb16", "16UC1", "yuv422", "bayer_rggb8", "RGB8", ""])
def test_unsupported_encoding_is_refused_naming_it_and_the_supported_ones(encoding: str) -> None:
    with pytest.raises(ValueError, match=rf"encoding '{encoding}' is not supported.*rgb8, bgr8"):
        decode_image(encoding, 3, 4, 12, bytes(36))


def test_data_length_other_than_step_times_height_is_refused_with_both_numbers() -> None:
    with pytest.raises(ValueError, match=r"bgr8.*35 bytes, expected step \* height = 36"):
        decode_image("bgr8", 3, 4, 12, bytes(35))
    with pytest.raises(ValueError, match=r"bgra8.*step must be at least width \* 4 = 16"):
        decode_image("bgra8", 3, 4, 12, bytes(36))
    with pytest.raises(ValueError, match="must be uint8 bytes"):
        decode_image("rgb8", 3, 4, 12, np.zeros(9, dtype=np.float32))


def test_encode_image_gives_rgb8_fields_that_decode_back_exactly() -> None:
    strided = np.repeat(RGB, 2, axis=1)[:, ::2]  # a non-contiguous view of RGB
    fields = encode_image(strided)
    assert (fields["height"], fields["width"], fields["encoding"], fields["is_bigendian"], fields["step"]) == (
        3, 4, "rgb8", 0, 12)
    assert fields["data"] == RGB.tobytes()
    np.testing.assert_array_equal(decode_image(**fields), RGB)


@pytest.mark.parametrize("bad", [np.zeros((3, 4), np.uint8), np.zeros((3, 4, 3), np.float32),
                                 np.zeros((3, 4, 4), np.uint8)])
def test_encoders_refuse_anything_but_uint8_rgb(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match=r"expected uint8\[H, W, 3\]"):
        encode_image(bad)
    with pytest.raises(ValueError, match=r"expected uint8\[H, W, 3\]"):
        encode_compressed_image(bad)


def _scene() -> np.ndarray:
    """uint8[48, 64, 3]: smooth gradients plus a pure red and a pure blue block (colour order shows)."""
    rows, cols = np.mgrid[0:48, 0:64]
    image = np.stack([rows * 4, cols * 3, 255 - cols * 3], axis=-1).astype(np.uint8)
    image[8:24, 8:24] = (255, 0, 0)
    image[8:24, 40:56] = (0, 0, 255)
    return image


def test_png_round_trip_is_exact_and_uses_the_image_transport_format() -> None:
    image = _scene()
    fmt, data = encode_compressed_image(image, "png")
    assert fmt == "rgb8; png compressed bgr8"
    np.testing.assert_array_equal(decode_compressed_image(fmt, data), image)


def test_jpeg_round_trip_is_close_and_keeps_red_red() -> None:
    image = _scene()
    fmt, data = encode_compressed_image(image, "jpeg", quality=95)
    assert fmt == "rgb8; jpeg compressed bgr8"
    out = decode_compressed_image(fmt, data)
    error = np.abs(out.astype(int) - image.astype(int))
    # Lossy, and chroma subsampling smears the block edges; the bulk stays within a few grey levels.
    assert out.shape == image.shape and np.median(error) <= 3 and error.mean() < 5
    red, blue = out[12:20, 12:20].mean(axis=(0, 1)), out[12:20, 44:52].mean(axis=(0, 1))
    assert red[0] > 230 and red[2] < 25 and blue[2] > 230 and blue[0] < 25


@pytest.mark.parametrize("fmt", ["png", "PNG", "bgr8; png compressed bgr8", "rgb8; png compressed bgr8"])
def test_third_party_png_in_opencv_bgr_order_decodes_to_rgb(fmt: str) -> None:
    image = _scene()
    data = cv2.imencode(".png", image[..., ::-1].copy())[1].tobytes()  # what a camera driver publishes
    np.testing.assert_array_equal(decode_compressed_image(fmt, data), image)


def test_compressed_rgb_pixel_order_is_not_swapped() -> None:
    image = _scene()
    data = cv2.imencode(".png", image)[1].tobytes()  # RGB pixels handed straight to the encoder
    np.testing.assert_array_equal(decode_compressed_image("rgb8; png compressed rgb8", data), image)


def test_grey_png_decodes_to_three_equal_channels() -> None:
    grey = _scene()[..., 0]
    out = decode_compressed_image("mono8; png compressed mono8", cv2.imencode(".png", grey)[1].tobytes())
    np.testing.assert_array_equal(out, np.repeat(grey[..., None], 3, axis=-1))


@pytest.mark.parametrize(("fmt", "data", "match"), [
    ("jpeg", b"\xff\xd8 not a jpeg", r"cannot decode 13 bytes as jpeg"),
    ("png", b"", r"cannot decode 0 bytes as png"),
    ("tiff", b"II*\x00", r"format 'tiff' is not supported"),
    ("16UC1; compressedDepth png", b"\x00" * 16, r"depth images are not camera views"),
])
def test_bad_compressed_payloads_are_refused_with_the_reason(fmt: str, data: bytes, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        decode_compressed_image(fmt, data)


def test_encode_compressed_checks_format_and_quality() -> None:
    with pytest.raises(ValueError, match="format 'webp' is not supported"):
        encode_compressed_image(_scene(), "webp")
    with pytest.raises(ValueError, match="quality must be in 0..100, got 101"):
        encode_compressed_image(_scene(), "jpeg", quality=101)


# ------------------------------------------------------------------------------------- size cap
CAP = 4 * 180 * 320  # the policy node's default: 4x a DROID camera's pixels


@pytest.mark.parametrize("codec", ["png", "jpeg"])
def test_an_oversized_compressed_frame_is_refused_from_its_header_before_decoding(codec: str) -> None:
    """Only the header is read: half the body is cut off, which decoding would not survive unscathed."""
    _, data = encode_compressed_image(np.zeros((1000, 1200, 3), np.uint8), codec)
    header_only = data[:len(data) // 2]
    assert compressed_image_size(header_only) == (1000, 1200)
    with pytest.raises(ImageTooLargeError, match=r"1000x1200 = 1200000 pixels is over the cap of 230400"):
        decode_compressed_image(codec, header_only, max_pixels=CAP)
    small = encode_compressed_image(np.zeros((180, 320, 3), np.uint8), codec)[1]
    assert decode_compressed_image(codec, small, max_pixels=CAP).shape == (180, 320, 3)


def test_an_oversized_raw_frame_is_refused_from_its_fields() -> None:
    with pytest.raises(ImageTooLargeError, match=r"8000x8000 = 64000000 pixels"):
        decode_image("rgb8", 8000, 8000, 24000, b"", max_pixels=CAP)


def test_bytes_without_an_image_header_have_no_size() -> None:
    with pytest.raises(ValueError, match="cannot read the image header of 5 bytes"):
        compressed_image_size(b"hello")
