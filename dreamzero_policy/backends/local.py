"""The ``local`` backend: the World Action Model in-process (ARCHITECTURE.md section 4).

Loads a checkpoint in the official layout with :class:`dreamzero_model.WamPolicy` (any size, from
``tiny`` on CPU to 14B on a GPU), turns the camera views into the model's mosaic with
:func:`dreamzero_model.mosaics.model_mosaics` (the image path the model server runs too, facts §1.7) and
returns de-normalised actions with their relative flags. ``checkpoint="tiny"`` creates, on first use, a
random-weight tiny checkpoint for the embodiment (:mod:`dreamzero_model.tiny_checkpoint`), so the demo and
tests run without downloads; ``checkpoint="sim_touch"`` is the shipped trained tiny model
(:func:`dreamzero_policy.paths.resolve_checkpoint`). The checkpoint's state/action layout must equal the embodiment YAML's
(:func:`~dreamzero_model.tiny_checkpoint.check_layout`). No rclpy here.
"""
from __future__ import annotations

from pathlib import Path

import torch

from dreamzero_embodiments.spec import EmbodimentSpec
from dreamzero_model import SamplerConfig
from dreamzero_model.mosaics import model_mosaics
from dreamzero_model.policy import WamPolicy
from dreamzero_model.tiny_checkpoint import TINY, check_layout, ensure_tiny_checkpoint
from dreamzero_policy.backends.base import BackendError, BackendPrediction, Observation
from dreamzero_policy.paths import resolve_checkpoint


class LocalBackend:
    """In-process WAM backend (see module docstring)."""

    def __init__(self, spec: EmbodimentSpec, checkpoint: str = TINY, device: str = "cpu", dtype: str = "",
                 sampler: SamplerConfig | None = None, tokenizer_path: str = "", decode_video: bool = True,
                 cpu_threads: int = 0) -> None:
        self.spec = spec
        if cpu_threads > 0:
            torch.set_num_threads(cpu_threads)  # process-wide: this process hosts the model
        path = ensure_tiny_checkpoint([spec]) if checkpoint == TINY else Path(resolve_checkpoint(checkpoint))
        self.policy = WamPolicy.from_pretrained(
            path, spec.embodiment_tag, device=device, dtype=getattr(torch, dtype) if dtype else None,
            sampler=sampler, tokenizer_path=tokenizer_path or None, decode_video=decode_video, progress=False)
        check_layout(spec, self.policy.metadata)

    def reset(self, prompt: str, session_id: str) -> None:
        self.policy.reset(prompt)

    def infer(self, observation: Observation) -> BackendPrediction:
        mosaic = model_mosaics(observation.views, self.spec, self.policy.mosaic_size)  # T, h, w, 3
        try:
            prediction = self.policy.infer(mosaic, observation.state, prompt=observation.prompt)
        except ValueError as error:
            raise BackendError(f"local model refused the observation: {error}") from error
        return BackendPrediction(actions=prediction.actions, relative=prediction.relative, frames=prediction.frames,
                                 seconds=prediction.seconds)

    def close(self) -> None:
        self.policy = None
