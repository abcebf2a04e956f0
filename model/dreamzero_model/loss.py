"""Training objective: joint flow matching on video latents and actions with teacher forcing (facts §2.6-2.7, §6.1).

The sequence holds the clean latents of the clip at timestep 0 followed by their noisy copies
(same RoPE positions), the noisy actions of every chunk and one state token per chunk, under the
causal chunk mask (facts §2.4). Noise: x_t = (1 - s) x_0 + s eps, target velocity eps - x_0,
1000 training sigmas shifted by 5, per-sample weight w(t) peaking at mid timesteps. Loss = mean over
samples and noisy frames of w(t) x the frame's video MSE, plus mean over samples and action steps of
w(t) x the masked action squared error averaged over all A padded dims (not only the real ones);
weights 1:1 (facts §6.1, §10).

Timesteps ("coupled", the default): one index per latent frame drawn uniformly from 0..999; both
frames of a chunk take the chunk's first draw, the conditioning frame keeps its own, and chunk i's
actions (and state) share chunk i's index. ``flash``: video noise ratio ~ Beta(alpha, 1) per chunk
(alpha 7: mostly noisy video), index = (1 - ratio) * 1000, actions uniform and independent, so that
few-step inference keeps action quality (facts §2.6, §2.10).

Shapes: B batch, K chunks, F = 1 + 2K latent frames, z channels, h/w grid, A action width (32),
S state width (64). Imports torch only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from dreamzero_model.dit import CausalWanModel, DiTInputs, SelfAttentionPlan
from dreamzero_model.masks import teacher_forcing_mask
from dreamzero_model.session import default_conditioning

NUM_TRAIN_TIMESTEPS = 1000


@dataclass(frozen=True)
class LossConfig:
    """shift: sigma shift (5). flash: decoupled video/action noise. video_beta_alpha: Beta(alpha, 1) for flash."""

    shift: float = 5.0
    flash: bool = False
    video_beta_alpha: float = 7.0


@dataclass(frozen=True)
class TrainingBatch:
    """One teacher-forcing sample batch.

    Attributes:
        latents: float[B, z, F, h, w], clean VAE latents; frame 0 is the conditioning frame.
        actions: float[B, K * 24, A], normalized actions in [-1, 1], zero-padded to A.
        action_mask: float[B, A] or [B, K * 24, A], 1 on real action dims (padding is not learned;
            the error is still averaged over all A dims, as the official trainer does).
        state: float[B, K, S], normalized state at the start of each chunk, zero-padded.
        text: float[B, text_len, text_dim]. image: float[B, num_image_tokens, clip_dim].
        y: float[B, 4 + z, F, h, w] conditioning (i2v) or None for :func:`default_conditioning`.
    """

    latents: torch.Tensor
    actions: torch.Tensor
    action_mask: torch.Tensor
    state: torch.Tensor
    text: torch.Tensor
    image: torch.Tensor
    y: torch.Tensor | None = None


@dataclass(frozen=True)
class LossOutput:
    """total = video + action (weights 1:1, facts §6.1); scalars."""

    total: torch.Tensor
    video: torch.Tensor
    action: torch.Tensor


class TrainingSchedule:
    """The 1000-step training grid: shifted sigmas, timesteps and loss weights (facts §2.7)."""

    def __init__(self, shift: float) -> None:
        sigmas = torch.linspace(1.0, 0.0, NUM_TRAIN_TIMESTEPS + 1, dtype=torch.float64)[:-1]
        self.sigmas = shift * sigmas / (1.0 + (shift - 1.0) * sigmas)
        self.timesteps = self.sigmas * NUM_TRAIN_TIMESTEPS
        weights = torch.exp(-2.0 * ((self.timesteps - NUM_TRAIN_TIMESTEPS / 2) / NUM_TRAIN_TIMESTEPS) ** 2)
        weights = weights - weights.min()
        self.weights = weights * (NUM_TRAIN_TIMESTEPS / weights.sum())


def sample_indices(batch: int, num_chunks: int, frames_per_block: int, config: LossConfig,
                   generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Training timestep indices: video int64[B, 1 + K * frames_per_block] and actions int64[B, K]."""
    first = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch, 1), generator=generator)
    if config.flash:
        # Beta(alpha, 1) by its inverse CDF u^(1/alpha), so the draw follows ``generator``.
        ratio = torch.rand((batch, num_chunks), generator=generator) ** (1.0 / config.video_beta_alpha)
        video_chunks = ((1.0 - ratio) * NUM_TRAIN_TIMESTEPS).long().clamp(0, NUM_TRAIN_TIMESTEPS - 1)
        action_chunks = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch, num_chunks), generator=generator)
    else:
        video_chunks = torch.randint(0, NUM_TRAIN_TIMESTEPS, (batch, num_chunks), generator=generator)
        action_chunks = video_chunks
    video = torch.cat([first, video_chunks.repeat_interleave(frames_per_block, dim=1)], dim=1)
    return video, action_chunks


def training_loss(model: CausalWanModel, batch: TrainingBatch, config: LossConfig | None = None,
                  generator: torch.Generator | None = None) -> LossOutput:
    """Flow-matching loss of one teacher-forcing batch (see module docstring)."""
    config = config or LossConfig()
    dit = model.config
    schedule = TrainingSchedule(config.shift)
    latents = batch.latents.float()
    size, _, frames, _, _ = latents.shape
    chunks = batch.state.shape[1]
    actions_per_block = dit.num_action_per_block
    device = latents.device
    video_index, action_chunk_index = sample_indices(size, chunks, dit.num_frame_per_block, config, generator)
    video_sigma = schedule.sigmas[video_index].float().to(device)  # B, F
    action_index = action_chunk_index.repeat_interleave(actions_per_block, dim=1)  # B, K*24
    action_sigma = schedule.sigmas[action_index].float().to(device)

    video_noise = torch.randn(latents.shape, generator=generator).to(device)
    action_noise = torch.randn(batch.actions.shape, generator=generator).to(device)
    noisy_video = (1 - video_sigma[:, None, :, None, None]) * latents + video_sigma[:, None, :, None, None] * video_noise
    noisy_actions = (1 - action_sigma[..., None]) * batch.actions + action_sigma[..., None] * action_noise

    y = batch.y if batch.y is not None else default_conditioning(latents[:, :, :1], frames)
    clean_in, noisy_in = (torch.cat([v, y], dim=1) if dit.concat_first_frame_latent else v for v in (latents, noisy_video))
    video_t = schedule.timesteps[video_index].float().to(device)
    action_t = schedule.timesteps[action_index].float().to(device)
    inputs = DiTInputs(
        video=torch.cat([clean_in, noisy_in], dim=2),
        video_timestep=torch.cat([torch.zeros_like(video_t), video_t], dim=1),
        frame_index=torch.arange(frames, device=device).repeat(2),
        actions=noisy_actions, action_timestep=action_t,
        action_index=torch.arange(chunks * actions_per_block, device=device),
        state=batch.state, state_timestep=action_t[:, ::actions_per_block],
        state_index=torch.arange(chunks, device=device))
    mask = teacher_forcing_mask(chunks, dit.frame_seqlen, dit.num_frame_per_block, actions_per_block,
                                dit.num_state_per_block).to(device)
    out = model(inputs, model.prepare_context(batch.text, batch.image), SelfAttentionPlan(mask=mask))

    video_error = (out.video[:, :, frames:].float() - (video_noise - latents)) ** 2  # B, z, F, h, w
    video_loss = (video_error.mean(dim=(1, 3, 4)) * schedule.weights[video_index].float().to(device)).mean()
    action_mask = batch.action_mask.float()
    if action_mask.dim() == 2:
        action_mask = action_mask[:, None, :].expand_as(batch.actions)
    # Masked squared error averaged over ALL A padded dims, as the official trainer (facts §6.1, §10):
    # padding counts as zero error, so DROID (8 real of 32) weighs its action loss 8/32 of a per-real-dim mean.
    action_error = ((out.actions.float() - (action_noise - batch.actions)) ** 2 * action_mask).mean(-1)  # B, K*24
    action_loss = (action_error * schedule.weights[action_index].float().to(device)).mean()
    return LossOutput(total=video_loss + action_loss, video=video_loss, action=action_loss)
