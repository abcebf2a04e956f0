"""A tiny synthetic world for learning tests: a blob moving over a latent grid, driven by the actions.

Each sample has a velocity (vx, vy) in [-1, 1]^2. The action of every step is that velocity (dims 0
and 1 of the 32 padded dims), the state at each chunk start carries it too (dims 0 and 1 of 64),
and latent frame f shows a Gaussian blob at start + f * velocity * SPEED (latent pixels), wrapped
around the grid, in every latent channel with a per-channel sign pattern. So the actions are
predictable from the state and agree with the motion in the video.
"""
from __future__ import annotations

import torch

from dreamzero_model.config import DiTConfig
from dreamzero_model.loss import TrainingBatch

SPEED = 0.75  # latent pixels per latent frame at |v| = 1
BLOB_SIGMA = 0.8  # latent pixels


def render(config: DiTConfig, centres: torch.Tensor) -> torch.Tensor:
    """Blobs at centres float[B, F, 2] (row, col) -> latents float[B, z, F, h, w]."""
    rows = torch.arange(config.latent_height, dtype=torch.float32)
    cols = torch.arange(config.latent_width, dtype=torch.float32)

    def wrapped(delta: torch.Tensor, size: int) -> torch.Tensor:
        return torch.remainder(delta + size / 2, size) - size / 2

    d_row = wrapped(rows[None, None, :] - centres[..., :1], config.latent_height)  # B, F, h
    d_col = wrapped(cols[None, None, :] - centres[..., 1:], config.latent_width)  # B, F, w
    blob = torch.exp(-(d_row[..., :, None] ** 2 + d_col[..., None, :] ** 2) / (2 * BLOB_SIGMA ** 2))  # B, F, h, w
    signs = torch.where(torch.arange(config.out_dim) % 2 == 0, 1.0, -1.0)
    return 2.0 * blob[:, None] * signs[None, :, None, None, None]


def make_batch(config: DiTConfig, size: int, num_chunks: int, generator: torch.Generator,
               text: torch.Tensor, image: torch.Tensor) -> tuple[TrainingBatch, torch.Tensor]:
    """A batch and the true velocities float[B, 2]."""
    frames = 1 + num_chunks * config.num_frame_per_block
    velocity = torch.rand(size, 2, generator=generator) * 2 - 1
    start = torch.rand(size, 2, generator=generator) * torch.tensor([config.latent_height, config.latent_width])
    centres = start[:, None] + torch.arange(frames, dtype=torch.float32)[None, :, None] * velocity[:, None] * SPEED
    steps = num_chunks * config.num_action_per_block
    actions = torch.zeros(size, steps, config.action_dim)
    actions[..., :2] = velocity[:, None]
    action_mask = torch.zeros(size, config.action_dim)
    action_mask[:, :2] = 1.0
    state = torch.zeros(size, num_chunks, config.max_state_dim)
    state[..., :2] = velocity[:, None]
    batch = TrainingBatch(latents=render(config, centres), actions=actions, action_mask=action_mask, state=state,
                          text=text.expand(size, -1, -1), image=image.expand(size, -1, -1))
    return batch, velocity
