"""q99 normalisation of state and action vectors (facts §1.10).

Forward: x_n = 2 (x - q01) / (q99 - q01) - 1, then clamped to [-1, 1]; dimensions with
q01 == q99 pass through unnormalised (and are clamped too). Inverse: x = (x_n + 1) / 2 (q99 - q01)
+ q01, NOT clamped, so de-normalised actions may leave [q01, q99]; on a constant dimension this is
q01 whatever the model predicted (facts §10: a joint that never moved in the training data comes
back as its constant). Statistics always come from the checkpoint's ``metadata.json`` and are held
as float32, as the official loader holds them (``torch.tensor(list)``), so "constant" means equal
in float32; the arithmetic runs in float64 on those float32 values. Imports numpy only.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Q99Normalizer:
    """Per-dimension q01/q99 statistics of one concatenated state or action vector.

    Attributes:
        q01: float32[D], 1st percentile per dimension (units of the raw data: rad, m, gripper units).
        q99: float32[D], 99th percentile per dimension.
    """

    q01: np.ndarray
    q99: np.ndarray

    def __post_init__(self) -> None:
        q01, q99 = np.asarray(self.q01, dtype=np.float32), np.asarray(self.q99, dtype=np.float32)
        if q01.shape != q99.shape or q01.ndim != 1:
            raise ValueError(f"q01 {q01.shape} and q99 {q99.shape} must be equal-length vectors")
        object.__setattr__(self, "q01", q01)
        object.__setattr__(self, "q99", q99)

    @property
    def dim(self) -> int:
        return self.q01.shape[0]

    @property
    def _span(self) -> np.ndarray:
        """float64[D]: q99 - q01 of the float32 statistics (0 on a constant dimension)."""
        return self.q99.astype(np.float64) - self.q01.astype(np.float64)

    def _check(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.shape[-1] != self.dim:
            raise ValueError(f"expected last dimension {self.dim}, got shape {x.shape}")
        return x

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """float64[..., D] raw -> float64[..., D] in [-1, 1]."""
        x = self._check(x)
        constant = self._span == 0
        scaled = 2.0 * (x - self.q01.astype(np.float64)) / np.where(constant, 1.0, self._span) - 1.0
        return np.clip(np.where(constant, x, scaled), -1.0, 1.0)

    def unnormalize(self, x_n: np.ndarray) -> np.ndarray:
        """float64[..., D] normalised -> float64[..., D] raw (not clamped); q01 on constant dimensions."""
        x_n = self._check(x_n)
        return (x_n + 1.0) / 2.0 * self._span + self.q01.astype(np.float64)
