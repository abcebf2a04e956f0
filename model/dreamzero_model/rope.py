"""Rotary position embeddings of the causal DiT (facts §2.3; manifest ``not_in_state_dict``).

Video tokens use a 3D RoPE: the head's complex pairs are split between time, height and width
(22/21/21 for head dim 128, Wan's split ``d - 4(d//6) | 2(d//6) | 2(d//6)``); the time index is the
latent-frame index inside the context. Action and state tokens each use a 1D RoPE over the full
head dimension with their own index (action: chunk * 24 + i, state: chunk). Pairs are interleaved
(dims 2j and 2j+1 form pair j), theta 10000.

The official code keeps complex lookup tables of 1024 / 10240 / 1024 rows; here the angles are
computed from the positions at call time (same values, in float64), so nothing is stored on the
module and nothing has to follow it across devices. Imports torch only.
"""
from __future__ import annotations

import torch


def _inverse_frequencies(dim: int, theta: float, device: torch.device) -> torch.Tensor:
    """float64[dim/2]: theta^(-2j/dim), the frequencies of one Wan ``rope_params`` table."""
    return 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64, device=device) / dim)


def video_rope_split(head_dim: int) -> tuple[int, int, int]:
    """Complex pairs given to (time, height, width): (22, 21, 21) for head dim 128."""
    sixth = head_dim // 6
    return (head_dim - 4 * sixth) // 2, sixth, sixth


def video_angles(frame_index: torch.Tensor, grid_h: int, grid_w: int, head_dim: int, theta: float) -> torch.Tensor:
    """Rotation angles of video tokens in frame-major, row-major order.

    Args:
        frame_index: int64[F], latent-frame index of each frame inside the context.
        grid_h / grid_w: token grid of one frame (latent size / patch size).

    Returns:
        float64[F * grid_h * grid_w, head_dim / 2].
    """
    device = frame_index.device
    pairs_t, pairs_h, pairs_w = video_rope_split(head_dim)
    angle_t = frame_index.to(torch.float64)[:, None] * _inverse_frequencies(2 * pairs_t, theta, device)
    angle_h = torch.arange(grid_h, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        2 * pairs_h, theta, device)
    angle_w = torch.arange(grid_w, dtype=torch.float64, device=device)[:, None] * _inverse_frequencies(
        2 * pairs_w, theta, device)
    frames = frame_index.numel()
    return torch.cat([
        angle_t[:, None, None, :].expand(frames, grid_h, grid_w, pairs_t),
        angle_h[None, :, None, :].expand(frames, grid_h, grid_w, pairs_h),
        angle_w[None, None, :, :].expand(frames, grid_h, grid_w, pairs_w),
    ], dim=-1).reshape(frames * grid_h * grid_w, pairs_t + pairs_h + pairs_w)


def sequence_angles(index: torch.Tensor, head_dim: int, theta: float) -> torch.Tensor:
    """Rotation angles of 1D-indexed tokens (actions or states): float64[N, head_dim / 2]."""
    return index.to(torch.float64)[:, None] * _inverse_frequencies(head_dim, theta, index.device)


def apply_rope(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved pairs of ``x`` [B, L, heads, head_dim] by ``angles`` [L, head_dim/2].

    Computed in float32 (an fp32 island under bf16), returned in the dtype of ``x``.
    """
    cos = torch.cos(angles).to(torch.float32)[None, :, None, :]
    sin = torch.sin(angles).to(torch.float32)[None, :, None, :]
    pairs = x.to(torch.float32).unflatten(-1, (-1, 2))  # B, L, heads, head_dim/2, 2
    real, imag = pairs[..., 0], pairs[..., 1]
    rotated = torch.stack([real * cos - imag * sin, real * sin + imag * cos], dim=-1)
    return rotated.flatten(-2).to(x.dtype)
