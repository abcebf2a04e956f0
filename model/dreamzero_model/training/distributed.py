"""Processes and devices: one process, or ``torchrun`` with DDP (small models) or FSDP (the 14B).

``torchrun --nproc-per-node N dreamzero train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
the process group uses NCCL on GPUs and gloo on CPUs. Every rank reads its own slice of each global
batch (:func:`~dreamzero_model.training.data.step_indices`), so the global batch, not the per-process
one, defines the run, and N processes follow the same loss curve as one.

* DDP: the trained module is replicated; gradients are averaged after the last micro-batch of a step.
* FSDP (``torch.distributed.fsdp.fully_shard``, FSDP2): every DiT block is one unit and the rest of
  the trained module the root unit; parameters, gradients and optimizer state are sharded over the
  ranks. On GPUs the parameters are gathered in bfloat16 and gradients reduced in float32; the
  sharded master weights stay float32. The frozen encoders are replicated (they are not trained).

Loading ``--init CHECKPOINT`` under FSDP (:func:`~dreamzero_model.training.model_setup.load_pretrained_sharded`,
:func:`load_full_state`): rank 0 alone reads the DiT's tensors, memory-mapped from the safetensors
files (file pages, shared and reclaimable, not process memory); the other ranks build the DiT on
the meta device (no storage) and read only the frozen encoders' tensors. After LoRA injection
rank 0 keeps its DiT tensors aside and moves the DiT to meta too; every rank applies
``fully_shard`` to the meta module, allocates only its shards (``to_empty``), and
``set_model_state_dict(full_state_dict=True, broadcast_from_rank0=True)`` broadcasts rank 0's
tensors one at a time, each rank copying its slice into its shard (in the shard's dtype: float32 for
trained tensors, as one process gets with ``.float()``). A scratch preset (``--init tiny``) is built
from the seed on every rank and sharded from there; DDP and one process load the whole model as before.

Memory this implies for the 14B (checkpoint manifest: DiT 16,484,292,448 parameters, 32.97 GB in
bf16, 65.94 GB in float32; encoders umT5-XXL 5.68 B + CLIP 0.63 B + VAE 0.13 B = 6.44 B, 12.88 GB
in bf16; largest DiT tensor 157 M elements, 0.31 GB in bf16), full fine-tuning on N GPUs:
* per rank: float32 master shard 65.94 / N GB, as much again for gradients and twice that for
  AdamW (263.8 / N GB in all: 33.0 GB at N = 8), plus the replicated bf16 encoders (12.88 GB),
  the gathered bf16 units in flight (a block: 0.82 GB) and activations;
* while loading, on top of the shard: one full tensor being broadcast (at most 0.31 GB in bf16);
  rank 0 also maps the checkpoint file (page cache). A checkpoint stored in another dtype than the
  one loaded (bf16 on GPUs, float32 on CPUs), e.g. a float32 one from ``dreamzero train`` loaded on
  GPUs, costs rank 0 one converted copy (32.97 GB), no other rank;
* ``--mode lora --parallel fsdp`` (``auto`` picks DDP for LoRA) loads the same way; its frozen bf16
  base is sharded too (32.97 / N GB per rank) and the adapters start from rank 0's initial values.
Before, every rank loaded the whole DiT and made its trained tensors float32 before sharding:
65.94 GB of host memory per rank, 527.5 GB for 8 ranks on one node.
Imports torch only.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

FSDP_AUTO_PARAMETERS = 1_000_000_000  # ``--parallel auto``: FSDP from 1B trained parameters (a 14B DiT), else DDP


@dataclass(frozen=True)
class ProcessInfo:
    """This process: rank, world size, local rank and the torch device it trains on."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(requested: str, local_rank: int) -> torch.device:
    """``auto``: the local GPU when there is one, else the CPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        return torch.device("cuda", local_rank)
    return torch.device(requested)


def init_processes(requested_device: str = "auto") -> ProcessInfo:
    """Join the ``torchrun`` process group when there is one (idempotent)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested_device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return ProcessInfo(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def close_processes() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: ProcessInfo) -> None:
    if info.distributed:
        dist.barrier()


def sum_over_ranks(value: torch.Tensor, info: ProcessInfo) -> torch.Tensor:
    """The sum of ``value`` over all ranks (a copy; float64 on the CPU for gloo, the device for NCCL)."""
    value = value.detach().double().clone()
    if info.distributed:
        if info.device.type == "cuda":
            value = value.to(info.device)
        dist.all_reduce(value)
    return value.cpu()


def broadcast_object(value, info: ProcessInfo):
    """Rank 0's ``value`` on every rank."""
    if not info.distributed:
        return value
    holder = [value]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]


def choose_parallel(requested: str, trainable_parameters: int, info: ProcessInfo) -> str:
    """``none`` for one process; ``auto`` picks DDP or FSDP by the trained parameter count."""
    if not info.distributed:
        return "none"
    if requested == "auto":
        return "fsdp" if trainable_parameters >= FSDP_AUTO_PARAMETERS else "ddp"
    return requested


def wrap(module: nn.Module, parallel: str, info: ProcessInfo) -> nn.Module:
    """``module`` (a :class:`~dreamzero_model.training.model_setup.TrainingDiT`) under DDP or FSDP, or as is."""
    if parallel == "none":
        return module
    if parallel == "ddp":
        return nn.parallel.DistributedDataParallel(module, device_ids=None)
    if parallel == "fsdp":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        mesh = init_device_mesh(info.device.type, (info.world_size,))
        policy = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
                  if info.device.type == "cuda" else MixedPrecisionPolicy())
        for block in module.dit.blocks:
            fully_shard(block, mesh=mesh, mp_policy=policy)
        fully_shard(module, mesh=mesh, mp_policy=policy)
        return module
    raise ValueError(f"parallel must be none, ddp or fsdp, got {parallel!r}")


def load_full_state(module: nn.Module, state: dict[str, torch.Tensor] | None, info: ProcessInfo) -> None:
    """Allocate the shards of ``module`` (wrapped by :func:`wrap` while on the meta device) and fill them from
    rank 0's full ``state`` (None on the other ranks); a collective.

    Raises:
        RuntimeError: rank 0's ``state`` lacks a tensor of ``module`` or has one it lacks (strict).
    """
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    module.to_empty(device=info.device)
    set_model_state_dict(module, state if info.is_main and state is not None else {},
                         options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))


def gradient_sync(model: nn.Module, parallel: str, enabled: bool):
    """Context in which backward passes do (or, for all but a step's last micro-batch, do not) reduce gradients."""
    if parallel == "ddp" and not enabled:
        return model.no_sync()
    if parallel == "fsdp":
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()


def grad_norm_value(norm: torch.Tensor) -> float:
    """A gradient norm as a float (FSDP returns a DTensor)."""
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return float(norm)
