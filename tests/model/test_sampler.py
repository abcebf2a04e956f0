"""Flow samplers and cache schedules (facts §2.7, §2.9)."""
from __future__ import annotations

import torch

from dreamzero_model import SamplerConfig
from dreamzero_model.sampler import CacheSchedule, FlowSampler

PUBLISHED_TIMESTEPS = [999, 986, 972, 955, 937, 916, 892, 865, 833, 795, 749, 694, 624, 535, 416, 249]


def _denoise(sampler: FlowSampler, data: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Run the sampler with the exact velocity of a point mass at ``data``."""
    sample = noise.clone()
    for index in range(len(sampler.timesteps)):
        sigma = sampler.sigmas[index]
        velocity = (sample - data) / sigma  # x = (1 - s) data + s noise  =>  v = noise - data = (x - data) / s
        sample = sampler.step(velocity, index, sample)
    return sample


def test_unipc_uses_the_published_16_timesteps() -> None:
    sampler = FlowSampler(SamplerConfig())
    assert sampler.timesteps.tolist() == PUBLISHED_TIMESTEPS
    assert sampler.sigmas[-1].item() == 0.0


def test_both_solvers_reach_the_data_with_the_exact_velocity() -> None:
    generator = torch.Generator().manual_seed(0)
    data, noise = torch.randn(3, 5, generator=generator), torch.randn(3, 5, generator=generator)
    for config in (SamplerConfig(), SamplerConfig(solver="euler", num_steps=1), SamplerConfig(solver="euler", num_steps=4)):
        assert torch.allclose(_denoise(FlowSampler(config), data, noise), data, atol=1e-4), config


def test_unipc_is_more_accurate_than_euler_on_a_curved_flow() -> None:
    """Velocity of a 2-point data distribution (not a straight path): higher order wins."""
    generator = torch.Generator().manual_seed(0)
    noise = torch.randn(256, 1, generator=generator)
    modes = torch.tensor([-1.0, 1.0])

    def run(config: SamplerConfig) -> torch.Tensor:
        sampler, sample = FlowSampler(config), noise.clone()
        for index in range(len(sampler.timesteps)):
            s = sampler.sigmas[index]
            logits = -((sample - (1 - s) * modes) ** 2) / (2 * s ** 2)
            data = (torch.softmax(logits, dim=-1) * modes).sum(-1, keepdim=True)  # E[x0 | x_t]
            sample = sampler.step((sample - data) / s, index, sample)
        return sample

    def reference() -> torch.Tensor:
        return run(SamplerConfig(solver="euler", num_steps=400))

    exact = reference()
    unipc_error = (run(SamplerConfig(num_steps=8)) - exact).abs().mean()
    euler_error = (run(SamplerConfig(solver="euler", num_steps=8)) - exact).abs().mean()
    assert unipc_error < euler_error


def test_official_schedule_runs_8_of_16_steps() -> None:
    schedule = CacheSchedule("official", 16)
    assert [i for i in range(16) if schedule.should_run(i)] == [0, 1, 2, 6, 10, 13, 14, 15]
    assert all(CacheSchedule("official", 4).should_run(i) for i in range(4))
    assert all(CacheSchedule("all", 16).should_run(i) for i in range(16))


def test_dynamic_schedule_skips_four_on_similar_velocities_then_runs_one() -> None:
    schedule = CacheSchedule("dynamic", 16)
    decisions = []
    for index in range(16):
        run = schedule.should_run(index)
        decisions.append(run)
        if run:
            schedule.record(torch.ones(1, 8))  # identical velocities: similarity 1
    assert decisions[:2] == [True, True]
    assert decisions[2:7] == [False, False, False, False, True]


def test_dynamic_schedule_runs_every_step_when_velocities_disagree() -> None:
    schedule = CacheSchedule("dynamic", 16)
    decisions = []
    for index in range(16):
        run = schedule.should_run(index)
        decisions.append(run)
        schedule.record(torch.tensor([[1.0, 0.0]]) if index % 2 else torch.tensor([[0.0, 1.0]]))
    assert all(decisions)
