"""The frozen encoders' outputs of training clips, kept on disk and reused (``dreamzero train --cache-encodings``).

The encoders are frozen during DiT training (facts §6.2), so without augmentation a clip's VAE
latents, CLIP image features and conditioning ``y`` are the same every time the clip is drawn. On a
CPU these encodings cost far more than the tiny DiT's step (the VAE dominates: about 1 s per clip
at 64x128 against about 0.1 s per sample for forward, backward and AdamW), so a run that draws each
clip many times computes them once, on the clip's first draw, and reads them afterwards.

A clip is named by its episode, its first anchor row and its chunk count (they fix its frames,
:func:`~dreamzero_model.training.sampling.clip_for_start`); its file
``<folder>/e<episode>/a<anchor>_k<chunks>.safetensors`` holds ``latents`` float32[z, F, h, w],
``image`` float32[tokens, width] and, for i2v models, ``y`` float32[4 + z, F, h, w], each computed
for the clip alone (batch of one), so the values do not depend on which clips shared a micro-batch
and a run that reads them computes exactly the losses of one that encodes every draw. Files are
written atomically (temporary name, then rename), so an interrupted run leaves no partial file and
its resumption finds every finished one. ``encoders.json`` records a fingerprint of the VAE and
image-encoder weights; a folder written by other encoders is refused instead of mixed.

Imports torch and safetensors only.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

FINGERPRINT_FILE = "encoders.json"


class EncodingCacheError(RuntimeError):
    """The cache folder belongs to other encoder weights; the message names the folder and what to do."""


def encoder_fingerprint(*modules: torch.nn.Module) -> str:
    """sha256 over the names, shapes, dtypes and bytes of every tensor of ``modules`` (in order)."""
    digest = hashlib.sha256()
    for module in modules:
        for name, tensor in sorted(module.state_dict().items()):
            digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
            value = tensor.detach().to("cpu").contiguous().reshape(-1)  # 1-D: a 0-d tensor cannot be viewed as bytes
            digest.update(value.view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


class EncodingCache:
    """Encodings of clips under ``folder`` (module docstring); safe to share with DataLoader workers."""

    def __init__(self, folder: Path, fingerprint: str) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        record = self.folder / FINGERPRINT_FILE
        if record.is_file():
            recorded = json.loads(record.read_text()).get("fingerprint")
            if recorded != fingerprint:
                raise EncodingCacheError(f"{self.folder} holds encodings of other encoder weights (fingerprint "
                                         f"{recorded}, these are {fingerprint}); delete the folder to re-encode")
        else:
            record.write_text(json.dumps({"fingerprint": fingerprint}) + "\n")
        self.fingerprint = fingerprint

    def path(self, episode: int, anchor: int, chunks: int) -> Path:
        return self.folder / f"e{episode}" / f"a{anchor}_k{chunks}.safetensors"

    def has(self, episode: int, anchor: int, chunks: int) -> bool:
        return self.path(episode, anchor, chunks).is_file()

    def load(self, episode: int, anchor: int, chunks: int) -> dict[str, torch.Tensor]:
        return load_file(self.path(episode, anchor, chunks))

    def save(self, episode: int, anchor: int, chunks: int, tensors: dict[str, torch.Tensor]) -> None:
        target = self.path(episode, anchor, chunks)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        save_file({name: tensor.detach().to("cpu", torch.float32).contiguous() for name, tensor in tensors.items()},
                  str(staging))
        staging.replace(target)


__all__ = ["EncodingCache", "EncodingCacheError", "encoder_fingerprint"]
