"""The causal video-action DiT of DreamZero (``CausalWanModel``; facts §2.1-2.4).

A Wan2.1/2.2 diffusion transformer whose token sequence holds, in this order, video tokens
(patchified latent frames), action tokens (one per action step) and state tokens (one per chunk).
Every token carries its own timestep, so the AdaLN modulation is per token. Module and parameter
names equal the official ones (checkpoint manifest), so an official state dict loads without
renaming. Self-attention is either masked (training, full recompute) or reads and writes a
:class:`~dreamzero_model.kv_cache.KVCache` (chunk-wise inference); see :class:`SelfAttentionPlan`.

Dimensions: B batch, F latent frames, h/w latent grid, L tokens, Na action tokens, Ns state tokens,
D model width, H heads, Dh head dim, Lc cross-attention context tokens (image + text).
This module never opens a file and imports torch only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from dreamzero_model.config import DiTConfig, get_config
from dreamzero_model.construction import build_on
from dreamzero_model.kv_cache import KVCache, LayerCache
from dreamzero_model.rope import apply_rope, sequence_angles, video_angles


def timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """Wan's timestep embedding input: [cos | sin] of t * 10000^(-j/half), float64 -> float32.

    Args:
        timestep: float[...], 0..1000 scale. Returns float32[..., dim].
    """
    half = dim // 2
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64, device=timestep.device) / half)
    angles = timestep.to(torch.float64)[..., None] * frequencies
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(torch.float32)


def action_timestep_sinusoid(timestep: torch.Tensor, dim: int) -> torch.Tensor:
    """The action encoder's timestep code (facts §2.2, pi0 style): [sin | cos], log-spaced, base 10000."""
    half = dim // 2
    exponent = -math.log(10000.0) / half * torch.arange(half, dtype=torch.float32, device=timestep.device)
    angles = timestep.to(torch.float32)[..., None] * torch.exp(exponent)
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


class RMSNorm(nn.Module):
    """RMS norm over the full width, computed in float32 (Wan ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
        return normed.type_as(x) * self.weight


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32 and returned in the input dtype (Wan ``WanLayerNorm``)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).type_as(x)


class CategorySpecificLinear(nn.Module):
    """``x @ W[0] + b[0]`` with W [1, in, out]: one category, as DreamZero forces (facts §1.2, §2.2)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(1, in_features, out_features))
        self.b = nn.Parameter(torch.empty(1, out_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.W[0] + self.b[0]


class CategorySpecificMLP(nn.Module):
    """State encoder / action decoder: layer1 -> ReLU -> layer2 (facts §2.2)."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.layer1 = CategorySpecificLinear(in_features, hidden)
        self.layer2 = CategorySpecificLinear(hidden, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer2(F.relu(self.layer1(x)))


class ActionEncoder(nn.Module):
    """``MultiEmbodimentActionEncoder``: W1(a) ++ sinusoid(t) -> W2 -> swish -> W3 (facts §2.2)."""

    def __init__(self, action_dim: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.W1 = CategorySpecificLinear(action_dim, dim)
        self.W2 = CategorySpecificLinear(2 * dim, dim)
        self.W3 = CategorySpecificLinear(dim, dim)

    def forward(self, actions: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """actions float[B, Na, action_dim], timestep float[B, Na] -> float[B, Na, D]."""
        embedded = self.W1(actions)
        code = action_timestep_sinusoid(timestep, self.dim).to(embedded.dtype)
        return self.W3(F.silu(self.W2(torch.cat([embedded, code], dim=-1))))


@dataclass
class SelfAttentionPlan:
    """How the self-attention of one DiT call sees other tokens.

    Attributes:
        mask: bool[L, L], True where a query may attend a key (training, full recompute), or None.
        cache: KV cache whose first ``read_tokens`` tokens every query also attends (each block gets
            its layer's :class:`~dreamzero_model.kv_cache.LayerCache`).
        read_tokens: number of cached tokens visible to this call.
        write_at: if set, the K/V of this call's video tokens are written into ``cache`` at this
            token offset (conditioning prefill and observed chunks; predictions are never written).
    """

    mask: torch.Tensor | None = None
    cache: KVCache | None = None
    read_tokens: int = 0
    write_at: int | None = None


class SelfAttention(nn.Module):
    """Self-attention with qk RMSNorm and RoPE, masked or over a KV cache."""

    def __init__(self, dim: int, num_heads: int, eps: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def forward(self, x: torch.Tensor, angles: torch.Tensor, plan: SelfAttentionPlan, cache: LayerCache | None,
                num_video_tokens: int) -> torch.Tensor:
        q = apply_rope(self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1)), angles)  # B, L, H, Dh
        k = apply_rope(self.norm_k(self.k(x)).unflatten(-1, (self.num_heads, -1)), angles)  # K cached after RoPE
        v = self.v(x).unflatten(-1, (self.num_heads, -1))
        if cache is not None:
            if plan.write_at is not None:
                cache.write(plan.write_at, k[:, :num_video_tokens], v[:, :num_video_tokens])
            cached_k, cached_v = cache.read(plan.read_tokens)
            k, v = torch.cat([cached_k, k], dim=1), torch.cat([cached_v, v], dim=1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                             attn_mask=plan.mask)  # B, H, L, Dh
        return self.o(out.transpose(1, 2).flatten(2))


@dataclass
class CrossContext:
    """Projected cross-attention keys/values of one block: text (k, v) and image (k_img, v_img)."""

    k: torch.Tensor
    v: torch.Tensor
    k_img: torch.Tensor
    v_img: torch.Tensor


class I2VCrossAttention(nn.Module):
    """Cross-attention to text and to CLIP image tokens, two attentions summed (facts §2.1)."""

    def __init__(self, dim: int, num_heads: int, eps: float, num_image_tokens: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.num_image_tokens = num_image_tokens
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.k_img, self.v_img = nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)
        self.norm_k_img = RMSNorm(dim, eps)

    def project_context(self, context: torch.Tensor) -> CrossContext:
        """context float[B, Lc, D], image tokens first -> per-head keys and values."""
        image, text = context[:, :self.num_image_tokens], context[:, self.num_image_tokens:]

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # B, H, Lc, Dh

        return CrossContext(k=heads(self.norm_k(self.k(text))), v=heads(self.v(text)),
                            k_img=heads(self.norm_k_img(self.k_img(image))), v_img=heads(self.v_img(image)))

    def forward(self, x: torch.Tensor, context: CrossContext) -> torch.Tensor:
        q = self.norm_q(self.q(x)).unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # B, H, L, Dh
        out = (F.scaled_dot_product_attention(q, context.k, context.v)
               + F.scaled_dot_product_attention(q, context.k_img, context.v_img))
        return self.o(out.transpose(1, 2).flatten(2))


class WanAttentionBlock(nn.Module):
    """1. self-attention, 2. cross-attention, 3. feed-forward, with per-token 6-way AdaLN."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        dim, eps = config.dim, config.eps
        self.norm1 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.self_attn = SelfAttention(dim, config.num_heads, eps)
        self.norm3 = FP32LayerNorm(dim, eps, elementwise_affine=True)
        self.cross_attn = I2VCrossAttention(dim, config.num_heads, eps, config.num_image_tokens)
        self.norm2 = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.ffn = nn.Sequential(nn.Linear(dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 nn.Linear(config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.empty(1, 6, dim))

    def forward(self, x: torch.Tensor, time6: torch.Tensor, angles: torch.Tensor, context: CrossContext,
                plan: SelfAttentionPlan, cache: LayerCache | None, num_video_tokens: int) -> torch.Tensor:
        # fp32 island: modulation. time6 float32[B, L, 6, D]
        shift, scale, gate, ffn_shift, ffn_scale, ffn_gate = (self.modulation.float()[:, None] + time6).unbind(2)
        # 1. Self-attention
        y = self.self_attn((self.norm1(x).float() * (1 + scale) + shift).type_as(x), angles, plan, cache,
                           num_video_tokens)
        x = (x.float() + y.float() * gate).type_as(x)
        # 2. Cross-attention
        x = x + self.cross_attn(self.norm3(x), context)
        # 3. Feed-forward
        y = self.ffn((self.norm2(x).float() * (1 + ffn_scale) + ffn_shift).type_as(x))
        return (x.float() + y.float() * ffn_gate).type_as(x)


class Head(nn.Module):
    """Output head of the video tokens: norm, 2-way AdaLN, linear to out_dim x patch."""

    def __init__(self, dim: int, out_features: int, eps: float) -> None:
        super().__init__()
        self.norm = FP32LayerNorm(dim, eps, elementwise_affine=False)
        self.head = nn.Linear(dim, out_features)
        self.modulation = nn.Parameter(torch.empty(1, 2, dim))

    def forward(self, x: torch.Tensor, time_embedding: torch.Tensor) -> torch.Tensor:
        shift, scale = (self.modulation.float()[:, None] + time_embedding.float()[:, :, None]).unbind(2)
        return self.head((self.norm(x).float() * (1 + scale) + shift).type_as(x))


class MLPProj(nn.Module):
    """``img_emb``: LayerNorm, Linear, GELU, Linear, LayerNorm from CLIP width to model width."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.proj = nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
                                  nn.Linear(in_dim, out_dim), nn.LayerNorm(out_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x)


@dataclass
class DiTInputs:
    """One DiT call's tokens, in sequence order video -> actions -> states.

    Attributes:
        video: float[B, in_dim, F, h, w], the latent (with mask and image latent for i2v).
        video_timestep: float[B, F], 0..1000. frame_index: int64[F], RoPE time of each frame.
        actions: float[B, Na, action_dim] or None. action_timestep: float[B, Na].
            action_index: int64[Na], RoPE index (chunk * 24 + i).
        state: float[B, Ns, max_state_dim] or None. state_timestep: float[B, Ns].
            state_index: int64[Ns], RoPE index (chunk).
    """

    video: torch.Tensor
    video_timestep: torch.Tensor
    frame_index: torch.Tensor
    actions: torch.Tensor | None = None
    action_timestep: torch.Tensor | None = None
    action_index: torch.Tensor | None = None
    state: torch.Tensor | None = None
    state_timestep: torch.Tensor | None = None
    state_index: torch.Tensor | None = None


@dataclass
class DiTOutput:
    """video: float[B, out_dim, F, h, w] velocity; actions: float[B, Na, action_dim] velocity or None."""

    video: torch.Tensor
    actions: torch.Tensor | None


class CausalWanModel(nn.Module):
    """The DreamZero DiT. Attribute names follow the checkpoint manifest exactly."""

    def __init__(self, config: DiTConfig) -> None:
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size, stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim), nn.GELU(approximate="tanh"),
                                            nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(config) for _ in range(config.num_layers))
        self.head = Head(dim, config.out_dim * math.prod(config.patch_size), config.eps)
        self.img_emb = MLPProj(config.clip_dim, dim)
        self.state_encoder = CategorySpecificMLP(config.max_state_dim, config.hidden_size, dim)
        self.action_encoder = ActionEncoder(config.action_dim, dim)
        self.action_decoder = CategorySpecificMLP(dim, config.hidden_size, config.action_dim)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random initialisation (Wan's scheme: Xavier linears, zero biases, zero output head)."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, (nn.LayerNorm, RMSNorm)) and module.weight is not None:
                nn.init.ones_(module.weight)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, CategorySpecificLinear):
                nn.init.normal_(module.W, std=0.02)
                nn.init.zeros_(module.b)
        nn.init.xavier_uniform_(self.patch_embedding.weight.flatten(1))
        nn.init.zeros_(self.patch_embedding.bias)
        for sequential in (self.text_embedding, self.time_embedding):
            for layer in sequential:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=0.02)
        for block in self.blocks:
            block.modulation.normal_(std=self.config.dim ** -0.5)
        self.head.modulation.normal_(std=self.config.dim ** -0.5)
        nn.init.zeros_(self.head.head.weight)

    def embed_context(self, text: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """text float[B, text_len, text_dim], image float[B, 257, clip_dim] -> float[B, Lc, D], image first."""
        return torch.cat([self.img_emb(image), self.text_embedding(text)], dim=1)

    def prepare_context(self, text: torch.Tensor, image: torch.Tensor) -> list[CrossContext]:
        """Cross-attention keys/values of every block; constant over a context, so computed once."""
        context = self.embed_context(text, image)
        return [block.cross_attn.project_context(context) for block in self.blocks]

    def _time_embeddings(self, inputs: DiTInputs, tokens_per_frame: int) -> torch.Tensor:
        """float32[B, L, D]: per-token time embedding in sequence order."""
        parts = [inputs.video_timestep.repeat_interleave(tokens_per_frame, dim=1)]
        parts += [t for t in (inputs.action_timestep, inputs.state_timestep) if t is not None]
        timestep = torch.cat(parts, dim=1)
        dtype = self.time_embedding[0].weight.dtype
        return self.time_embedding(timestep_sinusoid(timestep, self.config.freq_dim).to(dtype)).float()

    def _angles(self, inputs: DiTInputs, grid_h: int, grid_w: int) -> torch.Tensor:
        config = self.config
        parts = [video_angles(inputs.frame_index, grid_h, grid_w, config.head_dim, config.rope_theta)]
        for index in (inputs.action_index, inputs.state_index):
            if index is not None:
                parts.append(sequence_angles(index, config.head_dim, config.rope_theta))
        return torch.cat(parts, dim=0)

    def forward(self, inputs: DiTInputs, context: list[CrossContext], plan: SelfAttentionPlan) -> DiTOutput:
        """Run the DiT on one token sequence; returns velocities of the video and action tokens."""
        batch, _, frames, height, width = inputs.video.shape
        dtype = self.patch_embedding.weight.dtype
        video = self.patch_embedding(inputs.video.to(dtype))  # B, D, F, h/ph, w/pw
        grid_h, grid_w = video.shape[-2:]
        parts = [video.flatten(2).transpose(1, 2)]  # B, F*gh*gw, D
        if inputs.actions is not None:
            parts.append(self.action_encoder(inputs.actions.to(dtype), inputs.action_timestep))
        if inputs.state is not None:
            parts.append(self.state_encoder(inputs.state.to(dtype)))
        x = torch.cat(parts, dim=1)  # B, L, D
        num_video = parts[0].shape[1]
        num_actions = 0 if inputs.actions is None else inputs.actions.shape[1]

        time_embedding = self._time_embeddings(inputs, grid_h * grid_w)  # B, L, D (fp32)
        time6 = self.time_projection(time_embedding.to(dtype)).float().unflatten(-1, (6, -1))  # B, L, 6, D
        angles = self._angles(inputs, grid_h, grid_w)
        for layer, block in enumerate(self.blocks):
            cache = None if plan.cache is None else plan.cache.layer(layer)
            x = block(x, time6, angles, context[layer], plan, cache, num_video)

        video_out = self.head(x[:, :num_video], time_embedding[:, :num_video])  # B, F*gh*gw, out*pt*ph*pw
        actions_out = self.action_decoder(x[:, num_video:num_video + num_actions]) if num_actions else None
        return DiTOutput(video=self._unpatchify(video_out, frames, grid_h, grid_w), actions=actions_out)

    def _unpatchify(self, tokens: torch.Tensor, frames: int, grid_h: int, grid_w: int) -> torch.Tensor:
        """float[B, F*gh*gw, C*pt*ph*pw] -> float[B, C, F*pt, gh*ph, gw*pw]."""
        pt, ph, pw = self.config.patch_size
        batch = tokens.shape[0]
        x = tokens.view(batch, frames, grid_h, grid_w, pt, ph, pw, self.config.out_dim)
        x = torch.einsum("bfhwpqrc->bcfphqwr", x)  # B, C, F, pt, gh, ph, gw, pw
        return x.reshape(batch, self.config.out_dim, frames * pt, grid_h * ph, grid_w * pw)


def build_dit(name_or_config: str | DiTConfig, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> CausalWanModel:
    """Build the DiT straight on ``device`` in ``dtype`` (``device="meta"`` allocates nothing).

    On a real device the parameters are created empty there and initialised in place, so a 14B
    model never passes through a float32 CPU copy.
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return build_on(lambda: CausalWanModel(config), device, dtype)
