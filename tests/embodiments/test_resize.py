"""The resize of the image path equals the reference bit for bit (dreamzero_embodiments.stitching; facts §1.7, §10).

The reference: uint8 -> float32 / 255 (``VideoToTensor``), torch
``interpolate(bilinear, antialias=True, align_corners=False)`` (torchvision ``Resize(antialias=True)``
calls it), * 255 and truncation to uint8 (``VideoToNumpy``). Torch is imported only here, to build
that reference; the torch-free tests below pin values the reference gives.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments import resize
from dreamzero_embodiments.resize import resize_weights
from dreamzero_embodiments.stitching import center_crop, prepare_view, resize_to

VIEW = (176, 320)  # image.view_size of every shipped robot


def reference(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """uint8[T, H, W, 3] -> uint8[T, h, w, 3] the way the checkpoint's eval transforms compute it."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    y = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (y.permute(0, 2, 3, 1) * 255).to(torch.uint8).numpy()


def images(height: int, width: int, seed: int) -> np.ndarray:
    """uint8[4, H, W, 3]: uniform noise, a smooth gradient, a camera-like scene, a flat 255 / 1 image."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    smooth = np.stack([rows / height * 255, cols / width * 255, (rows + cols) / (height + width) * 255], -1)
    scene = np.clip(smooth * 0.7 + 30 + rng.normal(0, 4, smooth.shape), 0, 255)
    scene[height // 4:height // 2, width // 3:width // 2] = (230, 40, 40)  # a flat block with sharp edges
    flat = np.full((height, width, 3), 255.0)
    flat[..., 2] = 1
    return np.stack([rng.integers(0, 256, (height, width, 3)), smooth, scene, flat]).astype(np.uint8)


def resize_all(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return np.stack([resize_to(frame, size) for frame in frames])


@pytest.mark.parametrize(("source", "size"), [
    ((171, 304), VIEW),    # DROID crop -> view (enlarges)
    ((456, 608), VIEW),    # AgiBot G1 / YAM crop -> view (shrinks; 4 to 6 taps per row, rounded blocks)
    ((180, 320), VIEW),    # a frame resized without its crop (shrinks one axis only)
    ((120, 160), (180, 320)),  # a camera smaller than the checkpoint resolution (prepare_view step 1)
    ((240, 1280), (80, 320)),  # a wide camera shrunk 3x and 4x (7 and 9 taps)
    ((352, 640), (160, 320)),  # the whole mosaic for a 5B checkpoint (facts §7)
    ((37, 53), (176, 320)),  # odd sizes, enlarging 4.8x and 6x
    ((175, 2000), (7, 100)),  # 25 taps: several rounded blocks of 4
])
def test_resize_equals_the_reference_on_noise_gradients_scenes_and_flat_images(source, size) -> None:
    frames = images(*source, seed=sum(source))
    np.testing.assert_array_equal(resize_all(frames, size), reference(frames, size))


@pytest.mark.parametrize(("size_in", "size_out"), [
    (304, 320), (171, 176), (608, 320), (456, 176), (180, 176), (1280, 640), (2000, 100), (7, 3), (3, 7), (1, 5)])
def test_weights_equal_the_reference_weights(size_in: int, size_out: int) -> None:
    # Resizing an identity image along one axis returns the weights: out[j, i] = 1 * w(i, j), exactly.
    torch = pytest.importorskip("torch")
    eye = torch.eye(size_in, dtype=torch.float32)[None, None]
    expected = torch.nn.functional.interpolate(eye, size=(size_in, size_out), mode="bilinear", antialias=True,
                                               align_corners=False)[0, 0].numpy().T
    np.testing.assert_array_equal(resize_weights(size_in, size_out), expected)


@pytest.mark.parametrize("name", ["droid", "agibot_g1", "yam"])
def test_prepare_view_equals_the_reference_crop_then_resize(name: str) -> None:
    spec = load_embodiment(name)
    camera = spec.cameras[0]
    frames = images(*camera.resolution, seed=3)[:2]
    crop = center_crop(frames, spec.image.crop_scale)  # offsets: test_stitching.py
    expected = reference(crop, spec.image.view_size)
    for frame, view in zip(frames, expected):
        np.testing.assert_array_equal(
            prepare_view(frame, camera.resolution, spec.image.crop_scale, spec.image.view_size), view)


# ----------------------------------------------------------------------- pinned, without torch
@pytest.mark.parametrize(("value", "lowered"), [(1, 30858), (254, 70746), (255, 51492)])
def test_a_flat_agibot_crop_loses_one_grey_level_on_as_many_values_as_the_reference(value: int, lowered: int) -> None:
    # Counts the reference gives (torch 2.13 CPU) for 456x608 -> 176x320, of 176 * 320 * 3 values. They
    # change when the rounding pattern changes (all taps fused, all rounded, blocks of 2, 3 or 5).
    out = resize_to(np.full((456, 608, 3), value, np.uint8), VIEW)
    assert np.unique(out).tolist() == [value - 1, value]
    assert int((out == value - 1).sum()) == lowered


# ----------------------------------------------------------- the fast path (approximate, then exact)
def reference_grey(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """float32[T, h, w * 3]: the reference's float result times 255, before the truncation."""
    torch = pytest.importorskip("torch")
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)
    y = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (y.permute(0, 2, 3, 1) * 255).reshape(len(frames), size[0], -1).numpy()


@pytest.mark.parametrize(("source", "size"), [((171, 304), VIEW), ((456, 608), VIEW), ((240, 1280), (80, 320)),
                                              ((175, 2000), (7, 100)), ((37, 53), (176, 320))])
def test_the_approximation_lies_within_half_its_margin_of_the_reference(source, size) -> None:
    # Values farther than the margin from an integer are truncated without a recount: the bound that makes
    # that exact must hold with room to spare, on every kind of image.
    frames = images(*source, seed=7)
    approximate = resize._Approximation(source, size)
    expected = reference_grey(frames, size)
    worst = max(float(np.abs(approximate(frame) - grey).max()) for frame, grey in zip(frames, expected))
    assert worst <= resize._margin(source, size) / 2


def camera_like(height: int, width: int, seed: int) -> np.ndarray:
    """uint8[H, W, 3]: gradients and a red block, all under sensor noise of sigma 4 (no flat area)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    scene = np.stack([rows / height * 180, cols / width * 180, (rows + cols) / (height + width) * 180], -1) + 30
    scene[height // 4:height // 2, width // 3:width // 2] = (230, 40, 40)
    return np.clip(scene + rng.normal(0, 4, scene.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize(("source", "size"), [((171, 304), VIEW), ((456, 608), VIEW), ((240, 1280), (80, 320))])
def test_on_camera_images_the_fast_path_alone_equals_the_reference(source, size, monkeypatch) -> None:
    # Camera-like frames (sensor noise): no frame needs the whole-frame exact path, a few hundred values per
    # frame are recounted, and the result is still the reference, bit for bit.
    def no_exact_path(*args):
        raise AssertionError("a camera-like frame fell back to the exact path")

    recounted = []

    def counting(frames, size, frame, *positions):
        recounted.append(frame.size)
        return exact_values(frames, size, frame, *positions)

    exact_values = resize._exact_values
    monkeypatch.setattr(resize, "_exact_frames", no_exact_path)
    monkeypatch.setattr(resize, "_exact_values", counting)
    scenes = np.stack([camera_like(*source, seed=seed) for seed in range(3)])
    out = np.empty((3, *size, 3), np.uint8)
    resize.resize_frames_into(scenes, out)
    np.testing.assert_array_equal(out, reference(scenes, size))
    assert 0 < sum(recounted) < resize._FALLBACK_FRACTION * out.size


def test_resize_frames_into_refuses_an_output_it_cannot_fill() -> None:
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    for out in (np.zeros((2, 10, 16, 3), np.float32), np.zeros((1, 10, 16, 3), np.uint8),
                np.zeros((2, 10, 32, 3), np.uint8)[:, :, ::2]):
        with pytest.raises(ValueError, match="contiguous rows"):
            resize.resize_frames_into(frames, out)


def test_frames_resized_into_a_mosaics_cells_equal_the_reference_and_leave_the_rest_untouched() -> None:
    # stitch_frames writes each view straight into its mosaic cell: a strided output, with the recounted
    # values (camera-like frames) and the whole-frame exact path (a flat frame) both written there.
    frames = np.stack([camera_like(171, 304, seed=1), camera_like(171, 304, seed=2), images(171, 304, seed=3)[3]])
    mosaic = np.full((3, 2 * VIEW[0], 2 * VIEW[1], 3), 7, np.uint8)
    resize.resize_frames_into(frames, mosaic[:, VIEW[0]:, :VIEW[1]])
    np.testing.assert_array_equal(mosaic[:, VIEW[0]:, :VIEW[1]], reference(frames, VIEW))
    assert (mosaic[:, :VIEW[0]] == 7).all() and (mosaic[:, VIEW[0]:, VIEW[1]:] == 7).all()


def test_threads_resizing_at_once_keep_their_own_work_arrays() -> None:
    # Each thread keeps its own work arrays between calls: two threads resizing different frames of the same
    # sizes at the same time each get the reference's values.
    from concurrent.futures import ThreadPoolExecutor

    batches = [np.stack([camera_like(171, 304, seed=10 * k + i) for i in range(4)]) for k in range(4)]

    def run(frames: np.ndarray) -> np.ndarray:
        out = np.empty((len(frames), *VIEW, 3), np.uint8)
        for _ in range(3):
            resize.resize_frames_into(frames, out)
        return out

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, batches))
    for frames, out in zip(batches, results):
        np.testing.assert_array_equal(out, reference(frames, VIEW))


@pytest.mark.parametrize("view", [lambda f: f[:, 3:-5, 7:-2], lambda f: f[:, ::-1, ::2], lambda f: f[::-1, :, :, ::-1]])
def test_frames_of_any_strides_give_the_reference(view) -> None:
    # The recount gathers its inputs at byte offsets into the frames' memory: crops, steps and flips alike.
    frames = view(np.stack([camera_like(190, 330, seed=s) for s in range(2)]))
    out = np.empty((2, *VIEW, 3), np.uint8)
    resize.resize_frames_into(frames, out)
    np.testing.assert_array_equal(out, reference(np.ascontiguousarray(frames), VIEW))
