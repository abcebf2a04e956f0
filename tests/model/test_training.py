"""Training forward and loss: causality, timestep sampling, weights, masking, learning (facts §2.4-2.7, §6.1)."""
from __future__ import annotations

import copy

import pytest
import torch

from dreamzero_model import FLASH_SAMPLER, SamplerConfig, WamSession, build_dit, get_config
from dreamzero_model.dit import DiTInputs, DiTOutput, SelfAttentionPlan
from dreamzero_model.loss import LossConfig, TrainingBatch, TrainingSchedule, sample_indices, training_loss
from dreamzero_model.masks import teacher_forcing_mask
from moving_squares import make_batch

CONFIG = get_config("tiny")


def _teacher_forcing_inputs(generator: torch.Generator, chunks: int = 3) -> DiTInputs:
    frames = 1 + 2 * chunks
    grid = (CONFIG.latent_height, CONFIG.latent_width)
    return DiTInputs(
        video=torch.randn(1, CONFIG.in_dim, 2 * frames, *grid, generator=generator),
        video_timestep=torch.cat([torch.zeros(1, frames), torch.rand(1, frames, generator=generator) * 1000], dim=1),
        frame_index=torch.arange(frames).repeat(2),
        actions=torch.randn(1, chunks * 24, CONFIG.action_dim, generator=generator),
        action_timestep=(torch.rand(1, chunks, generator=generator) * 1000).repeat_interleave(24, dim=1),
        action_index=torch.arange(chunks * 24),
        state=torch.randn(1, chunks, CONFIG.max_state_dim, generator=generator),
        state_timestep=torch.rand(1, chunks, generator=generator) * 1000,
        state_index=torch.arange(chunks))


def test_a_later_chunk_never_changes_an_earlier_chunk_bitwise() -> None:
    torch.manual_seed(0)
    model = build_dit(CONFIG)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(1)
    inputs = _teacher_forcing_inputs(generator)
    context = model.prepare_context(torch.randn(1, CONFIG.text_len, CONFIG.text_dim, generator=generator),
                                    torch.randn(1, CONFIG.num_image_tokens, CONFIG.clip_dim, generator=generator))
    plan = SelfAttentionPlan(mask=teacher_forcing_mask(3, CONFIG.frame_seqlen, 2, 24, 1))
    frames = 7
    changed = copy.copy(inputs)
    video = inputs.video.clone()
    video[:, :, 5:7] += 3.0  # clean frames of chunk 2
    video[:, :, frames + 5:frames + 7] -= 3.0  # noisy frames of chunk 2
    changed.video = video
    changed.actions = inputs.actions.clone()
    changed.actions[:, 48:] += 3.0
    changed.state = inputs.state.clone()
    changed.state[:, 2] += 3.0
    with torch.no_grad():
        before, after = model(inputs, context, plan), model(changed, context, plan)
    for half in (0, frames):  # clean and noisy frames 0..4 = conditioning frame + chunks 0 and 1
        assert torch.equal(before.video[:, :, half:half + 5], after.video[:, :, half:half + 5])
    assert torch.equal(before.actions[:, :48], after.actions[:, :48])
    assert not torch.allclose(before.actions[:, 48:], after.actions[:, 48:])


def test_training_weights_peak_mid_schedule_and_average_one() -> None:
    schedule = TrainingSchedule(shift=5.0)
    assert schedule.weights.shape == (1000,)
    assert schedule.weights.sum().item() == pytest.approx(1000.0)
    assert schedule.weights.min().item() == pytest.approx(0.0, abs=1e-12)
    peak = schedule.timesteps[schedule.weights.argmax()].item()
    assert abs(peak - 500.0) < 5.0
    assert schedule.sigmas[0].item() == 1.0 and schedule.sigmas[-1].item() == pytest.approx(5 * 0.001 / 1.004)


def test_coupled_timesteps_are_shared_per_chunk_by_frames_and_actions() -> None:
    video, actions = sample_indices(64, 4, 2, LossConfig(), torch.Generator().manual_seed(0))
    assert video.shape == (64, 9) and actions.shape == (64, 4)
    assert torch.equal(video[:, 1::2], video[:, 2::2]), "both frames of a chunk share its timestep"
    assert torch.equal(video[:, 1::2], actions), "chunk i's actions share its video timestep"
    assert (video[:, 0] != video[:, 1]).any(), "the conditioning frame draws its own"


def test_flash_timesteps_make_video_mostly_noisy_and_actions_uniform() -> None:
    video, actions = sample_indices(4000, 4, 2, LossConfig(flash=True), torch.Generator().manual_seed(0))
    sigmas = TrainingSchedule(5.0).sigmas
    assert sigmas[video[:, 1:]].mean() > 0.95  # Beta(7, 1): noise ratio mostly near 1
    assert (video[:, 1::2] != actions).any()
    assert abs(actions.float().mean().item() - 499.5) < 15.0


def test_padded_action_dimensions_are_not_learned() -> None:
    generator = torch.Generator().manual_seed(0)
    model = build_dit(CONFIG)
    text = torch.randn(1, CONFIG.text_len, CONFIG.text_dim, generator=generator)
    image = torch.randn(1, CONFIG.num_image_tokens, CONFIG.clip_dim, generator=generator)
    batch, _ = make_batch(CONFIG, 2, 2, generator, text, image)
    loss = training_loss(model, batch, generator=torch.Generator().manual_seed(1))
    loss.total.backward()
    decoder_out = model.action_decoder.layer2
    assert decoder_out.b.grad[0, 2:].abs().max().item() == 0.0
    assert decoder_out.b.grad[0, :2].abs().max().item() > 0.0


class _ZeroVelocityModel(torch.nn.Module):
    """Stands in for the DiT: predicts zero velocity and records its inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.config = CONFIG
        self.inputs: list[DiTInputs] = []

    def prepare_context(self, text: torch.Tensor, image: torch.Tensor) -> list:
        return []

    def forward(self, inputs: DiTInputs, context: list, plan: SelfAttentionPlan) -> DiTOutput:
        self.inputs.append(inputs)
        return DiTOutput(video=torch.zeros_like(inputs.video[:, :CONFIG.out_dim]),
                         actions=torch.zeros_like(inputs.actions))


def _facts_weight(timestep: torch.Tensor) -> torch.Tensor:
    """w(t) of facts §2.7 on the 1000-step grid (shift 5), looked up at the nearest grid timestep."""
    s = torch.linspace(1.0, 0.0, 1001, dtype=torch.float64)[:-1]
    grid = 1000.0 * 5.0 * s / (1.0 + 4.0 * s)
    raw = torch.exp(-2.0 * ((grid - 500.0) / 1000.0) ** 2)
    weights = (raw - raw.min()) * (1000.0 / (raw - raw.min()).sum())
    return weights[(grid[None, None, :] - timestep.double()[..., None]).abs().argmin(-1)]


def test_action_loss_averages_over_all_32_padded_dims_like_the_official_trainer() -> None:
    """Issue 14 item 7 (facts §6.1, §10): mean over (sample, action step) of w(t) x the masked squared error
    averaged over ALL 32 dims. DROID has 8 real dims, so a per-real-dim mean would be 4x larger."""
    generator = torch.Generator().manual_seed(0)
    size, chunks, real = 2, 2, 8
    actions = torch.zeros(size, chunks * 24, CONFIG.action_dim)
    actions[..., :real] = torch.rand(size, chunks * 24, real, generator=generator) * 2 - 1
    mask = torch.zeros(size, CONFIG.action_dim)
    mask[:, :real] = 1.0
    batch = TrainingBatch(
        latents=torch.randn(size, CONFIG.out_dim, 1 + 2 * chunks, CONFIG.latent_height, CONFIG.latent_width,
                            generator=generator),
        actions=actions, action_mask=mask, state=torch.zeros(size, chunks, CONFIG.max_state_dim),
        text=torch.zeros(size, CONFIG.text_len, CONFIG.text_dim),
        image=torch.zeros(size, CONFIG.num_image_tokens, CONFIG.clip_dim))
    model = _ZeroVelocityModel()
    loss = training_loss(model, batch, generator=torch.Generator().manual_seed(1))
    seen = model.inputs[0]
    sigma = seen.action_timestep.double()[..., None] / 1000.0  # B, K*24, 1
    noise = (seen.actions.double() - (1.0 - sigma) * actions.double()) / sigma  # x_t = (1 - s) a + s eps
    squared = (0.0 - (noise - actions.double())) ** 2 * mask.double()[:, None, :]
    expected = (squared.sum(-1) / 32 * _facts_weight(seen.action_timestep)).mean()
    assert loss.action.item() == pytest.approx(expected.item(), rel=1e-4)
    assert loss.total.item() == pytest.approx(loss.video.item() + loss.action.item(), rel=1e-6)


def test_tiny_model_learns_moving_squares_in_200_steps() -> None:
    """Loss halves, and trained 16-step and 1-step actions beat the untrained model's (about 30 s of CPU)."""
    config = get_config("tiny", latent_height=8, latent_width=8)
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    text = torch.randn(1, config.text_len, config.text_dim, generator=generator)
    image = torch.randn(1, config.num_image_tokens, config.clip_dim, generator=generator)
    model = build_dit(config)
    untrained = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(200):
        batch, _ = make_batch(config, 8, 2, generator, text, image)
        loss = training_loss(model, batch, generator=generator).total
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, f"loss fell only from {first:.3f} to {last:.3f}"

    def action_error(candidate: torch.nn.Module, sampler: SamplerConfig) -> float:
        batch, velocity = make_batch(config, 16, 1, torch.Generator().manual_seed(123), text, image)
        session = WamSession(candidate.eval(), sampler)
        session.reset(batch.text, batch.image, batch.latents[:, :, :1])
        actions = session.step(None, batch.state[:, 0]).actions
        return ((actions[..., :2] - velocity[:, None]) ** 2).mean().item()

    for sampler in (SamplerConfig(cfg_scale=1.0), FLASH_SAMPLER):
        trained_error, untrained_error = action_error(model, sampler), action_error(untrained, sampler)
        assert trained_error < 0.25 * untrained_error, (sampler, trained_error, untrained_error)
