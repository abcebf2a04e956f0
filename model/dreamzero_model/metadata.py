"""The checkpoint's experiment configuration: ``experiment_cfg/conf.yaml`` and ``metadata.json`` (facts §1.9-1.10, §5.1).

Reads, for one embodiment tag (``oxe_droid``, ``agibot``, ``yam``, ...):
* from ``conf.yaml`` (the resolved Hydra training config): ``modality_configs.<tag>.{video,state,action,
  language}.modality_keys`` (concatenation order), ``relative_action`` and ``relative_action_keys``
  (sub-key names such as ``joint_position``), ``max_chunk_size``, ``save_lora_only``, ``tokenizer_path``;
* from ``metadata.json`` (keyed by tag): ``statistics.{state,action}.<sub-key>.{q01,q99,...}`` and
  ``modalities.video.<sub-key>.resolution`` ([W, H]).
Every problem raises :class:`~dreamzero_model.errors.CheckpointError` naming the file and key path.
Imports numpy and yaml only.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dreamzero_model.errors import CheckpointError
from dreamzero_model.normalizer import Q99Normalizer

EXPERIMENT_DIR = "experiment_cfg"


@dataclass(frozen=True)
class KeyLayout:
    """One state or action sub-key: name (e.g. ``joint_position``), width and its statistics.

    ``statistics`` maps each statistic of ``metadata.json`` (q01 and q99 required; max, min, mean,
    std when present) to float64[dim], so a saved checkpoint writes back what it read.
    """

    name: str
    dim: int
    statistics: dict[str, np.ndarray]

    @property
    def q01(self) -> np.ndarray:
        return self.statistics["q01"]

    @property
    def q99(self) -> np.ndarray:
        return self.statistics["q99"]


@dataclass(frozen=True)
class EmbodimentMetadata:
    """What a checkpoint says about one embodiment.

    Attributes:
        tag: embodiment tag, e.g. ``oxe_droid``.
        video_keys: camera keys in model view order (e.g. ``exterior_image_1_left``).
        video_resolutions: per camera key, (height, width) the model expects as input.
        state_keys / action_keys: sub-keys in concatenation order with widths and q01/q99.
        relative_action_keys: action sub-keys predicted relative to the state at the chunk start.
        max_chunk_size: chunks per context. tokenizer_path: as recorded at training time.
        save_lora_only: weights hold only LoRA + heads (facts §5.4).
    """

    tag: str
    video_keys: tuple[str, ...]
    video_resolutions: dict[str, tuple[int, int]]
    state_keys: tuple[KeyLayout, ...]
    action_keys: tuple[KeyLayout, ...]
    relative_action_keys: tuple[str, ...]
    max_chunk_size: int
    tokenizer_path: str | None
    save_lora_only: bool

    @property
    def state_dim(self) -> int:
        return sum(k.dim for k in self.state_keys)

    @property
    def action_dim(self) -> int:
        return sum(k.dim for k in self.action_keys)

    @staticmethod
    def _normalizer(keys: tuple[KeyLayout, ...]) -> Q99Normalizer:
        return Q99Normalizer(np.concatenate([k.q01 for k in keys]), np.concatenate([k.q99 for k in keys]))

    @property
    def state_normalizer(self) -> Q99Normalizer:
        return self._normalizer(self.state_keys)

    @property
    def action_normalizer(self) -> Q99Normalizer:
        return self._normalizer(self.action_keys)

    def relative_action_mask(self) -> np.ndarray:
        """bool[action_dim]: True on the dimensions of relative action keys."""
        return np.concatenate([np.full(k.dim, k.name in self.relative_action_keys) for k in self.action_keys])

    def state_slices(self) -> dict[str, slice]:
        """Where each state sub-key sits in the concatenated state vector."""
        return _slices(self.state_keys)

    def action_slices(self) -> dict[str, slice]:
        return _slices(self.action_keys)


def _slices(keys: tuple[KeyLayout, ...]) -> dict[str, slice]:
    slices, start = {}, 0
    for key in keys:
        slices[key.name] = slice(start, start + key.dim)
        start += key.dim
    return slices


def _sub_key(modality_key: str) -> str:
    """``state.joint_position`` -> ``joint_position``."""
    return modality_key.split(".", 1)[1] if "." in modality_key else modality_key


def _read(path: Path, loader) -> Any:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a servable checkpoint needs {EXPERIMENT_DIR}/conf.yaml and "
                              f"{EXPERIMENT_DIR}/metadata.json, facts §5.1)")
    try:
        return loader(path.read_text())
    except (yaml.YAMLError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: cannot parse: {error}") from error


def _get(tree: Any, path: list[str], file: Path) -> Any:
    node = tree
    for depth, part in enumerate(path):
        if not isinstance(node, dict) or part not in node:
            where = ".".join(path[:depth + 1])
            known = sorted(node) if isinstance(node, dict) else []
            close = difflib.get_close_matches(part, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else (f"; present: {', '.join(known)}" if known else "")
            raise CheckpointError(f"{file}: no entry {where!r}{hint}")
        node = node[part]
    return node


def _key_layouts(modality: str, keys: list[str], metadata: dict, tag: str, file: Path) -> tuple[KeyLayout, ...]:
    layouts = []
    for modality_key in keys:
        name = _sub_key(modality_key)
        entry = _get(metadata, [tag, "statistics", modality, name], file)
        for required in ("q01", "q99"):
            _get(metadata, [tag, "statistics", modality, name, required], file)
        statistics = {stat: np.asarray(values, dtype=np.float64).reshape(-1) for stat, values in entry.items()}
        sizes = {stat: values.size for stat, values in statistics.items()}
        if len(set(sizes.values())) != 1:
            raise CheckpointError(f"{file}: {tag}.statistics.{modality}.{name}: statistics differ in length {sizes}")
        layouts.append(KeyLayout(name=name, dim=sizes["q01"], statistics=statistics))
    return tuple(layouts)


def embodiment_tags(checkpoint_dir: str | Path) -> list[str]:
    """The embodiment tags ``experiment_cfg/metadata.json`` holds statistics for, in file order.

    Raises:
        CheckpointError: the file is missing or unparsable.
    """
    metadata_file = Path(checkpoint_dir) / EXPERIMENT_DIR / "metadata.json"
    return list(_read(metadata_file, json.loads) or {})


def load_embodiment_metadata(checkpoint_dir: str | Path, tag: str) -> EmbodimentMetadata:
    """Read ``experiment_cfg/conf.yaml`` and ``metadata.json`` for embodiment ``tag``.

    Raises:
        CheckpointError: a file is missing or unparsable, the tag is unknown, or an entry is missing.
    """
    folder = Path(checkpoint_dir) / EXPERIMENT_DIR
    conf_file, metadata_file = folder / "conf.yaml", folder / "metadata.json"
    conf = _read(conf_file, yaml.safe_load) or {}
    metadata = _read(metadata_file, json.loads) or {}
    if tag not in metadata:
        close = difflib.get_close_matches(tag, list(metadata), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise CheckpointError(f"{metadata_file}: no statistics for embodiment {tag!r}{hint} "
                              f"(present: {', '.join(sorted(metadata)) or 'none'})")
    modalities = _get(conf, ["modality_configs", tag], conf_file)
    video_keys = [_sub_key(k) for k in _get(modalities, ["video", "modality_keys"], conf_file)]
    resolutions = {}
    for key in video_keys:
        width, height = _get(metadata, [tag, "modalities", "video", key, "resolution"], metadata_file)
        resolutions[key] = (int(height), int(width))
    state_keys = _key_layouts("state", _get(modalities, ["state", "modality_keys"], conf_file), metadata, tag,
                              metadata_file)
    action_keys = _key_layouts("action", _get(modalities, ["action", "modality_keys"], conf_file), metadata, tag,
                               metadata_file)
    # One list for the whole conf (official); with several embodiments each takes its own action keys from it.
    listed = tuple(conf.get("relative_action_keys") or ()) if conf.get("relative_action", False) else ()
    own = {k.name for k in action_keys}
    every_action_key = own | {_sub_key(k) for entry in conf["modality_configs"].values() if isinstance(entry, dict)
                              for k in (entry.get("action") or {}).get("modality_keys") or ()}
    unknown = sorted(set(listed) - every_action_key)
    if unknown:
        raise CheckpointError(f"{conf_file}: relative_action_keys {unknown} are not action keys of {tag!r} "
                              f"({', '.join(k.name for k in action_keys)}) or of another embodiment")
    relative = tuple(key for key in listed if key in own)
    return EmbodimentMetadata(
        tag=tag, video_keys=tuple(video_keys), video_resolutions=resolutions, state_keys=state_keys,
        action_keys=action_keys, relative_action_keys=relative, max_chunk_size=int(conf.get("max_chunk_size", 4)),
        tokenizer_path=conf.get("tokenizer_path"), save_lora_only=bool(conf.get("save_lora_only", False)))


def write_embodiment_metadata(checkpoint_dir: str | Path, embodiments: list[EmbodimentMetadata],
                              extra_conf: dict[str, Any] | None = None) -> None:
    """Write ``experiment_cfg/conf.yaml`` and ``metadata.json`` in the layout :func:`load_embodiment_metadata` reads.

    ``relative_action_keys`` is one list in the official conf; it is the union over ``embodiments``, and
    :func:`load_embodiment_metadata` gives each embodiment the listed keys among its own action keys.
    ``extra_conf`` adds top-level entries (e.g. ``save_lora_only``, ``tokenizer_path``).

    Raises:
        ValueError: a key relative in one embodiment is an absolute action key of another (one list
            cannot say both).
    """
    folder = Path(checkpoint_dir) / EXPERIMENT_DIR
    relative = sorted({key for e in embodiments for key in e.relative_action_keys})
    clashes = sorted({f"{e.tag}.{k.name}" for e in embodiments for k in e.action_keys
                      if k.name in relative and k.name not in e.relative_action_keys})
    if clashes:
        raise ValueError(f"write_embodiment_metadata: {clashes} are absolute, but another embodiment lists the "
                         f"same key as relative; the conf has one relative_action_keys list")
    folder.mkdir(parents=True, exist_ok=True)
    conf: dict[str, Any] = {
        "modality_configs": {e.tag: {
            "video": {"modality_keys": [f"video.{k}" for k in e.video_keys]},
            "state": {"modality_keys": [f"state.{k.name}" for k in e.state_keys]},
            "action": {"modality_keys": [f"action.{k.name}" for k in e.action_keys]},
        } for e in embodiments},
        "relative_action": bool(relative),
        "relative_action_keys": relative,
        "max_chunk_size": max(e.max_chunk_size for e in embodiments),
        "save_lora_only": any(e.save_lora_only for e in embodiments),
        "tokenizer_path": next((e.tokenizer_path for e in embodiments if e.tokenizer_path), None),
        **(extra_conf or {}),
    }
    metadata = {e.tag: {
        "statistics": {
            modality: {k.name: {stat: v.tolist() for stat, v in k.statistics.items()} for k in keys}
            for modality, keys in (("state", e.state_keys), ("action", e.action_keys))},
        "modalities": {"video": {k: {"resolution": [w, h], "channels": 3} for k, (h, w) in e.video_resolutions.items()}},
        "embodiment_tag": e.tag,
    } for e in embodiments}
    (folder / "conf.yaml").write_text(yaml.safe_dump(conf, sort_keys=False))
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=1))
