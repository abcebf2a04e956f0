"""WamSession: KV-cache equivalence, cache schedule, CFG, context rules, determinism (facts §2.5-2.9)."""
from __future__ import annotations

import pytest
import torch

from dreamzero_model import FLASH_SAMPLER, SamplerConfig, WamSession, build_dit, get_config

CONFIG = get_config("tiny")


def _model(seed: int = 0) -> torch.nn.Module:
    """A tiny DiT with every weight random (the zero-initialised head would hide video errors)."""
    torch.manual_seed(seed)
    model = build_dit(CONFIG)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return model.eval()


def _inputs(batch: int = 1, seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {
        "text": torch.randn(batch, CONFIG.text_len, CONFIG.text_dim, generator=g),
        "negative": torch.randn(1, CONFIG.text_len, CONFIG.text_dim, generator=g),
        "image": torch.randn(batch, CONFIG.num_image_tokens, CONFIG.clip_dim, generator=g),
        "first": torch.randn(batch, CONFIG.out_dim, 1, CONFIG.latent_height, CONFIG.latent_width, generator=g),
        "observed": [torch.randn(batch, CONFIG.out_dim, 2, CONFIG.latent_height, CONFIG.latent_width, generator=g)
                     for _ in range(3)],
        "states": [torch.randn(batch, CONFIG.max_state_dim, generator=g) for _ in range(4)],
    }


def _run_context(session: WamSession, inputs: dict) -> list:
    session.reset(inputs["text"], inputs["image"], inputs["first"], negative_text_context=inputs["negative"])
    results = [session.step(None, inputs["states"][0])]
    for observed, state in zip(inputs["observed"], inputs["states"][1:]):
        results.append(session.step(observed, state))
    return results


def test_kv_cache_gives_the_same_chunks_as_recomputing_the_whole_context() -> None:
    model, inputs = _model(), _inputs(batch=2)
    cached = _run_context(WamSession(model, SamplerConfig(), use_kv_cache=True), inputs)
    recomputed = _run_context(WamSession(model, SamplerConfig(), use_kv_cache=False), inputs)
    for chunk, (a, b) in enumerate(zip(cached, recomputed)):
        assert torch.allclose(a.actions, b.actions, atol=1e-4), f"chunk {chunk} actions"
        assert torch.allclose(a.latents, b.latents, atol=1e-4), f"chunk {chunk} latents"
    assert cached[1].latents.abs().max() > 0.1, "the test must exercise a non-trivial video output"


def test_observed_latents_change_later_chunks_but_predictions_are_never_cached() -> None:
    model, inputs = _model(), _inputs()
    baseline = _run_context(WamSession(model, FLASH_SAMPLER), inputs)
    changed_inputs = dict(inputs, observed=[inputs["observed"][0] + 1.0, *inputs["observed"][1:]])
    changed = _run_context(WamSession(model, FLASH_SAMPLER), changed_inputs)
    assert torch.equal(baseline[0].actions, changed[0].actions)
    assert not torch.allclose(baseline[1].actions, changed[1].actions, atol=1e-4)


def _count_dit_calls(model: torch.nn.Module, sampler: SamplerConfig, inputs: dict) -> int:
    calls = []
    handle = model.register_forward_hook(lambda module, args, output: calls.append(1))
    session = WamSession(model, sampler)
    session.reset(inputs["text"], inputs["image"], inputs["first"], negative_text_context=inputs["negative"])
    calls.clear()  # the conditioning prefill is not a denoising step
    result = session.step(None, inputs["states"][0])
    handle.remove()
    assert result.dit_calls == len(calls)
    return len(calls)


def test_default_schedule_runs_the_dit_8_times_of_16_and_flash_once() -> None:
    model, inputs = _model(), _inputs()
    assert _count_dit_calls(model, SamplerConfig(), inputs) == 8
    assert _count_dit_calls(model, SamplerConfig(cache_schedule="all"), inputs) == 16
    assert _count_dit_calls(model, FLASH_SAMPLER, inputs) == 1
    assert _count_dit_calls(model, SamplerConfig(solver="euler", num_steps=4, cfg_scale=1.0), inputs) == 4


def test_dynamic_schedule_skips_steps_when_velocities_agree() -> None:
    model, inputs = _model(), _inputs()
    calls = _count_dit_calls(model, SamplerConfig(cache_schedule="dynamic"), inputs)
    assert 2 <= calls < 16


def test_guidance_changes_video_but_not_actions() -> None:
    model, inputs = _model(), _inputs()

    def one_step(cfg_scale: float):
        session = WamSession(model, SamplerConfig(solver="euler", num_steps=1, cfg_scale=cfg_scale,
                                                  cache_schedule="all"))
        session.reset(inputs["text"], inputs["image"], inputs["first"], negative_text_context=inputs["negative"])
        return session.step(None, inputs["states"][0])

    guided, unguided = one_step(5.0), one_step(1.0)
    assert torch.allclose(guided.actions, unguided.actions, atol=1e-5)
    assert (guided.latents - unguided.latents).abs().max() > 1e-2


def test_context_holds_four_chunks_then_asks_for_a_reset() -> None:
    model, inputs = _model(), _inputs()
    session = WamSession(model, FLASH_SAMPLER)
    with pytest.raises(RuntimeError, match="reset"):
        session.step(None, inputs["states"][0])
    _run_context(session, inputs)
    assert session.frame == CONFIG.local_attn_size and session.needs_reset
    with pytest.raises(RuntimeError, match="context is full"):
        session.step(inputs["observed"][0], inputs["states"][0])
    assert session.should_reset(inputs["text"])
    session.reset(inputs["text"], inputs["image"], inputs["first"])
    assert not session.should_reset(inputs["text"])
    assert session.should_reset(inputs["text"] + 1e-3), "a new prompt starts a new context"


def test_step_rejects_missing_or_unexpected_observations() -> None:
    model, inputs = _model(), _inputs()
    session = WamSession(model, FLASH_SAMPLER)
    session.reset(inputs["text"], inputs["image"], inputs["first"])
    with pytest.raises(ValueError, match="first step"):
        session.step(inputs["observed"][0], inputs["states"][0])
    session.step(None, inputs["states"][0])
    with pytest.raises(ValueError, match="observed latent frames"):
        session.step(None, inputs["states"][1])


def test_guidance_requires_the_negative_prompt() -> None:
    inputs = _inputs()
    with pytest.raises(ValueError, match="negative_text_context"):
        WamSession(_model(), SamplerConfig()).reset(inputs["text"], inputs["image"], inputs["first"])


def test_seeded_noise_is_deterministic_and_unseeded_is_not() -> None:
    model, inputs = _model(), _inputs()
    first = _run_context(WamSession(model, FLASH_SAMPLER), inputs)[0]
    again = _run_context(WamSession(model, FLASH_SAMPLER), inputs)[0]
    assert torch.equal(first.actions, again.actions) and torch.equal(first.latents, again.latents)
    fresh = SamplerConfig(solver="euler", num_steps=1, cfg_scale=1.0, cache_schedule="all", seed=None)
    one, two = (_run_context(WamSession(model, fresh), inputs)[0] for _ in range(2))
    assert not torch.equal(one.actions, two.actions)


def test_initial_noise_is_the_official_draw_with_a_fresh_generator_per_stream() -> None:
    """Issue 14 item 4 (facts §10): video noise = randn from a generator seeded with 1140, action noise =
    randn from a NEW generator seeded with 1140. On CPU the official batched draw gives every row."""
    model, inputs = _model(), _inputs(batch=2)
    first_call = []
    handle = model.register_forward_pre_hook(
        lambda module, args: first_call.append(args[0]) if args[0].actions is not None and not first_call else None)
    session = WamSession(model, SamplerConfig(solver="euler", num_steps=1, cfg_scale=1.0, cache_schedule="all"))
    session.reset(inputs["text"], inputs["image"], inputs["first"])
    session.step(None, inputs["states"][0])
    handle.remove()
    video_shape = (2, CONFIG.out_dim, 2, CONFIG.latent_height, CONFIG.latent_width)
    video_noise = torch.randn(video_shape, generator=torch.Generator().manual_seed(1140))
    action_noise = torch.randn((2, 24, CONFIG.action_dim), generator=torch.Generator().manual_seed(1140))
    assert torch.equal(first_call[0].video[:, :CONFIG.out_dim], video_noise)
    assert torch.equal(first_call[0].actions, action_noise)


def test_robots_in_a_batch_do_not_influence_each_other() -> None:
    model, pair = _model(), _inputs(batch=2)
    sampler = SamplerConfig(cfg_scale=2.0)
    together = _run_context(WamSession(model, sampler), pair)
    first_alone = {key: ([v[:1] for v in value] if isinstance(value, list) else value if key == "negative"
                         else value[:1]) for key, value in pair.items()}
    alone = _run_context(WamSession(model, sampler), first_alone)
    other_changed = {key: ([torch.cat([v[:1], v[1:] + 1.0]) for v in value] if isinstance(value, list)
                           else value if key == "negative" else torch.cat([value[:1], value[1:] + 1.0]))
                     for key, value in pair.items()}
    changed = _run_context(WamSession(model, sampler), other_changed)
    for chunk in range(4):
        assert torch.allclose(together[chunk].actions[:1], alone[chunk].actions, atol=1e-4), f"chunk {chunk}"
        assert torch.allclose(together[chunk].latents[:1], alone[chunk].latents, atol=1e-4), f"chunk {chunk}"
        assert torch.allclose(changed[chunk].actions[:1], alone[chunk].actions, atol=1e-4), f"chunk {chunk}"
        assert not torch.allclose(changed[chunk].actions[1:], together[chunk].actions[1:], atol=1e-4)


def test_ti2v_variant_without_channel_concat_caches_like_it_recomputes() -> None:
    """The Wan2.2-TI2V layout (5B): latent-only input, no y channels (facts §7)."""
    config = get_config("tiny", model_type="ti2v", in_dim=16, out_dim=16, concat_first_frame_latent=False)
    torch.manual_seed(0)
    model = build_dit(config)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    inputs = _inputs()
    cached = _run_context(WamSession(model.eval(), FLASH_SAMPLER), inputs)
    recomputed = _run_context(WamSession(model, FLASH_SAMPLER, use_kv_cache=False), inputs)
    for a, b in zip(cached, recomputed):
        assert torch.allclose(a.actions, b.actions, atol=1e-4) and torch.allclose(a.latents, b.latents, atol=1e-4)
