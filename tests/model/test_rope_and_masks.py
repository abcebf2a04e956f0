"""RoPE split and positions, and the causal chunk masks (facts §2.3-2.4)."""
from __future__ import annotations

import torch

from dreamzero_model.masks import inference_mask, teacher_forcing_mask
from dreamzero_model.rope import apply_rope, sequence_angles, video_angles, video_rope_split


def test_video_rope_split_is_22_21_21_for_head_dim_128() -> None:
    assert video_rope_split(128) == (22, 21, 21)


def test_video_angles_encode_time_height_width_in_their_own_pairs() -> None:
    angles = video_angles(torch.tensor([3, 5]), grid_h=2, grid_w=4, head_dim=128, theta=10000.0)
    assert angles.shape == (2 * 2 * 4, 64)
    token = 1 * 8 + 1 * 4 + 2  # frame 5, row 1, col 2
    assert angles[token, 0].item() == 5.0  # time pair 0 has frequency 1
    assert angles[token, 22].item() == 1.0  # height pair 0
    assert angles[token, 43].item() == 2.0  # width pair 0
    inv = 10000.0 ** (-torch.arange(0, 44, 2, dtype=torch.float64) / 44)
    assert torch.allclose(angles[token, :22], 5.0 * inv)


def test_rope_rotation_preserves_norm_and_relative_positions() -> None:
    generator = torch.Generator().manual_seed(0)
    q = torch.randn(1, 1, 2, 128, generator=generator)
    k = torch.randn(1, 1, 2, 128, generator=generator)

    def score(pos_q: int, pos_k: int) -> torch.Tensor:
        rq = apply_rope(q, sequence_angles(torch.tensor([pos_q]), 128, 10000.0))
        rk = apply_rope(k, sequence_angles(torch.tensor([pos_k]), 128, 10000.0))
        return (rq * rk).sum(-1)

    rotated = apply_rope(q, sequence_angles(torch.tensor([7]), 128, 10000.0))
    assert torch.allclose(rotated.norm(dim=-1), q.norm(dim=-1), atol=1e-5)
    assert torch.allclose(score(10, 3), score(27, 20), atol=1e-4)
    assert not torch.allclose(score(10, 3), score(10, 4), atol=1e-3)


def _blocks(mask: torch.Tensor, sizes: list[tuple[str, int]]) -> dict[tuple[str, str], bool | None]:
    """Summarise a mask by named token groups: True all, False none, None mixed."""
    bounds, start = {}, 0
    for name, size in sizes:
        bounds[name] = (start, start + size)
        start += size
    summary = {}
    for q, (q0, q1) in bounds.items():
        for k, (k0, k1) in bounds.items():
            block = mask[q0:q1, k0:k1]
            summary[q, k] = True if block.all() else False if not block.any() else None
    return summary


def test_teacher_forcing_mask_follows_the_published_chunk_rules() -> None:
    tokens = 3  # per frame
    mask = teacher_forcing_mask(num_chunks=2, frame_tokens=tokens, frames_per_block=2, actions_per_block=4,
                                states_per_block=1)
    groups = [("c0", tokens), ("c1", 2 * tokens), ("c2", 2 * tokens), ("n0", tokens), ("n1", 2 * tokens),
              ("n2", 2 * tokens), ("a1", 4), ("a2", 4), ("s1", 1), ("s2", 1)]
    attends = _blocks(mask, groups)
    allowed = {
        "c0": {"c0"}, "c1": {"c0", "c1"}, "c2": {"c0", "c1", "c2"},
        "n0": {"n0"},
        "n1": {"c0", "n1", "a1", "s1"}, "a1": {"c0", "n1", "a1", "s1"},
        "n2": {"c0", "c1", "n2", "a2", "s2"}, "a2": {"c0", "c1", "n2", "a2", "s2"},
        "s1": {"s1"}, "s2": {"s2"},
    }
    for (q, k), value in attends.items():
        assert value is (k in allowed[q]), f"{q} -> {k}"


def test_inference_mask_lets_the_query_see_all_clean_frames_and_itself() -> None:
    mask = inference_mask(num_clean_frames=3, frame_tokens=2, frames_per_block=2, query_tokens=5)
    attends = _blocks(mask, [("c0", 2), ("c1", 4), ("q", 5)])
    assert attends == {("c0", "c0"): True, ("c0", "c1"): False, ("c0", "q"): False,
                       ("c1", "c0"): True, ("c1", "c1"): True, ("c1", "q"): False,
                       ("q", "c0"): True, ("q", "c1"): True, ("q", "q"): True}
