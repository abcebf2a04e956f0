"""``Engine``: the model held once, one inference context per session (facts §2.5, §3.6).

One VLA (DiT, encoders, VAE) and one tokenizer are loaded once; each session key gets its own
:class:`~dreamzero_model.policy.WamPolicy` around that shared model (:meth:`Engine._new_policy`), which
holds only the session's state: KV cache, conditioning, prompt and text embeddings. So sessions never
see each other's context, and a session costs its KV cache (:meth:`Engine.kv_cache_bytes_per_session`),
not a copy of the weights. The official server keeps ONE global state instead (facts §3.3).

The server's worker thread owns the engine (:mod:`dreamzero_model.serving.scheduler`): it alone calls
:meth:`Engine.prepare`, :meth:`Engine.complete` and :meth:`Engine.drop`, so nothing here locks. Predicted
video is never decoded (the protocol returns actions only, facts §3.3).

Batching, in two phases (:meth:`Engine.run` is both for one call): :meth:`Engine.prepare` does everything of
a call before its denoising in its own context (checks, text and image encoders, VAE, the context's reset
or the executed chunk's latents written to its cache: :meth:`WamPolicy.prepare`); :meth:`Engine.complete`
takes the prepared calls of one batch and denoises those whose chunks ALIGN in one batched loop, one DiT
call per denoising step over their stacked rows (:func:`~dreamzero_model.policy.infer_together`), the
others one group after another. Aligned = the same chunk position in the context, so the same KV-cache
length and RoPE positions (:attr:`~dreamzero_model.session.WamSession.step_key`; the DiT, sampler and CFG
split are the engine's, shared by all). Neither the embodiment nor the frame count matters: the DiT has no
per-embodiment weights (one category, facts §1.2), states are padded to one width, and frames only reach
the per-call VAE. So a session's first call batches with other first calls, and a continuation with
continuations at the same chunk of their context. Each session draws its initial noise as if alone, so
its chunk equals its solo chunk to float rounding (session module docstring). A batch holds one call per
session (a session's next call needs this one's context). Memory: a batched pass holds a copy of its
sessions' contexts and the valid part of their KV caches (up to ``max_batch`` x
:meth:`Engine.kv_cache_bytes_per_session`), freed when the pass ends.

Shapes: T frames, h x w mosaic pixels, S state dims, A action dims. Imports torch, numpy and the model.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_model.config import SamplerConfig
from dreamzero_model.errors import CheckpointError
from dreamzero_model.full_model import VLA
from dreamzero_model.metadata import EmbodimentMetadata, embodiment_tags, load_embodiment_metadata
from dreamzero_model.policy import Prediction, PreparedChunk, WamPolicy, infer_together
from dreamzero_model.text_encoder import PromptTokenizer
from dreamzero_model.tiny_checkpoint import TINY, TINY_EMBODIMENTS, ensure_tiny_checkpoint


@dataclass(frozen=True)
class ModelCall:
    """One inference for one session.

    Attributes:
        session_key: the session's context (the server's ``<tag>/<session_id>``).
        tag: embodiment tag, whose statistics and prompt template the context uses.
        video: uint8[T, h, w, 3] mosaics at the model's size (:attr:`Engine.mosaic_size`); T = 1 starts a
            new context, 4, 8 or 9 continue it (:meth:`WamPolicy.infer`).
        state: float64[S], the state at the newest frame, checkpoint order, model units.
        prompt: the instruction.
    """

    session_key: str
    tag: str
    video: np.ndarray
    state: np.ndarray
    prompt: str


def resolve_checkpoint(checkpoint: str | Path) -> Path:
    """The checkpoint folder; ``"tiny"``: the random tiny checkpoint of droid, agibot_g1 and yam (created once)."""
    if str(checkpoint) == TINY:
        return ensure_tiny_checkpoint([load_embodiment(name) for name in TINY_EMBODIMENTS])
    return Path(checkpoint)


class Engine:
    """One model, one :class:`WamPolicy` per session key (module docstring).

    Args:
        model: the loaded VLA, shared by every session. tokenizer: its prompt tokenizer.
        metadata: embodiment tag -> its statistics and layout (the embodiments this engine serves).
        sampler: the sampler every session uses (default: the official one).
    """

    def __init__(self, model: VLA, tokenizer: PromptTokenizer, metadata: Mapping[str, EmbodimentMetadata],
                 sampler: SamplerConfig | None = None) -> None:
        if not metadata:
            raise ValueError("Engine: no embodiments to serve")
        self.model = model
        self.tokenizer = tokenizer
        self.metadata = dict(metadata)
        self.sampler = sampler or SamplerConfig()
        self._policies: dict[str, WamPolicy] = {}

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, tags: Sequence[str] | None = None, device: str = "cpu",
                        dtype: torch.dtype | None = None, sampler: SamplerConfig | None = None,
                        tokenizer_path: str | Path | None = None, progress: bool = True) -> Engine:
        """Load a checkpoint in the official layout (facts §5.1) once for the embodiments ``tags``.

        Args:
            checkpoint: a folder, or ``"tiny"`` (:func:`resolve_checkpoint`).
            tags: embodiment tags to serve; default every tag of ``experiment_cfg/metadata.json``.
            dtype: default bfloat16 on CUDA, float32 elsewhere.

        Raises:
            CheckpointError: missing or inconsistent files, or a tag the checkpoint has no statistics for.
        """
        folder = resolve_checkpoint(checkpoint)
        tags = list(tags) if tags is not None else embodiment_tags(folder)
        if not tags:
            raise CheckpointError(f"{folder}: experiment_cfg/metadata.json holds no embodiment")
        first = WamPolicy.from_pretrained(folder, tags[0], device=device, dtype=dtype, sampler=sampler,
                                          tokenizer_path=tokenizer_path, decode_video=False, progress=progress)
        metadata = {tags[0]: first.metadata, **{tag: load_embodiment_metadata(folder, tag) for tag in tags[1:]}}
        return cls(first.model, first.tokenizer, metadata, sampler=sampler)

    @property
    def tags(self) -> list[str]:
        return list(self.metadata)

    @property
    def mosaic_size(self) -> tuple[int, int]:
        """(h, w) of the mosaics :class:`ModelCall` carries."""
        return self.model.config.mosaic_size

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def serves_socket(self) -> bool:
        """True: one process serves the socket (:class:`~dreamzero_model.serving.distributed.DistributedEngine`
        says False on its mirroring rank)."""
        return True

    def stop(self) -> None:
        """Nothing to end in one process (the distributed engine stops its other rank here)."""

    @property
    def live_contexts(self) -> int:
        """Sessions whose context (KV cache) this engine holds now."""
        return len(self._policies)

    def kv_cache_bytes_per_session(self) -> int:
        """Bytes of one session's KV cache (keys and values, every layer, the whole window of
        ``local_attn_size`` latent frames, one row per CFG branch; facts §2.5, §3.2), allocated at its first call.
        The rest of a session's state (conditioning, text embeddings, the server's 4 buffered frames per
        camera) is small beside it for the 14B model."""
        dit = self.model.config.dit
        rows = 2 if self.sampler.cfg_scale != 1.0 else 1  # the unconditional branch has its own cache rows
        tokens = dit.local_attn_size * dit.frame_seqlen
        itemsize = next(self.model.parameters()).dtype.itemsize
        return 2 * dit.num_layers * rows * tokens * dit.num_heads * dit.head_dim * itemsize

    def _new_policy(self, metadata: EmbodimentMetadata) -> WamPolicy:
        """A fresh context for one session around the shared model (overridden for multi-GPU serving)."""
        return WamPolicy(self.model, metadata, self.tokenizer, sampler=self.sampler, decode_video=False)

    def run(self, call: ModelCall) -> Prediction:
        """Predict the next chunk of ``call.session_key``'s context (a new context when the key is new).

        Returns:
            The policy's prediction: actions float64[24, A] de-normalised, relative dims still relative.

        Raises:
            KeyError: ``call.tag`` is not served. ValueError: the policy refused the inputs.
        """
        return self.complete([self.prepare(call)])[0]

    def prepare(self, call: ModelCall) -> PreparedChunk:
        """The call up to its denoising, in its session's context (made on its first call; module docstring).

        Raises:
            KeyError: ``call.tag`` is not served. ValueError: the policy refused the inputs.
        """
        policy = self._policies.get(call.session_key)
        if policy is None:
            if call.tag not in self.metadata:
                raise KeyError(f"embodiment {call.tag!r} is not served (served: {', '.join(self.metadata)})")
            policy = self._policies[call.session_key] = self._new_policy(self.metadata[call.tag])
        return policy.prepare(call.video, call.state, prompt=call.prompt)

    def complete(self, chunks: Sequence[PreparedChunk]) -> list[Prediction]:
        """Denoise prepared calls of distinct sessions, the aligned ones together (module docstring).

        Returns:
            Per chunk, in order, as :meth:`run` (``batch_size``: the calls denoised with it).
        """
        aligned: dict[tuple, list[int]] = {}
        for index, chunk in enumerate(chunks):
            aligned.setdefault(chunk.step_key, []).append(index)
        predictions: list[Prediction | None] = [None] * len(chunks)
        for group in aligned.values():
            for index, prediction in zip(group, infer_together([chunks[i] for i in group])):
                predictions[index] = prediction
        return predictions

    def drop(self, session_key: str) -> None:
        """Forget the session's context (its KV cache is freed); unknown keys are ignored."""
        self._policies.pop(session_key, None)
