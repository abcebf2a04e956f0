"""The frozen umT5-XXL text encoder of DreamZero (``WanTextEncoder``) and its prompt tokenizer.

Facts §2.1: the text encoder is the encoder half of umT5-XXL (vocab 256384, width 4096, gated
GELU-tanh FFN 10240, 64 heads, 24 layers, 32 bidirectional relative-position buckets in EVERY
layer, RMS norms with eps 1e-6, no 1/sqrt(d) attention scaling); its output is zeroed beyond the
prompt length before the DiT's ``text_embedding``. Facts §1.11: the prompt is cleaned (ftfy, HTML
unescaped twice, whitespace collapsed) and tokenized with the HF tokenizer found at a local
``tokenizer_path``, padded/truncated to 512 tokens, attention mask kept.

The math is run by the field's maintained implementation, ``transformers.UMT5EncoderModel``,
held as the child ``umt5``. Its parameter names never reach the state dict: state-dict hooks map
them through :data:`NAME_TABLE` (data, not logic) to the official Wan names of the checkpoint
manifest (``reference/checkpoint-manifest/umt5_xxl_encoder.json``: ``token_embedding.weight``,
``blocks.N.{norm1,norm2,attn.{q,k,v,o},ffn.{gate.0,fc1,fc2},pos_embedding.embedding}.weight``,
``norm.weight``; full-model prefix ``action_head.text_encoder.``), so the released
``models_t5_umt5-xxl-enc-bf16.pth`` loads with ``strict=True``.

Dimensions: B batch, L tokens (``max_length``, 512), D width (``dim``), V vocabulary.
This module never opens a weight file and never downloads; it imports torch, transformers and
ftfy (plus the standard library) only.
"""
from __future__ import annotations

import html
import re
from dataclasses import dataclass
from pathlib import Path

import ftfy
import torch
import transformers
from torch import nn

from dreamzero_model.construction import build_on, pick


@dataclass(frozen=True)
class TextEncoderConfig:
    """Hyperparameters of the umT5 encoder (manifest ``umt5_xxl_encoder.json`` ``config``; facts §2.1).

    Attributes:
        name: Preset name.
        vocab: Token vocabulary size V (rows of ``token_embedding``).
        dim: Model width D (= the DiT's ``text_dim``).
        dim_attn: Total attention width (heads x head dim); q/k/v map D -> dim_attn.
        dim_ffn: Width of the gated GELU-tanh feed-forward.
        num_heads / num_layers: attention heads and encoder blocks.
        num_buckets: relative-position buckets of each layer's own bias table (bidirectional: half
            for keys after the query, half for keys before).
        max_distance: relative distance at which the logarithmic buckets saturate (Wan ``max_dist``).
        max_length: tokens per prompt after padding/truncation (= the DiT's ``text_len``, facts §1.11).
        eps: RMS-norm epsilon. dropout: dropout rate, active only in train mode (manifest config).
    """

    name: str
    vocab: int
    dim: int
    dim_attn: int
    dim_ffn: int
    num_heads: int
    num_layers: int
    num_buckets: int = 32
    max_distance: int = 128
    max_length: int = 512
    eps: float = 1e-6
    dropout: float = 0.1

    def __post_init__(self) -> None:
        problems = []
        if self.dim_attn % self.num_heads:
            problems.append(f"dim_attn {self.dim_attn} is not divisible by num_heads {self.num_heads}")
        if self.num_buckets < 4 or self.num_buckets % 4:
            problems.append(f"num_buckets {self.num_buckets} must be a positive multiple of 4 "
                            f"(halved for direction, then half exact and half logarithmic)")
        sizes = {"vocab": self.vocab, "dim": self.dim, "dim_ffn": self.dim_ffn,
                 "num_layers": self.num_layers, "max_length": self.max_length}
        problems += [f"{field} must be >= 1, got {value}" for field, value in sizes.items() if value < 1]
        if problems:
            raise ValueError(f"TextEncoderConfig {self.name!r}: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim_attn // self.num_heads


_PRESETS: dict[str, TextEncoderConfig] = {
    # CPU tests: the same structure, sized to the DiT's tiny preset (text_dim 32, text_len 16).
    "tiny": TextEncoderConfig(name="tiny", vocab=512, dim=32, dim_attn=32, dim_ffn=64, num_heads=2,
                              num_layers=2, max_length=16),
    # The tiny encoder with room for the DROID template and an instruction (DiT "tiny_sim": text_len 80).
    "tiny_sim": TextEncoderConfig(name="tiny_sim", vocab=512, dim=32, dim_attn=32, dim_ffn=64, num_heads=2,
                                  num_layers=2, max_length=80),
    # umT5-XXL encoder (facts §2.1; manifest umt5_xxl_encoder.json, 5,680,910,336 params).
    "umt5_xxl": TextEncoderConfig(name="umt5_xxl", vocab=256384, dim=4096, dim_attn=4096, dim_ffn=10240,
                                  num_heads=64, num_layers=24),
}


def get_text_encoder_config(name: str, **overrides) -> TextEncoderConfig:
    """Return a text-encoder preset by name, optionally with fields replaced.

    Raises:
        ValueError: unknown name (the message suggests the closest preset).
    """
    return pick(_PRESETS, name, "text encoder config", **overrides)


# Official Wan/DreamZero name (manifest) <-> transformers UMT5EncoderModel name; {i} is the block index.
# The official FFN is fc2(fc1(x) * GELU_tanh(gate.0(x))); transformers writes it
# wo(act(wi_0(x)) * wi_1(x)), so gate.0 = wi_0 (the activated branch) and fc1 = wi_1.
# transformers ties shared.weight and encoder.embed_tokens.weight: both are token_embedding.weight.
NAME_TABLE: tuple[tuple[str, str], ...] = (
    ("token_embedding.weight", "shared.weight"),
    ("token_embedding.weight", "encoder.embed_tokens.weight"),
    ("blocks.{i}.norm1.weight", "encoder.block.{i}.layer.0.layer_norm.weight"),
    ("blocks.{i}.attn.q.weight", "encoder.block.{i}.layer.0.SelfAttention.q.weight"),
    ("blocks.{i}.attn.k.weight", "encoder.block.{i}.layer.0.SelfAttention.k.weight"),
    ("blocks.{i}.attn.v.weight", "encoder.block.{i}.layer.0.SelfAttention.v.weight"),
    ("blocks.{i}.attn.o.weight", "encoder.block.{i}.layer.0.SelfAttention.o.weight"),
    ("blocks.{i}.pos_embedding.embedding.weight",
     "encoder.block.{i}.layer.0.SelfAttention.relative_attention_bias.weight"),
    ("blocks.{i}.norm2.weight", "encoder.block.{i}.layer.1.layer_norm.weight"),
    ("blocks.{i}.ffn.gate.0.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_0.weight"),
    ("blocks.{i}.ffn.fc1.weight", "encoder.block.{i}.layer.1.DenseReluDense.wi_1.weight"),
    ("blocks.{i}.ffn.fc2.weight", "encoder.block.{i}.layer.1.DenseReluDense.wo.weight"),
    ("norm.weight", "encoder.final_layer_norm.weight"),
)


def _compile(template: str) -> re.Pattern[str]:
    return re.compile(re.escape(template).replace(re.escape("{i}"), r"(?P<i>\d+)") + r"\Z")


_TO_OFFICIAL = [(_compile(internal), official) for official, internal in NAME_TABLE]
_TO_INTERNAL = [(_compile(official), internal) for official, internal in NAME_TABLE]


def official_name(internal: str) -> str | None:
    """transformers name (relative to ``umt5``) -> official name, or None if not in the table."""
    for pattern, official in _TO_OFFICIAL:
        if match := pattern.match(internal):
            return official.format(**match.groupdict())
    return None


def internal_names(official: str) -> list[str]:
    """Official name -> the transformers names (relative to ``umt5``) holding it; [] if unknown."""
    return [internal.format(**match.groupdict())
            for pattern, internal in _TO_INTERNAL if (match := pattern.match(official))]


_CHILD = "umt5"


def _state_dict_to_official(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """state_dict post-hook: rename this encoder's entries in place to the official names."""
    child = prefix + _CHILD + "."
    renamed: dict[str, torch.Tensor] = {}
    for key in [k for k in state_dict if k.startswith(child)]:
        name = official_name(key[len(child):])
        if name is None:  # an invariant: every tensor of the child is in NAME_TABLE
            raise ValueError(f"{key}: transformers tensor not covered by text_encoder.NAME_TABLE")
        tensor = state_dict.pop(key)
        renamed.setdefault(prefix + name, tensor)  # the tied embedding appears once
    state_dict.update(renamed)


def _load_official(module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
                   missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
    """load_state_dict pre-hook: official names -> transformers names, in place.

    Every problem is reported under the official name, as ``load_state_dict`` would for a plain
    module: names outside the table stay in place and ``strict=True`` reports them as unexpected
    (so do the transformers child's own names, which are not an accepted spelling); absent
    tensors are listed as missing and keep their current value; a wrong shape is a size mismatch.
    """
    child = prefix + _CHILD + "."
    own = module.umt5.state_dict(keep_vars=True)  # transformers name -> current tensor
    for key in [k for k in state_dict if k.startswith(prefix)]:
        if key.startswith(child):
            state_dict.pop(key)
            unexpected_keys.append(key)
            continue
        targets = [target for target in internal_names(key[len(prefix):]) if target in own]
        if not targets:
            continue
        tensor = state_dict.pop(key)
        expected = own[targets[0]].shape
        if tensor.shape != expected:
            error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(tensor.shape)} from "
                              f"checkpoint, the shape in current model is {tuple(expected)}.")
        for target in targets:
            state_dict[child + target] = tensor if tensor.shape == expected else own[target]
    for target, tensor in own.items():
        if child + target not in state_dict:
            name = prefix + official_name(target)
            if name not in missing_keys:
                missing_keys.append(name)
            state_dict[child + target] = tensor


class WanTextEncoder(nn.Module):
    """umT5 encoder with the official Wan parameter names (facts §2.1; manifest ``umt5_xxl_encoder.json``).

    ``state_dict()`` holds exactly the manifest's names (242 tensors for ``umt5_xxl``) and
    ``load_state_dict(official, strict=True)`` accepts them; the transformers child ``umt5`` is
    an implementation detail whose names appear only in ``named_parameters()``.
    """

    def __init__(self, config: TextEncoderConfig) -> None:
        super().__init__()
        self.config = config
        umt5_config = transformers.UMT5Config(
            vocab_size=config.vocab, d_model=config.dim, d_kv=config.head_dim, d_ff=config.dim_ffn,
            num_layers=config.num_layers, num_heads=config.num_heads,
            relative_attention_num_buckets=config.num_buckets,
            relative_attention_max_distance=config.max_distance, dropout_rate=config.dropout,
            layer_norm_epsilon=config.eps, feed_forward_proj="gated-gelu",  # gelu_new = GELU-tanh
            is_encoder_decoder=False, use_cache=False)
        umt5_config._attn_implementation = "sdpa"  # umT5 bias + padding mask as one additive mask
        self.umt5 = transformers.UMT5EncoderModel(umt5_config)
        # One module under both names, so the tie survives to_empty() and dtype casts.
        self.umt5.encoder.embed_tokens = self.umt5.shared
        self.register_state_dict_post_hook(_state_dict_to_official)
        self.register_load_state_dict_pre_hook(_load_official)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """Random initialisation with Wan's T5 scheme (normal, std from the layer widths; norms at 1)."""
        config = self.config
        dim, dim_attn, dim_ffn = config.dim, config.dim_attn, config.dim_ffn
        nn.init.normal_(self.umt5.shared.weight, std=1.0)
        for block in self.umt5.encoder.block:
            attn, ffn = block.layer[0].SelfAttention, block.layer[1].DenseReluDense
            nn.init.normal_(attn.q.weight, std=(dim * dim_attn) ** -0.5)
            nn.init.normal_(attn.k.weight, std=dim ** -0.5)
            nn.init.normal_(attn.v.weight, std=dim ** -0.5)
            nn.init.normal_(attn.o.weight, std=(config.num_heads * dim_attn) ** -0.5)
            bias_std = (2 * config.num_buckets * config.num_heads) ** -0.5
            nn.init.normal_(attn.relative_attention_bias.weight, std=bias_std)
            nn.init.normal_(ffn.wi_0.weight, std=dim ** -0.5)
            nn.init.normal_(ffn.wi_1.weight, std=dim ** -0.5)
            nn.init.normal_(ffn.wo.weight, std=dim_ffn ** -0.5)
            nn.init.ones_(block.layer[0].layer_norm.weight)
            nn.init.ones_(block.layer[1].layer_norm.weight)
        nn.init.ones_(self.umt5.encoder.final_layer_norm.weight)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encode padded prompts.

        Args:
            input_ids: int64[B, L] token ids, right-padded (:class:`PromptTokenizer`).
            attention_mask: int64 or bool[B, L], nonzero on prompt tokens.

        Returns:
            float32[B, L, D]; every position at or beyond a row's prompt length (number of nonzero
            mask entries) is exactly 0, as the official encoder returns (facts §2.1).

        Raises:
            ValueError: shapes or dtypes that do not fit the contract above.
        """
        if input_ids.ndim != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(f"input_ids must be [B, L] and attention_mask the same shape, got "
                             f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}")
        if input_ids.is_floating_point():
            raise ValueError(f"input_ids must hold integer token ids, got {input_ids.dtype}")
        hidden = self.umt5(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # B, L, D
        lengths = attention_mask.gt(0).sum(dim=1)  # B
        keep = torch.arange(input_ids.shape[1], device=input_ids.device)[None, :] < lengths[:, None]  # B, L
        return torch.where(keep[..., None], hidden.float(), 0.0)


def build_text_encoder(name_or_config: str | TextEncoderConfig, device: torch.device | str | None = None,
                       dtype: torch.dtype | None = None) -> WanTextEncoder:
    """Build the text encoder straight on ``device`` in ``dtype`` (``device="meta"`` allocates nothing).

    On a real device the parameters are created empty there and initialised in place, so the
    5.7B-parameter encoder never passes through a float32 CPU copy.
    """
    config = get_text_encoder_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return build_on(lambda: WanTextEncoder(config), device, dtype)


def clean_prompt(text: str) -> str:
    """Facts §1.11: ftfy repair, HTML unescaped twice, whitespace runs collapsed to one space, stripped."""
    text = html.unescape(html.unescape(ftfy.fix_text(text)))
    return re.sub(r"\s+", " ", text).strip()


class PromptTokenizer:
    """The umT5 prompt tokenizer (facts §1.11), loaded only from a local directory.

    Wraps a transformers tokenizer; use :meth:`from_pretrained` with the checkpoint's
    ``tokenizer_path`` (a local copy of ``google/umt5-xxl``). Nothing is ever downloaded.
    """

    def __init__(self, tokenizer: transformers.PreTrainedTokenizerBase) -> None:
        if tokenizer.pad_token_id is None:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token; prompts are padded "
                             f"to a fixed length (facts §1.11)")
        self.tokenizer = tokenizer

    @classmethod
    def from_pretrained(cls, path: str | Path) -> PromptTokenizer:
        """Load the tokenizer saved in the local directory ``path``.

        Raises:
            FileNotFoundError: ``path`` is not an existing directory (no download is attempted).
        """
        directory = Path(path).expanduser()
        if not directory.is_dir():
            raise FileNotFoundError(f"tokenizer_path {str(path)!r} is not a local directory; the tokenizer is "
                                    f"loaded only from local files and downloads are not done. Point "
                                    f"tokenizer_path at a local copy of google/umt5-xxl.")
        return cls(transformers.AutoTokenizer.from_pretrained(str(directory), local_files_only=True))

    def __call__(self, texts: list[str], max_length: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean and tokenize prompts, padded/truncated to exactly ``max_length`` tokens.

        Args:
            texts: B prompts (a list, not a single string).
            max_length: L, tokens per row (512 for DreamZero, facts §1.11).

        Returns:
            (input_ids int64[B, L], attention_mask int64[B, L]), mask 1 on prompt tokens (special
            tokens such as the closing ``</s>`` included), 0 on padding.
        """
        if isinstance(texts, str) or not all(isinstance(text, str) for text in texts):
            raise ValueError(f"texts must be a list of strings, got {type(texts).__name__}")
        encoded = self.tokenizer([clean_prompt(text) for text in texts], padding="max_length", truncation=True,
                                 max_length=max_length, add_special_tokens=True, return_attention_mask=True,
                                 return_tensors="pt")
        return encoded["input_ids"].to(torch.int64), encoded["attention_mask"].to(torch.int64)


__all__ = ["NAME_TABLE", "PromptTokenizer", "TextEncoderConfig", "WanTextEncoder", "build_text_encoder",
           "clean_prompt", "get_text_encoder_config", "internal_names", "official_name"]
