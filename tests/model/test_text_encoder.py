"""umT5 text encoder and prompt tokenizer: manifest names, official math, zeroing, tokens (facts §1.11, §2.1)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"  # nothing in this module may reach the network

import pytest
import torch
import transformers
from tokenizers import Tokenizer, models, pre_tokenizers, processors, trainers

from dreamzero_model.config import get_config
from dreamzero_model.text_encoder import (
    PromptTokenizer,
    WanTextEncoder,
    build_text_encoder,
    clean_prompt,
    get_text_encoder_config,
)

MANIFEST = Path(__file__).resolve().parents[3] / "shared" / "reference" / "checkpoint-manifest"
TINY = get_text_encoder_config("tiny")
SENTENCES = ["pick up the red cube", "place the cube in the bowl", "Pick&place the cube on the plate"]


@pytest.fixture
def tiny_tokenizer_dir(tmp_path: Path) -> Path:
    """A word-level tokenizer saved like an HF checkpoint, built offline: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2.

    Whitespace splitting plus a closing ``</s>`` (as umT5 appends) makes every prompt
    ``len(words) + 1`` tokens long.
    """
    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=["<pad>", "</s>", "<unk>"]))
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>",
                                         unk_token="<unk>").save_pretrained(tmp_path)
    return tmp_path


def _tiny_encoder(seed: int) -> WanTextEncoder:
    """A tiny encoder in eval mode whose norms are perturbed too, so every tensor matters."""
    torch.manual_seed(seed)
    encoder = build_text_encoder(TINY).eval()
    with torch.no_grad():
        for parameter in encoder.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return encoder


def _padded(prompts: list[list[int]], length: int, pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.int64)
    mask = torch.zeros(len(prompts), length, dtype=torch.int64)
    for row, prompt in enumerate(prompts):
        ids[row, :len(prompt)] = torch.tensor(prompt)
        mask[row, :len(prompt)] = 1
    return ids, mask


def _official_t5_encoder(weights: dict[str, torch.Tensor], ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The official umT5 encoder math written out on the official names (facts §2.1, Wan ``t5.py``).

    RMS norm (eps 1e-6); unscaled attention plus a per-layer bias over 32 bidirectional buckets
    (key after query -> upper half; 8 exact distances, then log buckets up to distance 128);
    FFN fc2(fc1(x) * GELU_tanh(gate.0(x))); final norm; output zeroed beyond the prompt length.
    """
    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return weight * x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)

    length = ids.shape[1]
    relative = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # key - query, [L, L]
    half = TINY.num_buckets // 2
    distance, exact = relative.abs(), half // 2
    log_bucket = exact + (torch.log(distance.clamp(min=1).float() / exact) / math.log(128 / exact)
                          * (half - exact)).long()
    bucket = (relative > 0).long() * half + torch.where(distance < exact, distance, log_bucket.clamp(max=half - 1))
    x = weights["token_embedding.weight"][ids]  # B, L, D
    for layer in range(TINY.num_layers):
        w = {name[len(f"blocks.{layer}."):]: t for name, t in weights.items() if name.startswith(f"blocks.{layer}.")}
        h = rms(x, w["norm1.weight"])
        q, k, v = ((h @ w[f"attn.{n}.weight"].T).unflatten(-1, (TINY.num_heads, -1)) for n in "qkv")  # B, L, H, Dh
        scores = torch.einsum("bqhd,bkhd->bhqk", q, k) + w["pos_embedding.embedding.weight"][bucket].permute(2, 0, 1)
        scores = scores.masked_fill(mask[:, None, None, :] == 0, torch.finfo(scores.dtype).min)
        attended = torch.einsum("bhqk,bkhd->bqhd", scores.softmax(-1), v).flatten(2)
        x = x + attended @ w["attn.o.weight"].T
        h = rms(x, w["norm2.weight"])
        gate = torch.nn.functional.gelu(h @ w["ffn.gate.0.weight"].T, approximate="tanh")
        x = x + ((h @ w["ffn.fc1.weight"].T) * gate) @ w["ffn.fc2.weight"].T
    x = rms(x, weights["norm.weight"])
    return x * (torch.arange(length)[None, :] < mask.sum(1)[:, None])[..., None]


def test_meta_umt5_xxl_has_exactly_the_manifest_parameters() -> None:
    manifest = json.loads((MANIFEST / "umt5_xxl_encoder.json").read_text())
    expected = {name: shape for name, shape in manifest["params"] + manifest["buffers"]}
    model = build_text_encoder("umt5_xxl", device="meta")
    ours = {name: list(tensor.shape) for name, tensor in model.state_dict().items()}
    assert sorted(set(expected) - set(ours)) == [], "missing"
    assert sorted(set(ours) - set(expected)) == [], "unexpected"
    assert {n: s for n, s in ours.items() if s != expected[n]} == {}, "wrong shapes"
    assert len(ours) == manifest["num_params_tensors"] == 242
    assert sum(t.numel() for t in model.state_dict().values()) == manifest["total_params"] == 5_680_910_336
    assert all(t.is_meta for t in model.state_dict().values())


def test_meta_build_takes_the_requested_dtype() -> None:
    model = build_text_encoder("umt5_xxl", device="meta", dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_presets_have_the_published_sizes_and_fit_the_dit() -> None:
    xxl = get_text_encoder_config("umt5_xxl")
    assert (xxl.vocab, xxl.dim, xxl.dim_attn, xxl.dim_ffn) == (256384, 4096, 4096, 10240)
    assert (xxl.num_heads, xxl.num_layers, xxl.num_buckets, xxl.max_length) == (64, 24, 32, 512)
    for encoder, dit in (("umt5_xxl", "dreamzero_14b"), ("umt5_xxl", "dreamzero_5b"), ("tiny", "tiny")):
        text, dit_config = get_text_encoder_config(encoder), get_config(dit)
        assert (text.dim, text.max_length) == (dit_config.text_dim, dit_config.text_len)


def test_unknown_or_inconsistent_config_is_rejected_with_the_reason() -> None:
    with pytest.raises(ValueError, match="did you mean 'umt5_xxl'"):
        get_text_encoder_config("umt5_xl")
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        get_text_encoder_config("tiny", num_heads=3)


def test_official_state_dict_round_trips_strictly_with_identical_outputs() -> None:
    source, target = _tiny_encoder(0), _tiny_encoder(1)
    ids, mask = _padded([[5, 17, 300, 2, 1], [9, 1]], TINY.max_length)
    with torch.no_grad():
        assert not torch.equal(source(ids, mask), target(ids, mask))
        target.load_state_dict(source.state_dict(), strict=True)
        assert torch.equal(source(ids, mask), target(ids, mask))
        on_meta = build_text_encoder(TINY, device="meta")
        on_meta.load_state_dict(source.state_dict(), strict=True, assign=True)
        assert torch.equal(source(ids, mask), on_meta.eval()(ids, mask))
    assert list(source.state_dict()) == list(target.state_dict())
    assert sum(name == "token_embedding.weight" for name in source.state_dict()) == 1


def test_the_full_model_prefix_is_kept_on_save_and_load() -> None:
    parent = torch.nn.ModuleDict({"text_encoder": _tiny_encoder(0)})
    other = torch.nn.ModuleDict({"text_encoder": _tiny_encoder(1)})
    names = list(parent.state_dict())
    assert names[0] == "text_encoder.token_embedding.weight" and "text_encoder.norm.weight" in names
    other.load_state_dict(parent.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(parent.state_dict().values(), other.state_dict().values()))


@pytest.mark.parametrize(("old", "new"), [
    ("blocks.1.ffn.fc1.weight", "blocks.1.ffn.fc_1.weight"),  # a typo in an official name
    ("norm.weight", "umt5.encoder.final_layer_norm.weight"),  # the transformers name is not accepted
])
def test_a_wrongly_named_key_fails_strict_loading_under_official_names(old: str, new: str) -> None:
    weights = _tiny_encoder(0).state_dict()
    weights[new] = weights.pop(old)
    with pytest.raises(RuntimeError) as error:
        _tiny_encoder(1).load_state_dict(weights, strict=True)
    assert f'Missing key(s) in state_dict: "{old}"' in str(error.value)
    assert f'Unexpected key(s) in state_dict: "{new}"' in str(error.value)
    assert str(error.value).count("umt5.") == new.count("umt5."), "transformers names leaked into the report"


def test_forward_matches_the_official_t5_math() -> None:
    encoder = _tiny_encoder(3)
    full = [7, 30, 200, 511, 4, 9, 66, 80, 3, 120, 250, 18, 400, 5, 6, 1]  # distances up to 15: log buckets too
    ids, mask = _padded([full, [12, 1]], TINY.max_length)
    with torch.no_grad():
        ours = encoder(ids, mask)
        reference = _official_t5_encoder(encoder.state_dict(), ids, mask)
    assert ours.dtype == torch.float32 and ours.shape == (2, TINY.max_length, TINY.dim)
    torch.testing.assert_close(ours, reference, rtol=0, atol=1e-5)


def test_positions_beyond_the_prompt_are_zero_and_padding_length_does_not_matter() -> None:
    encoder = _tiny_encoder(4)
    prompts = [[5, 17, 300, 2, 1], [9, 44, 1]]
    with torch.no_grad():
        short = encoder(*_padded(prompts, 8))
        long = encoder(*_padded(prompts, 16, pad_id=3))
    for row, prompt in enumerate(prompts):
        n = len(prompt)
        assert torch.count_nonzero(long[row, n:]) == 0 and torch.count_nonzero(short[row, n:]) == 0
        assert bool((long[row, :n].norm(dim=-1) > 0.1).all())
        torch.testing.assert_close(short[row, :n], long[row, :n], rtol=0, atol=1e-5)


def test_bfloat16_encoder_returns_float32() -> None:
    encoder = build_text_encoder(TINY, dtype=torch.bfloat16).eval()
    with torch.no_grad():
        out = encoder(*_padded([[5, 6, 1]], 4))
    assert out.dtype == torch.float32 and torch.count_nonzero(out[0, 3:]) == 0


def test_mismatched_input_shapes_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"\(2, 4\) and \(2, 5\)"):
        _tiny_encoder(0)(torch.zeros(2, 4, dtype=torch.int64), torch.ones(2, 5, dtype=torch.int64))


@pytest.mark.parametrize(("raw", "clean"), [
    ("Pick&amp;amp;place   the\n cube", "Pick&place the cube"),
    ("  pick\tup \u00c3\u00a9 the cube  ", "pick up \u00e9 the cube"),  # ftfy repairs the mojibake
    ("&amp;lt;stop&amp;gt;", "<stop>"),
    ("stack &amp;amp; <b>push</b>", "stack & <b>push</b>"),  # with a '<' ftfy leaves entities: html.unescape twice
])
def test_clean_prompt_fixes_text_unescapes_html_twice_and_collapses_whitespace(raw: str, clean: str) -> None:
    assert clean_prompt(raw) == clean


def test_tokenizer_pads_and_truncates_to_max_length_with_the_mask(tiny_tokenizer_dir: Path) -> None:
    tokenizer = PromptTokenizer.from_pretrained(tiny_tokenizer_dir)
    prompts = ["Pick&amp;amp;place   the\n cube", "pick up the red cube",
               "place the cube in the bowl and pick up the cube"]
    ids, mask = tokenizer(prompts, max_length=8)
    assert ids.dtype == mask.dtype == torch.int64 and ids.shape == mask.shape == (3, 8)
    words = [len(clean_prompt(p).split()) for p in prompts]
    assert mask.sum(1).tolist() == [min(n + 1, 8) for n in words] == [4, 6, 8]
    assert ids[0].tolist()[:4] == tokenizer.tokenizer("Pick&place the cube")["input_ids"]
    assert ids[0, 3] == 1 and ids[0, 4:].tolist() == [0] * 4  # </s>, then padding
    assert ids[2, 7] == 1  # a truncated prompt still ends with </s>
    assert (ids[mask == 0] == 0).all()


def test_tokenized_prompts_encode_to_the_dit_text_shape(tiny_tokenizer_dir: Path) -> None:
    ids, mask = PromptTokenizer.from_pretrained(tiny_tokenizer_dir)(SENTENCES, max_length=TINY.max_length)
    with torch.no_grad():
        out = _tiny_encoder(0)(ids, mask)
    assert out.shape == (3, get_config("tiny").text_len, get_config("tiny").text_dim)
    assert torch.count_nonzero(out[0, 6:]) == 0 and bool((out[0, :6].norm(dim=-1) > 0).all())


def test_a_missing_tokenizer_directory_raises_without_downloading(tmp_path: Path) -> None:
    missing = tmp_path / "umt5-xxl"
    with pytest.raises(FileNotFoundError, match="downloads are not done") as error:
        PromptTokenizer.from_pretrained(missing)
    assert str(missing) in str(error.value)


def test_a_single_string_is_not_tokenized_character_by_character(tiny_tokenizer_dir: Path) -> None:
    with pytest.raises(ValueError, match="list of strings"):
        PromptTokenizer.from_pretrained(tiny_tokenizer_dir)("pick up the cube")  # type: ignore[arg-type]
