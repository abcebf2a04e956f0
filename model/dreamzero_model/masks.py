"""Attention masks of the causal DiT: teacher forcing (facts §2.4) and full-context inference.

Each token is labelled with a kind (clean video, noisy video, action, state) and a chunk index
(-1 for the conditioning frame 0, else 0..K-1). Masks are bool[L, L], True where the query (row)
may attend the key (column), in the token order of :class:`dreamzero_model.dit.DiTInputs`.
Imports torch only.
"""
from __future__ import annotations

import torch

CLEAN, NOISY, ACTION, STATE = 0, 1, 2, 3


def frame_chunks(num_frames: int, frames_per_block: int) -> torch.Tensor:
    """int64[num_frames]: chunk of each latent frame; frame 0 is the conditioning frame (-1)."""
    frames = torch.arange(num_frames)
    return torch.where(frames == 0, -1, (frames - 1) // frames_per_block)


def _labels(groups: list[tuple[int, torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Expand (kind, chunk per element, tokens per element) groups into per-token kind and chunk."""
    kinds, chunks = [], []
    for kind, chunk, tokens in groups:
        chunks.append(chunk.repeat_interleave(tokens))
        kinds.append(torch.full((chunk.numel() * tokens,), kind))
    return torch.cat(kinds), torch.cat(chunks)


def _clean_rows(kind_k: torch.Tensor, chunk_q: torch.Tensor, chunk_k: torch.Tensor) -> torch.Tensor:
    """Clean video attends clean video of its own and earlier chunks (block-causal)."""
    return (kind_k == CLEAN) & (chunk_k <= chunk_q)


def teacher_forcing_mask(num_chunks: int, frame_tokens: int, frames_per_block: int, actions_per_block: int,
                         states_per_block: int) -> torch.Tensor:
    """Training mask over [clean frames][noisy frames][actions][states] (facts §2.4).

    Clean block i sees clean frame 0 and clean blocks <= i. Noisy frame 0 sees itself. Noisy block i
    and action block i see clean frame 0, clean blocks < i, noisy block i, action block i and state
    i. State i sees itself. Nothing sees a later chunk.
    """
    num_frames = 1 + num_chunks * frames_per_block
    chunk_of_frame = frame_chunks(num_frames, frames_per_block)
    per_chunk = torch.arange(num_chunks)
    kind, chunk = _labels([(CLEAN, chunk_of_frame, frame_tokens), (NOISY, chunk_of_frame, frame_tokens),
                           (ACTION, per_chunk, actions_per_block), (STATE, per_chunk, states_per_block)])
    kq, kk, cq, ck = kind[:, None], kind[None, :], chunk[:, None], chunk[None, :]
    same_chunk_noisy_side = (kk != CLEAN) & (ck == cq)
    rows = {
        CLEAN: _clean_rows(kk, cq, ck),
        NOISY: torch.where(cq < 0, (kk == NOISY) & (ck < 0), ((kk == CLEAN) & (ck < cq)) | same_chunk_noisy_side),
        ACTION: ((kk == CLEAN) & (ck < cq)) | same_chunk_noisy_side,
        STATE: (kk == STATE) & (ck == cq),
    }
    mask = torch.zeros(kind.numel(), kind.numel(), dtype=torch.bool)
    for row_kind, allowed in rows.items():
        mask |= (kq == row_kind) & allowed
    return mask


def inference_mask(num_clean_frames: int, frame_tokens: int, frames_per_block: int, query_tokens: int) -> torch.Tensor:
    """Full-recompute equivalent of one cached denoising call.

    Sequence: [clean frames 0..n-1][query: new noisy frames, actions, state]. Clean frames attend
    block-causally as when they were written to the cache; query tokens attend every clean frame
    and each other freely, as in the official cached inference (facts §9, "Inference attention
    differs from training mask").
    """
    kind, chunk = _labels([(CLEAN, frame_chunks(num_clean_frames, frames_per_block), frame_tokens)])
    clean = _clean_rows(kind[None, :], chunk[:, None], chunk[None, :])
    total = clean.shape[0] + query_tokens
    mask = torch.ones(total, total, dtype=torch.bool)
    mask[:clean.shape[0]] = False
    mask[:clean.shape[0], :clean.shape[0]] = clean
    return mask
