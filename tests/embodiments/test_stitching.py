"""Crop, resize and mosaic of the model's image path (dreamzero_embodiments.stitching; facts §1.7).

Bit-exactness of the resize against torch: tests/embodiments/test_resize.py.

Views are coordinate-encoded (each pixel stores its own row and column) or distinct constants, so a
shifted crop, a flipped view or a misplaced cell changes the compared values.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments.stitching import (center_crop, crop_offsets, crop_size, prepare_view, resize_to, stitch,
                                             stitch_frames)

H, W = 176, 320  # image.view_size of every shipped robot


def coordinates(height: int, width: int, tag: int = 0) -> np.ndarray:
    """uint8[height, width, 3]: R = row % 256, G = column % 256, B = 16 * tag + column // 256."""
    rows, cols = np.mgrid[0:height, 0:width]
    return np.stack([rows % 256, cols % 256, 16 * tag + cols // 256], axis=-1).astype(np.uint8)


def column(image: np.ndarray) -> np.ndarray:
    return image[..., 1].astype(int) + 256 * (image[..., 2].astype(int) % 16)


# ------------------------------------------------------------------------------------------- crop
@pytest.mark.parametrize(("shape", "size", "offsets"), [
    ((180, 320), (171, 304), (4, 8)),     # DROID (facts §1.7); (180 - 171) / 2 = 4.5 rounds half to even: 4
    ((480, 640), (456, 608), (12, 16)),   # AgiBot G1 (facts §1.7), YAM (assumed 480x640)
    ((181, 320), (171, 304), (5, 8)),     # 5.0
    ((183, 320), (173, 304), (5, 8)),     # int(173.85) = 173; (183 - 173) / 2 = 5
    ((220, 320), (209, 304), (6, 8)),     # (220 - 209) / 2 = 5.5 rounds half to even: 6
])
def test_crop_size_and_offset_match_the_reference_formula(shape, size, offsets) -> None:
    assert crop_size(*shape, 0.95) == size
    assert crop_offsets(*shape, *size) == offsets


def test_centre_crop_of_a_coordinate_image_starts_at_row_4_column_8() -> None:
    image = coordinates(180, 320)
    crop = center_crop(image, 0.95)
    assert crop.shape == (171, 304, 3)
    assert crop[0, 0, 0] == 4 and column(crop)[0, 0] == 8
    assert crop[-1, 0, 0] == 4 + 170 and column(crop)[0, -1] == 8 + 303
    assert np.shares_memory(crop, image)  # a view: the copy happens once, in the resize


def test_centre_crop_works_on_a_batch_of_frames() -> None:
    batch = np.stack([coordinates(480, 640, tag=t) for t in range(3)])
    crop = center_crop(batch, 0.95)
    assert crop.shape == (3, 456, 608, 3)
    assert [int(crop[t, 0, 0, 0]) for t in range(3)] == [12, 12, 12]
    assert column(crop)[:, 0, 0].tolist() == [16, 16, 16] and (crop[:, 0, 0, 2] // 16).tolist() == [0, 1, 2]


def test_crop_scale_outside_0_1_is_refused() -> None:
    with pytest.raises(ValueError, match=r"crop scale must be in \(0, 1\], got 1.2"):
        center_crop(coordinates(10, 10), 1.2)


# ----------------------------------------------------------------------------------------- resize
@pytest.mark.parametrize(("source", "shrinks"), [((171, 304), False), ((352, 640), False), ((456, 608), True),
                                               ((180, 320), True)])
@pytest.mark.parametrize("value", [0, 1, 127, 254, 255])
def test_a_constant_image_stays_constant_when_enlarged_and_loses_at_most_one_grey_level_when_shrunk(
        source, shrinks: bool, value: int) -> None:
    # The reference truncates x * 255: where the float32 sum of a shrinking filter lands a hair below
    # value / 255, it gives value - 1 (facts §10; same counts as torch, tests/embodiments/test_resize.py).
    image = np.full(source + (3,), value, dtype=np.uint8)
    out = resize_to(image, (H, W))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert out.max() == value and out.min() == (max(value - 1, 0) if shrinks else value)


def test_shrinking_antialiases_by_hand_computation() -> None:
    # Columns 255, 0, 0, 0 repeated; 4x narrower. The antialiased triangle filter spans 8 source
    # columns with weights (1, 3, 5, 7, 7, 5, 3, 1) / 32 around each output; the two bright columns
    # under it weigh 5/32 + 3/32 = 1/4 (all exact in float32), so the inside is 1/4 * 255 = 63.75,
    # truncated to 63 as the reference does (Pillow rounded to 64). Plain bilinear (no antialias)
    # would sample between two dark columns and give 0.
    image = np.zeros((4, 64, 3), dtype=np.uint8)
    image[:, ::4] = 255
    out = resize_to(image, (4, 16))
    assert (out[:, 1:-1] == 63).all()


def test_enlarging_is_half_pixel_bilinear_by_hand_computation() -> None:
    # Source columns 0 and 255 to 4 columns: sample points -0.25 (clamped), 0.25, 0.75, 1.25 (clamped);
    # 0.25 * 255 = 63.75 and 0.75 * 255 = 191.25 truncate to 63 and 191.
    image = np.zeros((1, 2, 3), dtype=np.uint8)
    image[:, 1] = 255
    assert resize_to(image, (1, 4))[0, :, 0].tolist() == [0, 63, 191, 255]


def test_resize_returns_the_input_when_the_size_already_matches_and_checks_arguments() -> None:
    image = coordinates(H, W)
    assert resize_to(image, (H, W)) is image
    with pytest.raises(ValueError, match=r"size must be \(height, width\) of positive ints"):
        resize_to(image, (0, 10))
    with pytest.raises(ValueError, match=r"expected uint8\[H, W, 3\]"):
        resize_to(image.astype(np.float32), (10, 10))


def test_prepare_view_resizes_a_foreign_resolution_to_the_checkpoint_one_first() -> None:
    rng = np.random.default_rng(0)
    native = rng.integers(0, 256, (180, 320, 3), dtype=np.uint8)
    double = resize_to(native, (360, 640))
    expected = prepare_view(resize_to(double, (180, 320)), (180, 320), 0.95, (H, W))
    np.testing.assert_array_equal(prepare_view(double, (180, 320), 0.95, (H, W)), expected)
    assert prepare_view(native, (180, 320), 0.95, (H, W)).shape == (H, W, 3)


# ----------------------------------------------------------------------------------------- mosaic
def test_droid_mosaic_wrist_widened_by_column_duplication_on_top_exteriors_below() -> None:
    spec = load_embodiment("droid")
    wrist = coordinates(H, W, tag=1)
    exterior_1 = coordinates(H, W, tag=2)
    exterior_2 = coordinates(H, W, tag=3)
    out = stitch({"wrist_image_left": wrist, "exterior_image_1_left": exterior_1,
                  "exterior_image_2_left": exterior_2}, spec)
    assert out.shape == (352, 640, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0:176, 0::2], wrist)  # out[:, 2j] == wrist[:, j]
    np.testing.assert_array_equal(out[0:176, 1::2], wrist)  # out[:, 2j + 1] == wrist[:, j]
    np.testing.assert_array_equal(out[176:, 0:320], exterior_1)
    np.testing.assert_array_equal(out[176:, 320:], exterior_2)


@pytest.mark.parametrize("name", ["agibot_g1", "yam"])
def test_grid_mosaic_is_view0_view2_over_view1_black(name: str) -> None:
    spec = load_embodiment(name)
    keys = [camera.key for camera in spec.cameras]  # model view order (facts §1.5, §1.6)
    views = {key: coordinates(H, W, tag=1 + i) for i, key in enumerate(keys)}
    out = stitch(views, spec)
    assert out.shape == (352, 640, 3)
    np.testing.assert_array_equal(out[:176, :320], views[keys[0]])
    np.testing.assert_array_equal(out[:176, 320:], views[keys[2]])
    np.testing.assert_array_equal(out[176:, :320], views[keys[1]])
    assert (out[176:, 320:] == 0).all()


@pytest.mark.parametrize("name", ["droid", "agibot_g1", "yam"])
def test_stitch_frames_places_each_time_step_of_each_camera(name: str) -> None:
    spec = load_embodiment(name)
    colours = {camera.key: 40 * (i + 1) for i, camera in enumerate(spec.cameras)}
    frames = {camera.key: np.stack([np.full(camera.resolution + (3,), colours[camera.key] + t, np.uint8)
                                    for t in range(3)]) for camera in spec.cameras}
    out = stitch_frames(frames, spec)
    assert out.shape == (3, 352, 640, 3) and out.dtype == np.uint8
    shrinks = spec.cameras[0].resolution[0] * spec.image.crop_scale > H  # AgiBot/YAM 456x608 -> 176x320
    for t in range(3):
        # A flat view stays flat when enlarged (DROID) and loses at most one grey level when shrunk.
        high = stitch({key: np.full((H, W, 3), colours[key] + t, np.uint8) for key in colours}, spec)
        low = stitch({key: np.full((H, W, 3), colours[key] + t - shrinks, np.uint8) for key in colours}, spec)
        assert ((out[t] == high) | (out[t] == low)).all()
        assert (out[t] == high).any()


@pytest.mark.parametrize("name", ["droid", "agibot_g1", "yam"])
def test_stitch_frames_equals_prepare_view_then_stitch_per_frame(name: str) -> None:
    spec = load_embodiment(name)
    rng = np.random.default_rng(1)
    frames = {c.key: rng.integers(0, 256, (2,) + c.resolution + (3,), dtype=np.uint8) for c in spec.cameras}
    out = stitch_frames(frames, spec)
    for t in range(2):
        views = {c.key: prepare_view(frames[c.key][t], c.resolution, spec.image.crop_scale, spec.image.view_size)
                 for c in spec.cameras}
        np.testing.assert_array_equal(out[t], stitch(views, spec))


def test_a_single_camera_spec_passes_its_view_through() -> None:
    droid = load_embodiment("droid")
    camera = droid.cameras[0]
    image = dataclasses.replace(droid.image, mosaic=(dataclasses.replace(droid.image.mosaic[1], row=0),))
    spec = dataclasses.replace(droid, cameras=(camera,), image=image)
    frames = np.stack([coordinates(180, 320, tag=t) for t in range(2)])
    out = stitch_frames({camera.key: frames}, spec)
    assert out.shape == (2, H, W, 3)
    view = prepare_view(frames[1], (180, 320), 0.95, (H, W))
    np.testing.assert_array_equal(out[1], view)
    np.testing.assert_array_equal(stitch({camera.key: view}, spec), view)


def test_stitch_names_missing_and_unexpected_cameras_and_bad_frames() -> None:
    spec = load_embodiment("droid")
    frames = {c.key: np.zeros((2, 180, 320, 3), np.uint8) for c in spec.cameras}
    with pytest.raises(ValueError, match=r"missing \['wrist_image_left'\], unexpected \['wrist'\]"):
        stitch_frames({**{k: v for k, v in frames.items() if k != "wrist_image_left"},
                       "wrist": frames["wrist_image_left"]}, spec)
    with pytest.raises(ValueError, match="same number of frames T"):
        stitch_frames({**frames, "wrist_image_left": np.zeros((3, 180, 320, 3), np.uint8)}, spec)
    with pytest.raises(ValueError, match=r"camera 'wrist_image_left': expected uint8\[T, H, W, 3\]"):
        stitch_frames({**frames, "wrist_image_left": np.zeros((2, 180, 320, 3), np.float32)}, spec)
    with pytest.raises(ValueError, match=r"view 'wrist_image_left' must be 176x320"):
        stitch({c.key: np.zeros((H, W, 3), np.uint8) for c in spec.cameras} | {
            "wrist_image_left": np.zeros((171, 304, 3), np.uint8)}, spec)
