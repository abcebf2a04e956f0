"""The CLIP image encoder: manifest parameters, preprocessing, 31-of-32-block output (facts §2.1)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dreamzero_model.config import get_config
from dreamzero_model.image_encoder import (
    CLIP_MEAN,
    CLIP_STD,
    build_image_encoder,
    get_image_encoder_config,
    preprocess_images,
)

MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-manifest"


def _manifest_shapes() -> dict[str, list[int]]:
    manifest = json.loads((MANIFEST / "clip_vit_h14.json").read_text())
    return {name: shape for name, shape in manifest["params"] + manifest["buffers"]}


def _tiny(seed: int = 0):
    torch.manual_seed(seed)
    return build_image_encoder("tiny")


def _images(batch: int = 2, height: int = 30, width: int = 44, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, height, width, generator=generator) * 2 - 1


def test_meta_build_has_exactly_the_manifest_parameters() -> None:
    encoder = build_image_encoder("vit_h14", device="meta")
    ours = {name: list(tensor.shape) for name, tensor in encoder.model.state_dict().items()}
    expected = _manifest_shapes()
    assert len(expected) == 393
    assert sorted(set(expected) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(expected)) == [], "unexpected"
    assert {n: s for n, s in ours.items() if s != expected[n]} == {}, "wrong shapes"
    assert sum(t.numel() for t in encoder.model.state_dict().values()) == 632_076_801
    assert all(t.is_meta for t in encoder.state_dict().values())
    # The wrapper holds nothing outside .model (full-model prefix action_head.image_encoder.model.).
    assert set(encoder.state_dict()) == {f"model.{name}" for name in ours}


def test_meta_build_takes_the_requested_dtype() -> None:
    encoder = build_image_encoder("vit_h14", device="meta", dtype=torch.bfloat16)
    assert {p.dtype for p in encoder.parameters()} == {torch.bfloat16}


def test_vit_h14_has_the_published_dimensions_and_fits_the_dit() -> None:
    config = get_image_encoder_config("vit_h14")
    assert (config.image_size, config.patch_size, config.width) == (224, 14, 1280)
    assert (config.num_layers, config.num_heads, config.output_blocks, config.eps) == (32, 16, 31, 1e-5)
    assert (config.num_tokens, config.head_dim, config.mlp_dim, config.embed_dim) == (257, 80, 5120, 1024)
    for encoder_name, dit_name in (("vit_h14", "dreamzero_14b"), ("tiny", "tiny")):
        encoder_config, dit_config = get_image_encoder_config(encoder_name), get_config(dit_name)
        assert (encoder_config.width, encoder_config.num_tokens) == (dit_config.clip_dim, dit_config.num_image_tokens)


def test_unknown_or_inconsistent_config_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="did you mean 'vit_h14'"):
        get_image_encoder_config("vit_h1")
    with pytest.raises(ValueError, match="output_blocks must be in 1..num_layers=3"):
        get_image_encoder_config("tiny", output_blocks=4)
    with pytest.raises(ValueError, match="not divisible by patch_size"):
        get_image_encoder_config("tiny", image_size=30)


def test_state_dict_round_trips_between_tiny_encoders() -> None:
    source, target = _tiny(seed=0), _tiny(seed=1)
    images = _images()
    assert not torch.allclose(source.encode(images), target.encode(images))
    result = target.model.load_state_dict(source.model.state_dict(), strict=True)
    assert (result.missing_keys, result.unexpected_keys) == ([], [])
    assert torch.equal(source.encode(images), target.encode(images))


def test_a_renamed_key_fails_strict_loading() -> None:
    state = _tiny().model.state_dict()
    state["visual.transformer.0.attn.qkv.weight"] = state.pop("visual.transformer.0.attn.to_qkv.weight")
    with pytest.raises(RuntimeError, match="to_qkv.weight"):
        _tiny().model.load_state_dict(state, strict=True)


def test_encode_returns_float32_tokens_for_any_input_size() -> None:
    encoder = _tiny()
    tokens = encoder.encode(_images(batch=3, height=35, width=64))
    assert tokens.shape == (3, 5, 32) and tokens.dtype == torch.float32
    assert torch.isfinite(tokens).all()
    bf16 = build_image_encoder("tiny", dtype=torch.bfloat16)
    assert bf16.encode(_images()).dtype == torch.float32
    with pytest.raises(ValueError, match=r"float\[B, 3, H, W\]"):
        encoder.encode(torch.zeros(2, 4, 28, 28))


def test_output_is_taken_before_the_last_block() -> None:
    encoder, images = _tiny(), _images()
    before = encoder.encode(images)
    visual = encoder.model.visual
    with torch.no_grad():
        for parameter in visual.transformer[-1].parameters():
            parameter.add_(1.0)
        visual.post_norm.weight.mul_(3.0)
        visual.head.add_(1.0)
    assert torch.equal(encoder.encode(images), before)
    with torch.no_grad():
        visual.transformer[-2].mlp[2].bias.add_(0.5)
    assert (encoder.encode(images) - before).abs().max() > 0.1


def _reference_tokens(encoder, pixels: torch.Tensor) -> torch.Tensor:
    """Independent forward from the facts: patches, cls first, + pos, pre-norm, pre-norm blocks."""
    config, state = encoder.config, encoder.model.state_dict()
    width = config.width
    patches = F.conv2d(pixels, state["visual.patch_embedding.weight"], stride=config.patch_size)
    x = torch.cat([state["visual.cls_embedding"].expand(len(pixels), -1, -1), patches.flatten(2).mT], dim=1)
    x = F.layer_norm(x + state["visual.pos_embedding"], (width,), state["visual.pre_norm.weight"],
                     state["visual.pre_norm.bias"], eps=1e-5)
    for layer in range(config.output_blocks):
        p = {k.removeprefix(f"visual.transformer.{layer}."): v for k, v in state.items()
             if k.startswith(f"visual.transformer.{layer}.")}
        h = F.layer_norm(x, (width,), p["norm1.weight"], p["norm1.bias"], eps=1e-5)
        attended, _ = F.multi_head_attention_forward(
            h.transpose(0, 1), h.transpose(0, 1), h.transpose(0, 1), width, config.num_heads,
            p["attn.to_qkv.weight"], p["attn.to_qkv.bias"], None, None, False, 0.0,
            p["attn.proj.weight"], p["attn.proj.bias"], training=False, need_weights=False)
        x = x + attended.transpose(0, 1)
        h = F.layer_norm(x, (width,), p["norm2.weight"], p["norm2.bias"], eps=1e-5)
        h = F.linear(h, p["mlp.0.weight"], p["mlp.0.bias"])
        h = 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))  # exact GELU
        x = x + F.linear(h, p["mlp.2.weight"], p["mlp.2.bias"])
    return x


def test_encode_matches_an_independent_reference_forward() -> None:
    encoder, images = _tiny(), _images()
    expected = _reference_tokens(encoder, preprocess_images(images, encoder.config))
    torch.testing.assert_close(encoder.encode(images), expected, rtol=1e-5, atol=1e-5)


def test_preprocessing_of_a_constant_colour_matches_the_hand_computation() -> None:
    config = get_image_encoder_config("tiny")
    colour = torch.tensor([-0.6, 0.1, 0.9])
    images = colour.view(1, 3, 1, 1).expand(2, 3, 40, 70).clone()
    pixels = preprocess_images(images, config)
    assert pixels.shape == (2, 3, 28, 28) and pixels.dtype == torch.float32
    expected = ((colour + 1) / 2 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(pixels, expected.view(1, 3, 1, 1).expand_as(pixels), rtol=0, atol=1e-5)


def test_a_non_square_image_is_squashed_whole_not_cropped() -> None:
    config = get_image_encoder_config("tiny")
    # 28 x 112: only the leftmost quarter (columns 0..27) is white. Squashed 4:1, output column j samples
    # x = 4j + 1.5 with taps 4j..4j+3, so columns 0..6 are exactly white and 7..27 exactly black.
    # A centre crop (columns 42..69) would be all black.
    images = -torch.ones(1, 3, 28, 112)
    images[..., :28] = 1.0
    pixels = preprocess_images(images, config)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    expected = ((torch.zeros(3, 28, 28) - mean) / std).clone()
    expected[..., :7] = ((1 - mean) / std).expand(3, 28, 7)
    torch.testing.assert_close(pixels[0], expected, rtol=0, atol=1e-5)


def test_resize_is_bicubic_and_keeps_its_overshoot() -> None:
    config = get_image_encoder_config("tiny")
    # White columns 0..28 of 112, squashed 4:1. Output column 7 samples x = 29.5: taps 28 (white), 29, 30, 31
    # (black) with Keys cubic weights (a = -0.75) -0.09375, 0.59375, 0.59375, -0.09375, so the value is
    # -0.09375 - 0.59375 - 0.59375 + 0.09375 = -1.1875 in [-1, 1] units: below black, not clamped
    # (bilinear would give exactly -1).
    images = -torch.ones(1, 3, 28, 112)
    images[..., :29] = 1.0
    column = preprocess_images(images, config)[0, :, :, 7]  # 3, S
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1), torch.tensor(CLIP_STD).view(3, 1)
    expected = (((-1.1875 + 1) / 2 - mean) / std).expand(3, 28)
    torch.testing.assert_close(column, expected, rtol=0, atol=1e-5)
