"""The image path of the model: centre crop, resize, 2 x 2 mosaic (facts §1.7, §10; bit-exact).

Per view, as the checkpoint's eval transforms do (facts §1.7 steps 1-3, 5):

1. the input must have the checkpoint's resolution (``cameras[].resolution``); a camera with another
   size is first resized to it here, with the resize of step 3 (the reference asserts instead, facts
   §8 item 4; aspect ratio is not kept);
2. centre crop to ``(int(H * crop_scale), int(W * crop_scale))``, e.g. 180x320 -> 171x304,
   480x640 -> 456x608. The offset is ``int(round((H - h) / 2))`` with Python's round (half to even),
   which is what torchvision's ``CenterCrop`` computes (``_center_crop_compute_crop_anchor``), the
   eval crop of ``VideoCrop``: 180 -> 171 starts at row 4 (4.5 rounds to 4), 320 -> 304 at column 8;
3. resize to ``image.view_size`` (176x320) exactly as the reference does (facts §10): ``VideoToTensor``
   makes float32 ``k / 255``, torchvision ``Resize(bilinear, antialias=True)`` runs ATen's
   ``_upsample_bilinear2d_aa`` on it, and ``VideoToNumpy`` multiplies by 255 and truncates to uint8
   (no rounding, no clamping). :func:`resize_to` reproduces that bit for bit: 0 grey levels from
   ``torch.nn.functional.interpolate(bilinear, antialias=True)`` on every test image
   (tests/embodiments/test_resize.py). Pillow's BILINEAR, used before, has the same filter but rounds
   its fixed-point result: 1 grey level off on about half the values. Truncation also means a flat
   area does not stay flat when shrunk: the float32 result often lands a hair below k / 255, so a flat
   456x608 crop of 255 comes out 254 on 30 % of its values, in the reference and here.

How the float32 rounding is matched. The filter is separable: width pass first, then height, as ATen
orders them; a pass whose size does not change is skipped. Per output index i of an axis, ATen computes
in float32, with some double temporaries (:func:`_taps`): ``scale = in / out``, ``support = scale`` when
shrinking else 1, ``center = scale * (i + 0.5)``, taps ``xmin = max(int(center - support + 0.5), 0)`` up
to ``min(int(center + support + 0.5), in)``, tap weight ``max(0, 1 - |j + xmin - center + 0.5| /
scale)`` (no division when enlarging), normalised by their float32 sum (:func:`resize_weights`). It sums
in tap order, ``acc = x0 * w0`` then ``acc += xj * wj``, and the float32 rounding of those additions
decides the truncated grey level. In torch 2.13's AVX2 and AVX-512 CPU kernels (what x86-64 hosts run)
the compiler fuses each ``acc += xj * wj`` into one fused multiply-add (one rounding), except for
whole blocks of 4 taps from tap 1 on, whose products are rounded before they are added: with 2 to 4
taps all are fused; with 5, taps 1-4 are rounded; with 6, taps 1-4 rounded and 5 fused. Measured bit
for bit, not read from the source; torch's fallback kernel (``ATEN_CPU_CAPABILITY=default``, no fused
multiply-add) rounds every product and differs from the other two on about 1 value in 10^4.
Here a rounded step is float32 numpy arithmetic; a fused step is computed in float64 (where the
product of two float32 is exact) and rounded once to float32. That float64 sum is itself rounded when
it needs more than 53 bits, and then differs from a true fused multiply-add only if it lands exactly
halfway between two float32 values (about 2^-29 of such sums); no case showed up in the tests.

Why gathers rather than matrix products: each output has a band of 2 to 7 taps, so a dense
``H_out x H_in`` product does about 100 times the work, and BLAS sums in its own order with its own
fusing, which moves the truncated grey level on some values. The price of exactness is speed: about
2x Pillow's time for a DROID view and 4x for an AgiBot view (bench/RESULTS.md, "Host overhead").

Then one (2h, 2w) = 352x640 mosaic per time step, laid out by ``image.mosaic`` (facts §1.7): a cell
with ``cols: 2`` widens its view 2x by nearest-neighbour column duplication (out column 2j and 2j+1 =
view column j), cells no view covers stay black. DROID: wrist widened on top, exterior 1 bottom-left,
exterior 2 bottom-right; AgiBot and YAM: [view0 | view2] over [view1 | black]. A spec with a single
camera passes the view through unchanged, as the reference does with 1 view; no shipped robot has
one, so that branch is untested against the reference.

Pure: arrays in, arrays out. The resize is numpy only; OpenCV widens the DROID wrist cell in
:func:`stitch` (never torch or ROS). The only state is the bounded cache of read-only weight tables.

Dimensions: T time steps, H x W camera pixels, h x w = ``image.view_size``, 3 RGB channels, K taps.
"""
from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec

# ATen's float32 kernel rounds the products of taps 1-4, 5-8, ... before adding them when an output
# has that many taps, and fuses the rest (module docstring; measured, torch 2.13 CPU, AVX2 and AVX-512).
_ROUNDED_BLOCK = 4
_CACHE_SIZE = 64  # size pairs kept; a deployment uses a handful (view, checkpoint and mosaic sizes)
_STRIP_VALUES = 1 << 15  # float32 values per work array of a pass (128 KiB): fastest of 8 Ki to 512 Ki, dev VM


def _check_image(image: np.ndarray, where: str, ndim: int = 3) -> None:
    shape = getattr(image, "shape", None)
    if (not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] != 3
            or 0 in image.shape):
        names = "H, W, 3" if ndim == 3 else "T, H, W, 3"
        raise ValueError(f"{where}: expected uint8[{names}] RGB, got {getattr(image, 'dtype', type(image).__name__)} "
                         f"with shape {shape}")


def _check_size(size: tuple[int, int], where: str) -> tuple[int, int]:
    if len(size) != 2 or not all(isinstance(v, (int, np.integer)) and v > 0 for v in size):
        raise ValueError(f"{where}: size must be (height, width) of positive ints, got {size!r}")
    return int(size[0]), int(size[1])


# ----------------------------------------------------------------------------------------- resize
@dataclass(frozen=True)
class _Taps:
    """One axis of the resize: output i = sum over j < count[i] of input[first[i] + j] * weights[i, j]."""

    first: np.ndarray    # int64[n_out], first input index (ATen's xmin)
    count: np.ndarray    # int64[n_out], taps used (xsize); weights beyond it are 0
    weights: np.ndarray  # float32[n_out, K], normalised


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _taps(size_in: int, size_out: int) -> _Taps:
    """ATen's antialiased bilinear taps for float32 (module docstring), with its float/double mixing.

    Each line mirrors one statement of ``_compute_indices_min_size_weights_aa``: float32 variables,
    ``+ 0.5`` and ``* invscale`` in double, the filter argument and result back in float32.
    """
    f32, f64 = np.float32, np.float64
    scale = f32(size_in) / f32(size_out)
    support = scale if scale >= 1 else f32(1)
    width = int(np.ceil(support)) * 2 + 1  # K: the most taps an output can have
    invscale = f64(f32(1 / f64(scale))) if scale >= 1 else 1.0
    center = (f64(scale) * (np.arange(size_out) + 0.5)).astype(f32)
    first = np.maximum(((center - support).astype(f64) + 0.5).astype(np.int64), 0)
    count = np.clip(np.minimum(((center + support).astype(f64) + 0.5).astype(np.int64), size_in) - first, 0, width)
    weights = np.zeros((size_out, width), f32)
    total = np.zeros(size_out, f32)
    for j in range(width):
        x = np.abs(((((first + j).astype(f32) - center).astype(f64) + 0.5) * invscale).astype(f32))
        weights[:, j] = np.where((x < 1) & (j < count), f32(1) - x, f32(0))
        total += weights[:, j]  # float32, in tap order; adding the zeros beyond count changes nothing
    used = total != 0
    weights[used] /= total[used, None]
    for array in (first, count, weights):
        array.setflags(write=False)
    return _Taps(first, count, weights)


def resize_weights(size_in: int, size_out: int) -> np.ndarray:
    """The resize of one axis as a matrix: out = weights @ in (float32; the band of taps, zeros elsewhere).

    For inspection and tests; :func:`resize_to` applies the band directly, in the reference's order.

    Returns:
        float32[size_out, size_in]; row i holds the normalised triangle weights of output i.
    """
    taps = _taps(int(size_in), int(size_out))
    matrix = np.zeros((size_out, size_in), np.float32)
    for i, (first, count) in enumerate(zip(taps.first, taps.count)):
        matrix[i, first:first + count] = taps.weights[i, :count]
    return matrix


@dataclass(frozen=True)
class _Group:
    """Outputs of one axis whose taps round alike: taps 1 .. rounded_until - 1 rounded, the rest fused."""

    outputs: np.ndarray            # int64[G * C], positions along the axis (C interleaved channels)
    index: tuple[np.ndarray, ...]  # per tap: int64[G * C] input positions
    w32: tuple[np.ndarray, ...]    # per tap: float32 weights shaped to broadcast along the axis
    w64: tuple[np.ndarray, ...]    # the same weights in float64, for the fused taps
    rounded_until: int


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _plan(size_in: int, size_out: int, channels: int, axis: int) -> tuple[_Group, ...]:
    """The taps of one axis of a 2-D array as gather indices and weights, grouped by rounding pattern.

    ``channels`` > 1: the axis interleaves that many channels (a row of RGB pixels, ``W * 3``).
    """
    taps = _taps(size_in, size_out)
    count = taps.count.astype(np.int64)
    blocks = _ROUNDED_BLOCK * ((np.maximum(count, 1) - 1) // _ROUNDED_BLOCK)  # taps 1..blocks are rounded
    channel = np.arange(channels)
    groups = []
    for rounded in np.unique(blocks):
        members = np.flatnonzero(blocks == rounded)
        index, w32, w64 = [], [], []
        for j in range(max(int(count[members].max()), 1)):
            source = np.minimum(taps.first[members] + j, size_in - 1)  # beyond count: weight 0, any index
            weight = np.repeat(taps.weights[members, j], channels)
            index.append((source[:, None] * channels + channel).ravel())
            w32.append(weight if axis == 1 else weight[:, None])
            w64.append(w32[-1].astype(np.float64))
        outputs = (members[:, None] * channels + channel).ravel()
        for array in (outputs, *index, *w32, *w64):
            array.setflags(write=False)
        groups.append(_Group(outputs, tuple(index), tuple(w32), tuple(w64), int(rounded) + 1))
    return tuple(groups)


def _take(x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    """x[index] along axis 0 or 1 of a 2-D array (a new array)."""
    return x[index] if axis == 0 else x[:, index]


def _resample(x: np.ndarray, groups: tuple[_Group, ...], axis: int) -> np.ndarray:
    """One pass along ``axis`` (0 or 1) of float32[rows, cols] ``x``, rounded as the reference.

    Numpy's mixed float32/float64 arithmetic is slower than casting first, hence the ``astype`` calls.

    Returns:
        float32[rows, cols] with the axis resized (a new array).
    """
    out = None
    wide = None  # x in float64, made once when the fused taps gather more values than x holds
    for group in groups:
        acc = _take(x, group.index[0], axis)
        acc *= group.w32[0]  # float32 product: ATen's first term
        fused = len(group.index) - min(group.rounded_until, len(group.index))
        if wide is None and fused * group.index[0].size > x.shape[axis]:
            wide = x.astype(np.float64)
        for j in range(1, len(group.index)):
            if j < group.rounded_until:  # product rounded to float32, then added
                term = _take(x, group.index[j], axis)
                term *= group.w32[j]
                acc += term
            else:  # fused multiply-add: exact float64 product, float64 sum, one rounding to float32
                term = _take(wide, group.index[j], axis) if wide is not None else _take(
                    x, group.index[j], axis).astype(np.float64)
                term *= group.w64[j]
                term += acc.astype(np.float64)
                acc = term.astype(np.float32)
        if len(groups) == 1:
            return acc
        if out is None:
            shape = list(x.shape)
            shape[axis] = sum(g.outputs.size for g in groups)
            out = np.empty(shape, np.float32)
        if axis == 0:
            out[group.outputs] = acc
        else:
            out[:, group.outputs] = acc
    return out


def _resize_frames(frames: np.ndarray, size: tuple[int, int], out: np.ndarray | None = None) -> np.ndarray:
    """The reference resize of uint8[T, H, W, 3] frames to ``size`` (module docstring, step 3).

    Per frame: the width pass in strips of rows, then the height pass in strips of columns; a strip's
    work arrays stay in cache and are freed and reused (fresh frame-sized arrays cost page faults).

    Args:
        frames: uint8[T, H, W, 3], any strides.
        size: (h, w).
        out: uint8[T, h, w, 3] to write into, or uint8[T, h, w, k, 3] to write each pixel k times
            (the column duplication of a widened mosaic cell); any strides. None: a new array.

    Returns:
        ``out``, or a new uint8[T, h, w, 3].
    """
    count, height, width = frames.shape[:3]
    out_h, out_w = size
    if out is None:
        out = np.empty((count, out_h, out_w, 3), np.uint8)
    targets = out[..., None, :] if out.ndim == 4 else out  # T, h, w, k, 3
    horizontal = _plan(width, out_w, 3, 1) if out_w != width else None
    vertical = _plan(height, out_h, 1, 0) if out_h != height else None
    rows = max(1, _STRIP_VALUES // (out_w * 3))
    pixels = max(1, _STRIP_VALUES // (3 * out_h))
    between = np.empty((height, out_w * 3), np.float32)  # after the width pass
    for frame, target in zip(frames, targets):
        for top in range(0, height, rows):
            # VideoToTensor: float32 k / 255 (a division, as torch computes it), then the width pass
            x = np.divide(frame[top:top + rows].reshape(-1, width * 3), np.float32(255), dtype=np.float32)
            between[top:top + rows] = _resample(x, horizontal, 1) if horizontal else x
        for left in range(0, out_w, pixels):
            y = between[:, 3 * left:3 * (left + pixels)]
            y = _resample(y, vertical, 0) if vertical else y * np.float32(1)
            y *= np.float32(255)  # VideoToNumpy: float32 product, truncated by the cast
            np.copyto(target[:, left:left + pixels], y.reshape(out_h, -1, 1, 3), casting="unsafe")
    return out


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference's bilinear antialiased resize with truncation (module docstring, step 3).

    Args:
        image: uint8[H, W, 3] RGB.
        size: (height, width) of the result, pixels.

    Returns:
        uint8[height, width, 3]; ``image`` itself (no copy) when it already has that size (the
        reference's float round trip k / 255 * 255 gives k back for every k).

    Raises:
        ValueError: ``image`` is not uint8[H, W, 3] or ``size`` is not two positive ints.
    """
    _check_image(image, "resize_to")
    size = _check_size(size, "resize_to")
    if image.shape[:2] == size:
        return image
    return _resize_frames(image[None], size)[0]


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
                    view_size: tuple[int, int], out: np.ndarray) -> None:
    """:func:`prepare_view` of each of uint8[T, H, W, 3] ``frames``, written into ``out`` (see _resize_frames)."""
    if frames.shape[1:3] != tuple(checkpoint_resolution):
        frames = _resize_frames(frames, checkpoint_resolution)
    _resize_frames(center_crop(frames, crop_scale), view_size, out)


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
        _check_image(view, f"stitch: view {key!r}")
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

    Each frame is resized to its camera's checkpoint resolution if it has another size, centre
    cropped, resized to ``image.view_size`` and written straight into its mosaic cell (widened by
    writing each pixel ``cols`` times); the result equals :func:`prepare_view` then :func:`stitch` per
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
        _check_image(batch, f"stitch_frames: camera {key!r}", ndim=4)
        steps.add(batch.shape[0])
    if len(steps) != 1:
        raise ValueError(f"stitch_frames: every camera needs the same number of frames T, got "
                         f"{ {key: batch.shape[0] for key, batch in frames.items()} }")
    (count,) = steps
    h, w = spec.image.view_size
    single = len(spec.cameras) == 1
    mosaic = np.zeros((count, h, w, 3) if single else (count, 2 * h, 2 * w, 3), dtype=np.uint8)
    cells = [(c.view, c.row, c.col, c.cols) for c in spec.image.mosaic] if not single else [
        (spec.cameras[0].key, 0, 0, 1)]
    for key, row, col, cols in cells:
        cell = mosaic[:, row * h:(row + 1) * h, col * w:(col + cols) * w].reshape(count, h, w, cols, 3)
        _prepare_frames(frames[key], spec.camera(key).resolution, spec.image.crop_scale, (h, w), cell)
    return mosaic
