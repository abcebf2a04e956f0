"""Training checkpoints: servable weights in the official layout plus the state a resumed run needs.

``OUTPUT/checkpoint-<step>/`` (the official naming, training-serving-facts §3.4), written every
``save_every`` steps, holds:

* what :meth:`~dreamzero_model.policy.WamPolicy.from_pretrained`, the policy node and ``eval-bag`` load:
  ``config.json``, ``model.safetensors`` (or shards + index), ``experiment_cfg/conf.yaml`` and
  ``metadata.json`` (the dataset statistics under the embodiment tag), ``tokenizer/``. A LoRA run
  saves only the trained tensors (LoRA A/B and the state/action heads, under the official peft
  prefix ``action_head.model.base_model.model.``) with ``save_lora_only: true`` and the base it was
  trained on (path and fingerprint) in ``conf.yaml`` (facts §5.4, §6.2);
* ``training_state/``: trained parameters and AdamW state (``torch.distributed.checkpoint``, sharded
  by rank under FSDP), the scheduler, per-rank RNG states and ``trainer_state.json`` (next step, the
  samples consumed, the run's settings). Samples are a function of their index
  (:mod:`~dreamzero_model.training.data`), so the step is the data position.

Atomic: a checkpoint is assembled in ``.checkpoint-<step>.tmp`` and renamed into place when complete;
only complete checkpoints are listed. The final model is written into ``OUTPUT`` itself with
``config.json`` renamed in last, so ``OUTPUT/config.json`` marks a finished run (as the official
trainer's). Imports torch, safetensors (through :mod:`dreamzero_model.checkpoint`) and numpy.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dreamzero_model.checkpoint import CONFIG_FILE, PEFT_PREFIX, PLAIN_DIT_PREFIX, merged_lora_tensors, save_weights
from dreamzero_model.metadata import EmbodimentMetadata, write_embodiment_metadata
from dreamzero_model.policy import OUR_CONFIG_KEY, TOKENIZER_DIR, WamPolicy
from dreamzero_model.training.distributed import ProcessInfo, barrier

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
STATE_DIR = "training_state"
TRAINER_STATE = "trainer_state.json"
MERGED_DIR = "merged"


def checkpoint_dir(output: Path, step: int) -> Path:
    return output / f"checkpoint-{step}"


def list_checkpoints(output: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run, oldest first."""
    found = []
    if output.is_dir():
        for path in output.iterdir():
            match = CHECKPOINT.match(path.name)
            if match and (path / STATE_DIR / TRAINER_STATE).is_file():
                found.append((int(match[1]), path))
    return sorted(found)


# ------------------------------------------------------------------------------------------ servable
def _config_json(policy: WamPolicy, architecture: str) -> dict[str, Any]:
    """config.json as :meth:`WamPolicy.save_pretrained` writes it, with the trained architecture."""
    dit = policy.config.dit
    return {"model_type": "vla", "action_horizon": dit.num_action_per_block, "action_dim": dit.action_dim,
            "action_head_cfg": {"config": {"diffusion_model_cfg": dit.to_dict(), "train_architecture": architecture}},
            OUR_CONFIG_KEY: policy.config.to_dict()}


def write_servable(folder: Path, policy: WamPolicy, metadata: EmbodimentMetadata, tensors: dict[str, torch.Tensor],
                   lora: bool, conf: dict[str, Any], config_last: bool = False) -> None:
    """A checkpoint directory in the official layout (see module docstring).

    ``config_last``: write ``config.json`` under a temporary name; the caller renames it into place.
    """
    folder.mkdir(parents=True, exist_ok=True)
    save_weights(tensors, folder)
    write_embodiment_metadata(folder, [replace(metadata, save_lora_only=lora)],
                              extra_conf={"tokenizer_path": TOKENIZER_DIR, **conf})
    policy.tokenizer.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))
    name = CONFIG_FILE + ".tmp" if config_last else CONFIG_FILE
    (folder / name).write_text(json.dumps(_config_json(policy, "lora" if lora else "full"), indent=1))


def trained_dit_state(trained: nn.Module, parallel: str, info: ProcessInfo) -> dict[str, torch.Tensor] | None:
    """The DiT's tensors (full, on the CPU) on rank 0, None elsewhere; a collective under FSDP."""
    if parallel == "fsdp":
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        state = get_model_state_dict(trained, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    else:
        module = trained.module if parallel == "ddp" else trained
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()} if info.is_main else {}
    if not info.is_main:
        return None
    return {name.removeprefix("dit."): tensor for name, tensor in state.items() if name.startswith("dit.")}


def servable_tensors(policy: WamPolicy, dit_state: dict[str, torch.Tensor], lora: bool,
                     save_dtype: torch.dtype | None) -> dict[str, torch.Tensor]:
    """Tensors of the checkpoint: the whole model, or for LoRA the trained DiT tensors under the peft prefix."""
    def cast(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.to(save_dtype) if save_dtype is not None and tensor.is_floating_point() else tensor

    dit = policy.model.action_head.model
    if lora:
        trainable = {n for n, p in dit.named_parameters() if p.requires_grad}
        return {PEFT_PREFIX + n: cast(t) for n, t in dit_state.items() if n in trainable}
    tensors = {n: cast(t.detach().cpu()) for n, t in policy.model.state_dict().items()
               if not n.startswith(PLAIN_DIT_PREFIX)}
    tensors.update({PLAIN_DIT_PREFIX + n: cast(t) for n, t in dit_state.items()})
    return tensors


# ------------------------------------------------------------------------------------ training state
def _dcp_state(trained: nn.Module, optimizer: torch.optim.Optimizer, parallel: str):
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    module = trained.module if parallel == "ddp" else trained
    options = StateDictOptions(ignore_frozen_params=True)
    return module, options, get_state_dict(module, optimizer, options=options)


def save_training_state(folder: Path, trained: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, parallel: str, info: ProcessInfo) -> None:
    """Trained parameters + optimizer (collective), scheduler and this rank's RNG states into ``folder``."""
    import torch.distributed.checkpoint as dcp

    folder.mkdir(parents=True, exist_ok=True)
    _, _, (model_state, optimizer_state) = _dcp_state(trained, optimizer, parallel)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process.*")
        dcp.save({"model": model_state, "optimizer": optimizer_state}, checkpoint_id=str(folder / "dcp"))
    rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
           "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}
    torch.save(rng, folder / f"rng_{info.rank}.pt")
    if info.is_main:
        torch.save(scheduler.state_dict(), folder / "scheduler.pt")


def load_training_state(folder: Path, trained: nn.Module, optimizer: torch.optim.Optimizer,
                        scheduler: torch.optim.lr_scheduler.LRScheduler, parallel: str, info: ProcessInfo) -> dict:
    """Restore what :func:`save_training_state` wrote; returns ``trainer_state.json``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    module, options, (model_state, optimizer_state) = _dcp_state(trained, optimizer, parallel)
    state = {"model": model_state, "optimizer": optimizer_state}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process.*")
        dcp.load(state, checkpoint_id=str(folder / "dcp"))
    set_state_dict(module, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=replace(options, strict=False))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng_file = folder / f"rng_{info.rank}.pt"
    if rng_file.is_file():  # absent when the run resumes on more processes than it was saved with
        rng = torch.load(rng_file, weights_only=False)
        torch.set_rng_state(rng["torch"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])
        if rng["cuda"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((folder / TRAINER_STATE).read_text())


# ------------------------------------------------------------------------------------------ writing
def replace_dir(staging: Path, target: Path) -> None:
    """Rename ``staging`` to ``target``, replacing an existing ``target`` only once ``staging`` is complete."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def save_checkpoint(output: Path, step: int, policy: WamPolicy, metadata: EmbodimentMetadata, trained: nn.Module,
                    optimizer: torch.optim.Optimizer, scheduler, parallel: str, info: ProcessInfo, lora: bool,
                    conf: dict[str, Any], trainer_state: dict[str, Any], keep: int,
                    save_dtype: torch.dtype | None = None) -> Path:
    """Write ``checkpoint-<step>`` atomically on every rank's behalf (collective); prune to ``keep``."""
    target = checkpoint_dir(output, step)
    staging = output / f".{target.name}.tmp"
    if info.is_main:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
    barrier(info)
    save_training_state(staging / STATE_DIR, trained, optimizer, scheduler, parallel, info)
    dit_state = trained_dit_state(trained, parallel, info)
    if info.is_main:
        write_servable(staging, policy, metadata, servable_tensors(policy, dit_state, lora, save_dtype), lora, conf)
        (staging / STATE_DIR / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=1))
    barrier(info)
    if info.is_main:
        replace_dir(staging, target)
        for _, old in list_checkpoints(output)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    barrier(info)
    return target


def _link_or_copy(source: str, target: str) -> None:
    """A hard link (no second copy of 47 GB of weights), or a copy where links are not possible."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def export_final(output: Path, checkpoint: Path, base_checkpoint: Path | None, lora: bool,
                 merge_lora: bool) -> None:
    """The final model into ``output`` itself (the servable files of ``checkpoint``), ``config.json`` last.

    A LoRA run also gets ``output/merged``: base + LoRA merged into a full checkpoint, for loaders that
    take one directory (the policy node, ``eval-bag``).
    """
    staging = output / ".final.tmp"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(checkpoint, staging, ignore=shutil.ignore_patterns(STATE_DIR), copy_function=_link_or_copy)
    config = staging / CONFIG_FILE
    for entry in sorted(staging.iterdir()):
        if entry == config:
            continue
        target = output / entry.name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()
        entry.rename(target)
    os.replace(config, output / CONFIG_FILE)
    shutil.rmtree(staging, ignore_errors=True)
    if lora and merge_lora and base_checkpoint is not None:
        write_merged(output, base_checkpoint, output / MERGED_DIR)


def write_merged(lora_checkpoint: Path, base_checkpoint: Path, target: Path) -> None:
    """A full checkpoint = base with the LoRA deltas merged and the trained heads (atomic)."""
    staging = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(lora_checkpoint, staging, ignore=shutil.ignore_patterns(
        STATE_DIR, MERGED_DIR, "model*.safetensors", "model.safetensors.index.json", "checkpoint-*", ".*",
        "metrics.jsonl", "*.png", "train_summary.json", "vae_stage"))
    tensors = dict(merged_lora_tensors(lora_checkpoint, base_checkpoint, progress=False))
    save_weights(tensors, staging)
    config = json.loads((staging / CONFIG_FILE).read_text())
    config["action_head_cfg"]["config"]["train_architecture"] = "full"
    (staging / CONFIG_FILE).write_text(json.dumps(config, indent=1))
    conf_path = staging / "experiment_cfg" / "conf.yaml"
    import yaml

    conf = yaml.safe_load(conf_path.read_text())
    conf["save_lora_only"] = False
    conf["merged_from_lora"] = str(lora_checkpoint.resolve())
    conf_path.write_text(yaml.safe_dump(conf, sort_keys=False))
    replace_dir(staging, target)
