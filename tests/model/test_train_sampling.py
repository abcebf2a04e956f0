"""The official chunk sampler (facts §1.8; training-serving-facts §2.5, §7): anchors, frames, chunk counts.

Reference values come from the rules as the facts state them, worked by hand for a table of cases
and by an independent brute-force reading of the same rules for many random episodes.
"""
from __future__ import annotations

import numpy as np
import pytest

from dreamzero_model.training.sampling import SamplingConfig, clip_for_start, start_steps, usable_starts

H = 24  # actions per chunk (facts §1.3)


def _reference_anchors(start: int, length: int, language) -> list[int]:
    """Facts §1.8 + training-serving-facts §7, read literally: candidates s, s-24, s+24, s-48, s+48, ...;
    a direction ends at its first candidate outside the episode or with another annotation than s;
    a candidate counts if a + 23 < L; the first 4 counted, sorted; the last is cut if its closing frame
    (a + 24) is not inside the episode."""
    def same(step):
        return language is None or language[step] == language[start]

    candidates, back_open, forward_open = [start], True, True
    for k in range(1, length // H + 2):
        for sign in (-1, 1):
            anchor = start + sign * H * k
            is_open = back_open if sign < 0 else forward_open
            if not is_open:
                continue
            if not 0 <= anchor < length or not same(anchor):
                if sign < 0:
                    back_open = False
                else:
                    forward_open = False
                continue
            candidates.append(anchor)
    kept = sorted([a for a in candidates if a + H - 1 < length][:4])
    if kept and kept[-1] + H >= length:
        kept = kept[:-1]
    return kept


@pytest.mark.parametrize("length, start, language_change, anchors", [
    (120, 72, None, [24, 48, 72]),          # training-serving-facts §7's example: 96 is cut (frame 120 is past the end)
    (200, 100, None, [52, 76, 100, 124]),   # back 76, forward 124, back 52: four
    (200, 10, None, [10, 34, 58, 82]),      # nothing behind: forward only
    (25, 0, None, [0]),                     # the shortest episode with a chunk: 24 actions + the closing frame
    (48, 24, None, [0]),                    # s = L - 24: its chunk is cut, the one before it stays
    (200, 100, 90, [100, 124, 148, 172]),   # rows >= 90 have another instruction: 76 is refused, forward continues
    (130, 70, 60, [70, 94]),                # language behind, episode end ahead (118 + 23 >= 130)
])
def test_anchors_follow_the_official_rules(length, start, language_change, anchors) -> None:
    language = None if language_change is None else np.array([0] * language_change + [1] * (length - language_change))
    clip = clip_for_start(start, length, language)
    assert clip.anchors.tolist() == anchors
    assert anchors == _reference_anchors(start, length, language)


def test_frames_are_8_per_chunk_at_stride_3_plus_the_closing_frame() -> None:
    clip = clip_for_start(100, 200, None)
    expected = [a + 3 * i for a in (52, 76, 100, 124) for i in range(8)] + [148]
    assert clip.frame_steps.tolist() == expected
    assert clip.frame_steps.size == 33 and clip.num_chunks == 4
    assert clip.action_steps.tolist() == list(range(52, 148))


def test_the_last_frame_of_a_chunk_is_the_next_chunk_anchor_frame() -> None:
    clip = clip_for_start(72, 120, None)
    frames = clip.frame_steps.reshape(-1)
    assert frames.size == 8 * 3 + 1
    for chunk, anchor in enumerate(clip.anchors[1:], start=1):
        assert frames[8 * chunk] == anchor
    assert frames[-1] == 96  # the cut chunk's anchor closes the clip


def test_an_episode_of_24_steps_has_no_sample() -> None:
    assert list(start_steps(24)) == [0]
    assert clip_for_start(0, 24, None) is None
    assert usable_starts([24], [None]).shape == (0, 2)


def test_usable_starts_are_the_starts_up_to_length_minus_24_with_a_chunk() -> None:
    # L = 30: starts 0..6; start 6's only chunk closes at 30 (outside), so 0..5 remain (facts §1.8).
    rows = usable_starts([30, 50], [None, None])
    assert rows[rows[:, 0] == 0, 1].tolist() == [0, 1, 2, 3, 4, 5]
    # L = 50: starts 0..26; 26 keeps its chunk only if a + 24 < 50: 26 + 24 = 50 is cut, but 2 (26 - 24) remains.
    assert rows[rows[:, 0] == 1, 1].tolist() == list(range(27))
    assert clip_for_start(26, 50, None).anchors.tolist() == [2]


def test_many_random_episodes_match_the_reference_reading() -> None:
    rng = np.random.default_rng(0)
    for _ in range(300):
        length = int(rng.integers(20, 260))
        language = None
        if rng.random() < 0.5:
            cuts = np.sort(rng.integers(0, length, size=int(rng.integers(1, 4))))
            language = np.searchsorted(cuts, np.arange(length), side="right")
        for start in start_steps(length):
            clip = clip_for_start(start, length, language)
            expected = _reference_anchors(start, length, language)
            assert (clip.anchors.tolist() if clip is not None else []) == expected, (length, start)
            if clip is not None:
                assert clip.frame_steps.size == 8 * clip.num_chunks + 1 <= 33
                assert clip.frame_steps[-1] < length and clip.action_steps[-1] < length
                assert np.all(np.diff(clip.anchors) == H)


def test_max_chunks_bounds_the_context() -> None:
    clip = clip_for_start(100, 400, None, SamplingConfig(max_chunks=2))
    assert clip.anchors.tolist() == [76, 100]


def test_a_start_stride_keeps_every_nth_start() -> None:
    """--start-stride 3: starts 0, 3, 6, ... (fewer distinct clips for a run that caches its encodings)."""
    assert list(start_steps(30, SamplingConfig(start_stride=3))) == [0, 3, 6]
    assert list(start_steps(30)) == list(range(7))
    with pytest.raises(ValueError):
        SamplingConfig(start_stride=0)
