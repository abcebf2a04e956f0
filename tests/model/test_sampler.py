"""Flow samplers and cache schedules (facts §2.7, §2.9)."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
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


def test_inference_sigmas_start_from_the_float32_sigma_max() -> None:
    """Issue 14 item 5 (facts §2.7, §10): sigmas = 5 s / (1 + 4 s), s = linspace(float32(0.999), 0, 17)[:-1],
    then 0. With the float64 0.999 the 13th sigma (index 12) is 1 float32 ulp lower."""
    sigma_max = torch.tensor(0.999, dtype=torch.float32).item()
    assert sigma_max == 0.9990000128746033
    s = torch.linspace(sigma_max, 0.0, 17, dtype=torch.float64)[:-1]
    expected = torch.cat([5.0 * s / (1.0 + 4.0 * s), torch.zeros(1, dtype=torch.float64)]).float()
    sampler = FlowSampler(SamplerConfig())
    assert torch.equal(sampler.sigmas, expected)
    assert torch.equal(sampler._unipc.sigmas.float(), expected), "the diffusers solver steps on the same sigmas"
    assert sampler.timesteps.tolist() == PUBLISHED_TIMESTEPS


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


# The official NUM_DIT_STEPS presets, from the facts (§2.9), not from the code under test.
NUM_DIT_STEPS_PRESETS = {"steps5": [0, 1, 2, 7, 12], "steps6": [0, 1, 5, 10, 14, 15],
                         "steps7": [0, 1, 2, 6, 10, 14, 15], "steps8": [0, 1, 2, 6, 10, 13, 14, 15]}


@pytest.mark.parametrize("name", sorted(NUM_DIT_STEPS_PRESETS))
def test_each_num_dit_steps_preset_is_a_named_cache_schedule(name: str) -> None:
    """Issue 14 item 6: NUM_DIT_STEPS=5/6/7/8 as cache_schedule 'steps5'...'steps8' (all steps for other counts)."""
    schedule = CacheSchedule(SamplerConfig(cache_schedule=name).cache_schedule, 16)
    assert [i for i in range(16) if schedule.should_run(i)] == NUM_DIT_STEPS_PRESETS[name]
    assert all(CacheSchedule(name, 4).should_run(i) for i in range(4))


def test_every_cache_schedule_the_policy_node_offers_is_accepted_by_the_model() -> None:
    """The node's ``cache_schedule`` choices (read from dreamzero_policy/params.py without importing ROS)
    reach SamplerConfig and CacheSchedule unchanged (policy_node.make_backend)."""
    source = (Path(__file__).resolve().parents[2] / "dreamzero_policy" / "params.py").read_text()
    calls = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call) and node.args
             and isinstance(node.args[0], ast.Constant) and node.args[0].value == "cache_schedule"]
    assert len(calls) == 1
    choices = ast.literal_eval(next(k.value for k in calls[0].keywords if k.arg == "choices"))
    assert {"official", "all", "dynamic", *NUM_DIT_STEPS_PRESETS} <= set(choices)
    for name in choices:
        CacheSchedule(SamplerConfig(cache_schedule=name).cache_schedule, 16)
    with pytest.raises(ValueError, match="steps5"):
        SamplerConfig(cache_schedule="steps4")
    with pytest.raises(ValueError, match="one of"):
        CacheSchedule("offical", 16)


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
