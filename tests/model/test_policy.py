"""WamPolicy: official-layout save/load round trip, context rules, de-normalisation, input errors (facts §2.5, §5)."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from checkpoint_fixtures import synthetic_metadata
from dreamzero_model import FLASH_SAMPLER
from dreamzero_model.checkpoint import save_weights
from dreamzero_model.errors import CheckpointError
from dreamzero_model.metadata import KeyLayout
from dreamzero_model.policy import WamPolicy

ROBOT = synthetic_metadata("oxe_droid")


def _frames(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 32, 64, 3), dtype=np.uint8)


def _state(seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).uniform(-1.0, 1.0, ROBOT.state_dim)


def _run(policy: WamPolicy, calls: int = 3) -> list:
    policy.reset("Put the cup in the sink.")
    return [policy.infer(_frames(1 if i == 0 else 9, i), _state(i)) for i in range(calls)]


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> tuple[WamPolicy, Path]:
    policy = WamPolicy.random_tiny(ROBOT, seed=0, sampler=FLASH_SAMPLER)
    folder = tmp_path_factory.mktemp("tiny_droid")
    policy.save_pretrained(folder)
    return policy, folder


def test_saved_checkpoint_has_the_official_files(saved) -> None:
    _, folder = saved
    for name in ("config.json", "model.safetensors", "experiment_cfg/conf.yaml", "experiment_cfg/metadata.json",
                 "tokenizer/tokenizer.json"):
        assert (folder / name).is_file(), name


def test_reloaded_policy_gives_identical_chunks_and_frames(saved) -> None:
    original, folder = saved
    reloaded = WamPolicy.from_pretrained(folder, "oxe_droid", sampler=FLASH_SAMPLER, progress=False)
    for a, b in zip(_run(original), _run(reloaded)):
        assert np.array_equal(a.actions, b.actions)
        assert np.array_equal(a.frames, b.frames)


def test_chunks_have_the_embodiment_shape_and_relative_flags(saved) -> None:
    policy, _ = saved
    first, second, _ = _run(policy)
    assert first.actions.shape == (24, 8) and first.actions.dtype == np.float64
    assert first.relative.tolist() == [True] * 7 + [False]
    assert first.frames.shape == (8, 32, 64, 3) and first.frames.dtype == np.uint8
    assert first.new_context and not second.new_context
    assert {"text", "image", "vae_encode", "denoise", "vae_decode", "total"} <= set(first.seconds)


def test_new_context_after_four_chunks_on_one_frame_and_on_a_new_prompt(saved) -> None:
    policy, _ = saved
    flags = [c.new_context for c in _run(policy, calls=6)]
    assert flags == [True, False, False, False, True, False]
    assert policy.infer(_frames(9, 7), _state(7), prompt="Open the drawer.").new_context
    assert policy.infer(_frames(1, 8), _state(8)).new_context
    assert not policy.infer(_frames(4, 9), _state(9)).new_context
    assert not policy.infer(_frames(8, 10), _state(10)).new_context


def test_actions_are_de_normalised_with_the_checkpoint_statistics(saved) -> None:
    policy, _ = saved
    scaled_keys = tuple(KeyLayout(k.name, k.dim, {**k.statistics, "q99": k.q01 + 3.0 * (k.q99 - k.q01)})
                        for k in ROBOT.action_keys)
    wider = WamPolicy(policy.model, replace(ROBOT, action_keys=scaled_keys), policy.tokenizer, sampler=FLASH_SAMPLER)
    base, scaled = _run(policy, 1)[0].actions, _run(wider, 1)[0].actions
    q01 = np.concatenate([k.q01 for k in ROBOT.action_keys])
    assert np.allclose(scaled - q01, 3.0 * (base - q01), atol=1e-9)


def test_bad_inputs_are_refused_with_the_reason(saved) -> None:
    policy, _ = saved
    policy.reset("Wave.")
    with pytest.raises(ValueError, match="32x64 mosaics"):
        policy.infer(np.zeros((1, 180, 320, 3), np.uint8), _state(0))
    with pytest.raises(ValueError, match="state must be 8 finite values"):
        policy.infer(_frames(1, 0), np.full(8, np.nan))
    policy.infer(_frames(1, 0), _state(0))
    with pytest.raises(ValueError, match="4, 8 or 9 frames, got 3"):
        policy.infer(_frames(3, 1), _state(1))


def test_lora_only_checkpoint_needs_its_base(tmp_path: Path, saved) -> None:
    policy, base = saved
    folder = tmp_path / "lora"
    policy.save_pretrained(folder)
    (folder / "model.safetensors").unlink()
    save_weights({"action_head.model.base_model.model.blocks.0.self_attn.q.lora_A.default.weight": torch.zeros(4, 64),
                  "action_head.model.base_model.model.blocks.0.self_attn.q.lora_B.default.weight": torch.ones(64, 4)},
                 folder)
    with pytest.raises(CheckpointError, match="LoRA weights only and records no base; pass the full checkpoint"):
        WamPolicy.from_pretrained(folder, "oxe_droid", progress=False)
    merged = WamPolicy.from_pretrained(folder, "oxe_droid", base_checkpoint=base, progress=False)
    assert torch.equal(merged.model.action_head.model.blocks[0].self_attn.q.weight,
                       policy.model.action_head.model.blocks[0].self_attn.q.weight)  # B @ A = 0
