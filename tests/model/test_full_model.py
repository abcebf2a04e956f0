"""The full model (DiT + umT5 + CLIP + VAE) carries the official full-model keys (checkpoint manifest)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from dreamzero_model.full_model import build_full_model, get_full_config
from dreamzero_model.text_encoder import get_text_encoder_config

MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-manifest"


@pytest.mark.parametrize(("name", "variant"), [("dreamzero_14b", "14b"), ("dreamzero_5b", "5b")])
def test_meta_full_model_has_every_manifest_tensor_and_no_other(name: str, variant: str) -> None:
    layout = json.loads((MANIFEST / "checkpoint_layout.json").read_text())["variants"][variant]
    expected = {}
    for prefix, info in layout["prefixes"].items():
        component = json.loads((MANIFEST / info["file"]).read_text())
        expected.update({prefix + n: s for n, s in component["params"] + component["buffers"]})
    state = build_full_model(name, device="meta").state_dict()
    ours = {key: list(tensor.shape) for key, tensor in state.items()}
    assert sorted(set(expected) - set(ours)) == []
    assert sorted(set(ours) - set(expected)) == []
    assert {k: s for k, s in ours.items() if s != expected[k]} == {}
    assert len(ours) == layout["full_state_dict_tensors"]
    assert sum(t.numel() for t in state.values()) == layout["full_state_dict_params"]
    for prefix, info in layout["prefixes"].items():
        assert sum(t.numel() for k, t in state.items() if k.startswith(prefix)) == info["params"], prefix


def test_mosaic_sizes_follow_the_latent_grid_and_vae() -> None:
    assert get_full_config("dreamzero_14b").mosaic_size == (352, 640)  # facts §1.7
    assert get_full_config("dreamzero_5b").mosaic_size == (160, 320)  # facts §7
    assert get_full_config("tiny").mosaic_size == (32, 64)


def test_mismatched_components_are_rejected() -> None:
    from dataclasses import replace
    config = get_full_config("tiny")
    with pytest.raises(ValueError, match="text encoder"):
        replace(config, text_encoder=get_text_encoder_config("tiny", dim=48, dim_attn=48))


def test_the_tiny_sim_preset_reads_the_whole_droid_instruction() -> None:
    """tiny_sim (the model trained on the simulated tasks): 64x128 mosaics, and prompts long enough that the
    instruction survives the DROID template (the byte tokenizer makes a token of every byte, facts §1.11), so the
    object's colour reaches the model."""
    from dreamzero_model.prompts import format_prompt
    from dreamzero_model.tiny_tokenizer import build_tiny_tokenizer

    config = get_full_config("tiny_sim")
    assert config.mosaic_size == (64, 128)
    tokenizer = build_tiny_tokenizer()
    for instruction in ("Touch the red cube.", "Touch the blue cube.", "Put the blue cube in the tray."):
        ids, mask = tokenizer([format_prompt("oxe_droid", instruction)], max_length=config.dit.text_len)
        text = tokenizer.tokenizer.decode(ids[0][mask[0].bool()].tolist(), skip_special_tokens=True)
        assert f"a robot {instruction.lower()}" in text, text
