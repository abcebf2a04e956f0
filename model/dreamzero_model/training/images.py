"""Camera frames -> model mosaics for training: the live image path, plus the training augmentations.

Without augmentation this is :func:`dreamzero_model.mosaics.model_mosaics`, the function the local
backend and the model server run for live inference (stitch, then fit each whole mosaic to the model's
size; facts §1.7). With augmentation the views are cropped and jittered here, stitched with
:func:`~dreamzero_embodiments.stitching.stitch` and fitted with :func:`dreamzero_model.mosaics.fit_mosaics`.
Nothing here re-implements those steps.

With augmentation (facts §1.7, training only), per camera and per sample (one draw for all frames of
the clip): the crop of the same size is taken at a uniformly random offset instead of the centre,
then resized as above; then ``VideoColorJitter`` (brightness 0.3, contrast 0.4, saturation 0.5,
hue 0.08, in a random order, torchvision's definitions) on the float image, and back to uint8 by
multiplying by 255 and truncating (``VideoToNumpy``). Random grayscale and posterize are defined
but unused in the official configs, so they are not applied.

Dimensions: T frames, H x W camera pixels, h x w view or mosaic pixels. Imports numpy, the embodiment
layer, :mod:`dreamzero_model.mosaics` and OpenCV (hue rotation) only.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cv2
import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_embodiments.stitching import crop_size, resize_to, stitch
from dreamzero_model.mosaics import fit_mosaics, model_mosaics

GRAY_WEIGHTS = np.array([0.2989, 0.587, 0.114], dtype=np.float32)  # torchvision rgb_to_grayscale


@dataclass(frozen=True)
class Augmentation:
    """Training-time image augmentation (facts §1.7); ``None`` anywhere means the live path.

    Attributes:
        random_crop: crop at a random offset instead of the centre (same crop size).
        brightness / contrast / saturation: factor ranges [1 - x, 1 + x] (0 disables).
        hue: shift range [-x, x] in turns (0 disables).
    """

    random_crop: bool = True
    brightness: float = 0.3
    contrast: float = 0.4
    saturation: float = 0.5
    hue: float = 0.08


def _grayscale(image: np.ndarray) -> np.ndarray:
    """float32[..., 3] -> float32[..., 1]."""
    return (image @ GRAY_WEIGHTS)[..., None]


def _rotate_hue(image: np.ndarray, shift: float) -> np.ndarray:
    """float32[..., h, w, 3] in [0, 1] with the hue turned by ``shift`` turns (torchvision ``adjust_hue``).

    OpenCV's float HSV holds hue in degrees [0, 360), saturation and value in [0, 1].
    """
    flat = np.ascontiguousarray(image.reshape(-1, image.shape[-2], 3))
    hsv = cv2.cvtColor(flat, cv2.COLOR_RGB2HSV)
    hsv[..., 0] = (hsv[..., 0] + np.float32(360.0 * shift)) % np.float32(360.0)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB).reshape(image.shape)


def color_jitter(frames: np.ndarray, augmentation: Augmentation, rng: np.random.Generator) -> np.ndarray:
    """One colour jitter draw applied to every frame: uint8[T, h, w, 3] -> uint8[T, h, w, 3] (truncated)."""
    image = frames.astype(np.float32) / np.float32(255)
    operations = []
    if augmentation.brightness > 0:
        factor = rng.uniform(1 - augmentation.brightness, 1 + augmentation.brightness)
        operations.append(lambda x, f=factor: np.clip(x * f, 0, 1))
    if augmentation.contrast > 0:
        factor = rng.uniform(1 - augmentation.contrast, 1 + augmentation.contrast)
        # torchvision: blend with the mean of the grayscale image, per frame
        operations.append(lambda x, f=factor: np.clip(f * x + (1 - f) * _grayscale(x).mean(axis=(-3, -2, -1),
                                                                                           keepdims=True), 0, 1))
    if augmentation.saturation > 0:
        factor = rng.uniform(1 - augmentation.saturation, 1 + augmentation.saturation)
        operations.append(lambda x, f=factor: np.clip(f * x + (1 - f) * _grayscale(x), 0, 1))
    if augmentation.hue > 0:
        shift = rng.uniform(-augmentation.hue, augmentation.hue)
        operations.append(lambda x, s=shift: _rotate_hue(x, s))
    for position in rng.permutation(len(operations)):
        image = operations[position](image).astype(np.float32)
    return (image * np.float32(255)).astype(np.uint8)  # VideoToNumpy truncates


def _augmented_views(frames: Mapping[str, np.ndarray], spec: EmbodimentSpec, augmentation: Augmentation,
                     rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per camera: uint8[T, H, W, 3] -> uint8[T, h, w, 3] with a random crop and colour jitter."""
    views = {}
    view_size = tuple(spec.image.view_size)
    for camera in spec.cameras:
        clip = frames[camera.key]
        resolution = tuple(camera.resolution)
        if clip.shape[1:3] != resolution:
            clip = np.stack([resize_to(frame, resolution) for frame in clip])
        height, width = resolution
        crop_h, crop_w = crop_size(height, width, spec.image.crop_scale)
        if augmentation.random_crop:
            top, left = int(rng.integers(0, height - crop_h + 1)), int(rng.integers(0, width - crop_w + 1))
        else:
            top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
        cropped = clip[:, top:top + crop_h, left:left + crop_w]
        views[camera.key] = color_jitter(np.stack([resize_to(frame, view_size) for frame in cropped]),
                                         augmentation, rng)
    return views


def clip_mosaics(frames: Mapping[str, np.ndarray], spec: EmbodimentSpec, mosaic_size: tuple[int, int],
                 augmentation: Augmentation | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Camera clips -> the model's mosaics (module docstring).

    Args:
        frames: camera key -> uint8[T, H, W, 3] RGB, every camera of ``spec``.
        spec: the embodiment. mosaic_size: (h, w) the model takes (352x640 for 14B, 32x64 for tiny).
        augmentation: None for the live path; else the training augmentations drawn from ``rng``.

    Returns:
        uint8[T, h, w, 3].
    """
    if augmentation is None:
        return model_mosaics(frames, spec, mosaic_size)
    if rng is None:
        raise ValueError("clip_mosaics: augmentation needs a random generator")
    views = _augmented_views(frames, spec, augmentation, rng)
    count = next(iter(views.values())).shape[0]
    return fit_mosaics(np.stack([stitch({k: v[i] for k, v in views.items()}, spec) for i in range(count)]),
                       mosaic_size)
