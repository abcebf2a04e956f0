"""Random-weight ``tiny`` checkpoints in the official layout, and the check that a checkpoint fits an embodiment.

``checkpoint="tiny"`` (the local backend, ``dreamzero serve --checkpoint tiny``) means: create on first use
a tiny model with random weights, the byte-level tokenizer and statistics made up for the embodiments
(:func:`tiny_metadata`), cached under ``$DREAMZERO_CACHE`` or ``~/.cache/dreamzero-ros``, so the demo and
the tests run without downloads. :meth:`WamPolicy.random_tiny` seeds torch before building and the weights
do not depend on the embodiment, so every tiny checkpoint of one seed holds the same weights: the server's
three-embodiment checkpoint predicts what each local backend's one-embodiment checkpoint predicts.

:func:`check_layout` is the one check that a checkpoint's state/action layout equals the embodiment YAML's
(facts §1.4-1.6), used by the local backend and the server. Imports torch (through the policy), numpy and
the embodiment layer.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from dreamzero_embodiments.spec import EmbodimentSpec, VectorKey
from dreamzero_model.errors import CheckpointError
from dreamzero_model.metadata import EmbodimentMetadata, KeyLayout, write_embodiment_metadata
from dreamzero_model.policy import TOKENIZER_DIR, WamPolicy

LOG = logging.getLogger(__name__)
TINY = "tiny"
TINY_EMBODIMENTS = ("droid", "agibot_g1", "yam")  # what ``dreamzero serve --checkpoint tiny`` serves
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


def ensure_tiny_checkpoint(specs: Sequence[EmbodimentSpec], seed: int = 0) -> Path:
    """The cached tiny checkpoint holding the statistics of every one of ``specs``, written atomically on
    first use (``<cache>/tiny/<name>+<name>...-seed<seed>``)."""
    if not specs:
        raise ValueError("ensure_tiny_checkpoint: no embodiments given")
    name = "+".join(spec.name for spec in specs)
    target = cache_dir() / "tiny" / f"{name}-seed{seed}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=target.parent))
    metadata = [tiny_metadata(spec) for spec in specs]
    WamPolicy.random_tiny(metadata[0], seed=seed).save_pretrained(staging)
    if len(metadata) > 1:  # the same weights serve every embodiment: write all their statistics
        write_embodiment_metadata(staging, metadata, extra_conf={"tokenizer_path": TOKENIZER_DIR})
    try:
        staging.rename(target)
    except OSError:  # another process won the race; use its checkpoint
        shutil.rmtree(staging, ignore_errors=True)
    LOG.info("created tiny random-weight checkpoint %s", target)
    return target


def check_layout(spec: EmbodimentSpec, metadata: EmbodimentMetadata) -> None:
    """The checkpoint's keys, widths and relative keys must equal the embodiment YAML's.

    Raises:
        CheckpointError: naming the embodiment and each mismatch (YAML vs checkpoint).
    """
    problems = []
    for modality, ours, theirs in (("state", spec.state, metadata.state_keys), ("action", spec.action, metadata.action_keys)):
        if [(k.key, k.dim) for k in ours] != [(k.name, k.dim) for k in theirs]:
            problems.append(f"{modality}: YAML {[(k.key, k.dim) for k in ours]} != checkpoint "
                            f"{[(k.name, k.dim) for k in theirs]}")
    relative = {k.key for k in spec.action if k.relative}
    if relative != set(metadata.relative_action_keys):
        problems.append(f"relative keys: YAML {sorted(relative)} != checkpoint {sorted(metadata.relative_action_keys)}")
    if problems:
        raise CheckpointError(f"checkpoint does not match embodiment {spec.name!r}: " + "; ".join(problems))
