"""The DiT's parameters equal the released checkpoint's (manifest), and configs validate (facts §2.1, §7)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dreamzero_model import build_dit, config_names, get_config

MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-manifest"


def _manifest_shapes(file_name: str) -> dict[str, list[int]]:
    manifest = json.loads((MANIFEST / file_name).read_text())
    return {name: shape for name, shape in manifest["params"] + manifest["buffers"]}


@pytest.mark.parametrize(("config_name", "manifest_file", "total"), [
    ("dreamzero_14b", "dreamzero_14b_dit.json", 16_484_292_448),
    ("dreamzero_5b", "dreamzero_5b_dit.json", 5_606_692_832),
])
def test_meta_build_has_exactly_the_manifest_parameters(config_name: str, manifest_file: str, total: int) -> None:
    model = build_dit(config_name, device="meta")
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    expected = _manifest_shapes(manifest_file)
    assert sorted(set(expected) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(expected)) == [], "unexpected"
    assert {n: s for n, s in ours.items() if s != expected[n]} == {}, "wrong shapes"
    assert sum(t.numel() for t in model.state_dict().values()) == total
    assert all(t.is_meta for t in model.state_dict().values())


def test_meta_build_takes_the_requested_dtype() -> None:
    model = build_dit("dreamzero_14b", device="meta", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_tiny_has_the_same_parameter_names_as_14b() -> None:
    tiny = set(build_dit("tiny").state_dict())
    full = set(_manifest_shapes("dreamzero_14b_dit.json"))
    strip = {name.split(".", 2)[-1] if name.startswith("blocks.") else name for name in full}
    assert {name.split(".", 2)[-1] if name.startswith("blocks.") else name for name in tiny} == strip


def test_14b_config_has_the_published_dimensions() -> None:
    config = get_config("dreamzero_14b")
    assert (config.dim, config.num_layers, config.num_heads, config.ffn_dim) == (5120, 40, 40, 13824)
    assert (config.in_dim, config.out_dim, config.text_dim, config.freq_dim) == (36, 16, 4096, 256)
    assert (config.frame_seqlen, config.local_attn_size, config.head_dim) == (880, 9, 128)
    assert (config.num_action_per_block, config.num_state_per_block, config.num_frame_per_block) == (24, 1, 2)
    assert (config.action_dim, config.max_state_dim) == (32, 64)
    assert get_config("dreamzero_5b").frame_seqlen == 50


def test_unknown_config_name_suggests_the_closest() -> None:
    with pytest.raises(ValueError, match="did you mean 'dreamzero_14b'"):
        get_config("dreamzero_14")
    assert set(config_names()) == {"tiny", "tiny_sim", "dreamzero_14b", "dreamzero_5b"}


def test_inconsistent_config_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="in_dim 48 != out_dim"):
        get_config("tiny", in_dim=48)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        get_config("tiny", num_heads=3)
