"""The ``local`` backend: the World Action Model in-process (ARCHITECTURE.md section 4).

Loads a checkpoint in the official layout with :class:`dreamzero_model.WamPolicy` (any size, from
``tiny`` on CPU to 14B on a GPU), stitches the camera views into the model's mosaic with the
embodiment layer (facts §1.7) and returns de-normalised actions with their relative flags.
``checkpoint="tiny"`` creates, on first use, a random-weight tiny checkpoint in the official layout
for the embodiment (cached under ``$DREAMZERO_CACHE`` or ``~/.cache/dreamzero-ros``), so the demo and
tests run without downloads. The checkpoint's state/action layout must equal the embodiment YAML's.
No rclpy here.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from dreamzero_embodiments.spec import EmbodimentSpec, VectorKey
from dreamzero_embodiments.stitching import resize_to, stitch_frames
from dreamzero_model import SamplerConfig
from dreamzero_model.metadata import EmbodimentMetadata, KeyLayout
from dreamzero_model.policy import WamPolicy
from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation

LOG = logging.getLogger(__name__)
TINY = "tiny"
# Statistics of the random tiny model: not learned from data. They bound what it commands: relative
# dimensions move at most about 0.05 (rad or model units) per chunk, unit-mapped ones stay in their
# model range, other absolute ones (base velocity) within +-0.05.
TINY_RELATIVE_RANGE = 0.05
TINY_STATE_RANGE = np.pi


def cache_dir() -> Path:
    return Path(os.environ.get("DREAMZERO_CACHE", Path.home() / ".cache" / "dreamzero-ros"))


def _layout(key: VectorKey, low: float, high: float) -> KeyLayout:
    if key.unit_map is not None:
        low, high = min(key.unit_map.model), max(key.unit_map.model)
    q01, q99 = np.full(key.dim, low), np.full(key.dim, high)
    return KeyLayout(key.key, key.dim, {"q01": q01, "q99": q99, "min": q01, "max": q99,
                                        "mean": (q01 + q99) / 2, "std": (q99 - q01) / 4})


def tiny_metadata(spec: EmbodimentSpec) -> EmbodimentMetadata:
    """Checkpoint metadata for a random tiny model of ``spec`` (see TINY_* constants)."""
    return EmbodimentMetadata(
        tag=spec.embodiment_tag, video_keys=tuple(c.key for c in spec.cameras),
        video_resolutions={c.key: c.resolution for c in spec.cameras},
        state_keys=tuple(_layout(k, -TINY_STATE_RANGE, TINY_STATE_RANGE) for k in spec.state),
        action_keys=tuple(_layout(k, -TINY_RELATIVE_RANGE, TINY_RELATIVE_RANGE) for k in spec.action),
        relative_action_keys=tuple(k.key for k in spec.action if k.relative), max_chunk_size=4,
        tokenizer_path=None, save_lora_only=False)


def ensure_tiny_checkpoint(spec: EmbodimentSpec, seed: int = 0) -> Path:
    """The cached tiny checkpoint of ``spec``, written atomically on first use."""
    target = cache_dir() / "tiny" / f"{spec.name}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.name}-", dir=target.parent))
    WamPolicy.random_tiny(tiny_metadata(spec), seed=seed).save_pretrained(staging)
    try:
        staging.rename(target)
    except OSError:  # another process won the race; use its checkpoint
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("created tiny random-weight checkpoint %s", target)
    return target


def check_layout(spec: EmbodimentSpec, metadata: EmbodimentMetadata) -> None:
    """The checkpoint's keys, widths and relative keys must equal the embodiment YAML's."""
    problems = []
    for modality, ours, theirs in (("state", spec.state, metadata.state_keys), ("action", spec.action, metadata.action_keys)):
        if [(k.key, k.dim) for k in ours] != [(k.name, k.dim) for k in theirs]:
            problems.append(f"{modality}: YAML {[(k.key, k.dim) for k in ours]} != checkpoint "
                            f"{[(k.name, k.dim) for k in theirs]}")
    relative = {k.key for k in spec.action if k.relative}
    if relative != set(metadata.relative_action_keys):
        problems.append(f"relative keys: YAML {sorted(relative)} != checkpoint {sorted(metadata.relative_action_keys)}")
    if problems:
        raise BackendError(f"checkpoint does not match embodiment {spec.name!r}: " + "; ".join(problems))


class LocalBackend:
    """In-process WAM backend (see module docstring)."""

    def __init__(self, spec: EmbodimentSpec, checkpoint: str = TINY, device: str = "cpu", dtype: str = "",
                 sampler: SamplerConfig | None = None, tokenizer_path: str = "", decode_video: bool = True,
                 cpu_threads: int = 0) -> None:
        self.spec = spec
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)  # process-wide: this process hosts the model
        path = ensure_tiny_checkpoint(spec) if checkpoint == TINY else Path(checkpoint)
        self.policy = WamPolicy.from_pretrained(
            path, spec.embodiment_tag, device=device, dtype=getattr(torch, dtype) if dtype else None,
            sampler=sampler, tokenizer_path=tokenizer_path or None, decode_video=decode_video, progress=False)
        check_layout(spec, self.policy.metadata)

    def reset(self, prompt: str, session_id: str) -> None:
        self.policy.reset(prompt)

    def infer(self, observation: Observation) -> BackendPrediction:
        mosaic = stitch_frames(observation.views, self.spec)  # T, 2h, 2w, 3
        if tuple(mosaic.shape[1:3]) != self.policy.mosaic_size:  # e.g. tiny or 5B: resize the whole mosaic (facts §7)
            mosaic = np.stack([resize_to(frame, self.policy.mosaic_size) for frame in mosaic])
        try:
            prediction = self.policy.infer(mosaic, observation.state, prompt=observation.prompt)
        except ValueError as error:
            raise BackendError(f"local model refused the observation: {error}") from error
        return BackendPrediction(actions=prediction.actions, relative=prediction.relative, frames=prediction.frames,
                                 seconds=prediction.seconds)

    def close(self) -> None:
        self.policy = None
