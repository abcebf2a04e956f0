"""What the trainer trains: building or loading the model, LoRA, and turning samples into loss inputs.

* ``--init tiny``: every component of the ``tiny`` preset from scratch (seeded) with the local
  byte-level tokenizer; the tiny VAE is then trained as an autoencoder (:mod:`.vae_stage`).
* ``--init CHECKPOINT``: a checkpoint in the official layout through
  :meth:`~dreamzero_model.policy.WamPolicy.from_pretrained` (a LoRA checkpoint needs the base it was
  trained on). ``full`` trains the whole DiT; ``lora`` injects peft LoRA adapters (rank 4, alpha =
  rank, targets ``q, k, v, o, ffn.0, ffn.2`` of every block: self- and cross-attention and both FFN
  linears, not ``k_img``/``v_img``; A random, B zero) and trains them plus ``state_encoder``,
  ``action_encoder`` and ``action_decoder`` fully (facts §6.2, training-serving-facts §3.6).
  The text encoder, image encoder and VAE are always frozen.
* ``--init CHECKPOINT`` under FSDP (:func:`load_pretrained_sharded`): rank 0 loads as above; every
  other rank builds the model on the meta device and reads only the frozen encoders' tensors. Once
  LoRA is injected, :func:`release_dit` takes rank 0's DiT tensors (memory-mapped, as loaded) and
  leaves the DiT on the meta device everywhere, for
  :func:`~dreamzero_model.training.distributed.load_full_state` to distribute after sharding.

:class:`TrainingDiT` is the module the optimizer, DDP and FSDP see: its forward is
:func:`~dreamzero_model.loss.training_loss` on one batch. It projects each block's cross-attention
context inside that block's forward (the DiT's ``prepare_context`` does it for all blocks up
front), so FSDP can shard block by block and gradient checkpointing recomputes the projection with
its block; the arithmetic is unchanged.

:class:`Conditioner` runs the frozen encoders on a micro-batch of samples: VAE latents of the clip,
CLIP tokens of its first frame, the ``y`` conditioning (mask + VAE latent of [first frame, black
frames], the policy's context conditioning cut to the clip's latent frames, facts §2.1) and the umT5
features of the embodiment's prompt template (cached per prompt, facts §1.11).

Dimensions: B micro-batch, T frames, h x w mosaic pixels, F = 1 + 2K latent frames.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dreamzero_model.checkpoint import (PEFT_PREFIX, is_lora_checkpoint, iter_tensors, load_into, lora_base,
                                        weight_files)
from dreamzero_model.dit import CausalWanModel, CrossContext
from dreamzero_model.full_model import VLA, build_full_model
from dreamzero_model.loss import LossConfig, LossOutput, TrainingBatch, training_loss
from dreamzero_model.metadata import EmbodimentMetadata, load_embodiment_metadata
from dreamzero_model.policy import WamPolicy, checkpoint_full_config
from dreamzero_model.prompts import format_prompt
from dreamzero_model.text_encoder import PromptTokenizer
from dreamzero_model.training.data import Sample
from dreamzero_model.training.encodings import EncodingCache

LORA_TARGETS = ("q", "k", "v", "o", "ffn.0", "ffn.2")  # facts §6.2
HEAD_MODULES = ("state_encoder", "action_encoder", "action_decoder")  # fully trained in LoRA mode (facts §6.2)
TEXT_CACHE = 64  # prompts whose umT5 features are kept
ENCODERS = ("text_encoder", "image_encoder", "vae")  # frozen children of the action head (manifest README prefixes)


@dataclass
class LoadedModel:
    """The model and what came with it.

    Attributes:
        policy: a :class:`WamPolicy` around the full model (its tokenizer, its ``y`` conditioning).
        checkpoint_metadata: the init checkpoint's metadata for the tag it was loaded with (None for tiny).
    """

    policy: WamPolicy
    checkpoint_metadata: EmbodimentMetadata | None

    @property
    def model(self) -> VLA:
        return self.policy.model

    @property
    def dit(self) -> CausalWanModel:
        return self.policy.model.action_head.model

    @property
    def tokenizer(self) -> PromptTokenizer:
        return self.policy.tokenizer


def checkpoint_tags(checkpoint: Path) -> list[str]:
    """Embodiment tags in the checkpoint's ``experiment_cfg/metadata.json`` (empty if unreadable)."""
    path = checkpoint / "experiment_cfg" / "metadata.json"
    try:
        return list(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError):
        return []


def is_lora_only(checkpoint: Path) -> bool:
    """True for a checkpoint holding LoRA weights and heads only (facts §5.4)."""
    return is_lora_checkpoint(list(weight_files(checkpoint)))


def build_tiny(metadata: EmbodimentMetadata, seed: int, preset: str = "tiny") -> LoadedModel:
    """Every component of a small full-model preset (``tiny``, ``tiny_sim``) from scratch (seeded) and the local
    byte-level tokenizer."""
    from dreamzero_model.tiny_tokenizer import build_tiny_tokenizer

    torch.manual_seed(seed)
    return LoadedModel(WamPolicy(build_full_model(preset), metadata, build_tiny_tokenizer(), decode_video=False), None)


def load_pretrained(checkpoint: Path, tag: str, metadata: EmbodimentMetadata, device: torch.device,
                    dtype: torch.dtype, base_checkpoint: Path | None, tokenizer_path: str | None,
                    progress: bool) -> LoadedModel:
    """A checkpoint (merged with its base when it is LoRA-only) in ``dtype`` on ``device``.

    The checkpoint's own statistics are kept in :attr:`LoadedModel.checkpoint_metadata`; the policy
    carries ``metadata`` (the dataset's), which is what the trained checkpoint will hold.
    """
    tags = checkpoint_tags(checkpoint)
    policy = WamPolicy.from_pretrained(checkpoint, embodiment_tag=tag if tag in tags else tags[0], device=device,
                                       dtype=dtype, base_checkpoint=base_checkpoint,
                                       tokenizer_path=tokenizer_path, decode_video=False, progress=progress)
    loaded = policy.metadata
    return LoadedModel(WamPolicy(policy.model, metadata, policy.tokenizer, decode_video=False),
                       loaded if loaded.tag == tag else None)


def trained_parameter_count(checkpoint: Path, mode: str, lora_rank: int) -> int:
    """Parameters ``mode`` trains in the checkpoint's model, counted on the meta device (no weight is read)."""
    model = build_full_model(checkpoint_full_config(checkpoint), device="meta")
    if mode == "lora":
        inject_lora(model.action_head.model, lora_rank, seed=0)
    set_trainable(model, mode)
    return sum(p.numel() for p in model.action_head.model.parameters() if p.requires_grad)


def _encoder_files(checkpoint: Path, base_checkpoint: Path | None, own: EmbodimentMetadata) -> dict[str, Path]:
    """Tensor name -> file for the frozen encoders, as :meth:`WamPolicy.from_pretrained` resolves them: a
    LoRA-only checkpoint takes them from its base, overridden by any it holds itself."""
    files = weight_files(checkpoint)
    if is_lora_checkpoint(list(files)) or own.save_lora_only:
        files = {**weight_files(lora_base(checkpoint, base_checkpoint)),
                 **{name: path for name, path in files.items() if not name.startswith(PEFT_PREFIX)}}
    prefixes = tuple(f"action_head.{name}." for name in ENCODERS)
    return {name: path for name, path in files.items() if name.startswith(prefixes)}


def load_pretrained_sharded(checkpoint: Path, tag: str, metadata: EmbodimentMetadata, dtype: torch.dtype,
                            base_checkpoint: Path | None, tokenizer_path: str | None, progress: bool,
                            is_main: bool) -> LoadedModel:
    """:func:`load_pretrained` (on the CPU) for FSDP: only the main rank reads the DiT's tensors.

    The main rank loads exactly as :func:`load_pretrained` (safetensors memory-mapped and assigned, so
    no anonymous copy when the checkpoint is stored in ``dtype``; otherwise one converted copy, on
    that rank only). Every other rank builds the same model on the meta device, reads the frozen
    encoders' tensors (replicated on every rank: not trained, 28% of the 14B's parameters, see
    :mod:`~dreamzero_model.training.distributed`) and leaves the DiT without storage.
    """
    if is_main:
        return load_pretrained(checkpoint, tag, metadata, torch.device("cpu"), dtype, base_checkpoint,
                               tokenizer_path, progress)
    tags = checkpoint_tags(checkpoint)
    own = load_embodiment_metadata(checkpoint, tag if tag in tags else tags[0])
    model = build_full_model(checkpoint_full_config(checkpoint), device="meta", dtype=dtype)
    files = _encoder_files(checkpoint, base_checkpoint, own)
    for name in ENCODERS:
        prefix = f"action_head.{name}."
        tensors = iter_tensors(files, [n for n in files if n.startswith(prefix)], "cpu", dtype, progress=False)
        load_into(getattr(model.action_head, name), ((n.removeprefix(prefix), t) for n, t in tensors),
                  f"{checkpoint} ({name})")
    tokenizer = PromptTokenizer.from_pretrained(WamPolicy.tokenizer_dir(checkpoint, own, tokenizer_path))
    return LoadedModel(WamPolicy(model, metadata, tokenizer, decode_video=False), own if own.tag == tag else None)


def release_dit(dit: CausalWanModel, is_main: bool) -> dict[str, torch.Tensor] | None:
    """The main rank's DiT tensors as loaded (None on the other ranks); the DiT is on the meta device afterwards.

    Call after :func:`inject_lora` and :func:`set_trainable`, before the trained tensors become
    float32: the tensors stay the memory-mapped ones, and FSDP's shards take the float32 copies.
    """
    state = {name: tensor.detach() for name, tensor in dit.state_dict().items()} if is_main else None
    dit.to("meta")
    return state


def inject_lora(dit: CausalWanModel, rank: int, seed: int) -> None:
    """peft LoRA adapters on the official targets, in place (module names gain ``base_layer``, ``lora_A/B``);
    the A matrices are drawn from ``seed`` (torch's global generator is left as it was), so a run is
    reproducible and every rank starts from the same adapters."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=rank, lora_alpha=rank, lora_dropout=0.0, bias="none", init_lora_weights=True,
                        target_modules=list(LORA_TARGETS))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        inject_adapter_in_model(config, dit)


def set_trainable(model: VLA, mode: str) -> list[str]:
    """Freeze everything but what ``mode`` trains (module docstring); returns the trainable DiT names."""
    model.requires_grad_(False)
    dit = model.action_head.model
    for name, parameter in dit.named_parameters():
        if mode == "full" or ".lora_" in name or name.split(".")[0] in HEAD_MODULES:
            parameter.requires_grad_(True)
    for encoder in (model.action_head.text_encoder, model.action_head.image_encoder, model.action_head.vae):
        encoder.eval()
    return [name for name, p in dit.named_parameters() if p.requires_grad]


class _Deferred:
    """A block's cross-attention input (the embedded context), projected inside that block's forward."""

    def __init__(self, embedded: torch.Tensor) -> None:
        self.embedded = embedded


def _project_in_block(block: nn.Module, checkpointing: bool) -> None:
    """Patch ``block.forward`` to project a deferred context first (and optionally checkpoint the block)."""
    original = block.forward

    def forward(x, time6, angles, context, plan, cache, num_video_tokens):
        def run(x, time6, angles, embedded):
            return original(x, time6, angles, block.cross_attn.project_context(embedded), plan, cache,
                            num_video_tokens)

        if not isinstance(context, _Deferred):
            return original(x, time6, angles, context, plan, cache, num_video_tokens)
        if checkpointing and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(run, x, time6, angles, context.embedded, use_reentrant=False)
        return run(x, time6, angles, context.embedded)

    block.forward = forward


class _DeferredContextDiT:
    """What :func:`training_loss` calls: the DiT, with ``prepare_context`` deferring the projections."""

    def __init__(self, dit: CausalWanModel) -> None:
        self.dit, self.config = dit, dit.config

    def prepare_context(self, text: torch.Tensor, image: torch.Tensor) -> list[CrossContext]:
        embedded = self.dit.embed_context(text, image)  # B, Lc, D
        return [_Deferred(embedded) for _ in self.dit.blocks]  # type: ignore[misc]

    def __call__(self, *args, **kwargs):
        return self.dit(*args, **kwargs)


class TrainingDiT(nn.Module):
    """The trained module: forward(batch, generator) -> (total, video, action) losses (module docstring)."""

    def __init__(self, dit: CausalWanModel, loss: LossConfig, gradient_checkpointing: bool = False) -> None:
        super().__init__()
        self.dit = dit
        self.loss = loss
        for block in dit.blocks:
            _project_in_block(block, gradient_checkpointing)

    def forward(self, batch: TrainingBatch, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor,
                                                                                 torch.Tensor]:
        out: LossOutput = training_loss(_DeferredContextDiT(self.dit), batch, self.loss, generator)
        return out.total, out.video, out.action


class Conditioner:
    """Frozen encoders: samples -> :class:`TrainingBatch` on the model's device (module docstring)."""

    def __init__(self, policy: WamPolicy, device: torch.device, dtype: torch.dtype) -> None:
        self.policy, self.device, self.dtype = policy, device, dtype
        self._text: OrderedDict[str, torch.Tensor] = OrderedDict()

    @torch.no_grad()
    def text(self, instructions: list[str]) -> torch.Tensor:
        """float32[B, text_len, text_dim] umT5 features of each instruction's prompt."""
        head, tag = self.policy.model.action_head, self.policy.metadata.tag
        missing = [i for i in dict.fromkeys(instructions) if i not in self._text]
        if missing:
            ids, mask = self.policy.tokenizer([format_prompt(tag, i) for i in missing],
                                              max_length=self.policy.config.dit.text_len)
            features = head.text_encoder(ids.to(self.device), mask.to(self.device)).float()
            for instruction, row in zip(missing, features):
                self._text[instruction] = row
                while len(self._text) > TEXT_CACHE:
                    self._text.popitem(last=False)
        return torch.stack([self._text[i] for i in instructions])

    @torch.no_grad()
    def video(self, samples: list[Sample]) -> torch.Tensor:
        """uint8 mosaics -> float[B, 3, T, h, w] in [-1, 1] (facts §1.7: x / 255 * 2 - 1)."""
        video = torch.from_numpy(np.stack([s.video for s in samples])).to(self.device)  # B, T, h, w, 3
        return (video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0).to(self.dtype)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> dict[str, torch.Tensor]:
        """Clips float[B, 3, T, h, w] -> ``latents`` float32[B, z, F, h', w'], ``image`` (CLIP features of the
        first frame) and, for i2v models, ``y`` (:func:`conditioning`)."""
        head = self.policy.model.action_head
        latents = head.vae.encode(video)
        first = video[:, :, :1]
        encoded = {"latents": latents.float(), "image": head.image_encoder.encode(first[:, :, 0]).float()}
        y = conditioning(self.policy, first, latents.shape[2])
        if y is not None:
            encoded["y"] = y
        return encoded

    def _cached(self, sample: Sample, cache: EncodingCache) -> dict[str, torch.Tensor]:
        """One clip's encodings (batch of one) from ``cache``, computed and stored on its first draw."""
        key = (sample.episode, int(sample.anchors[0]), sample.num_chunks)
        if cache.has(*key):
            return {name: tensor[None].to(self.device) for name, tensor in cache.load(*key).items()}
        if sample.video is None:
            raise RuntimeError(f"clip {key} came without frames but {cache.path(*key)} is missing")
        encoded = self.encode(self.video([sample]))
        cache.save(*key, {name: tensor[0] for name, tensor in encoded.items()})
        return encoded

    @torch.no_grad()
    def batch(self, samples: list[Sample], cache: EncodingCache | None = None) -> TrainingBatch:
        """Samples of one chunk count -> the loss inputs (frozen encoders under no_grad); with ``cache`` each
        clip's encodings come from it (:mod:`~dreamzero_model.training.encodings`)."""
        if len({s.num_chunks for s in samples}) != 1:
            raise ValueError("a micro-batch must hold samples of one chunk count")
        if cache is None:
            encoded = self.encode(self.video(samples))
        else:
            parts = [self._cached(sample, cache) for sample in samples]
            encoded = {name: torch.cat([part[name] for part in parts]) for name in parts[0]}

        def stacked(name: str) -> torch.Tensor:
            return torch.from_numpy(np.stack([getattr(s, name) for s in samples])).to(self.device)

        return TrainingBatch(latents=encoded["latents"], actions=stacked("actions"), action_mask=stacked("action_mask"),
                             state=stacked("state"), text=self.text([s.instruction for s in samples]),
                             image=encoded["image"], y=encoded.get("y"))


@torch.no_grad()
def conditioning(policy: WamPolicy, first: torch.Tensor, latent_frames: int) -> torch.Tensor | None:
    """The first ``latent_frames`` of the context's ``y``: mask + VAE latents of [first frame, black frames].

    :meth:`WamPolicy._conditioning` encodes the first frame followed by black (zero) frames for a
    whole context (33 frames, 9 latents, facts §2.1). The VAE is causal (latent f depends on frames up
    to 4f only), so encoding just the 1 + 4(F - 1) frames that F latents need gives the same first F
    latents, bit for bit (tests/model/test_train_data.py), at a fraction of the cost for short clips.

    Args:
        first: float[B, 3, 1, H, W] in [-1, 1]. latent_frames: F.

    Returns:
        float32[B, 4 + z, F, h, w], or None for models without channel-concatenated conditioning.
    """
    config = policy.config
    if not config.dit.concat_first_frame_latent:
        return None
    frames = 1 + (latent_frames - 1) * config.vae.temporal_downsample
    clip = torch.cat([first, torch.zeros_like(first).expand(-1, -1, frames - 1, -1, -1)], dim=2)
    latents = policy.model.action_head.vae.encode(clip)  # B, z, F, h, w
    mask = torch.zeros_like(latents[:, :4])
    mask[:, :, 0] = 1.0
    return torch.cat([mask, latents], dim=1).float()


def micro_batches(samples: list[Sample], size: int) -> list[list[Sample]]:
    """Samples grouped by chunk count (in order of first appearance), each group cut into pieces of ``size``."""
    groups: dict[int, list[Sample]] = {}
    for sample in samples:
        groups.setdefault(sample.num_chunks, []).append(sample)
    return [group[i:i + size] for group in groups.values() for i in range(0, len(group), size)]
