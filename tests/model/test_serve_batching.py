"""The batching beneath ``dreamzero serve``, at the session level: :func:`step_together` of aligned sessions gives
each session the chunks it gets stepping alone; misaligned sessions are refused before anything changes.

The server-level tests (calls queued together, metrics, separate processes) are in test_serve.py; the 2-rank CFG
split with batches is in test_cfg_parallel.py.
"""
from __future__ import annotations

import pytest
import torch

from dreamzero_model import SamplerConfig, WamSession, build_dit, get_config
from dreamzero_model.session import step_together

CONFIG = get_config("tiny")
CHUNKS = 4  # a whole context: the first chunk and 3 continuations (facts §2.5)
# Together vs alone, float32 on CPU: more rows per GEMM sum in another order (test_serve.BATCH_ATOL); a session
# given another's noise, cache rows or context moves by O(0.01-1).
ATOL = 1e-5


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """A tiny DiT with every weight random (the zero-initialised head would hide video errors)."""
    torch.manual_seed(0)
    dit = build_dit(CONFIG)
    with torch.no_grad():
        for parameter in dit.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    return dit.eval()


def _inputs(batch: int, seed: int) -> dict:
    """One session's random context features, observed latents and states (``batch`` robots)."""
    g = torch.Generator().manual_seed(seed)
    latent = (CONFIG.out_dim, CONFIG.latent_height, CONFIG.latent_width)
    return {"text": torch.randn(batch, CONFIG.text_len, CONFIG.text_dim, generator=g),
            "negative": torch.randn(1, CONFIG.text_len, CONFIG.text_dim, generator=g),
            "image": torch.randn(batch, CONFIG.num_image_tokens, CONFIG.clip_dim, generator=g),
            "first": torch.randn(batch, latent[0], 1, *latent[1:], generator=g),
            "observed": [None] + [torch.randn(batch, latent[0], 2, *latent[1:], generator=g)
                                  for _ in range(CHUNKS - 1)],
            "states": [torch.randn(batch, CONFIG.max_state_dim, generator=g) for _ in range(CHUNKS)]}


def _session(model: torch.nn.Module, sampler: SamplerConfig, use_kv_cache: bool, inputs: dict) -> WamSession:
    session = WamSession(model, sampler, use_kv_cache=use_kv_cache)
    session.reset(inputs["text"], inputs["image"], inputs["first"], negative_text_context=inputs["negative"])
    return session


@pytest.mark.parametrize(("cfg_scale", "use_kv_cache"), [(5.0, True), (1.0, False)])
def test_aligned_sessions_stepped_together_get_their_solo_chunks(model, cfg_scale: float, use_kv_cache: bool) -> None:
    sampler = SamplerConfig(cfg_scale=cfg_scale)
    inputs = [_inputs(batch, seed) for batch, seed in ((1, 1), (2, 2), (1, 3))]  # 2 robots in the middle session
    alone = [_session(model, sampler, use_kv_cache, i) for i in inputs]
    together = [_session(model, sampler, use_kv_cache, i) for i in inputs]
    for chunk in range(CHUNKS):
        solo = [s.step(i["observed"][chunk], i["states"][chunk]) for s, i in zip(alone, inputs)]
        batched = step_together(together, [i["observed"][chunk] for i in inputs], [i["states"][chunk] for i in inputs])
        for index, (a, b) in enumerate(zip(solo, batched)):
            assert torch.allclose(b.actions, a.actions, rtol=0, atol=ATOL), f"chunk {chunk} session {index}"
            assert torch.allclose(b.latents, a.latents, rtol=0, atol=ATOL), f"chunk {chunk} session {index}"
        assert [s.frame for s in together] == [s.frame for s in alone]
    assert not torch.allclose(solo[0].actions, solo[2].actions, atol=0.01)  # the sessions' chunks differ


def test_sessions_at_different_chunk_positions_are_refused_before_any_changes(model) -> None:
    sampler = SamplerConfig()
    inputs = [_inputs(1, seed) for seed in (1, 2)]
    ahead, behind = (_session(model, sampler, True, i) for i in inputs)
    ahead.step(None, inputs[0]["states"][0])
    cache = ahead._cache.k.clone()
    with pytest.raises(ValueError, match=r"one chunk position .* got positions \[3, 1\]"):
        step_together([ahead, behind], [inputs[0]["observed"][1], None], [s["states"][1] for s in inputs])
    with pytest.raises(ValueError, match="distinct sessions"):
        step_together([behind, behind], [None, None], [inputs[1]["states"][0]] * 2)
    assert (ahead.frame, behind.frame) == (3, 1) and torch.equal(ahead._cache.k, cache)
