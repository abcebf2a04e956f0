"""Camera frames -> the model's mosaic frames: the one live image path (facts §1.7; whole-mosaic resize, facts §7).

:func:`model_mosaics` is what the local backend, the model server and training without augmentation run:
:func:`dreamzero_embodiments.stitching.stitch_frames` (resize to the camera's checkpoint resolution if
needed, centre crop, resize to the view size, mosaic) and then :func:`fit_mosaics`, which resizes each
whole mosaic when the model takes another size (tiny 32x64, the 5B model). Training's augmented path
stitches its own augmented views and ends with :func:`fit_mosaics`.

Dimensions: T frames, H x W camera pixels, h x w mosaic pixels. Imports numpy and the embodiment layer only.
"""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.stitching import resize_to, stitch_frames


def fit_mosaics(mosaics: np.ndarray, mosaic_size: tuple[int, int]) -> np.ndarray:
    """uint8[T, h', w', 3] -> uint8[T, h, w, 3] with (h, w) = ``mosaic_size``; unchanged when it already fits."""
    if tuple(mosaics.shape[1:3]) == tuple(mosaic_size):
        return mosaics
    return np.stack([resize_to(frame, tuple(mosaic_size)) for frame in mosaics])


def model_mosaics(frames: Mapping[str, np.ndarray], spec: EmbodimentSpec, mosaic_size: tuple[int, int]) -> np.ndarray:
    """Camera clips -> the mosaics the model takes (module docstring).

    Args:
        frames: camera key -> uint8[T, H, W, 3] RGB, oldest first, every camera of ``spec``, same T.
        spec: the embodiment. mosaic_size: (h, w) the model takes (352x640 for 14B, 32x64 for tiny).

    Returns:
        uint8[T, h, w, 3].

    Raises:
        ValueError: a camera missing or extra, not uint8[T, H, W, 3], or differing T (names the camera).
    """
    return fit_mosaics(stitch_frames(frames, spec), mosaic_size)
