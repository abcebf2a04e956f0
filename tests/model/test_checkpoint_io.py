"""Weight files in the official layout: save, shard, load lazily, reject corrupt input, merge LoRA (facts §5)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from dreamzero_model import build_dit
from dreamzero_model.checkpoint import (INDEX_FILE, SINGLE_FILE, load_checkpoint_weights, load_into,
                                        merged_lora_tensors, save_weights, weight_files)
from dreamzero_model.errors import CheckpointError


class Head(nn.Module):
    """``action_head.model`` = a tiny DiT, the official prefix of the DiT keys."""

    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.model = build_dit("tiny", device=device)


class Vla(nn.Module):
    def __init__(self, device: str | None = None) -> None:
        super().__init__()
        self.action_head = Head(device)


def _saved(tmp_path: Path, max_shard_bytes: int = 10**9) -> tuple[Vla, Path]:
    torch.manual_seed(0)
    model = Vla()
    save_weights(model.state_dict(), tmp_path, max_shard_bytes=max_shard_bytes)
    return model, tmp_path


def _assert_same(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_single_file_round_trip_into_a_meta_model(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    assert (folder / SINGLE_FILE).is_file() and not (folder / INDEX_FILE).exists()
    assert all(k.startswith("action_head.model.") for k in weight_files(folder))
    loaded = Vla(device="meta")
    load_checkpoint_weights(loaded, folder, progress=False)
    assert not any(p.is_meta for p in loaded.parameters())
    _assert_same(model, loaded)


def test_sharded_round_trip_with_index(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path, max_shard_bytes=200_000)
    shards = sorted(folder.glob("model-*-of-*.safetensors"))
    assert len(shards) > 1 and (folder / INDEX_FILE).is_file()
    loaded = Vla(device="meta")
    load_checkpoint_weights(loaded, folder, dtype=torch.bfloat16, progress=False)
    assert {p.dtype for p in loaded.parameters()} == {torch.bfloat16}
    assert torch.equal(loaded.action_head.model.head.modulation, model.action_head.model.head.modulation.bfloat16())


def test_truncated_file_is_named_in_one_clear_error(tmp_path: Path) -> None:
    _, folder = _saved(tmp_path)
    data = (folder / SINGLE_FILE).read_bytes()
    (folder / SINGLE_FILE).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: unreadable safetensors file"):
        load_checkpoint_weights(Vla(device="meta"), folder, progress=False)


def test_wrong_shape_and_missing_tensors_are_reported(tmp_path: Path) -> None:
    model, folder = _saved(tmp_path)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["action_head.model.head.head.weight"] = torch.zeros(3, 3)
    save_file(state, str(folder / SINGLE_FILE))
    with pytest.raises(CheckpointError, match=r"'action_head\.model\.head\.head\.weight' has shape \(3, 3\)"):
        load_checkpoint_weights(Vla(device="meta"), folder, progress=False)
    del state["action_head.model.head.head.weight"]
    state["action_head.model.extra"] = torch.zeros(1)
    save_file(state, str(folder / SINGLE_FILE))
    with pytest.raises(CheckpointError, match=r"1 missing .*head\.head\.weight.*1 unexpected .*extra"):
        load_checkpoint_weights(Vla(device="meta"), folder, progress=False)


def test_missing_weights_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no model.safetensors and no model.safetensors.index.json"):
        load_checkpoint_weights(Vla(device="meta"), tmp_path, progress=False)


@pytest.mark.parametrize("base_layer", [False, True], ids=["peft-0.5-names", "peft-0.7-names"])
def test_lora_merge_equals_the_directly_modified_base(tmp_path: Path, base_layer: bool) -> None:
    base, base_dir = _saved(tmp_path / "base")
    torch.manual_seed(1)
    lora: dict[str, torch.Tensor] = {}
    expected = {k: v.clone() for k, v in base.state_dict().items()}
    for module in ("blocks.0.self_attn.q", "blocks.1.ffn.0"):
        weight = expected[f"action_head.model.{module}.weight"]
        down, up = torch.randn(4, weight.shape[1]), torch.randn(weight.shape[0], 4)
        prefix = f"action_head.model.base_model.model.{module}"
        lora[f"{prefix}.lora_A.default.weight"], lora[f"{prefix}.lora_B.default.weight"] = down, up
        if base_layer:
            lora[f"{prefix}.base_layer.bias"] = expected[f"action_head.model.{module}.bias"]
        expected[f"action_head.model.{module}.weight"] = weight + up @ down  # alpha = r = 4
    new_head = torch.randn_like(expected["action_head.model.action_decoder.layer2.W"])
    lora["action_head.model.base_model.model.action_decoder.layer2.W"] = new_head
    expected["action_head.model.action_decoder.layer2.W"] = new_head
    save_weights(lora, tmp_path / "lora")

    merged = Vla(device="meta")
    load_into(merged, merged_lora_tensors(tmp_path / "lora", base_dir, progress=False), "lora+base")
    for name, tensor in merged.state_dict().items():
        assert torch.allclose(tensor, expected[name], atol=1e-5), name


def test_lora_without_its_pair_is_rejected(tmp_path: Path) -> None:
    _, base_dir = _saved(tmp_path / "base")
    save_weights({"action_head.model.base_model.model.blocks.0.self_attn.q.lora_A.default.weight": torch.zeros(4, 64)},
                 tmp_path / "lora")
    with pytest.raises(CheckpointError, match="has no lora_B weight"):
        list(merged_lora_tensors(tmp_path / "lora", base_dir, progress=False))
