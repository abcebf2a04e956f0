"""Self-attention KV cache of one context (facts §2.5).

Per layer, keys (after RoPE) and values of the ground-truth video tokens of the current context:
the conditioning frame and the observed frames of each executed chunk. Action and state tokens
and predicted frames are never cached. Preallocated for the whole local window (9 latent frames),
so appending never reallocates. Imports torch only.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LayerCache:
    """Views of one layer's cached keys and values, float[B, max_tokens, H, Dh] each."""

    k: torch.Tensor
    v: torch.Tensor

    def write(self, offset: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v float[B, n, H, Dh] at token positions offset .. offset + n."""
        end = offset + k.shape[1]
        if end > self.k.shape[1]:
            raise ValueError(f"KV cache overflow: writing tokens {offset}..{end} into a cache of {self.k.shape[1]}")
        self.k[:, offset:end] = k
        self.v[:, offset:end] = v

    def read(self, tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``tokens`` cached keys and values: float[B, tokens, H, Dh] each."""
        return self.k[:, :tokens], self.v[:, :tokens]


@dataclass(frozen=True)
class KVCache:
    """Keys and values float[layers, B, max_tokens, H, Dh]; the session tracks which tokens are valid.

    :meth:`zeros` allocates one context's cache; a cache built directly over existing tensors is a view the
    caller assembled (the sessions' caches stacked along B for one batched denoising pass, which only reads).
    """

    k: torch.Tensor
    v: torch.Tensor

    @classmethod
    def zeros(cls, num_layers: int, batch: int, max_tokens: int, num_heads: int, head_dim: int,
              device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> KVCache:
        shape = (num_layers, batch, max_tokens, num_heads, head_dim)
        return cls(torch.zeros(shape, device=device, dtype=dtype), torch.zeros(shape, device=device, dtype=dtype))

    @property
    def max_tokens(self) -> int:
        return self.k.shape[2]

    def layer(self, index: int) -> LayerCache:
        return LayerCache(self.k[index], self.v[index])
