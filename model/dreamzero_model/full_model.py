"""The whole DreamZero model with the official full-model key prefixes (checkpoint-manifest README).

``VLA`` mirrors the official module tree so that its ``state_dict()`` keys equal a released
checkpoint's: ``action_head.model.*`` (DiT), ``action_head.text_encoder.*`` (umT5),
``action_head.image_encoder.model.*`` (CLIP vision tower) and ``action_head.vae.model.*`` (Wan VAE);
the identity backbone has no tensors. Presets pair a DiT with its encoders: ``tiny`` (CPU tests and
the random demo model), ``tiny_sim`` (a 64x128 mosaic, trained on the simulated DROID tasks),
``dreamzero_14b`` (Wan2.1-I2V-14B, umT5-XXL, ViT-H/14, Wan2.1 VAE) and ``dreamzero_5b``
(Wan2.2-TI2V-5B with the Wan2.2 VAE, facts §7). Imports torch only (and the component modules).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dreamzero_model.config import DiTConfig, get_config
from dreamzero_model.construction import pick
from dreamzero_model.dit import CausalWanModel, build_dit
from dreamzero_model.image_encoder import (ImageEncoderConfig, WanImageEncoder, build_image_encoder,
                                           get_image_encoder_config)
from dreamzero_model.text_encoder import TextEncoderConfig, WanTextEncoder, build_text_encoder, get_text_encoder_config
from dreamzero_model.vae import VAEConfig, WanVideoVAE, build_vae, get_vae_config


@dataclass(frozen=True)
class FullModelConfig:
    """A DiT and the three frozen encoders that feed it; checks that their widths agree."""

    name: str
    dit: DiTConfig
    text_encoder: TextEncoderConfig
    image_encoder: ImageEncoderConfig
    vae: VAEConfig

    def __post_init__(self) -> None:
        dit, problems = self.dit, []
        if self.text_encoder.dim != dit.text_dim or self.text_encoder.max_length != dit.text_len:
            problems.append(f"text encoder {self.text_encoder.dim}x{self.text_encoder.max_length} != DiT text "
                            f"{dit.text_dim}x{dit.text_len}")
        if self.image_encoder.width != dit.clip_dim or self.image_encoder.num_tokens != dit.num_image_tokens:
            problems.append(f"image encoder {self.image_encoder.num_tokens}x{self.image_encoder.width} != DiT image "
                            f"context {dit.num_image_tokens}x{dit.clip_dim}")
        if self.vae.z_dim != dit.out_dim:
            problems.append(f"VAE z_dim {self.vae.z_dim} != DiT out_dim {dit.out_dim}")
        if problems:
            raise ValueError(f"FullModelConfig {self.name!r}: " + "; ".join(problems))

    @property
    def mosaic_size(self) -> tuple[int, int]:
        """(height, width) in pixels of the stitched frame the model consumes (352x640 for 14B)."""
        scale = self.vae.spatial_downsample
        return self.dit.latent_height * scale, self.dit.latent_width * scale

    def to_dict(self) -> dict:
        return {"name": self.name, "dit": self.dit.to_dict(), "text_encoder": vars(self.text_encoder).copy(),
                "image_encoder": self.image_encoder.to_dict(), "vae": self.vae.to_dict()}

    @classmethod
    def from_dict(cls, values: dict) -> FullModelConfig:
        return cls(name=values["name"], dit=DiTConfig.from_dict(values["dit"]),
                   text_encoder=TextEncoderConfig(**values["text_encoder"]),
                   image_encoder=ImageEncoderConfig.from_dict(values["image_encoder"]),
                   vae=VAEConfig.from_dict(values["vae"]))


_PRESETS = {
    "tiny": ("tiny", "tiny", "tiny", "tiny"),
    "tiny_sim": ("tiny_sim", "tiny_sim", "tiny", "tiny_sim"),
    "dreamzero_14b": ("dreamzero_14b", "umt5_xxl", "vit_h14", "wan21"),
    "dreamzero_5b": ("dreamzero_5b", "umt5_xxl", "vit_h14", "wan22"),
}


def get_full_config(name: str) -> FullModelConfig:
    """A full-model preset by name (``tiny``, ``dreamzero_14b``, ``dreamzero_5b``)."""
    dit, text, image, vae = pick(_PRESETS, name, "model")
    return FullModelConfig(name=name, dit=get_config(dit), text_encoder=get_text_encoder_config(text),
                           image_encoder=get_image_encoder_config(image), vae=get_vae_config(vae))


class ActionHead(nn.Module):
    """``WANPolicyHead``'s tensors: the DiT and the three frozen encoders, under the official names."""

    def __init__(self, model: CausalWanModel, text_encoder: WanTextEncoder, image_encoder: WanImageEncoder,
                 vae: WanVideoVAE) -> None:
        super().__init__()
        self.model = model
        self.text_encoder = text_encoder
        self.image_encoder = image_encoder
        self.vae = vae


class VLA(nn.Module):
    """The full model; ``backbone`` is the parameter-free identity of the official code, so it is omitted."""

    def __init__(self, config: FullModelConfig, action_head: ActionHead) -> None:
        super().__init__()
        self.config = config
        self.action_head = action_head


def build_full_model(name_or_config: str | FullModelConfig, device: torch.device | str | None = None,
                     dtype: torch.dtype | None = None) -> VLA:
    """Build DiT + umT5 + CLIP + VAE on ``device`` (``"meta"`` allocates nothing) in ``dtype``.

    The encoders are frozen (facts §6.2) and in eval mode.
    """
    config = get_full_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    head = ActionHead(model=build_dit(config.dit, device=device, dtype=dtype),
                      text_encoder=build_text_encoder(config.text_encoder, device=device, dtype=dtype),
                      image_encoder=build_image_encoder(config.image_encoder, device=device, dtype=dtype),
                      vae=build_vae(config.vae, device=device, dtype=dtype))
    for encoder in (head.text_encoder, head.image_encoder, head.vae):
        encoder.eval().requires_grad_(False)
    return VLA(config, head)
