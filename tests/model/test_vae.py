"""The Wan VAE wrapper: official parameter names (manifest) and normalised causal latents (facts §2.1, §7)."""
from __future__ import annotations

import inspect
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dreamzero_model.vae import (
    WAN21_LATENTS_MEAN,
    WAN21_LATENTS_STD,
    WanVideoVAE,
    build_vae,
    get_vae_config,
    rename_rules,
    vae_config_names,
)

MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-manifest"


def _manifest(file_name: str) -> dict:
    return json.loads((MANIFEST / file_name).read_text())


def _video(frames: int, height: int = 16, width: int = 16, seed: int = 0) -> torch.Tensor:
    """float32[1, 3, T, H, W], uniform in [-1, 1]."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, height, width, generator=generator) * 2 - 1


def _tiny(seed: int) -> WanVideoVAE:
    torch.manual_seed(seed)
    return build_vae("tiny")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    """The tiny VAE's convolutions are too small to gain from threads, and on a shared CPU each OpenMP
    barrier can wait for a time slice (measured: ~15 ms per conv3d instead of 0.1 ms with 2 threads and a
    busy neighbour), so this module runs on one thread and restores the setting afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny() -> WanVideoVAE:
    return _tiny(0)


@pytest.mark.parametrize(("config_name", "manifest_file", "total"), [
    ("wan21", "wan21_vae.json", 126_892_531),
    ("wan22", "wan22_vae.json", 704_688_668),
])
def test_meta_build_has_exactly_the_manifest_parameters(config_name: str, manifest_file: str, total: int) -> None:
    vae = build_vae(config_name, device="meta")
    manifest = _manifest(manifest_file)
    expected = {name: shape for name, shape in manifest["params"] + manifest["buffers"]}
    ours = {name: list(tensor.shape) for name, tensor in vae.model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(expected)) == [], "unexpected"
    assert {n: s for n, s in ours.items() if s != expected[n]} == {}, "wrong shapes"
    assert len(ours) == manifest["num_params_tensors"]
    assert sum(t.numel() for t in vae.model.state_dict().values()) == manifest["total_params"] == total
    assert all(t.is_meta for t in vae.model.state_dict().values())
    # The wrapper holds nothing outside .model (manifest prefix action_head.vae.model.).
    assert list(vae.state_dict()) == [f"model.{name}" for name in ours]
    assert list(vae.buffers()) == []


def test_rename_table_is_data_of_the_expected_size() -> None:
    assert len(rename_rules(get_vae_config("wan21"))) == 29
    assert len(rename_rules(get_vae_config("tiny"))) == 29
    assert len(rename_rules(get_vae_config("wan22"))) == 17
    assert all(isinstance(p, str) and isinstance(r, str) for p, r in rename_rules(get_vae_config("wan21")))


def test_meta_build_takes_the_requested_dtype_and_keeps_the_statistics_fp32() -> None:
    vae = build_vae("wan21", device="meta", dtype=torch.bfloat16)
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert vae.latents_mean.dtype == vae.latents_std.dtype == torch.float32
    assert vae.latents_mean.tolist() == pytest.approx(WAN21_LATENTS_MEAN)


def test_presets_carry_the_published_structure_and_statistics() -> None:
    from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

    defaults = inspect.signature(AutoencoderKLWan.__init__).parameters  # the Wan2.1 VAE config
    wan21 = get_vae_config("wan21")
    assert wan21.latents_mean == tuple(defaults["latents_mean"].default) == WAN21_LATENTS_MEAN
    assert wan21.latents_std == tuple(defaults["latents_std"].default) == WAN21_LATENTS_STD
    assert (wan21.dim, wan21.z_dim, wan21.dim_mult, wan21.num_res_blocks) == (96, 16, (1, 2, 4, 4), 2)
    assert (wan21.attn_scales, wan21.temperal_downsample) == ((), (False, True, True))
    assert (wan21.spatial_downsample, wan21.temporal_downsample, wan21.latent_frames(33)) == (8, 4, 9)
    wan22 = get_vae_config("wan22")
    assert (wan22.z_dim, wan22.dim, wan22.decoder_dim, wan22.spatial_downsample) == (48, 160, 256, 16)
    assert len(wan22.latents_mean) == len(wan22.latents_std) == 48
    tiny = get_vae_config("tiny")
    assert (tiny.z_dim, tiny.spatial_downsample, tiny.temporal_downsample) == (16, 8, 4)
    tiny_sim = get_vae_config("tiny_sim")  # the same latent structure, narrower and one block per stage
    assert (tiny_sim.z_dim, tiny_sim.spatial_downsample, tiny_sim.temporal_downsample) == (16, 8, 4)
    assert set(vae_config_names()) == {"wan21", "wan22", "tiny", "tiny_sim"}


def test_unknown_or_inconsistent_config_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="did you mean 'wan21'"):
        get_vae_config("wan_21")
    with pytest.raises(ValueError, match="need z_dim=48 values"):
        get_vae_config("wan21", z_dim=48)
    with pytest.raises(ValueError, match="exactly twice"):
        get_vae_config("tiny", temperal_downsample=(True, True, True))
    with pytest.raises(ValueError, match="attn_scales must be empty"):
        get_vae_config("tiny", attn_scales=(1.0,))


def test_official_state_dict_round_trips_into_a_differently_seeded_vae(tiny: WanVideoVAE) -> None:
    video = _video(5)
    other = _tiny(1)
    assert not torch.allclose(other.encode(video), tiny.encode(video)), "seeds must give different weights"
    state = tiny.model.state_dict()
    assert "encoder.conv1.weight" in state and "decoder.upsamples.3.time_conv.weight" in state
    other.model.load_state_dict(state, strict=True)
    assert torch.equal(other.encode(video), tiny.encode(video))
    # Through the wrapper, under the model. prefix, too.
    third = _tiny(2)
    third.load_state_dict(tiny.state_dict(), strict=True)
    assert torch.equal(third.encode(video), tiny.encode(video))


def test_meta_build_takes_official_weights_with_assign(tiny: WanVideoVAE) -> None:
    vae = build_vae("tiny", device="meta")
    vae.model.load_state_dict(tiny.model.state_dict(), strict=True, assign=True)
    video = _video(5)
    assert torch.equal(vae.encode(video), tiny.encode(video))


@pytest.mark.parametrize("wrong_name", ["encoder.conv_1.weight", "encoder.conv_in.weight"])  # typo, diffusers name
def test_a_key_outside_the_official_names_fails_strict_loading(tiny: WanVideoVAE, wrong_name: str) -> None:
    state = tiny.model.state_dict()
    state[wrong_name] = state.pop("encoder.conv1.weight")
    with pytest.raises(RuntimeError, match=rf'Unexpected key\(s\) in state_dict: "{wrong_name}"'):
        _tiny(1).model.load_state_dict(state, strict=True)
    result = _tiny(1).model.load_state_dict(state, strict=False)
    assert (result.missing_keys, result.unexpected_keys) == (["encoder.conv1.weight"], [wrong_name])


def test_a_shape_mismatch_is_reported_under_the_official_name(tiny: WanVideoVAE) -> None:
    state = tiny.model.state_dict()
    state["conv2.bias"] = torch.zeros(3)
    with pytest.raises(RuntimeError, match="size mismatch for conv2.bias"):
        _tiny(1).model.load_state_dict(state)


@pytest.mark.parametrize(("frames", "latent_frames"), [(1, 1), (5, 2), (9, 3)])
def test_encode_gives_one_latent_frame_for_the_first_frame_then_one_per_four(
        tiny: WanVideoVAE, frames: int, latent_frames: int) -> None:
    latents = tiny.encode(_video(frames, height=16, width=24))
    assert latents.shape == (1, 16, latent_frames, 2, 3)
    assert latents.dtype == torch.float32


def test_encode_is_causal_in_time(tiny: WanVideoVAE) -> None:
    video = _video(9)
    changed = video.clone()
    changed[:, :, 1:] = _video(8, seed=1)  # every frame after the first
    latents, latents_changed = tiny.encode(video), tiny.encode(changed)
    assert torch.equal(latents[:, :, 0], latents_changed[:, :, 0])
    assert not torch.allclose(latents[:, :, 1:], latents_changed[:, :, 1:])
    # Frames 5..8 do not reach latent frame 1 either; and frame 0 alone gives latent frame 0.
    late = video.clone()
    late[:, :, 5:] = _video(4, seed=2)
    assert torch.equal(tiny.encode(late)[:, :, :2], latents[:, :, :2])
    assert torch.allclose(tiny.encode(video[:, :, :1])[:, :, 0], latents[:, :, 0], atol=1e-6)


@pytest.mark.parametrize(("shape", "message"), [
    ((1, 3, 6, 16, 16), "T = 1 \\+ 4k frames .* got T=6"),
    ((1, 3, 5, 12, 16), "multiples of 8 .* got H=12, W=16"),
    ((1, 3, 5, 16, 20), "multiples of 8 .* got H=16, W=20"),
    ((1, 4, 5, 16, 16), "float\\[B, 3, T, H, W\\]"),
    ((3, 5, 16, 16), "float\\[B, 3, T, H, W\\]"),
])
def test_encode_rejects_bad_shapes_naming_the_problem(tiny: WanVideoVAE, shape: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny.encode(torch.zeros(shape))


def test_decode_rejects_latents_with_the_wrong_channel_count(tiny: WanVideoVAE) -> None:
    with pytest.raises(ValueError, match="latents must be float\\[B, 16, F >= 1, h, w\\]"):
        tiny.decode(torch.zeros(1, 48, 2, 2, 2))


def test_decode_of_encode_restores_the_video_shape_within_range(tiny: WanVideoVAE) -> None:
    video = _video(9, height=16, width=24)
    decoded = tiny.decode(tiny.encode(video))
    assert decoded.shape == video.shape
    assert decoded.dtype == torch.float32
    assert decoded.min() >= -1 and decoded.max() <= 1


def test_encode_is_the_normalised_posterior_mean(tiny: WanVideoVAE) -> None:
    video = _video(5)
    with torch.no_grad():
        raw = tiny.model.encode(video).latent_dist.mean  # B, 16, F, h, w: posterior mean
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)
    latents = tiny.encode(video)
    torch.testing.assert_close(latents, (raw - mean) / std)
    assert not torch.allclose(latents, raw, atol=1e-2), "normalisation must change the latent"


def test_decode_unnormalises_before_the_decoder(tiny: WanVideoVAE) -> None:
    latents = torch.randn(1, 16, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    mean = torch.tensor(WAN21_LATENTS_MEAN).view(1, 16, 1, 1, 1)
    std = torch.tensor(WAN21_LATENTS_STD).view(1, 16, 1, 1, 1)
    with torch.no_grad():
        expected = tiny.model.decode(latents * std + mean).sample
    decoded = tiny.decode(latents)
    assert decoded.shape == (1, 3, 5, 16, 16)
    torch.testing.assert_close(decoded, expected)
    with torch.no_grad():
        assert not torch.allclose(decoded, tiny.model.decode(latents).sample, atol=1e-3)


def test_wan22_structure_downsamples_16x_with_48_channels() -> None:
    # The wan22 preset's residual stages, patchify and 48-channel statistics at a CPU-sized width.
    config = get_vae_config("wan22", name="tiny22", dim=8, decoder_dim=16)
    torch.manual_seed(0)
    vae = build_vae(config)
    video = _video(5, height=32, width=16)
    latents = vae.encode(video)
    assert latents.shape == (1, 48, 2, 2, 1)
    assert vae.decode(latents).shape == video.shape
    with pytest.raises(ValueError, match="multiples of 16"):
        vae.encode(_video(5, height=24, width=16))
