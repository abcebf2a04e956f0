"""The reference's resize, bit for bit and fast (facts §1.7 step 3, §10).

The reference: ``VideoToTensor`` makes float32 ``k / 255``, torchvision ``Resize(bilinear,
antialias=True)`` runs ATen's ``_upsample_bilinear2d_aa`` on it, and ``VideoToNumpy`` multiplies by 255
and truncates to uint8 (no rounding, no clamping). :func:`resize_to` reproduces that bit for bit: 0 grey
levels from ``torch.nn.functional.interpolate(bilinear, antialias=True)`` on every test image
(tests/embodiments/test_resize.py). Pillow's BILINEAR, used before issue 14, has the same filter but
rounds its fixed-point result: 1 grey level off on about half the values. Truncation also means a flat
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

Fast, and still exact: approximate everywhere, redo the few values truncation could flip. Repeating the
reference's rounding for every value takes 10 to 15 numpy passes per output and axis (the exact path,
:func:`_exact_frames`). Instead each frame is first resized approximately, on the grey levels
themselves, by two sparse products with the same float32 weights (height, then width; scipy's CSR
product sums the band in float32). Both that result ``a`` and the reference's ``255 * r`` are sums of
nonnegative terms with weights summing to 1, each made with at most ``K_w + K_h + 3`` float32 roundings
(``K`` = the most taps of an axis), each off by at most half an ulp of 256 grey levels (2^-16): so
``|a - 255 r| <= 2 (K_w + K_h + 3) 2^-16`` grey levels. Where ``a`` lies farther than twice that bound
(:func:`_margin`) from every integer, ``trunc(a)`` is the reference's value; the others (about 0.2 % of
the values of a camera image with sensor noise, more on flat or smooth areas, whose values are often
exactly k / 255) are recomputed exactly, one by one, with the reference's rounding (:func:`_exact_values`).
A frame where more than ``_FALLBACK_FRACTION`` of the values need that is resized by the exact path
instead, which is then cheaper. Each thread keeps its work arrays per size pair between calls
(:func:`_resizer`) and the sparse products write into them (:func:`_product`): fresh frame-sized arrays cost
page faults, which on a VM cost more than the arithmetic. The results are written straight into the caller's
array, which may be a mosaic's cells. Timing: bench/host_bench.py, bench/RESULTS.md.

Why not dense matrix products: each output has a band of 2 to 7 taps, so a dense ``H_out x H_in``
product does about 100 times the work, and BLAS sums in its own order with its own fusing, which moves
the truncated grey level on some values (the margin above would catch that, but at that cost).

Pure: arrays in, arrays out; numpy, scipy and OpenCV only (never torch or ROS). The only state is the
bounded caches of read-only weight tables and sparse matrices, and each thread's work arrays.

Dimensions: T frames, H x W input pixels, h x w output pixels, 3 RGB channels, K taps.
"""
from __future__ import annotations

import collections
import functools
import threading
from dataclasses import dataclass

import cv2
import numpy as np
import scipy.sparse
from scipy.sparse._sparsetools import csr_matvecs

# ATen's float32 kernel rounds the products of taps 1-4, 5-8, ... before adding them when an output
# has that many taps, and fuses the rest (module docstring; measured, torch 2.13 CPU, AVX2 and AVX-512).
_ROUNDED_BLOCK = 4
_CACHE_SIZE = 64  # size pairs kept; a deployment uses a handful (view, checkpoint and mosaic sizes)
_STRIP_VALUES = 1 << 15  # float32 values per work array of an exact pass (128 KiB): fastest of 8 Ki to 512 Ki, dev VM
# A frame with more values near an integer than this is resized by the exact path: per value the recount costs
# about 0.3 to 1 us, the exact path 2 to 7 ms per 176x320 view (dev VM), so they cost alike near 2 %.
_FALLBACK_FRACTION = 0.02
_ULP_256 = 2.0 ** -16  # float32 ulp at 256 grey levels: twice the largest rounding error of one step


def check_image(image: np.ndarray, where: str, ndim: int = 3) -> None:
    """Raise ValueError naming ``where`` unless ``image`` is uint8[H, W, 3] (ndim 3) or uint8[T, H, W, 3]."""
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


# ------------------------------------------------------------------------------- the reference's taps
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
    width = int(np.ceil(support)) * 2 + 1  # the most taps an output can have
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
    weights = np.ascontiguousarray(weights[:, :max(int(count.max()), 1)])  # K: the most taps any output uses
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


def _exact_frames(frames: np.ndarray, out: np.ndarray) -> None:
    """The reference resize of uint8[T, H, W, 3] frames into uint8[T, h, w, 3] ``out`` (any strides),
    every value computed in the reference's order.

    Per frame: the width pass in strips of rows, then the height pass in strips of columns; a strip's
    work arrays stay in cache and are freed and reused (fresh frame-sized arrays cost page faults).
    """
    height, width = frames.shape[1:3]
    out_h, out_w = out.shape[1:3]
    horizontal = _plan(width, out_w, 3, 1) if out_w != width else None
    vertical = _plan(height, out_h, 1, 0) if out_h != height else None
    rows = max(1, _STRIP_VALUES // (out_w * 3))
    pixels = max(1, _STRIP_VALUES // (3 * out_h))
    between = np.empty((height, out_w * 3), np.float32)  # after the width pass
    for frame, target in zip(frames, out):
        for top in range(0, height, rows):
            # VideoToTensor: float32 k / 255 (a division, as torch computes it), then the width pass
            x = np.divide(frame[top:top + rows].reshape(-1, width * 3), np.float32(255), dtype=np.float32)
            between[top:top + rows] = _resample(x, horizontal, 1) if horizontal else x
        for left in range(0, out_w, pixels):
            y = between[:, 3 * left:3 * (left + pixels)]
            y = _resample(y, vertical, 0) if vertical else y * np.float32(1)
            y *= np.float32(255)  # VideoToNumpy: float32 product, truncated by the cast
            np.copyto(target[:, left:left + pixels], y.reshape(out_h, -1, 3), casting="unsafe")


# ------------------------------------------------------------------------------------ the fast path
def _axis_taps(size_in: int, size_out: int) -> _Taps:
    """The taps of one axis; a pass the reference skips (same size) is one tap of weight 1 (x * 1 = x)."""
    if size_in != size_out:
        return _taps(size_in, size_out)
    index = np.arange(size_in)
    return _Taps(index, np.ones(size_in, np.int64), np.ones((size_in, 1), np.float32))


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _sparse(size_in: int, size_out: int, channels: int) -> scipy.sparse.csr_matrix:
    """One axis as a CSR matrix: ``out = A @ x`` for x[size_in * channels, columns], float32.

    ``channels`` > 1 interleaves that many channels along the axis (kron with the identity).
    """
    return scipy.sparse.kron(scipy.sparse.csr_matrix(resize_weights(size_in, size_out)),
                             scipy.sparse.identity(channels, np.float32), format="csr").astype(np.float32)


def _product(matrix: scipy.sparse.csr_matrix, x: np.ndarray, out: np.ndarray) -> None:
    """out = matrix @ x into the C-contiguous float32 ``out``, without a new array.

    ``matrix @ x`` would allocate its result (a page-faulting, frame-sized array per call) and costs
    about 40 us of Python per call; scipy's own kernel behind it (``csr_matvecs``, private but the one
    ``@`` calls; scipy is pinned in requirements/app.txt) accumulates into the array it is given.
    """
    out.fill(0)
    csr_matvecs(matrix.shape[0], matrix.shape[1], x.shape[1], matrix.indptr, matrix.indices, matrix.data,
                x.ravel(), out.ravel())


def _margin(size_in: tuple[int, int], size_out: tuple[int, int]) -> np.float32:
    """How close to an integer (grey levels) an approximate value must lie to be recomputed exactly.

    Twice the bound of the module docstring: ``2 * 2 (K_w + K_h + 3) 2^-16``, K the tap table widths.
    """
    taps = sum(_axis_taps(i, o).weights.shape[1] for i, o in zip(size_in, size_out))
    return np.float32(4 * (taps + 3) * _ULP_256)


def _accumulate(values: np.ndarray, weights: np.ndarray, count: np.ndarray) -> np.ndarray:
    """Sum over the last axis in the reference's order and rounding (module docstring), vectorised.

    Taps 1 .. rounded_until - 1 are rounded products added in float32, later ones fused multiply-adds;
    taps beyond ``count`` have weight 0 and change nothing either way.
    """
    rounded_until = 1 + _ROUNDED_BLOCK * ((np.maximum(count, 1) - 1) // _ROUNDED_BLOCK)
    acc = values[..., 0] * weights[..., 0]
    for tap in range(1, values.shape[-1]):
        value, weight = values[..., tap], weights[..., tap]
        fused = (acc.astype(np.float64) + value.astype(np.float64) * weight.astype(np.float64)).astype(np.float32)
        rounding = tap < rounded_until
        acc = np.where(rounding, acc + value * weight, fused) if rounding.any() else fused
    return acc


def _gather(frames: np.ndarray, frame: np.ndarray, rows: np.ndarray, columns: np.ndarray,
            channel: np.ndarray) -> np.ndarray:
    """``frames[frame, rows, columns, channel]`` (index arrays broadcast together) for uint8[T, H, W, 3] with
    any strides, e.g. a crop view: one ``take`` at byte offsets into the memory the array spans, several
    times faster than numpy's indexing with four index arrays."""
    if min(frames.strides) < 0:
        frames = np.ascontiguousarray(frames)
    offsets = sum(index * stride for index, stride in zip((frame, rows, columns, channel), frames.strides))
    span = 1 + sum((n - 1) * stride for n, stride in zip(frames.shape, frames.strides))
    return np.lib.stride_tricks.as_strided(frames, shape=(span,), strides=(1,)).take(offsets)


def _exact_values(frames: np.ndarray, size: tuple[int, int], frame: np.ndarray, row: np.ndarray,
                  column: np.ndarray, channel: np.ndarray) -> np.ndarray:
    """The reference's uint8 values at the given output positions of uint8[T, H, W, 3] ``frames``.

    Gathers each position's K_h x K_w input values, divides by 255 in float32, sums the width taps and
    then the height taps with the reference's rounding, multiplies by 255 and truncates.
    """
    height, width = frames.shape[1:3]
    vertical, horizontal = _axis_taps(height, size[0]), _axis_taps(width, size[1])
    rows = np.minimum(vertical.first[row][:, None] + np.arange(vertical.weights.shape[1]), height - 1)
    columns = np.minimum(horizontal.first[column][:, None] + np.arange(horizontal.weights.shape[1]), width - 1)
    gathered = _gather(frames, frame[:, None, None], rows[:, :, None], columns[:, None, :], channel[:, None, None])
    values = np.divide(gathered, np.float32(255), dtype=np.float32)
    between = _accumulate(values, horizontal.weights[column][:, None, :], horizontal.count[column][:, None])
    result = _accumulate(between, vertical.weights[row], vertical.count[row])
    return (result * np.float32(255)).astype(np.uint8)


class _Approximation:
    """The approximate resize from (H, W) to (h, w) on grey levels, with work arrays reused frame to frame.

    Height pass, then width pass (the reference's order is the other; the bound of the module docstring
    does not depend on it). The width pass multiplies the transposed array, so that scipy's CSR product
    runs over contiguous rows.
    """

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
        (height, width), (out_h, out_w) = size_in, size_out
        self.vertical = _sparse(height, out_h, 1) if out_h != height else None
        self.horizontal = _sparse(width, out_w, 3) if out_w != width else None
        self.grey = np.empty((height, width * 3), np.float32)
        self.tall = np.empty((out_h, width * 3), np.float32) if self.vertical is not None else self.grey
        if self.horizontal is not None:
            self.tall_t = np.empty((width * 3, out_h), np.float32)
            self.wide_t = np.empty((out_w * 3, out_h), np.float32)
        self.result = np.empty((out_h, out_w * 3), np.float32) if self.horizontal is not None else self.tall

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """uint8[H, W, 3] -> float32[h, w * 3] grey levels (the returned array is reused by the next call)."""
        np.copyto(self.grey.reshape(*frame.shape), frame)
        if self.vertical is not None:
            _product(self.vertical, self.grey, self.tall)
        if self.horizontal is not None:
            cv2.transpose(self.tall, self.tall_t)  # OpenCV's transpose: about 2.5x numpy's copy of .T
            _product(self.horizontal, self.tall_t, self.wide_t)
            cv2.transpose(self.wide_t, self.result)
        return self.result


class _Resizer:
    """The fast path from (H, W) to (h, w): approximate, truncate, recount near an integer (module docstring).

    Owns every frame-sized work array, so a resizer kept between calls (:func:`_resizer`) makes no new
    frame-sized array and costs no page faults.
    """

    def __init__(self, size_in: tuple[int, int], size_out: tuple[int, int]) -> None:
        self.size_out = size_out
        self.approximate = _Approximation(size_in, size_out)
        self.margin = _margin(size_in, size_out)
        self.shifted = np.empty_like(self.approximate.result)
        self.upper = np.empty(self.shifted.shape, np.uint8)
        self.spread = np.empty(self.shifted.shape, np.uint8)

    def _truncate(self, approx: np.ndarray, truncated: np.ndarray) -> np.ndarray:
        """Write trunc(approx - margin) into ``truncated``; return the flat positions whose truncation
        trunc(approx + margin) differs: the values within the margin of an integer.

        Elsewhere both truncations agree, and so does the reference's (its value lies within half the margin
        of ``approx``; the float32 shifts move by at most 2^-17 grey levels, far less than the other half).
        Both shifted values lie in (-1, 256), where the uint8 cast truncates; they differ by 0 or 1, so
        their difference is a valid boolean array.
        """
        np.subtract(approx, self.margin, out=self.shifted)
        np.copyto(truncated, self.shifted, casting="unsafe")
        np.add(approx, self.margin, out=self.shifted)
        np.copyto(self.upper, self.shifted, casting="unsafe")
        np.subtract(self.upper, truncated, out=self.spread)
        return np.flatnonzero(self.spread.view(bool))

    def __call__(self, frames: np.ndarray, out: np.ndarray) -> None:
        """uint8[T, H, W, 3] ``frames`` into uint8[T, h, w, 3] ``out`` (rows of pixels contiguous)."""
        out_h, out_w = self.size_out
        found = []
        for t, frame in enumerate(frames):
            approx = self.approximate(frame)
            positions = self._truncate(approx, out[t].reshape(approx.shape))
            if positions.size > _FALLBACK_FRACTION * approx.size:
                _exact_frames(frames[t:t + 1], out[t:t + 1])
            else:
                found.append(positions + t * approx.size)
        if found:
            positions = np.concatenate(found)
            frame, rest = np.divmod(positions, out_h * out_w * 3)
            row, rest = np.divmod(rest, out_w * 3)
            column, channel = np.divmod(rest, 3)
            out[frame, row, column, channel] = _exact_values(frames, self.size_out, frame, row, column, channel)


_RESIZERS = threading.local()  # per thread: (size_in, size_out) -> _Resizer; its work arrays are not shareable
_RESIZERS_KEPT = 8  # per thread: a deployment resizes a handful of size pairs; one holds up to ~10 MB (AgiBot)


def _resizer(size_in: tuple[int, int], size_out: tuple[int, int]) -> _Resizer:
    """This thread's resizer for the sizes, kept for the next call (the least recently used beyond
    ``_RESIZERS_KEPT`` is dropped)."""
    cache = _RESIZERS.__dict__.setdefault("cache", collections.OrderedDict())
    key = (tuple(size_in), tuple(size_out))
    if key in cache:
        cache.move_to_end(key)
    else:
        cache[key] = _Resizer(*key)
        if len(cache) > _RESIZERS_KEPT:
            cache.popitem(last=False)
    return cache[key]


def _resize_frames(frames: np.ndarray, out: np.ndarray) -> None:
    """The reference resize of uint8[T, H, W, 3] frames into uint8[T, h, w, 3] ``out``, fast.

    Approximate, truncate, recompute exactly the values near an integer (module docstring).
    """
    size_in, size_out = frames.shape[1:3], out.shape[1:3]
    if size_in == size_out:  # both passes skipped: k / 255 * 255 gives k back
        np.copyto(out, frames)
        return
    _resizer(size_in, size_out)(frames, out)


def resize_frames_into(frames: np.ndarray, out: np.ndarray) -> None:
    """Resize uint8[T, H, W, 3] ``frames`` into uint8[T, h, w, 3] ``out`` as the reference does.

    Args:
        frames: uint8[T, H, W, 3] RGB, any strides (a crop view is fine).
        out: uint8[T, h, w, 3] whose rows of pixels are contiguous (strides (.., .., 3, 1)): a C-contiguous
            array, or a cell of a larger image such as a mosaic's.

    Raises:
        ValueError: ``out`` is not uint8[T, h, w, 3] for the T of ``frames`` with contiguous rows.
    """
    if (out.dtype != np.uint8 or out.ndim != 4 or out.shape[0] != frames.shape[0] or out.shape[3] != 3
            or out.strides[2:] != (3, 1)):
        raise ValueError(f"resize_frames_into: out must be uint8[{frames.shape[0]}, h, w, 3] with contiguous rows of "
                         f"pixels, got {out.dtype}{list(out.shape)} (strides {out.strides})")
    _resize_frames(frames, out)


def resize_to(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The reference's bilinear antialiased resize with truncation (module docstring).

    Args:
        image: uint8[H, W, 3] RGB.
        size: (height, width) of the result, pixels.

    Returns:
        uint8[height, width, 3]; ``image`` itself (no copy) when it already has that size (the
        reference's float round trip k / 255 * 255 gives k back for every k).

    Raises:
        ValueError: ``image`` is not uint8[H, W, 3] or ``size`` is not two positive ints.
    """
    check_image(image, "resize_to")
    size = _check_size(size, "resize_to")
    if image.shape[:2] == size:
        return image
    out = np.empty((1, *size, 3), np.uint8)
    resize_frames_into(image[None], out)
    return out[0]
