"""A byte-level tokenizer built locally, for ``tiny`` checkpoints (tests, demo): no download, any text.

Every UTF-8 byte is one token (256), plus ``<pad>`` (id 0), ``</s>`` (appended to every prompt, as
umT5 does) and ``<unk>``: 259 ids, within the tiny umT5 vocabulary. The real model uses the
``google/umt5-xxl`` tokenizer from a local directory (:class:`~dreamzero_model.text_encoder.PromptTokenizer`).
Imports tokenizers and transformers only.
"""
from __future__ import annotations

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

from dreamzero_model.text_encoder import PromptTokenizer

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")


def build_tiny_tokenizer() -> PromptTokenizer:
    """The byte-level prompt tokenizer; save it with ``.tokenizer.save_pretrained(path)``."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: index for index, token in enumerate([*SPECIAL_TOKENS, *alphabet])}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    return PromptTokenizer(fast)
