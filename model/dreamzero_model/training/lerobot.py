"""Read a LeRobot v2.1 dataset the way the official DreamZero loader does (training-serving-facts §1-2, §7).

Files read: ``meta/info.json`` (``data_path``, ``video_path``, ``chunks_size``, ``fps``, video
``features``), ``meta/modality.json`` (state/action sub-key slices of the packed parquet columns, video
and annotation columns), ``meta/episodes.jsonl`` (line i must be episode i), ``meta/tasks.jsonl``,
``meta/stats.json`` and ``meta/relative_stats_dreamzero.json`` (recomputed in memory when missing or
without quantiles, with the official formulas; nothing is written into the dataset), and the optional
``meta/embodiment.json`` and ``meta/step_filter.jsonl`` (lines ``{"episode_index": e, "step_indices":
[...]}``: steps never drawn as start steps, as the official ``LeRobotSingleDataset._get_step_filter``
removes them; absent file or episode: nothing excluded, though the official reader needs a line for
every episode once the file exists). Per episode: the parquet file (pyarrow; only the needed columns)
and one MP4 per camera (PyAV), decoding only the frames a sample needs: from the keyframe before the first
wanted frame to the last wanted one. A frame is the one whose time is the row's parquet ``timestamp``
within 1e-4 s (LeRobot's tolerance); a missing frame is an error (the official decord path repeats
frames silently, training-serving-facts §7).

The embodiment spec decides the layout: its state and action keys (in checkpoint order) must be
sub-keys of ``modality.json`` with the same widths, its cameras must be the video keys, and an
``embodiment.json`` must name its tag. Anything else is a :class:`DatasetError` (a user mistake:
a dataset of another robot, a broken file) whose message names the file and the key.

Dimensions: T rows of an episode, S state and A action dims (the spec's), n wanted frames, H x W pixels.
Imports numpy, pyarrow, PyAV and the spec only.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec, VectorKey

STAT_NAMES = ("max", "min", "mean", "std", "q01", "q99")  # what metadata.json holds per key (facts §1.10)
FRAME_TOLERANCE_S = 1e-4  # LeRobot's timestamp tolerance (training-serving-facts §1.6)
MAX_STATS_EPISODES = 10_000  # the official loader samples at most this many episodes for relative stats, seed 42
STATS_SEED = 42


class DatasetError(ValueError):
    """A dataset that cannot train this embodiment: missing or malformed file, another robot's layout."""


@dataclass(frozen=True)
class VectorSlice:
    """One spec key inside a packed parquet column: ``column[:, start:end]``."""

    key: str
    column: str
    start: int
    end: int


@dataclass(frozen=True)
class EpisodeData:
    """The rows of one episode.

    Attributes:
        index: episode index. state: float64[T, S], action: float64[T, A] (spec order, absolute).
        timestamps: float64[T], seconds (the parquet ``timestamp``).
        language: per row, the value of the first annotation column (anchors must share it).
        instructions: per annotation column, per row, the instruction text.
    """

    index: int
    state: np.ndarray
    action: np.ndarray
    timestamps: np.ndarray
    language: np.ndarray
    instructions: tuple[tuple[str, ...], ...]


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (a LeRobot v2.1 dataset for DreamZero needs it, "
                           f"training-serving-facts §2.1)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatasetError(f"{path}: cannot parse: {error}") from error


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"{path}: missing (training-serving-facts §2.1)")
    rows = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: cannot parse: {error}") from error
    return rows


def _stat_block(values: np.ndarray) -> dict[str, np.ndarray]:
    """The six statistics per dimension of float[N, D] (numpy's linear quantiles, population std)."""
    data = np.asarray(values, dtype=np.float64)
    return {"max": data.max(axis=0), "min": data.min(axis=0), "mean": data.mean(axis=0), "std": data.std(axis=0),
            "q01": np.quantile(data, 0.01, axis=0), "q99": np.quantile(data, 0.99, axis=0)}


def _vectors(table, column: str, path: Path) -> np.ndarray:
    """A packed list column (or a scalar column) as float64[T, D]."""
    import pyarrow as pa

    if column not in table.column_names:
        raise DatasetError(f"{path}: no column {column!r} (modality.json names it)")
    array = table.column(column).combine_chunks()
    if pa.types.is_fixed_size_list(array.type) or pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        flat = array.flatten().to_numpy(zero_copy_only=False).astype(np.float64)
        if len(array) and flat.size % len(array):
            raise DatasetError(f"{path}: column {column!r} holds vectors of different lengths")
        return flat.reshape(len(array), -1)
    return array.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 1)


class LeRobotDataset:
    """One LeRobot v2.1 dataset read for one embodiment (see module docstring).

    Attributes:
        root: the dataset folder. spec: the embodiment. fps: rows per second (info.json).
        lengths: rows per episode, episode i at position i. tasks: task index -> text.
        resolutions: camera key -> (height, width) of its video (info.json).
        excluded_starts: episode -> steps never drawn as start steps (``meta/step_filter.jsonl``).
    """

    def __init__(self, root: str | Path, spec: EmbodimentSpec) -> None:
        self.root = Path(root)
        self.spec = spec
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: no such dataset folder")
        meta = self.root / "meta"
        self._check_embodiment(meta)
        info = _read_json(meta / "info.json")
        try:
            self.data_path, self.video_path = str(info["data_path"]), str(info["video_path"])
            self.chunks_size, self.fps = int(info["chunks_size"]), float(info["fps"])
            features = info["features"]
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{meta / 'info.json'}: needs data_path, video_path, chunks_size, fps and features "
                               f"({error!r})") from error
        modality = _read_json(meta / "modality.json")
        where = meta / "modality.json"
        self.state_slices = self._slices(modality, "state", spec.state, "observation.state", where)
        self.action_slices = self._slices(modality, "action", spec.action, "action", where)
        self.video_columns, self.resolutions = self._videos(modality, features, where, meta / "info.json")
        annotations = modality.get("annotation") or {}
        self.annotation_columns = tuple(str((entry or {}).get("original_key") or f"annotation.{name}")
                                        for name, entry in annotations.items()) or ("task_index",)
        self.lengths = self._episodes(meta / "episodes.jsonl")
        self.tasks = {int(row["task_index"]): str(row["task"]) for row in _read_jsonl(meta / "tasks.jsonl")}
        self.excluded_starts = self._step_filter(meta / "step_filter.jsonl")

    # ------------------------------------------------------------------------------------------ layout
    def _check_embodiment(self, meta: Path) -> None:
        path = meta / "embodiment.json"
        if not path.is_file():
            return  # optional (training-serving-facts §2.1); the layout checks below still apply
        tag = (_read_json(path) or {}).get("embodiment_tag")
        if tag is not None and tag != self.spec.embodiment_tag:
            raise DatasetError(f"{self.root}: the dataset is for embodiment {tag!r} ({path}), not "
                               f"{self.spec.embodiment_tag!r} (embodiment {self.spec.name!r})")

    def _slices(self, modality: dict, group: str, keys: tuple[VectorKey, ...], default_column: str,
                where: Path) -> tuple[VectorSlice, ...]:
        entries = modality.get(group)
        if not isinstance(entries, dict):
            raise DatasetError(f"{where}: no {group!r} section")
        missing = [k.key for k in keys if k.key not in entries]
        if missing:
            raise DatasetError(f"{self.root}: {group} keys {missing} of embodiment {self.spec.name!r} are not in "
                               f"{where} (it has {sorted(entries)}): a dataset of another embodiment?")
        slices = []
        for key in keys:
            entry = entries[key.key]
            try:
                start, end = int(entry["start"]), int(entry["end"])
            except (KeyError, TypeError, ValueError) as error:
                raise DatasetError(f"{where}: {group}.{key.key} needs start and end ({error!r})") from error
            if end - start != key.dim:
                raise DatasetError(f"{self.root}: {group}.{key.key} has {end - start} dims in {where}, embodiment "
                                   f"{self.spec.name!r} has {key.dim}: a dataset of another embodiment?")
            slices.append(VectorSlice(key.key, str(entry.get("original_key") or default_column), start, end))
        return tuple(slices)

    def _videos(self, modality: dict, features: dict, where: Path,
                info_path: Path) -> tuple[dict[str, str], dict[str, tuple[int, int]]]:
        entries = modality.get("video") or {}
        cameras = [c.key for c in self.spec.cameras]
        if sorted(entries) != sorted(cameras):
            raise DatasetError(f"{self.root}: video keys {sorted(entries)} in {where} are not the cameras {cameras} "
                               f"of embodiment {self.spec.name!r}: a dataset of another embodiment?")
        columns, resolutions = {}, {}
        for key in cameras:
            column = str((entries[key] or {}).get("original_key") or f"observation.images.{key}")
            feature = features.get(column)
            if not isinstance(feature, dict) or len(feature.get("shape", ())) != 3:
                raise DatasetError(f"{info_path}: no video feature {column!r} with shape [H, W, 3]")
            columns[key] = column
            resolutions[key] = (int(feature["shape"][0]), int(feature["shape"][1]))
        return columns, resolutions

    def _episodes(self, path: Path) -> list[int]:
        lengths = []
        for position, row in enumerate(_read_jsonl(path)):
            if int(row.get("episode_index", -1)) != position:
                raise DatasetError(f"{path}: line {position + 1} has episode_index {row.get('episode_index')}; "
                                   f"episodes must be numbered 0..N-1 in order (training-serving-facts §7)")
            lengths.append(int(row["length"]))
        if not lengths:
            raise DatasetError(f"{path}: no episodes")
        return lengths

    def _step_filter(self, path: Path) -> dict[int, frozenset[int]]:
        """Episode -> excluded start steps of the optional ``meta/step_filter.jsonl`` (module docstring)."""
        if not path.is_file():
            return {}
        excluded: dict[int, frozenset[int]] = {}
        for number, line in enumerate(path.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                episode, steps = row["episode_index"], row["step_indices"]
                if not (isinstance(steps, list) and all(isinstance(v, int) and not isinstance(v, bool)
                                                        for v in [episode, *steps])):
                    raise TypeError("episode_index must be an int and step_indices a list of ints")
            except (json.JSONDecodeError, KeyError, TypeError) as error:
                raise DatasetError(f"{path}:{number}: not a line {{\"episode_index\": int, \"step_indices\": "
                                   f"[int, ...]}}: {error!r}") from error
            if not 0 <= episode < len(self.lengths):
                raise DatasetError(f"{path}:{number}: episode_index {episode} is not an episode of "
                                   f"meta/episodes.jsonl (0..{len(self.lengths) - 1})")
            excluded[episode] = frozenset(steps)
        return excluded

    @property
    def num_episodes(self) -> int:
        return len(self.lengths)

    def parquet_path(self, episode: int) -> Path:
        return self.root / self.data_path.format(episode_chunk=episode // self.chunks_size, episode_index=episode)

    def video_file(self, episode: int, camera: str) -> Path:
        return self.root / self.video_path.format(episode_chunk=episode // self.chunks_size,
                                                  video_key=self.video_columns[camera], episode_index=episode)

    # ---------------------------------------------------------------------------------------- episodes
    def read_episode(self, episode: int) -> EpisodeData:
        """State, action, timestamps and languages of one episode (one parquet read)."""
        import pyarrow.parquet as pq

        path = self.parquet_path(episode)
        if not path.is_file():
            raise DatasetError(f"{path}: missing parquet file of episode {episode}")
        wanted = sorted({s.column for s in self.state_slices + self.action_slices} | {"timestamp"}
                        | set(self.annotation_columns))
        try:
            table = pq.read_table(path, columns=[c for c in wanted if c in pq.read_schema(path).names])
        except OSError as error:
            raise DatasetError(f"{path}: unreadable parquet file: {error}") from error
        if table.num_rows != self.lengths[episode]:
            raise DatasetError(f"{path}: {table.num_rows} rows, episodes.jsonl says {self.lengths[episode]}")
        columns = {c: _vectors(table, c, path) for c in {s.column for s in self.state_slices + self.action_slices}}

        def packed(slices: tuple[VectorSlice, ...]) -> np.ndarray:
            return np.concatenate([columns[s.column][:, s.start:s.end] for s in slices], axis=1)

        if "timestamp" not in table.column_names:
            raise DatasetError(f"{path}: no timestamp column (video frames are looked up by it)")
        instructions = []
        for column in self.annotation_columns:
            if column not in table.column_names:
                raise DatasetError(f"{path}: no annotation column {column!r} (meta/modality.json names it)")
            instructions.append(tuple(self._text(v, path) for v in table.column(column).to_pylist()))
        return EpisodeData(index=episode, state=packed(self.state_slices), action=packed(self.action_slices),
                           timestamps=table.column("timestamp").to_numpy().astype(np.float64),
                           language=np.asarray(table.column(self.annotation_columns[0]).to_pylist()),
                           instructions=tuple(instructions))

    def _text(self, value: Any, path: Path) -> str:
        """An annotation cell: a task index into tasks.jsonl, or the text itself (training-serving-facts §2.5)."""
        if isinstance(value, str):
            return value
        try:
            return self.tasks[int(value)]
        except (KeyError, TypeError, ValueError) as error:
            raise DatasetError(f"{path}: annotation value {value!r} is not a task index of meta/tasks.jsonl") from error

    def read_frames(self, episode: int, camera: str, timestamps: Sequence[float]) -> np.ndarray:
        """uint8[n, H, W, 3]: the video frames at ``timestamps`` (seconds), in the order given."""
        import av

        path = self.video_file(episode, camera)
        if not path.is_file():
            raise DatasetError(f"{path}: missing video of camera {camera!r}, episode {episode}")
        wanted = np.asarray(timestamps, dtype=np.float64)
        found: dict[int, np.ndarray] = {}
        try:
            with av.open(str(path)) as container:
                stream = container.streams.video[0]
                first = float(wanted.min())
                container.seek(max(0, int(round(first / float(stream.time_base)))) if first > 0 else 0,
                               stream=stream, backward=True, any_frame=False)
                for frame in container.decode(stream):
                    if frame.pts is None:
                        continue
                    time = float(frame.pts * stream.time_base)
                    for position in np.flatnonzero(np.abs(wanted - time) < FRAME_TOLERANCE_S):
                        found.setdefault(int(position), frame.to_ndarray(format="rgb24"))
                    if time > wanted.max() + FRAME_TOLERANCE_S or len(found) == len(wanted):
                        break
        except av.error.FFmpegError as error:
            raise DatasetError(f"{path}: cannot decode: {error}") from error
        if len(found) != len(wanted):
            lost = [float(wanted[i]) for i in range(len(wanted)) if i not in found]
            raise DatasetError(f"{path}: no frame within {FRAME_TOLERANCE_S} s of timestamps {lost[:5]} (LeRobot "
                               f"needs one frame per parquet row at its timestamp, training-serving-facts §1.6)")
        return np.stack([found[i] for i in range(len(wanted))])

    # -------------------------------------------------------------------------------------- statistics
    def statistics(self, horizon: int) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, dict[str, np.ndarray]]]:
        """Per spec key, the six statistics the checkpoint's metadata.json holds (facts §1.9-1.10).

        State keys: absolute (``stats.json`` sliced by the key's columns). Action keys: absolute, or for
        relative keys the chunk-relative statistics of ``relative_stats_dreamzero.json``. Missing files or
        entries without q01/q99 are recomputed from the parquet files as the official loader does.

        Returns:
            (state, action): key -> statistic -> float64[dim].
        """
        meta = self.root / "meta"
        stats = self._stats_file(meta / "stats.json")
        columns = {s.column for s in self.state_slices + self.action_slices}
        if not all(c in stats and {"q01", "q99"} <= set(stats[c]) for c in columns):
            stats = self._column_statistics(columns)
        relative = [k.key for k in self.spec.action if k.relative]
        relative_stats = self._stats_file(meta / "relative_stats_dreamzero.json")
        if not all(k in relative_stats and {"q01", "q99"} <= set(relative_stats[k]) for k in relative):
            relative_stats = self._relative_statistics(relative, horizon)

        def sliced(column_stats: dict, piece: VectorSlice) -> dict[str, np.ndarray]:
            return {name: np.asarray(values, dtype=np.float64).reshape(-1)[piece.start:piece.end]
                    for name, values in column_stats.items() if name in STAT_NAMES}

        state = {s.key: sliced(stats[s.column], s) for s in self.state_slices}
        action = {s.key: ({n: np.asarray(v, dtype=np.float64).reshape(-1) for n, v in relative_stats[s.key].items()
                           if n in STAT_NAMES} if s.key in relative else sliced(stats[s.column], s))
                  for s in self.action_slices}
        return state, action

    @staticmethod
    def _stats_file(path: Path) -> dict:
        if not path.is_file():
            return {}
        document = _read_json(path)
        return document if isinstance(document, dict) else {}

    def _column_statistics(self, columns: set[str]) -> dict[str, dict[str, np.ndarray]]:
        import pyarrow.parquet as pq

        values: dict[str, list[np.ndarray]] = {c: [] for c in columns}
        for episode in range(self.num_episodes):
            path = self.parquet_path(episode)
            table = pq.read_table(path, columns=sorted(columns))
            for column in columns:
                values[column].append(_vectors(table, column, path))
        return {c: _stat_block(np.concatenate(v).astype(np.float32)) for c, v in values.items()}

    def _relative_statistics(self, keys: list[str], horizon: int) -> dict[str, dict[str, np.ndarray]]:
        """action[i + k] - state[i], k < horizon, i = 0..T - horizon, over at most 10,000 episodes (facts §1.9)."""
        if not keys:
            return {}
        episodes = np.arange(self.num_episodes)
        if len(episodes) > MAX_STATS_EPISODES:
            episodes = np.random.default_rng(STATS_SEED).choice(episodes, size=MAX_STATS_EPISODES, replace=False)
        missing = sorted(set(keys) - {s.key for s in self.state_slices})
        if missing:
            raise DatasetError(f"{self.root}: relative action keys {missing} have no state key of the same name "
                               f"(facts §1.9: relative to the same sub-key's state)")
        windows: dict[str, list[np.ndarray]] = {k: [] for k in keys}
        for episode in episodes:
            data = self.read_episode(int(episode))
            starts = len(data.action) - horizon + 1
            if starts <= 0:
                continue
            for key in keys:
                action = data.action[:, self.action_columns(key)]
                state = data.state[:, self.state_columns(key)]
                steps = np.arange(starts)[:, None] + np.arange(horizon)  # starts, horizon
                windows[key].append((action[steps] - state[:starts, None, :]).reshape(-1, action.shape[1]))
        return {k: _stat_block(np.concatenate(v)) for k, v in windows.items() if v}

    def state_columns(self, key: str) -> slice:
        """Where spec state key ``key`` sits in :attr:`EpisodeData.state`."""
        return _position(self.state_slices, key)

    def action_columns(self, key: str) -> slice:
        return _position(self.action_slices, key)


def _position(slices: tuple[VectorSlice, ...], key: str) -> slice:
    start = 0
    for piece in slices:
        width = piece.end - piece.start
        if piece.key == key:
            return slice(start, start + width)
        start += width
    raise KeyError(key)
