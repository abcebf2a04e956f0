"""Writes a LeRobot v2.1 dataset that the official DreamZero training loader reads unchanged.

The file format only: episodes in (arrays at the action rate, model units), files out. No ROS here
(no rclpy, no messages), so training tests build their datasets with the same function that
``dreamzero dataset`` uses for bags (:mod:`dreamzero_policy.bags.dataset`).

Layout (training-serving-facts §1.1-1.6, the official loader's needs §2.1-2.5, the checklist and the
verified hand-written dataset §7):

* ``data/chunk-000/episode_000000.parquet``: one row per action step: ``observation.state`` and
  ``action`` (fixed-size float32 lists in the embodiment's checkpoint order, model units: unit maps
  applied, as the official DROID and AgiBot data store grippers in 0..1, facts §1.4-1.5),
  ``timestamp`` = frame_index / fps (float32), ``frame_index``, ``episode_index``, ``index`` (running
  over the dataset), ``task_index``, and one ``annotation.<name>`` column per language key of the
  embodiment's training config (int64 task indices, as the official DROID conversion writes them, §2.3).
* ``videos/chunk-000/observation.images.<camera>/episode_000000.mp4``: H.264, yuv420p, exactly one
  frame per parquet row at pts = row / fps (§7: a short video loads silently and repeats frames).
* ``meta/``: ``info.json`` (v2.1, video features with ``info.video.fps`` and ``video.channels``, §2.1),
  ``episodes.jsonl`` (indices 0..N-1 in order, no gaps: §7), ``tasks.jsonl``, ``episodes_stats.jsonl``
  (LeRobot's per-episode statistics, images per channel in 0..1), ``stats.json`` (mean, std, min, max,
  q01, q99 per parquet column, §2.4), ``relative_stats_dreamzero.json`` (per relative action key:
  action[i + k] - state[i], k < horizon, i = 0..len - horizon, as the official loader computes it,
  facts §1.9, training-serving-facts §2.4), ``modality.json`` (sub-key slices of the packed columns,
  §2.2), ``embodiment.json`` and, when an episode has one, ``step_filter.jsonl`` (below).

``meta/step_filter.jsonl`` lists the start steps the official loader draws but cannot load, so it never
draws them. Its iterator (``groot/vla/data/dataset/lerobot_sharded.py``,
``ShardedLeRobotMixtureDataset.__iter__``) draws every step s <= L - max_delta_index (24 in the DROID
config) of the episode's ``step_filter``. Video frames come from
``ShardedLeRobotSubLangSingleActionChunkDatasetDROID._uniform_sample_from_language_ranges``: a chunk at
anchor a needs a + 23 < L, its closing frame a + 24 < L; without the closing frame the last chunk is cut,
and a clip left without a chunk returns a float ``np.array([])``, on which ``get_video`` raises
``IndexError: arrays used as indices must be of integer (or boolean) type`` and training stops. With one
instruction per episode that happens exactly at s = L - 24 when L < 48 (no anchor s - 24 >= 0 to fall
back on); verified with the official loader on every step of L = 25..100 (:func:`official_unloadable_steps`).
The official reader (``groot/vla/data/dataset/lerobot.py``, ``LeRobotSingleDataset._get_step_filter``)
treats the file as optional (absent: every step is allowed); present, each line
``{"episode_index": e, "step_indices": [...]}`` removes those steps of episode e, and an episode without a
line has no step filter at all (KeyError when its shard is built). So the file, when written, has one
line per episode in episode order, ``"step_indices": []`` for the unaffected ones, and it is not written
when no episode is affected.

Episodes that cannot train are skipped, counted and named, not written: shorter than one chunk
(fewer than horizon + 1 rows: 24 actions after the anchor plus the frame that closes the chunk's
video, §7 item 5), a NaN or inf in state or action, or an :class:`EpisodeError` raised while their
frames are produced (an undecodable image, a camera gap). Kept episodes are numbered 0..N-1.

Atomic: the dataset is built in a hidden sibling folder and renamed into place at the end, so a
folder at ``root`` is always complete; on any error the partial folder is removed.

Dimensions: T rows (action steps) of an episode, S state and A action dimensions, H x W pixels.
Imports numpy, pyarrow, PyAV and the embodiment spec only.
"""
from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dreamzero_embodiments.spec import EmbodimentSpec

CODEBASE_VERSION = "v2.1"
CHUNKS_SIZE = 1000  # episodes per chunk folder, LeRobot's DEFAULT_CHUNK_SIZE (training-serving-facts §1.1)
DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
STATE_COLUMN, ACTION_COLUMN, IMAGE_PREFIX = "observation.state", "action", "observation.images."
# Language keys of each embodiment tag's training config (facts §1.4-1.6); all must be in modality.json
# (training-serving-facts §2.2, §7). A tag not listed gets all of them (extra keys are not read).
LANGUAGE_KEYS = {"oxe_droid": ("language.language_instruction", "language.language_instruction_2",
                               "language.language_instruction_3"),
                 "agibot": ("language.action_text",),
                 "yam": ("task",)}
VIDEO_CODEC, VIDEO_ENCODER, PIX_FMT = "h264", "libx264", "yuv420p"  # decord reads it (training-serving-facts §2.5)
# The official DROID conversion's x264 settings (training-serving-facts §2.3): ultrafast, zerolatency (no B-frames),
# crf 23, x264's default keyframe interval. LeRobot's g=2 (§1.6) made files ~7x larger; decord (training) decodes
# every frame anyway, LeRobot's readers seek to the keyframe before a query (slower, still exact).
VIDEO_OPTIONS = {"crf": "23", "preset": "ultrafast", "tune": "zerolatency"}
PIXEL_STRIDE = 4  # image statistics on a 1/16 sample of the pixels: measured 16 ms -> 1 ms per 180x320 frame


class EpisodeError(ValueError):
    """This episode cannot be written (its data, not the caller, is at fault): it is skipped and named.
    Frame iterables raise it, e.g. for an undecodable image; ``cause`` is the short reason counted in the summary."""

    def __init__(self, cause: str, detail: str) -> None:
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


@dataclass(frozen=True)
class SkippedEpisode:
    """An episode its producer could not build (e.g. a bag whose streams never overlap): counted and named
    in the summary like the episodes the writer skips itself."""

    name: str
    error: EpisodeError


@dataclass(frozen=True)
class Episode:
    """One episode at the action rate, in the embodiment's checkpoint order and model units.

    Attributes:
        task: the instruction (one per episode).
        state: float32[T, S] measured state (``spec.state_names``).
        action: float32[T, A] commanded action, absolute (``spec.action_names``).
        frames: camera key -> T frames uint8[H, W, 3] RGB, one per row at the row's time: an array
            uint8[T, H, W, 3], or any iterable of frames (iterated once, so frames may be decoded lazily;
            it may raise :class:`EpisodeError`). Every camera of the spec, H and W even.
        name: shown when the episode is skipped (e.g. the bag folder).
        success: written to episodes.jsonl when known (the official DROID data does, §2.3).
    """

    task: str
    state: np.ndarray
    action: np.ndarray
    frames: Mapping[str, np.ndarray | Iterable[np.ndarray]]
    name: str = ""
    success: bool | None = None


def dataset_fps(spec: EmbodimentSpec) -> int | float:
    """The row and video rate: the action rate (an int when whole, as LeRobot stores it)."""
    rate = spec.timing.action_rate_hz
    return int(rate) if float(rate).is_integer() else float(rate)


def min_episode_length(spec: EmbodimentSpec) -> int:
    """Rows an episode needs for one training chunk: horizon + 1 (module docstring)."""
    return spec.timing.horizon + 1


def official_unloadable_steps(length: int, horizon: int = 24) -> list[int]:
    """Start steps the official DreamZero iterator draws from an episode of ``length`` rows (one
    instruction) but cannot load (module docstring): [L - horizon] when horizon <= L < 2 horizon, else [].

    The official loader draws s <= L - horizon; a clip at s needs an anchor a in {s, s - horizon, ...}
    with a + horizon < L, and only s = L - horizon has none when s - horizon < 0."""
    if horizon < 1:
        raise ValueError(f"horizon must be >= 1, got {horizon}")
    return [length - horizon] if horizon <= length < 2 * horizon else []


def language_keys(spec: EmbodimentSpec) -> tuple[str, ...]:
    """The annotation keys modality.json needs for this embodiment's training config."""
    every = tuple(dict.fromkeys(k for keys in LANGUAGE_KEYS.values() for k in keys))
    return LANGUAGE_KEYS.get(spec.embodiment_tag, every)


def _stats(values: np.ndarray) -> dict[str, list[float]]:
    """The six statistics per column of float[N, D], in float64, quantiles with numpy's linear rule (as the loader)."""
    data = np.asarray(values, dtype=np.float64)
    return {"mean": data.mean(axis=0).tolist(), "std": data.std(axis=0).tolist(), "min": data.min(axis=0).tolist(),
            "max": data.max(axis=0).tolist(), "q01": np.quantile(data, 0.01, axis=0).tolist(),
            "q99": np.quantile(data, 0.99, axis=0).tolist()}


def relative_windows(state: np.ndarray, action: np.ndarray, horizon: int) -> np.ndarray:
    """float64[(T - horizon + 1) * horizon, D]: action[i + k] - state[i] for i = 0..T - horizon, k < horizon
    (facts §1.9; the official loader's starts), for one key's state float[T, D] and action float[T, D]."""
    state, action = np.asarray(state, dtype=np.float64), np.asarray(action, dtype=np.float64)
    starts = len(action) - horizon + 1
    if starts <= 0:
        return np.zeros((0, action.shape[1]))
    windows = np.lib.stride_tricks.sliding_window_view(action, horizon, axis=0)[:starts]  # [starts, D, horizon]
    return (windows.transpose(0, 2, 1) - state[:starts, None, :]).reshape(-1, action.shape[1])


def _key_slices(keys) -> dict[str, tuple[int, int]]:
    out, start = {}, 0
    for key in keys:
        out[key.key] = (start, start + key.dim)
        start += key.dim
    return out


def modality_json(spec: EmbodimentSpec) -> dict[str, Any]:
    """meta/modality.json (training-serving-facts §2.2): sub-key slices of the packed columns, videos, languages.
    ``absolute`` is true everywhere: the columns hold absolute values; which keys train relative is the
    training config's ``relative_action_keys``."""
    def entries(keys, column: str) -> dict[str, Any]:
        return {name: {"original_key": column, "start": start, "end": end, "rotation_type": None, "absolute": True,
                       "dtype": "float32", "range": None} for name, (start, end) in _key_slices(keys).items()}

    return {"state": entries(spec.state, STATE_COLUMN), "action": entries(spec.action, ACTION_COLUMN),
            "video": {c.key: {"original_key": IMAGE_PREFIX + c.key} for c in spec.cameras},
            "annotation": {k: {"original_key": f"annotation.{k}"} for k in language_keys(spec)}}


def _scalar(dtype: str) -> dict[str, Any]:
    return {"dtype": dtype, "shape": [1], "names": None}


def _check_episode(episode: Episode, spec: EmbodimentSpec) -> tuple[np.ndarray, np.ndarray]:
    """(state, action) as float32; ValueError for a caller's mistake, EpisodeError for data that cannot train."""
    where = f"episode {episode.name!r}"
    state, action = np.asarray(episode.state, dtype=np.float32), np.asarray(episode.action, dtype=np.float32)
    if state.ndim != 2 or state.shape[1] != len(spec.state_names):
        raise ValueError(f"{where}: state must be float32[T, {len(spec.state_names)}] ({spec.name} state), "
                         f"got {state.shape}")
    if action.shape != (len(state), len(spec.action_names)):
        raise ValueError(f"{where}: action must be float32[{len(state)}, {len(spec.action_names)}], got {action.shape}")
    if set(episode.frames) != {c.key for c in spec.cameras}:
        raise ValueError(f"{where}: frames must have exactly the cameras {[c.key for c in spec.cameras]}, "
                         f"got {sorted(episode.frames)}")
    if not isinstance(episode.task, str) or not episode.task.strip():
        raise ValueError(f"{where}: the task must be a non-empty string")
    if len(state) < min_episode_length(spec):
        raise EpisodeError("shorter than one chunk", f"{len(state)} action steps, needs {min_episode_length(spec)} "
                           f"(horizon {spec.timing.horizon} + 1)")
    for label, values, names in (("state", state, spec.state_names), ("action", action, spec.action_names)):
        bad = np.argwhere(~np.isfinite(values))
        if len(bad):
            row, dim = (int(i) for i in bad[0])
            raise EpisodeError("non-finite state or action", f"{label} {names[dim]} is {values[row, dim]} at row {row} "
                               f"({len(bad)} non-finite values)")
    return state, action


class _VideoStats:
    """Per-channel min, max, mean and std of frames in 0..1 (LeRobot's image statistics, shape (3, 1, 1)),
    on every ``PIXEL_STRIDE``-th pixel of each axis (LeRobot also downsamples before its image statistics)."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, np.zeros(3), np.zeros(3)
        self.low, self.high = np.full(3, 255), np.zeros(3)

    def add(self, rgb: np.ndarray) -> None:
        pixels = rgb[::PIXEL_STRIDE, ::PIXEL_STRIDE].reshape(-1, 3)
        self.total += pixels.sum(axis=0, dtype=np.float64)
        self.squares += np.einsum("ij,ij->j", pixels, pixels, dtype=np.float64)
        self.low, self.high = np.minimum(self.low, pixels.min(axis=0)), np.maximum(self.high, pixels.max(axis=0))
        self.count += len(pixels)

    def as_json(self, frames: int) -> dict[str, Any]:
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean ** 2, 0.0))
        column = lambda v: [[[float(x) / 255.0]] for x in v]  # noqa: E731 - (3, 1, 1)
        return {"min": column(self.low), "max": column(self.high), "mean": column(mean), "std": column(std),
                "count": [frames]}


def _encode_video(path: Path, frames: Iterable[np.ndarray], rows: int, fps: int | float, key: str,
                  shape: tuple[int, int] | None) -> tuple[tuple[int, int], _VideoStats]:
    """Encode ``rows`` frames at pts = i / fps; returns (H, W) and their statistics. EpisodeError on a
    wrong count, a frame that is not uint8[H, W, 3], odd H or W, or another size than ``shape``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    stats, count, size = _VideoStats(), 0, shape
    with av.open(str(path), mode="w") as container:
        stream = None
        for rgb in frames:
            if not (isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3):
                raise EpisodeError("bad frame", f"camera {key} frame {count}: expected uint8[H, W, 3], got "
                                   f"{getattr(rgb, 'dtype', type(rgb))} {getattr(rgb, 'shape', '')}")
            if size is None:
                size = rgb.shape[:2]
            if rgb.shape[:2] != tuple(size) or size[0] % 2 or size[1] % 2:
                raise EpisodeError("bad frame", f"camera {key} frame {count} is {rgb.shape[0]}x{rgb.shape[1]}; "
                                   f"expected {size[0]}x{size[1]}, both even (yuv420p)")
            if count == rows:
                raise EpisodeError("frame count", f"camera {key} has more than {rows} frames (one per row)")
            if stream is None:
                stream = container.add_stream(VIDEO_ENCODER, rate=Fraction(fps).limit_denominator(1000))
                stream.width, stream.height, stream.pix_fmt = size[1], size[0], PIX_FMT
                stream.options = dict(VIDEO_OPTIONS)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
            frame.pts = count
            container.mux(stream.encode(frame))
            stats.add(rgb)
            count += 1
        if stream is not None:
            container.mux(stream.encode(None))
    if count != rows:
        raise EpisodeError("frame count", f"camera {key} has {count} frames for {rows} rows (one per row)")
    return tuple(size), stats


def _vector_column(values: np.ndarray) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), type=pa.float32()), values.shape[1])


def _vector_episode_stats(values: np.ndarray) -> dict[str, Any]:
    data = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
    return {"min": data.min(axis=0).tolist(), "max": data.max(axis=0).tolist(), "mean": data.mean(axis=0).tolist(),
            "std": data.std(axis=0).tolist(), "count": [len(data)]}


@dataclass
class _Dataset:
    """What has been written so far (staging folder, rows, tasks, statistics inputs)."""

    staging: Path
    spec: EmbodimentSpec
    fps: int | float
    tasks: dict[str, int] = field(default_factory=dict)
    episodes: list[dict[str, Any]] = field(default_factory=list)
    episode_stats: list[dict[str, Any]] = field(default_factory=list)
    states: list[np.ndarray] = field(default_factory=list)
    actions: list[np.ndarray] = field(default_factory=list)
    timestamps: list[np.ndarray] = field(default_factory=list)
    shapes: dict[str, tuple[int, int]] = field(default_factory=dict)
    frames: int = 0

    def add(self, episode: Episode) -> None:
        state, action = _check_episode(episode, self.spec)
        index, rows = len(self.episodes), len(state)
        chunk = index // CHUNKS_SIZE
        written: list[Path] = []
        try:
            videos = {}
            for camera in self.spec.cameras:
                video_key = IMAGE_PREFIX + camera.key
                path = self.staging / VIDEO_PATH.format(episode_chunk=chunk, video_key=video_key, episode_index=index)
                written.append(path)
                size, stats = _encode_video(path, episode.frames[camera.key], rows, self.fps, camera.key,
                                            self.shapes.get(camera.key))
                self.shapes.setdefault(camera.key, size)
                videos[video_key] = stats.as_json(rows)
            task_index = self.tasks.setdefault(episode.task, len(self.tasks))
            columns = self._columns(state, action, index, task_index)
            path = self.staging / DATA_PATH.format(episode_chunk=chunk, episode_index=index)
            path.parent.mkdir(parents=True, exist_ok=True)
            written.append(path)
            pq.write_table(pa.table(columns), path)
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        self.states.append(state)
        self.actions.append(action)
        self.timestamps.append(columns["timestamp"].to_numpy())
        vectors = {STATE_COLUMN: state, ACTION_COLUMN: action}
        self.episode_stats.append({"episode_index": index, "stats": {
            **{name: _vector_episode_stats(vectors[name] if name in vectors else column.to_numpy())
               for name, column in columns.items()}, **videos}})
        entry = {"episode_index": index, "tasks": [episode.task], "length": rows}
        if episode.success is not None:
            entry["success"] = bool(episode.success)
        self.episodes.append(entry)
        self.frames += rows

    def _columns(self, state: np.ndarray, action: np.ndarray, index: int, task_index: int) -> dict[str, pa.Array]:
        rows = len(state)
        frame_index = np.arange(rows, dtype=np.int64)
        tasks = pa.array(np.full(rows, task_index, dtype=np.int64))
        return {STATE_COLUMN: _vector_column(state), ACTION_COLUMN: _vector_column(action),
                "timestamp": pa.array((frame_index / self.fps).astype(np.float32)),
                "frame_index": pa.array(frame_index), "episode_index": pa.array(np.full(rows, index, dtype=np.int64)),
                "index": pa.array(self.frames + frame_index), "task_index": tasks,
                **{f"annotation.{key}": tasks for key in language_keys(self.spec)}}

    def info(self) -> dict[str, Any]:
        spec = self.spec
        features: dict[str, Any] = {
            STATE_COLUMN: {"dtype": "float32", "shape": [len(spec.state_names)], "names": list(spec.state_names)},
            ACTION_COLUMN: {"dtype": "float32", "shape": [len(spec.action_names)], "names": list(spec.action_names)}}
        for camera in spec.cameras:
            height, width = self.shapes[camera.key]
            features[IMAGE_PREFIX + camera.key] = {
                "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
                "info": {"video.height": height, "video.width": width, "video.codec": VIDEO_CODEC,
                         "video.pix_fmt": PIX_FMT, "video.is_depth_map": False, "video.fps": self.fps,
                         "video.channels": 3, "has_audio": False}}
        features.update({"timestamp": _scalar("float32"), "frame_index": _scalar("int64"),
                         "episode_index": _scalar("int64"), "index": _scalar("int64"), "task_index": _scalar("int64")})
        features.update({f"annotation.{key}": _scalar("int64") for key in language_keys(spec)})
        episodes = len(self.episodes)
        return {"codebase_version": CODEBASE_VERSION, "robot_type": spec.name, "total_episodes": episodes,
                "total_frames": self.frames, "total_tasks": len(self.tasks),
                "total_videos": episodes * len(spec.cameras),
                "total_chunks": (episodes - 1) // CHUNKS_SIZE + 1, "chunks_size": CHUNKS_SIZE, "fps": self.fps,
                "splits": {"train": f"0:{episodes}"}, "data_path": DATA_PATH, "video_path": VIDEO_PATH,
                "features": features}

    def relative_stats(self) -> dict[str, Any]:
        states, slices = _key_slices(self.spec.state), _key_slices(self.spec.action)
        out = {}
        for key in self.spec.action:
            if key.relative and key.key in states:
                (s0, s1), (a0, a1) = states[key.key], slices[key.key]
                windows = [relative_windows(s[:, s0:s1], a[:, a0:a1], self.spec.timing.horizon)
                           for s, a in zip(self.states, self.actions)]
                out[key.key] = _stats(np.concatenate(windows))
        return out

    def write_meta(self) -> None:
        meta = self.staging / "meta"
        meta.mkdir(parents=True, exist_ok=True)

        def dump(name: str, document: Any) -> None:
            (meta / name).write_text(json.dumps(document, indent=2) + "\n")

        def lines(name: str, rows: Iterable[dict[str, Any]]) -> None:
            (meta / name).write_text("".join(json.dumps(row) + "\n" for row in rows))

        dump("info.json", self.info())
        lines("episodes.jsonl", self.episodes)
        lines("tasks.jsonl", ({"task_index": i, "task": t} for t, i in self.tasks.items()))
        lines("episodes_stats.jsonl", self.episode_stats)
        dump("stats.json", {STATE_COLUMN: _stats(np.concatenate(self.states)),
                            ACTION_COLUMN: _stats(np.concatenate(self.actions)),
                            "timestamp": _stats(np.concatenate(self.timestamps)[:, None])})
        dump("relative_stats_dreamzero.json", self.relative_stats())
        dump("modality.json", modality_json(self.spec))
        dump("embodiment.json", {"robot_type": self.spec.embodiment_tag, "embodiment_tag": self.spec.embodiment_tag,
                                 "embodiment": self.spec.name})
        filters = [{"episode_index": e["episode_index"],
                    "step_indices": official_unloadable_steps(e["length"], self.spec.timing.horizon)}
                   for e in self.episodes]
        if any(row["step_indices"] for row in filters):  # every episode needs a line (module docstring)
            lines("step_filter.jsonl", filters)


def check_output(root: Path, overwrite: bool = False) -> None:
    """Raise FileExistsError if ``root`` exists (and is not an empty folder) unless ``overwrite``; cheap,
    so a command can refuse before any long work."""
    root = Path(root)
    if root.exists() and not overwrite and not (root.is_dir() and not any(root.iterdir())):
        raise FileExistsError(f"{root} already exists; choose another output folder or overwrite it")


def write_lerobot_dataset(root: Path, episodes: Iterable[Episode | SkippedEpisode], spec: EmbodimentSpec,
                          overwrite: bool = False) -> dict[str, Any]:
    """Write ``episodes`` (consumed one at a time) as a LeRobot v2.1 dataset at ``root`` (module docstring).

    Args:
        root: the dataset folder; built beside it and renamed into place at the end.
        episodes: the episodes in order; skipped ones (and :class:`SkippedEpisode` items) take no index.
        spec: the embodiment: cameras, state and action layouts, rate, horizon, language keys.
        overwrite: replace an existing ``root`` (only once the new dataset is complete).

    Returns:
        JSON-ready summary: root, episodes, frames (rows), tasks, fps, cameras, skipped (one
        ``{"episode", "cause", "reason"}`` per skipped episode) and skipped_by_cause.

    Raises:
        FileExistsError: ``root`` exists and ``overwrite`` is false (before any episode is consumed).
        ValueError: no episode could be written (every reason listed), or an episode that does not fit
            ``spec`` (wrong widths, cameras or an empty task); nothing is left behind.
    """
    root = Path(root)
    check_output(root, overwrite)
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = root.parent / f".{root.name}.partial-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    dataset, skipped = _Dataset(staging, spec, dataset_fps(spec)), []
    try:
        for number, episode in enumerate(episodes):
            try:
                if isinstance(episode, SkippedEpisode):
                    raise episode.error
                dataset.add(episode)
            except EpisodeError as error:
                skipped.append({"episode": episode.name or f"#{number}", "cause": error.cause, "reason": str(error)})
        if not dataset.episodes:
            reasons = "; ".join(f"{s['episode']}: {s['reason']}" for s in skipped) or "no episodes given"
            raise ValueError(f"no episode could be written to {root} ({reasons})")
        dataset.write_meta()
        if root.exists():
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            root.rename(old)
            staging.rename(root)
            shutil.rmtree(old)
        else:
            staging.rename(root)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"root": str(root), "episodes": len(dataset.episodes), "frames": dataset.frames, "tasks": len(dataset.tasks),
            "fps": dataset.fps, "cameras": [c.key for c in spec.cameras], "skipped": skipped,
            "skipped_by_cause": dict(Counter(s["cause"] for s in skipped))}


__all__ = ["Episode", "EpisodeError", "SkippedEpisode", "check_output", "dataset_fps", "language_keys",
           "min_episode_length", "modality_json", "official_unloadable_steps", "relative_windows",
           "write_lerobot_dataset"]
