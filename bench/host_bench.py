"""Host time per chunk outside the model: select, decode, crop, resize, stitch, pack state.

Three image paths side by side, chunk after chunk in one run, so all see the same machine load:

* ``before``: the library's path before issue 14, kept here only: Pillow BILINEAR resize (rounds);
* ``exact``: the library's resize of 2026-12-01, the reference's rounding repeated for every value
  (``dreamzero_embodiments.resize._exact_frames``; today only the fallback for frames with many flat
  values), frame by frame;
* ``after``: ``dreamzero_embodiments.stitching`` as it is: the reference's resize bit for bit (float32,
  truncation; facts §10), approximated by sparse products and recounted where truncation could flip.

Two cases, 9 frames per camera at the training spacing (facts §1.8), camera rate = action rate:

* ``droid``: 3 cameras, 180x320 ``sensor_msgs/Image`` rgb8 (15 Hz);
* ``agibot_g1``: 3 cameras, 480x640 ``sensor_msgs/CompressedImage`` jpeg quality 90 (30 Hz).

Camera buffers hold the raw message fields (what a callback receives), so a chunk decodes only the 27
frames it uses; decoding on receipt instead moves ``decode`` (per frame: decode / 27) into the camera
callbacks at the camera rate. Frames are synthetic: gradients, moving blocks and sensor-like noise,
so jpeg sizes and decode times are camera-like. Stages call the public functions of
``dreamzero_embodiments`` in the order a query runs them. ``stitch_frames`` (crop + resize + stitch in
one call, the hot path the backend uses) is timed on its own: it writes every view straight into one
preallocated mosaic array, where the stage-by-stage run allocates per stage, so its figure is the one
to add up ("total, hot path"). Medians are taken per row, so rows do not add up exactly.

Publishing (``ActionChunk``, predicted video) is NOT measured here: it needs rclpy and is timed in the
ROS layer's own benchmark. Hook: add its stage to ``STAGES`` and time it in ``run_chunk``.

After the table: how far the two paths' mosaics are apart (grey levels), over every chunk timed.

Usage:
    PYTHONPATH=embodiments .venv/bin/python bench/host_bench.py [--repeats 30] [--case droid|agibot_g1]
Figures measured go to bench/RESULTS.md together with the command.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import PIL
from PIL import Image

from dreamzero_embodiments.buffers import StampedRingBuffer
from dreamzero_embodiments.frames import FrameSchedule, select_stamped
from dreamzero_embodiments.images import decode_compressed_image, decode_image, encode_compressed_image, encode_image
from dreamzero_embodiments.spec import EmbodimentSpec, load_embodiment
from dreamzero_embodiments.state import pack_state
from dreamzero_embodiments.resize import _exact_frames  # 'exact'
from dreamzero_embodiments.stitching import _place, center_crop, resize_to, stitch, stitch_frames  # _place: 'before'

STAGES = ("select", "decode", "crop", "resize", "stitch", "pack_state")  # publish: see module docstring
T0_NS = 1_700_000_000_000_000_000
HISTORY_S = 2.5  # camera history kept: more than one chunk's span (1.6 s DROID, 0.8 s AgiBot)
JPEG_QUALITY = 90  # assumed camera-driver setting (the brief's AgiBot case); not measured on the robot


def pillow_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``resize_to`` before issue 14: Pillow BILINEAR, antialiased when shrinking, rounded."""
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(np.ascontiguousarray(image)).resize((size[1], size[0]),
                                                                          Image.Resampling.BILINEAR))


def exact_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``resize_to`` of 2026-12-01: every value in the reference's order and rounding."""
    if image.shape[:2] == tuple(size):
        return image
    out = np.empty((1, *size, 3), np.uint8)
    _exact_frames(image[None], out)
    return out[0]


def frame_by_frame(resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]) -> Callable:
    """``stitch_frames`` built on ``resize``: per frame resize if needed, crop, resize, place."""
    def stitch_frames_with(frames: dict[str, np.ndarray], spec: EmbodimentSpec) -> np.ndarray:
        h, w = spec.image.view_size
        count = len(next(iter(frames.values())))
        mosaic = np.zeros((count, 2 * h, 2 * w, 3), dtype=np.uint8)
        for cell in spec.image.mosaic:
            resolution = spec.camera(cell.view).resolution
            for t, frame in enumerate(frames[cell.view]):
                frame = resize(frame, resolution)
                view = resize(np.ascontiguousarray(center_crop(frame, spec.image.crop_scale)), (h, w))
                _place(mosaic[t], cell.row, cell.col, cell.cols, view)
        return mosaic
    return stitch_frames_with


@dataclass(frozen=True)
class Path:
    """One image path: the resize of the stage-by-stage run and the one-call hot path."""

    resize: Callable[[np.ndarray, tuple[int, int]], np.ndarray]
    stitch_frames: Callable[[dict[str, np.ndarray], EmbodimentSpec], np.ndarray]


PATHS = {"before": Path(pillow_resize, frame_by_frame(pillow_resize)),
         "exact": Path(exact_resize, frame_by_frame(exact_resize)),
         "after": Path(resize_to, stitch_frames)}


@dataclass(frozen=True)
class Case:
    embodiment: str
    message: str  # "Image" (rgb8) or "CompressedImage" (jpeg)


CASES = {"droid": Case("droid", "Image"), "agibot_g1": Case("agibot_g1", "CompressedImage")}


def synthetic_frame(height: int, width: int, index: int, camera: int, rng: np.random.Generator) -> np.ndarray:
    """uint8[H, W, 3]: a gradient scene with a block moving with ``index``, plus noise of sigma 4."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    scene = np.stack([rows / height * 200 + 20 * camera, cols / width * 180, (rows + cols) / (height + width) * 160],
                     axis=-1)
    top, left = (index * 3) % (height // 2), (index * 7) % (width // 2)
    scene[top:top + height // 4, left:left + width // 4] = (230, 40, 40)
    scene += rng.normal(0.0, 4.0, scene.shape).astype(np.float32)
    return np.clip(scene, 0, 255).astype(np.uint8)


def camera_buffers(spec: EmbodimentSpec, case: Case, rng: np.random.Generator) -> tuple[dict, int]:
    """Per camera a buffer of raw payloads over HISTORY_S; returns (buffers, t_obs_ns)."""
    period_ns = round(spec.timing.dt * 1e9)
    count = int(HISTORY_S / spec.timing.dt)
    buffers: dict[str, StampedRingBuffer] = {}
    for c, camera in enumerate(spec.cameras):
        buffer: StampedRingBuffer = StampedRingBuffer(count)
        for k in range(count):
            rgb = synthetic_frame(*camera.resolution, k, c, rng)
            payload = (encode_image(rgb) if case.message == "Image"
                       else encode_compressed_image(rgb, "jpeg", JPEG_QUALITY))
            buffer.push(T0_NS + k * period_ns + c * 1_000_000, payload)  # cameras 1 ms apart
        buffers[camera.key] = buffer
    return buffers, min(b.newest_stamp for b in buffers.values())


def decoder(case: Case) -> Callable:
    if case.message == "Image":
        return lambda p: decode_image(p["encoding"], p["height"], p["width"], p["step"], p["data"])
    return lambda p: decode_compressed_image(p.format, p.data)


def joint_state(spec: EmbodimentSpec, rng: np.random.Generator) -> tuple[list[str], np.ndarray]:
    """A JointState-like (names, positions): the state joints shuffled, plus 6 joints the model ignores."""
    names = list(spec.state_names) + [f"extra_joint_{i}" for i in range(6)]
    order = rng.permutation(len(names))
    return [names[i] for i in order], rng.uniform(0.0, 0.5, len(names))


def run_chunk(spec: EmbodimentSpec, case: Case, buffers: dict, t_obs_ns: int, state_msg: tuple,
              path: Path) -> tuple[dict[str, float], np.ndarray]:
    """One chunk's host work along ``path``; (ms per stage, the mosaics uint8[9, 352, 640, 3])."""
    ms: dict[str, float] = {}
    schedule = FrameSchedule.from_spec(spec)
    tolerance_ns = round(spec.timing.dt * 1e9) // 2
    decode = decoder(case)
    h, w = spec.image.view_size

    start = time.perf_counter_ns()
    wanted = schedule.query_stamps(t_obs_ns, first_of_session=False)
    payloads = {key: select_stamped(buffer, wanted, tolerance_ns, key)[1] for key, buffer in buffers.items()}
    ms["select"] = (time.perf_counter_ns() - start) * 1e-6

    start = time.perf_counter_ns()
    frames = {key: [decode(p) for p in items] for key, items in payloads.items()}
    ms["decode"] = (time.perf_counter_ns() - start) * 1e-6

    start = time.perf_counter_ns()
    crops = {key: [np.ascontiguousarray(center_crop(f, spec.image.crop_scale)) for f in items]
             for key, items in frames.items()}
    ms["crop"] = (time.perf_counter_ns() - start) * 1e-6

    start = time.perf_counter_ns()
    views = {key: [path.resize(c, (h, w)) for c in items] for key, items in crops.items()}
    ms["resize"] = (time.perf_counter_ns() - start) * 1e-6

    start = time.perf_counter_ns()
    mosaic = np.stack([stitch({key: items[t] for key, items in views.items()}, spec) for t in range(len(wanted))])
    ms["stitch"] = (time.perf_counter_ns() - start) * 1e-6

    start = time.perf_counter_ns()
    state = pack_state(state_msg[0], state_msg[1], spec)
    ms["pack_state"] = (time.perf_counter_ns() - start) * 1e-6

    # publish: measured by the ROS layer (module docstring)
    ms["total, stage by stage"] = sum(ms[s] for s in STAGES)

    stacked = {key: np.stack(items) for key, items in frames.items()}
    start = time.perf_counter_ns()
    check = path.stitch_frames(stacked, spec)
    ms["stitch_frames (crop+resize+stitch)"] = (time.perf_counter_ns() - start) * 1e-6
    ms["total, hot path (select+decode+stitch_frames+pack_state)"] = (
        ms["select"] + ms["decode"] + ms["stitch_frames (crop+resize+stitch)"] + ms["pack_state"])
    assert mosaic.shape == (len(wanted), 2 * h, 2 * w, 3) and np.array_equal(mosaic, check) and state.size
    return ms, check


def bench(name: str, repeats: int, warmup: int = 3) -> tuple[dict[str, dict[str, float]], tuple[int, float]]:
    """Per path the median ms per stage, and (max, mean) |before - after| over the mosaics, grey levels.

    The paths alternate chunk by chunk, so a change of machine load hits all alike; ``exact`` and
    ``after`` must give the same mosaics (checked on every chunk).
    """
    case, rng = CASES[name], np.random.default_rng(0)
    spec = load_embodiment(case.embodiment)
    buffers, t_obs_ns = camera_buffers(spec, case, rng)
    state_msg = joint_state(spec, rng)
    runs: dict[str, list[dict[str, float]]] = {label: [] for label in PATHS}
    largest, total, values = 0, 0, 0
    for _ in range(warmup + repeats):
        mosaics = {}
        for label, path in PATHS.items():
            ms, mosaics[label] = run_chunk(spec, case, buffers, t_obs_ns, state_msg, path)
            runs[label].append(ms)
        assert np.array_equal(mosaics["exact"], mosaics["after"]), "the fast resize differs from the exact one"
        diff = np.abs(mosaics["before"].astype(np.int16) - mosaics["after"])
        largest, total, values = max(largest, int(diff.max())), total + int(diff.sum()), values + diff.size
    medians = {}
    payloads = [p for b in buffers.values() for p in b.snapshot()[1]]
    for label, path_runs in runs.items():
        kept = path_runs[warmup:]
        medians[label] = {stage: statistics.median(run[stage] for run in kept) for stage in kept[0]}
        medians[label]["message bytes per frame (not ms)"] = statistics.median(
            len(p["data"] if isinstance(p, dict) else p.data) for p in payloads)
    return medians, (largest, total / values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=30, help="chunks timed per case (after 3 warm-up chunks)")
    parser.add_argument("--case", choices=sorted(CASES), action="append", help="default: all cases")
    args = parser.parse_args()
    names = args.case or sorted(CASES, key=lambda n: n != "droid")
    results = {name: bench(name, args.repeats) for name in names}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
          f"numpy {np.__version__}, opencv {cv2.__version__}, pillow {PIL.__version__}; cv2 threads "
          f"{cv2.getNumThreads()}; load average {os.getloadavg()[0]:.1f}; median of {args.repeats} chunks, ms")
    columns = [(n, label) for n in names for label in PATHS]
    stages = list(results[names[0]][0]["after"])
    print("| stage | " + " | ".join(f"{n} {label} ({CASES[n].message}, 3 x 9 frames)" for n, label in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for stage in stages:
        print(f"| {stage} | " + " | ".join(f"{results[n][0][label][stage]:.2f}".removesuffix(".00")
                                            for n, label in columns) + " |")
    for n in names:
        largest, mean = results[n][1]
        print(f"# {n}: mosaics before vs after: max |diff| {largest} grey levels, mean |diff| {mean:.3f}")


if __name__ == "__main__":
    main()
