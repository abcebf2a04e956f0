"""The image path of the model: centre crop, resize, 2 x 2 mosaic (facts §1.7, §10; bit-exact).

Per view, as the checkpoint's eval transforms do (facts §1.7 steps 1-3, 5):

1. the input must have the checkpoint's resolution (``cameras[].resolution``); a camera with another
   size is first resized to it here, with the resize of step 3 (the reference asserts instead, facts
   §8 item 4; aspect ratio is not kept);
2. centre crop to ``(int(H * crop_scale), int(W * crop_scale))``, e.g. 180x320 -> 171x304,
   480x640 -> 456x608. The offset is ``int(round((H - h) / 2))`` with Python's round (half to even),
   which is what torchvision's ``CenterCrop`` computes (``_center_crop_compute_crop_anchor``), the
   eval crop of ``VideoCrop``: 180 -> 171 starts at row 4 (4.5 rounds to 4), 320 -> 304 at column 8;
3. resize to ``image.view_size`` (176x320) exactly as the reference does (facts §10): float32 ``k / 255``,
   torchvision's antialiased bilinear ``Resize``, x 255 and truncation, bit for bit and fast
   (:mod:`dreamzero_embodiments.resize`, which explains how).

Then one (2h, 2w) = 352x640 mosaic per time step, laid out by ``image.mosaic`` (facts §1.7): a cell
with ``cols: 2`` widens its view 2x by nearest-neighbour column duplication (out column 2j and 2j+1 =
view column j), cells no view covers stay black. DROID: wrist widened on top, exterior 1 bottom-left,
exterior 2 bottom-right; AgiBot and YAM: [view0 | view2] over [view1 | black]. A spec with a single
camera passes the view through unchanged, as the reference does with 1 view; no shipped robot has
one, so that branch is untested against the reference.

Pure: arrays in, arrays out. The resize is numpy and scipy; OpenCV widens the DROID wrist cell in
:func:`stitch` (never torch or ROS).

Dimensions: T time steps, H x W camera pixels, h x w = ``image.view_size``, 3 RGB channels.
"""
from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from dreamzero_embodiments.resize import check_image, resize_frames_into, resize_to
from dreamzero_embodiments.spec import EmbodimentSpec

__all__ = ["center_crop", "crop_offsets", "crop_size", "prepare_view", "resize_to", "stitch", "stitch_frames"]

def crop_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(int(height * scale), int(width * scale)): the reference's eval crop size (facts §1.7 step 2).

    Raises:
        ValueError: scale outside (0, 1] or a crop of zero pixels.
    """
    if not 0 < scale <= 1:
        raise ValueError(f"crop scale must be in (0, 1], got {scale}")
    size = (int(height * scale), int(width * scale))
    if min(size) < 1:
        raise ValueError(f"crop of {height}x{width} at scale {scale} is empty")
    return size


def crop_offsets(height: int, width: int, crop_height: int, crop_width: int) -> tuple[int, int]:
    """(top, left) of a centred crop: int(round((H - h) / 2)), half to even as torchvision computes it."""
    return int(round((height - crop_height) / 2.0)), int(round((width - crop_width) / 2.0))


def center_crop(image: np.ndarray, scale: float) -> np.ndarray:
    """Centred crop of size (int(scale H), int(scale W)) (facts §1.7 step 2; offsets: :func:`crop_offsets`).

    Args:
        image: uint8[..., H, W, 3] (one image or a batch of frames).
        scale: crop scale in (0, 1] (``image.crop_scale``).

    Returns:
        uint8[..., h, w, 3], a view on ``image`` (no copy).

    Raises:
        ValueError: fewer than 3 dimensions or a scale outside (0, 1].
    """
    if image.ndim < 3:
        raise ValueError(f"center_crop: expected [..., H, W, C], got shape {image.shape}")
    height, width = image.shape[-3:-1]
    crop_h, crop_w = crop_size(height, width, scale)
    top, left = crop_offsets(height, width, crop_h, crop_w)
    return image[..., top:top + crop_h, left:left + crop_w, :]


def prepare_view(image: np.ndarray, checkpoint_resolution: tuple[int, int], crop_scale: float,
                 view_size: tuple[int, int]) -> np.ndarray:
    """One camera frame to one mosaic cell: resize to the checkpoint resolution if needed, crop, resize.

    Both resizes are :func:`resize_to` (module docstring, steps 1-3).

    Args:
        image: uint8[H, W, 3] RGB.
        checkpoint_resolution: (height, width) the checkpoint expects (``cameras[].resolution``).
        crop_scale: ``image.crop_scale``. view_size: ``image.view_size`` (h, w).

    Returns:
        uint8[h, w, 3] RGB, C-contiguous (a copy even when no resize is needed).

    Raises:
        ValueError: bad image, size or scale.
    """
    image = resize_to(image, checkpoint_resolution)
    return np.ascontiguousarray(resize_to(center_crop(image, crop_scale), view_size))


def _prepare_frames(frames: np.ndarray, checkpoint_resolution: tuple[int, int], crop_scale: float,
                    out: np.ndarray) -> None:
    """:func:`prepare_view` of each of uint8[T, H, W, 3] ``frames`` into uint8[T, h, w, 3] ``out``, which may be
    a mosaic's cells (rows of pixels contiguous)."""
    if frames.shape[1:3] != tuple(checkpoint_resolution):
        resized = np.empty((frames.shape[0], *checkpoint_resolution, 3), np.uint8)
        resize_frames_into(frames, resized)
        frames = resized
    resize_frames_into(center_crop(frames, crop_scale), out)


def _check_views(names: set[str], spec: EmbodimentSpec, where: str) -> None:
    expected = {camera.key for camera in spec.cameras}
    if names != expected:
        raise ValueError(f"{where}: views must be exactly the cameras of embodiment {spec.name!r}: missing "
                         f"{sorted(expected - names)}, unexpected {sorted(names - expected)}")


def _place(mosaic: np.ndarray, row: int, col: int, cols: int, view: np.ndarray) -> None:
    """Write view uint8[h, w, 3] into cell (row, col) of mosaic uint8[2h, 2w, 3], widened ``cols`` x.

    Widening is nearest-neighbour column duplication: mosaic column col*w + cols*j + k = view column j
    for k < cols. OpenCV's INTER_NEAREST takes source column floor(x / cols), exactly that for an
    integer factor, at about a tenth of the time of numpy's strided 3-byte copies.
    """
    h, w = view.shape[:2]
    if cols > 1:
        view = cv2.resize(view, (w * cols, h), interpolation=cv2.INTER_NEAREST)
    mosaic[row * h:(row + 1) * h, col * w:(col + cols) * w] = view


def stitch(views: Mapping[str, np.ndarray], spec: EmbodimentSpec) -> np.ndarray:
    """Lay prepared views out as the mosaic of ``spec.image.mosaic`` (module docstring).

    Args:
        views: camera key -> uint8[h, w, 3] at ``image.view_size``, one per camera of ``spec``.
        spec: the embodiment.

    Returns:
        uint8[2h, 2w, 3] (352x640), black where no view is placed; with a single camera, its view
        unchanged (uint8[h, w, 3]).

    Raises:
        ValueError: a camera missing or extra, or a view that is not uint8[h, w, 3].
    """
    _check_views(set(views), spec, "stitch")
    h, w = spec.image.view_size
    for key, view in views.items():
        check_image(view, f"stitch: view {key!r}")
        if view.shape != (h, w, 3):
            raise ValueError(f"stitch: view {key!r} must be {h}x{w} (image.view_size), got {view.shape[:2]}")
    if len(spec.cameras) == 1:
        return next(iter(views.values()))
    mosaic = np.zeros((2 * h, 2 * w, 3), dtype=np.uint8)
    for cell in spec.image.mosaic:
        _place(mosaic, cell.row, cell.col, cell.cols, views[cell.view])
    return mosaic


def stitch_frames(frames: Mapping[str, np.ndarray], spec: EmbodimentSpec) -> np.ndarray:
    """Camera frames -> model mosaics: per time step, prepare every view and stitch (the hot path).

    Each camera's frames are resized to its checkpoint resolution if they have another size, centre
    cropped and resized to ``image.view_size`` together, straight into their mosaic cells (a widened
    cell goes through a view first); the result equals :func:`prepare_view` then :func:`stitch` per
    time step.

    Args:
        frames: camera key -> uint8[T, H, W, 3] RGB, oldest first; same T for every camera, H x W may
            differ between cameras.
        spec: the embodiment.

    Returns:
        uint8[T, 2h, 2w, 3] mosaics (T x 352 x 640 x 3); with a single camera uint8[T, h, w, 3].

    Raises:
        ValueError: a camera missing or extra, not uint8[T, H, W, 3], or differing T; names the camera.
    """
    _check_views(set(frames), spec, "stitch_frames")
    steps = set()
    for key, batch in frames.items():
        check_image(batch, f"stitch_frames: camera {key!r}", ndim=4)
        steps.add(batch.shape[0])
    if len(steps) != 1:
        raise ValueError(f"stitch_frames: every camera needs the same number of frames T, got "
                         f"{ {key: batch.shape[0] for key, batch in frames.items()} }")
    (count,) = steps
    h, w = spec.image.view_size
    if len(spec.cameras) == 1:
        key = spec.cameras[0].key
        views = np.empty((count, h, w, 3), np.uint8)
        _prepare_frames(frames[key], spec.camera(key).resolution, spec.image.crop_scale, views)
        return views
    mosaic = np.zeros((count, 2 * h, 2 * w, 3), dtype=np.uint8)
    for cell in spec.image.mosaic:
        resolution = spec.camera(cell.view).resolution
        if cell.cols == 1:  # resized straight into the mosaic's cells
            _prepare_frames(frames[cell.view], resolution, spec.image.crop_scale,
                            mosaic[:, cell.row * h:(cell.row + 1) * h, cell.col * w:(cell.col + 1) * w])
            continue
        views = np.empty((count, h, w, 3), np.uint8)
        _prepare_frames(frames[cell.view], resolution, spec.image.crop_scale, views)
        for t in range(count):
            _place(mosaic[t], cell.row, cell.col, cell.cols, views[t])
    return mosaic
