"""``DistributedEngine``: the two CFG branches on two processes, for ``torchrun --nproc-per-node 2`` (facts §3.1-3.2).

Topology, as the official server (facts §3.1):

* ``torchrun`` starts 2 processes. Each joins the process group from the torchrun environment (NCCL on
  CUDA, gloo on CPU; it carries the per-step CFG exchange) and a second, gloo group for control
  (:data:`CONTROL_TIMEOUT_S`), and loads a FULL copy of the model on ``cuda:<local_rank>``, or the CPU.
* Every session's :class:`~dreamzero_model.policy.WamPolicy` gets the CFG group: rank 0 computes the
  conditional branch (prompt) with its KV cache, rank 1 the unconditional one (negative prompt) with
  its own; after each DiT call they exchange velocities and both update identical noisy states
  (:class:`~dreamzero_model.session.WamSession`, facts §3.2). Each rank holds one branch's KV cache.
* Rank 0 serves the socket: its server calls :meth:`DistributedEngine.prepare`,
  :meth:`DistributedEngine.complete` and :meth:`DistributedEngine.drop` as on
  :class:`~dreamzero_model.serving.engine.Engine`, and each first broadcasts the command on the control
  group. Rank 1 runs :meth:`DistributedEngine.serve_forever`: receive a command (prepare a call, complete
  the calls prepared since the last completion, drop, stop), make the same call on its own engine state,
  repeat until rank 0's :meth:`DistributedEngine.stop`. Both ranks group a batch's calls alike (the
  grouping depends only on the calls and the contexts), so their batched DiT calls exchange alike.
* A call the policy refuses (ValueError, KeyError) fails on both ranks in its preparation, before any
  exchange: rank 0's server reports it, rank 1 logs it and leaves it out of the batch, as rank 0 does.
  Any other failure on one rank leaves the pair out of step, so rank 1 raises and ``torchrun`` ends both
  processes.

Imports torch, the serving engine and the process setup of training (:func:`init_processes`).
"""
from __future__ import annotations

import datetime
import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist

from dreamzero_model.config import SamplerConfig
from dreamzero_model.full_model import VLA
from dreamzero_model.metadata import EmbodimentMetadata
from dreamzero_model.policy import Prediction, PreparedChunk, WamPolicy
from dreamzero_model.serving.engine import Engine, ModelCall
from dreamzero_model.text_encoder import PromptTokenizer
from dreamzero_model.training.distributed import init_processes

LOG = logging.getLogger(__name__)
CFG_RANKS = 2  # conditional + unconditional branch (facts §3.2)
SERVER_RANK = 0
# Rank 1 waits on the control group between requests. The official server's 50000 s (facts §3.1) ends an
# idle server after 14 h; a 30-day wait keeps one up over holidays.
CONTROL_TIMEOUT_S = 30 * 24 * 3600.0
# control commands (the official codes: 0 run one inference, 1 shut down, facts §3.1; a run is 2 here, for batching)
PREPARE, COMPLETE, DROP, STOP = "prepare", "complete", "drop", "stop"


class DistributedEngine(Engine):
    """An :class:`Engine` whose sessions share their CFG branches with the other rank (module docstring).

    Args:
        model, tokenizer, metadata, sampler: as :class:`Engine`; ``sampler.cfg_scale`` must not be 1.
        cfg_group: the 2 ranks exchanging velocities (NCCL on CUDA). control_group: the same 2 ranks, gloo.

    Raises:
        ValueError: cfg_scale 1 (nothing to split: serve from one process) or groups not of 2 ranks.
    """

    def __init__(self, model: VLA, tokenizer: PromptTokenizer, metadata: Mapping[str, EmbodimentMetadata],
                 sampler: SamplerConfig | None, cfg_group: dist.ProcessGroup, control_group: dist.ProcessGroup) -> None:
        super().__init__(model, tokenizer, metadata, sampler)
        _check_guided(self.sampler)
        sizes = (dist.get_world_size(cfg_group), dist.get_world_size(control_group))
        if sizes != (CFG_RANKS, CFG_RANKS):
            raise ValueError(f"DistributedEngine needs {CFG_RANKS} ranks in both groups, got {sizes}")
        self._cfg_group, self._control = cfg_group, control_group
        self.rank = dist.get_rank(control_group)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, tags: Sequence[str] | None = None, device: str = "cpu",
                        dtype: torch.dtype | None = None, sampler: SamplerConfig | None = None,
                        tokenizer_path: str | Path | None = None, progress: bool = True,
                        control_timeout_s: float = CONTROL_TIMEOUT_S) -> DistributedEngine:
        """Join the ``torchrun`` processes and load a full copy of the checkpoint on this rank.

        Args:
            device: ``cpu``, or ``cuda`` (any ``cuda:N``): each rank takes ``cuda:<LOCAL_RANK>``.
            control_timeout_s: how long rank 1 may wait for the next command.
            The rest: as :meth:`Engine.from_checkpoint`.

        Raises:
            ValueError: not 2 processes (``WORLD_SIZE``), or cfg_scale 1. CheckpointError: as the Engine.
        """
        _check_guided(sampler or SamplerConfig())  # before loading the model
        info = init_processes(torch.device(device).type)
        if info.world_size != CFG_RANKS:
            raise ValueError(f"DistributedEngine runs on {CFG_RANKS} processes (torchrun --nproc-per-node "
                             f"{CFG_RANKS}), got WORLD_SIZE={info.world_size}")
        control = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=control_timeout_s))
        single = Engine.from_checkpoint(checkpoint, tags, device=str(info.device), dtype=dtype, sampler=sampler,
                                        tokenizer_path=tokenizer_path, progress=progress and info.is_main)
        return cls(single.model, single.tokenizer, single.metadata, single.sampler, dist.group.WORLD, control)

    @property
    def serves_socket(self) -> bool:
        """True on rank 0, which runs the server; the other rank runs :meth:`serve_forever`."""
        return self.rank == SERVER_RANK

    def kv_cache_bytes_per_session(self) -> int:
        """Bytes of one session's KV cache on this rank: one CFG branch's rows (facts §3.2)."""
        return super().kv_cache_bytes_per_session() // CFG_RANKS

    def _new_policy(self, metadata: EmbodimentMetadata) -> WamPolicy:
        return WamPolicy(self.model, metadata, self.tokenizer, sampler=self.sampler, decode_video=False,
                         cfg_group=self._cfg_group)

    def prepare(self, call: ModelCall) -> PreparedChunk:
        """Broadcast the call to rank 1, then prepare it here (rank 0 only)."""
        self._send({"op": PREPARE, "call": call})
        return super().prepare(call)

    def complete(self, chunks: Sequence[PreparedChunk]) -> list[Prediction]:
        """Tell rank 1 to complete what it prepared since the last completion, then complete here (rank 0 only)."""
        self._send({"op": COMPLETE})
        return super().complete(chunks)

    def drop(self, session_key: str) -> None:
        """Broadcast the drop to rank 1, then drop here (rank 0 only)."""
        self._send({"op": DROP, "session_key": session_key})
        super().drop(session_key)

    def stop(self) -> None:
        """End rank 1's :meth:`serve_forever` and leave the process groups (rank 0, at shutdown).

        Rank 1 gone already (killed): logged, and the groups are left all the same.
        """
        try:
            self._send({"op": STOP})
        except RuntimeError as error:  # gloo reports a closed peer connection as a RuntimeError
            LOG.warning("rank 1 did not take the stop command (%s)", error)
        dist.destroy_process_group()

    def serve_forever(self) -> int:
        """Make rank 0's calls here until it stops (rank 1; from the main thread); the number of calls made.

        SIGINT and SIGTERM are ignored meanwhile: rank 0 answers the calls in progress, which need this
        rank, before it stops it. Leaves the process groups at the end.

        Raises:
            RuntimeError: called on rank 0, or rank 0 vanished (the control group's connection closed).
        """
        if self.serves_socket:
            raise RuntimeError("serve_forever runs on rank 1; rank 0 serves the socket")
        previous = {signum: signal.signal(signum, signal.SIG_IGN) for signum in (signal.SIGINT, signal.SIGTERM)}
        calls, prepared = 0, []
        try:
            while (command := self._receive())["op"] != STOP:
                if command["op"] == DROP:
                    super().drop(command["session_key"])
                elif command["op"] == COMPLETE:
                    super().complete(prepared)
                    prepared = []
                else:
                    call = command["call"]
                    calls += 1
                    try:
                        prepared.append(super().prepare(call))
                    except (ValueError, KeyError) as error:  # refused on rank 0 alike, before any exchange
                        LOG.info("call of session %r refused as on rank 0: %s", call.session_key, error)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        LOG.info("rank %d stopped by rank %d after %d calls", self.rank, SERVER_RANK, calls)
        dist.destroy_process_group()
        return calls

    def _send(self, command: dict) -> None:
        if not self.serves_socket:
            raise RuntimeError(f"only rank {SERVER_RANK} sends commands; rank {self.rank} runs serve_forever")
        dist.broadcast_object_list([command], src=SERVER_RANK, group=self._control)

    def _receive(self) -> dict:
        holder = [None]
        dist.broadcast_object_list(holder, src=SERVER_RANK, group=self._control)
        return holder[0]


def _check_guided(sampler: SamplerConfig) -> None:
    if sampler.cfg_scale == 1.0:
        raise ValueError("DistributedEngine splits the two CFG branches, but cfg_scale is 1.0 (no unconditional "
                         "branch): serve from one process")
