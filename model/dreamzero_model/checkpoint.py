"""Weight I/O in the official checkpoint layout (facts §5; checkpoint-manifest README).

The only module that opens weight files. A checkpoint directory holds ``config.json``, either
``model.safetensors`` or shards ``model-0000i-of-0000N.safetensors`` with
``model.safetensors.index.json``, and ``experiment_cfg/`` (read by :mod:`dreamzero_model.metadata`).
Loading is lazy and per tensor (memory-mapped safetensors), straight to the target device and
dtype, with a tqdm bar; names and shapes are checked against the module (built on the meta device)
and every mismatch raises :class:`~dreamzero_model.errors.CheckpointError`.

LoRA-only checkpoints (``save_lora_only``; keys under ``action_head.model.base_model.model.`` with
``lora_A``/``lora_B``) are merged into a base checkpoint the caller names, e.g. DreamZero-AgiBot,
not raw Wan2.1 (the official loader's bug, facts §5.4): W = W_base + (alpha / r) B A.
Imports torch, safetensors, tqdm.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from tqdm.auto import tqdm

from dreamzero_model.errors import CheckpointError

CONFIG_FILE = "config.json"
SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9  # transformers save_pretrained default "5GB" (manifest README)
PEFT_PREFIX = "action_head.model.base_model.model."
PLAIN_DIT_PREFIX = "action_head.model."
LORA_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<which>[AB])(?:\.default)?\.weight$")


def read_config(checkpoint_dir: str | Path) -> dict[str, Any]:
    """The checkpoint's ``config.json``."""
    path = Path(checkpoint_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: missing (a checkpoint needs config.json, facts §5.1)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: cannot parse: {error}") from error


def weight_files(checkpoint_dir: str | Path) -> dict[str, Path]:
    """Tensor name -> file holding it, from the shard index or the single file."""
    folder = Path(checkpoint_dir)
    index = folder / INDEX_FILE
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as error:
            raise CheckpointError(f"{index}: not a safetensors index ({error})") from error
        files = {name: folder / shard for name, shard in weight_map.items()}
        for shard in sorted(set(files.values())):
            if not shard.is_file():
                raise CheckpointError(f"{shard}: listed in {INDEX_FILE} but missing")
        return files
    single = folder / SINGLE_FILE
    if not single.is_file():
        raise CheckpointError(f"{folder}: no {SINGLE_FILE} and no {INDEX_FILE}")
    return {name: single for name in _open(single).keys()}


def _open(path: Path, device: str = "cpu"):
    try:
        return safe_open(str(path), framework="pt", device=device)
    except (SafetensorError, OSError) as error:
        raise CheckpointError(f"{path}: unreadable safetensors file (truncated or corrupt?): {error}") from error


def iter_tensors(files: Mapping[str, Path], names: list[str], device: torch.device | str,
                 dtype: torch.dtype | None, progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) on ``device`` in ``dtype``, one tensor at a time (memory-mapped reads)."""
    reader = TensorReader(files, device)
    for name in tqdm(sorted(names, key=lambda n: (str(files[n]), n)), desc="loading weights", unit="tensor",
                     disable=not progress):
        tensor = reader.get(name)
        yield name, tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def load_into(module: torch.nn.Module, tensors: Iterator[tuple[str, torch.Tensor]], source: str) -> None:
    """Assign tensors to ``module`` by name; every parameter must be filled with its exact shape.

    ``module`` is typically built on the meta device: parameters are replaced by the loaded tensors
    (``assign=True``), so no second copy of the weights is ever allocated.
    """
    expected = {name: tuple(t.shape) for name, t in module.state_dict().items()}
    seen: set[str] = set()
    unexpected: list[str] = []
    for name, tensor in tensors:
        if name not in expected:
            unexpected.append(name)
            continue
        if tuple(tensor.shape) != expected[name]:
            raise CheckpointError(f"{source}: tensor {name!r} has shape {tuple(tensor.shape)}, "
                                  f"the model expects {expected[name]}")
        module.load_state_dict({name: tensor}, strict=False, assign=True)
        seen.add(name)
    missing = sorted(set(expected) - seen)
    if missing or unexpected:
        raise CheckpointError(f"{source}: {len(missing)} missing tensor(s) {missing[:5]}, "
                              f"{len(unexpected)} unexpected {sorted(unexpected)[:5]}")


def load_checkpoint_weights(module: torch.nn.Module, checkpoint_dir: str | Path, device: torch.device | str = "cpu",
                            dtype: torch.dtype | None = None, progress: bool = True) -> None:
    """Load a full (non-LoRA) checkpoint into ``module`` whose names carry the official prefixes."""
    files = weight_files(checkpoint_dir)
    load_into(module, iter_tensors(files, sorted(files), device, dtype, progress), str(checkpoint_dir))


def is_lora_checkpoint(names: list[str]) -> bool:
    return any(name.startswith(PEFT_PREFIX) for name in names)


def merged_lora_tensors(lora_dir: str | Path, base_dir: str | Path, device: torch.device | str = "cpu",
                        dtype: torch.dtype | None = None, alpha: float | None = None,
                        progress: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Tensors of ``base_dir`` with the LoRA deltas of ``lora_dir`` merged and its other tensors on top.

    LoRA keys ``<module>.lora_A[.default].weight`` [r, in] and ``lora_B`` [out, r] add
    (alpha / r) B A to ``<module>.weight``; ``alpha`` defaults to r (DreamZero: rank 4, alpha 4,
    facts §6.2). Keys are un-prefixed from ``base_model.model.`` and ``.base_layer.`` (both peft
    namings, manifest README).
    """
    lora_files = weight_files(lora_dir)
    lora_tensors = dict(iter_tensors(lora_files, list(lora_files), device, torch.float32, progress=False))
    plain: dict[str, torch.Tensor] = {}
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in lora_tensors.items():
        name = name.replace(PEFT_PREFIX, PLAIN_DIT_PREFIX).replace(".base_layer.", ".")
        match = LORA_KEY.match(name)
        if match:
            pairs.setdefault(match["module"], {})[match["which"]] = tensor
        else:
            plain[name] = tensor
    for module, pair in pairs.items():
        for which in {"A", "B"} - set(pair):
            raise CheckpointError(f"{lora_dir}: LoRA module {module!r} has no lora_{which} weight")
    base_files = weight_files(base_dir)
    lacking = sorted(f"{m}.weight" for m in pairs if f"{m}.weight" not in base_files and f"{m}.weight" not in plain)
    if lacking:
        raise CheckpointError(f"{base_dir}: the base checkpoint lacks LoRA-wrapped weights {lacking[:5]}")
    base = TensorReader(base_files, device)
    for name in tqdm(sorted(set(base_files) | set(plain)), desc="merging LoRA", unit="tensor", disable=not progress):
        tensor = plain[name] if name in plain else base.get(name).float()
        module = name.removesuffix(".weight")
        if name.endswith(".weight") and module in pairs:
            down, up = pairs[module]["A"], pairs[module]["B"]
            rank = down.shape[0]
            tensor = tensor + ((alpha if alpha is not None else rank) / rank) * (up @ down)
        yield name, tensor if dtype is None else tensor.to(dtype)


class TensorReader:
    """Reads single tensors from a set of safetensors files, keeping each file open once."""

    def __init__(self, files: Mapping[str, Path], device: torch.device | str = "cpu") -> None:
        self.files = files
        self.device = str(device)
        self._handles: dict[Path, Any] = {}

    def get(self, name: str) -> torch.Tensor:
        path = self.files[name]
        if path not in self._handles:
            self._handles[path] = _open(path, self.device)
        try:
            return self._handles[path].get_tensor(name)
        except (SafetensorError, OSError) as error:
            raise CheckpointError(f"{path}: cannot read tensor {name!r}: {error}") from error


def save_weights(state_dict: Mapping[str, torch.Tensor], checkpoint_dir: str | Path,
                 max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES) -> list[Path]:
    """Write ``model.safetensors``, or shards plus ``model.safetensors.index.json`` above ``max_shard_bytes``."""
    folder = Path(checkpoint_dir)
    folder.mkdir(parents=True, exist_ok=True)
    shards: list[dict[str, torch.Tensor]] = [{}]
    sizes = [0]
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().contiguous()
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and sizes[-1] + nbytes > max_shard_bytes:
            shards.append({})
            sizes.append(0)
        shards[-1][name] = tensor
        sizes[-1] += nbytes
    if len(shards) == 1:
        save_file(shards[0], str(folder / SINGLE_FILE), metadata={"format": "pt"})
        return [folder / SINGLE_FILE]
    paths, weight_map = [], {}
    for number, shard in enumerate(shards, start=1):
        path = folder / f"model-{number:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, str(path), metadata={"format": "pt"})
        weight_map.update({name: path.name for name in shard})
        paths.append(path)
    index = {"metadata": {"total_size": sum(sizes)}, "weight_map": weight_map}
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=1))
    return paths


FINGERPRINT_SAMPLES = 16  # evenly spaced reads per weight file
FINGERPRINT_BYTES = 1 << 16
CONF_FILE = Path("experiment_cfg") / "conf.yaml"


def weights_fingerprint(checkpoint_dir: str | Path) -> str:
    """A cheap identity of a checkpoint's weights: names and sizes of its files and sampled bytes of each."""
    digest = hashlib.sha256()
    for path in sorted(set(weight_files(checkpoint_dir).values())):
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            for position in np.linspace(0, max(0, size - FINGERPRINT_BYTES), FINGERPRINT_SAMPLES).astype(np.int64):
                handle.seek(int(position))
                digest.update(handle.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def lora_base(lora_dir: str | Path, base_checkpoint: str | Path | None = None) -> Path:
    """The full checkpoint a LoRA-only checkpoint applies to: ``base_checkpoint``, else the one its
    ``experiment_cfg/conf.yaml`` records (``base_checkpoint``, as ``dreamzero train`` writes it), checked
    against the recorded ``base_checkpoint_fingerprint`` when there is one (facts §5.4: never raw Wan2.1).

    Raises:
        CheckpointError: no base given or recorded, the base is not a checkpoint, or its weights differ
            from the ones the LoRA was trained on.
    """
    folder = Path(lora_dir)
    try:
        conf = yaml.safe_load((folder / CONF_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        conf = {}
    recorded = conf.get("base_checkpoint") if isinstance(conf, dict) else None
    if base_checkpoint is None and not recorded:
        raise CheckpointError(f"{folder}: holds LoRA weights only and records no base; pass the full checkpoint it "
                              f"was trained on (e.g. DreamZero-AgiBot, not raw Wan2.1; facts §5.4)")
    base = Path(base_checkpoint if base_checkpoint is not None else recorded)
    if not (base / CONFIG_FILE).is_file():
        raise CheckpointError(f"{folder}: holds LoRA weights only; its base {base} is not a checkpoint "
                              f"(no {CONFIG_FILE})")
    fingerprint = conf.get("base_checkpoint_fingerprint") if isinstance(conf, dict) else None
    if fingerprint and weights_fingerprint(base) != fingerprint:
        raise CheckpointError(f"{folder}: was trained on a base with other weights than {base} (fingerprint "
                              f"differs); pass the checkpoint it was trained on")
    return base
