"""The CLIP image encoder of DreamZero: open-clip XLM-RoBERTa-large ViT-H/14, vision tower only.

Owns the encoder's configuration (presets ``vit_h14`` and ``tiny``), its CLIP preprocessing and the
vision transformer that turns one image per sample into the CLIP tokens of the DiT's image context
(facts §2.1: 224x224 bicubic resize of the whole mosaic, aspect squashed; output of the first 31 of
32 blocks, 257 tokens x 1280). Module and parameter names equal the official ones
(``reference/checkpoint-manifest/clip_vit_h14.json``: ``log_scale`` and ``visual.*`` under the
full-model prefix ``action_head.image_encoder.model.``), so the Wan CLIP weights load without renaming.
The text tower is never built (manifest ``towers``).

Dimensions: B batch, C = 3 colour channels, H/W input pixels, S image size, P patch size,
N = (S/P)^2 patches, L = N + 1 tokens (class token first), D width, Hh heads, Dh head dim, E embed dim.
This module never opens a file and imports torch only.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamzero_model.construction import build_on, pick

# CLIP normalisation (facts §2.1, rounded there; full precision as in Wan's CLIP transforms).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class ImageEncoderConfig:
    """Hyperparameters of the CLIP vision tower (facts §2.1; manifest ``clip_vit_h14.json`` ``config``).

    Attributes:
        name: Preset name.
        image_size: S, side of the square network input in pixels (every image is resized to S x S).
        patch_size: P, side of a patch; the patch embedding is a P x P stride-P convolution without bias.
        width: D, token width. num_layers / num_heads: depth and heads of the transformer.
        mlp_ratio: MLP hidden width = mlp_ratio * width (exact-erf GELU between the two linears).
        embed_dim: E, width of the (unused) pooled CLIP embedding: ``visual.head`` is [D, E].
        output_blocks: number of leading blocks whose output is returned (31 of 32, ``use_31_block``).
        eps: LayerNorm epsilon (``norm_eps`` 1e-5 in the manifest config).
        mean / std: per-channel RGB normalisation applied to images mapped to [0, 1].
    """

    name: str
    image_size: int
    patch_size: int
    width: int
    num_layers: int
    num_heads: int
    mlp_ratio: int
    embed_dim: int
    output_blocks: int
    eps: float = 1e-5
    mean: tuple[float, float, float] = CLIP_MEAN
    std: tuple[float, float, float] = CLIP_STD

    def __post_init__(self) -> None:
        problems = []
        if self.image_size % self.patch_size:
            problems.append(f"image_size {self.image_size} is not divisible by patch_size {self.patch_size}")
        if self.width % self.num_heads:
            problems.append(f"width {self.width} is not divisible by num_heads {self.num_heads}")
        if not 1 <= self.output_blocks <= self.num_layers:
            problems.append(f"output_blocks must be in 1..num_layers={self.num_layers}, got {self.output_blocks}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            problems.append(f"mean/std must hold 3 values with std > 0, got {self.mean} / {self.std}")
        if problems:
            raise ValueError(f"ImageEncoderConfig {self.name!r}: " + "; ".join(problems))

    @property
    def num_patches(self) -> int:
        """N = (S / P)^2: 256 for ViT-H/14 at 224."""
        return (self.image_size // self.patch_size) ** 2

    @property
    def num_tokens(self) -> int:
        """L = N + 1 class token: 257 for ViT-H/14, the DiT's ``num_image_tokens``."""
        return self.num_patches + 1

    @property
    def head_dim(self) -> int:
        return self.width // self.num_heads

    @property
    def mlp_dim(self) -> int:
        return self.width * self.mlp_ratio

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ImageEncoderConfig:
        values = dict(values)
        values["mean"], values["std"] = tuple(values["mean"]), tuple(values["std"])
        return cls(**values)


_PRESETS: dict[str, ImageEncoderConfig] = {
    # open-clip xlm-roberta-large ViT-H/14 (facts §2.1; manifest clip_vit_h14.json XLMRobertaCLIP_args).
    "vit_h14": ImageEncoderConfig(
        name="vit_h14", image_size=224, patch_size=14, width=1280, num_layers=32, num_heads=16, mlp_ratio=4,
        embed_dim=1024, output_blocks=31,
    ),
    # CPU tests: same structure, 2x2 patches + class token = 5 tokens of width 32 (DiT "tiny": clip_dim 32,
    # num_image_tokens 5); the last of 3 blocks is skipped like the 32nd of ViT-H/14.
    "tiny": ImageEncoderConfig(
        name="tiny", image_size=28, patch_size=14, width=32, num_layers=3, num_heads=2, mlp_ratio=4,
        embed_dim=16, output_blocks=2,
    ),
}


def get_image_encoder_config(name: str, **overrides) -> ImageEncoderConfig:
    """Return an image-encoder preset by name, optionally with fields replaced.

    Raises:
        ValueError: unknown name (the message suggests the closest preset) or an inconsistent override.
    """
    return pick(_PRESETS, name, "image encoder config", **overrides)


def image_encoder_config_names() -> list[str]:
    return list(_PRESETS)


def preprocess_images(images: torch.Tensor, config: ImageEncoderConfig) -> torch.Tensor:
    """CLIP preprocessing of whole images (facts §2.1), computed in float32.

    Order as in Wan's ``CLIPModel.visual``: bicubic resize of the whole image to S x S (no crop, so a
    non-square mosaic is squashed; ``align_corners=False``, no antialias, no clamp of the bicubic
    overshoot), then [-1, 1] -> [0, 1], then ``(x - mean) / std`` per channel.

    Args:
        images: float[B, 3, H, W], RGB in [-1, 1].
        config: supplies S, mean and std.

    Returns:
        float32[B, 3, S, S], CLIP-normalised.

    Raises:
        ValueError: ``images`` is not [B, 3, H, W].
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be float[B, 3, H, W] in [-1, 1], got shape {tuple(images.shape)}")
    size = (config.image_size, config.image_size)
    resized = F.interpolate(images.float(), size=size, mode="bicubic", align_corners=False)  # B, 3, S, S
    mean = torch.tensor(config.mean, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(config.std, dtype=torch.float32, device=images.device).view(1, 3, 1, 1)
    return (resized * 0.5 + 0.5 - mean) / std


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input dtype (fp32 island, as Wan's CLIP)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x.float(), self.normalized_shape, self.weight.float(), self.bias.float(),
                            self.eps).type_as(x)


class VisionSelfAttention(nn.Module):
    """Bidirectional multi-head self-attention with a fused ``to_qkv`` ([3D, D], q|k|v) and ``proj``."""

    def __init__(self, width: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.to_qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x float[B, L, D] -> float[B, L, D]; softmax scale 1/sqrt(Dh), no mask."""
        qkv = self.to_qkv(x).unflatten(-1, (3, self.num_heads, -1))  # B, L, 3, Hh, Dh
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each B, Hh, L, Dh
        out = F.scaled_dot_product_attention(q, k, v)  # B, Hh, L, Dh
        return self.proj(out.transpose(1, 2).flatten(2))  # B, L, D


class VisionBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x)) (exact GELU)."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.norm1 = FP32LayerNorm(config.width, eps=config.eps)
        self.attn = VisionSelfAttention(config.width, config.num_heads)
        self.norm2 = FP32LayerNorm(config.width, eps=config.eps)
        # Manifest names mlp.0 / mlp.2; activation 'gelu' (exact erf) for the xlm-roberta ViT-H.
        self.mlp = nn.Sequential(nn.Linear(config.width, config.mlp_dim), nn.GELU(),
                                 nn.Linear(config.mlp_dim, config.width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class VisionTransformer(nn.Module):
    """``visual``: patch embedding, class token, position embedding, pre-norm and the blocks.

    ``post_norm`` and ``head`` exist in the checkpoint (manifest) but are not used by DreamZero, which
    reads the tokens after ``output_blocks`` blocks (facts §2.1).
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        width = config.width
        # No bias: a pre-normed ViT's patch embedding is bias-free (manifest: weight only).
        self.patch_embedding = nn.Conv2d(3, width, kernel_size=config.patch_size, stride=config.patch_size,
                                         bias=False)
        self.cls_embedding = nn.Parameter(torch.empty(1, 1, width))
        self.pos_embedding = nn.Parameter(torch.empty(1, config.num_tokens, width))
        self.pre_norm = FP32LayerNorm(width, eps=config.eps)
        self.transformer = nn.ModuleList(VisionBlock(config) for _ in range(config.num_layers))
        self.post_norm = FP32LayerNorm(width, eps=config.eps)
        self.head = nn.Parameter(torch.empty(width, config.embed_dim))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels float[B, 3, S, S] (CLIP-normalised, model dtype) -> float[B, L, D] after ``output_blocks``."""
        patches = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # B, N, D (row-major patches)
        cls = self.cls_embedding.expand(patches.shape[0], -1, -1)  # B, 1, D
        x = torch.cat([cls, patches], dim=1) + self.pos_embedding  # B, L, D
        x = self.pre_norm(x)
        for block in self.transformer[:self.config.output_blocks]:
            x = block(x)
        return x


class ClipVisionModel(nn.Module):
    """``XLMRobertaCLIP`` without its text tower: ``log_scale`` (contrastive temperature) and ``visual``."""

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.empty(()))
        self.visual = VisionTransformer(config)


class WanImageEncoder(nn.Module):
    """The DreamZero image encoder; all weights live in ``model`` (manifest names, no prefix).

    Always frozen in DreamZero (facts §6.2); the caller chooses ``torch.no_grad`` / ``inference_mode``.
    """

    def __init__(self, config: ImageEncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.model = ClipVisionModel(config)

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random initialisation (CLIP's scheme: normal weights scaled by width and depth, zero biases)."""
        config, visual = self.config, self.model.visual
        width = config.width
        nn.init.constant_(self.model.log_scale, math.log(1 / 0.07))  # CLIP's initial temperature 0.07
        nn.init.normal_(visual.patch_embedding.weight, std=(3 * config.patch_size ** 2) ** -0.5)
        for parameter in (visual.cls_embedding, visual.pos_embedding, visual.head):
            nn.init.normal_(parameter, std=width ** -0.5)
        for norm in (visual.pre_norm, visual.post_norm):
            nn.init.ones_(norm.weight)
            nn.init.zeros_(norm.bias)
        proj_std = width ** -0.5 * (2 * config.num_layers) ** -0.5
        for block in visual.transformer:
            for norm in (block.norm1, block.norm2):
                nn.init.ones_(norm.weight)
                nn.init.zeros_(norm.bias)
            for linear, std in ((block.attn.to_qkv, width ** -0.5), (block.attn.proj, proj_std),
                                (block.mlp[0], (2 * width) ** -0.5), (block.mlp[2], proj_std)):
                nn.init.normal_(linear.weight, std=std)
                nn.init.zeros_(linear.bias)

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """CLIP tokens of one image per sample (facts §2.1).

        Args:
            images: float[B, 3, H, W], RGB in [-1, 1], any H x W (the whole image is squashed to S x S).

        Returns:
            float32[B, L, D]: class token then N patch tokens (row-major), taken after the first
            ``output_blocks`` blocks without post_norm or head (257 x 1280 for ``vit_h14``).

        Raises:
            ValueError: ``images`` is not [B, 3, H, W].
        """
        pixels = preprocess_images(images, self.config)  # B, 3, S, S (fp32)
        dtype = self.model.visual.patch_embedding.weight.dtype
        return self.model.visual(pixels.to(dtype)).float()


def build_image_encoder(name_or_config: str | ImageEncoderConfig, device: torch.device | str | None = None,
                        dtype: torch.dtype | None = None) -> WanImageEncoder:
    """Build the image encoder straight on ``device`` in ``dtype`` (``device="meta"`` allocates nothing).

    On a real device the parameters are created empty there and initialised in place.
    """
    if isinstance(name_or_config, str):
        config = get_image_encoder_config(name_or_config)
    else:
        config = name_or_config
    return build_on(lambda: WanImageEncoder(config), device, dtype)


__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipVisionModel", "ImageEncoderConfig", "VisionTransformer", "WanImageEncoder",
           "build_image_encoder", "get_image_encoder_config", "image_encoder_config_names", "preprocess_images"]
