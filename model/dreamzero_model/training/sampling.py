"""The official chunk sampler: which steps of an episode one training sample holds (facts §1.8).

Rules, as the official DROID-style dataset applies them (facts §1.8; training-serving-facts §2.5, §7):

* Start steps: every step s with s <= L - horizon of an episode of L steps, drawn uniformly over the
  whole dataset, except those the dataset's ``meta/step_filter.jsonl`` lists (the official loader
  never draws them either; ``SampleStream`` removes them); a start that yields no complete chunk is
  skipped. ``start_stride`` > 1 (not official) keeps every n-th start only: fewer distinct clips, so
  a run that caches its encodings (``dreamzero train --cache-encodings``) encodes each of them once and
  then reuses it.
* Anchors: from s, candidates are tried outward, alternately backwards (s - 24k) and forwards
  (s + 24k), k = 1, 2, ..., after s itself. A direction stops for good at the first candidate
  outside the episode or whose language annotation differs from the one at s. A candidate is kept
  when a + 23 < L and fewer than ``max_chunks`` (4) anchors are held. Anchors are sorted ascending.
* Frames: per anchor a, the 8 frames a, a + 3, ..., a + 21, plus one closing frame 3 steps after the
  last (last anchor + 24), so a clip has 8K + 1 frames. When the closing frame would lie beyond the
  episode (the last anchor is L - 24), that last chunk is dropped and its anchor frame closes the
  clip instead. A clip without a chunk (fewer than 9 frames) is no sample.
* Per chunk: actions at steps a .. a + 23, the state at step a.

So each chunk's two latent frames show the 24 steps after its anchor (facts §1.8), and the last
frame of a chunk is the next chunk's anchor frame. Pure Python and numpy; no file access.

Dimensions: K chunks (1..4), T = 8K + 1 frames, N = 24 K action steps.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SamplingConfig:
    """Chunking of one sample (facts §1.3, §1.8).

    Attributes:
        horizon: action steps per chunk (24). frame_stride: steps between video frames (3).
        max_chunks: chunks per sample, the KV context (4). start_stride: steps between start steps
        (1, official: every step).
    """

    horizon: int = 24
    frame_stride: int = 3
    max_chunks: int = 4
    start_stride: int = 1

    def __post_init__(self) -> None:
        if min(self.horizon, self.frame_stride, self.max_chunks, self.start_stride) < 1:
            raise ValueError(f"horizon, frame_stride and max_chunks must be >= 1, got {self}")
        if self.horizon % self.frame_stride:
            raise ValueError(f"horizon {self.horizon} is not a multiple of frame_stride {self.frame_stride}")

    @property
    def frames_per_chunk(self) -> int:
        """Video frames per chunk (8): 2 latent frames of the causal VAE (facts §1.8)."""
        return self.horizon // self.frame_stride


@dataclass(frozen=True)
class Clip:
    """The steps of one sample.

    Attributes:
        anchors: int64[K], chunk start steps, ascending, 24 apart.
        frame_steps: int64[8K + 1], steps whose video frames the clip shows.
        action_steps: int64[24K], steps whose actions are predicted (chunk k: rows 24k .. 24k + 23).
    """

    anchors: np.ndarray
    frame_steps: np.ndarray
    action_steps: np.ndarray

    @property
    def num_chunks(self) -> int:
        return int(self.anchors.size)


def start_steps(length: int, config: SamplingConfig = SamplingConfig()) -> range:
    """Start steps of an episode of ``length`` steps: 0 .. L - horizon every ``start_stride`` (may be empty)."""
    return range(0, max(0, length - config.horizon + 1), config.start_stride)


def chunk_anchors(start: int, length: int, language: Sequence | np.ndarray | None = None,
                  config: SamplingConfig = SamplingConfig()) -> list[int]:
    """Anchors kept by the outward search from ``start`` (module docstring), ascending.

    Args:
        start: the drawn step, clamped into the episode.
        length: L, steps in the episode.
        language: per step, the value of the episode's language annotation (any comparable values),
            or None when the episode has a single instruction.
    """
    start = max(0, min(int(start), length - 1))
    horizon = config.horizon
    anchors: list[int] = []

    def keep(anchor: int) -> None:
        if anchor + horizon - 1 < length and len(anchors) < config.max_chunks:
            anchors.append(anchor)

    def same_language(step: int) -> bool:
        return language is None or language[step] == language[start]

    keep(start)
    backward = forward = True
    step = 1
    while len(anchors) < config.max_chunks and (backward or forward):
        if backward:
            candidate = start - horizon * step
            if candidate < 0 or not same_language(candidate):
                backward = False
            else:
                keep(candidate)
        if len(anchors) >= config.max_chunks:
            break
        if forward:
            candidate = start + horizon * step
            if candidate >= length or not same_language(candidate):
                forward = False
            else:
                keep(candidate)
        step += 1
    return sorted(anchors)


def clip_for_start(start: int, length: int, language: Sequence | np.ndarray | None = None,
                   config: SamplingConfig = SamplingConfig()) -> Clip | None:
    """The sample drawn at ``start``, or None when it holds no complete chunk (module docstring)."""
    anchors = chunk_anchors(start, length, language, config)
    if anchors and anchors[-1] + config.horizon >= length:
        anchors = anchors[:-1]  # its closing frame would pass the end: the chunk is cut
    if not anchors:
        return None
    anchor_array = np.asarray(anchors, dtype=np.int64)
    offsets = np.arange(0, config.horizon, config.frame_stride, dtype=np.int64)
    frames = np.concatenate([(anchor_array[:, None] + offsets).ravel(), anchor_array[-1:] + config.horizon])
    actions = (anchor_array[:, None] + np.arange(config.horizon, dtype=np.int64)).ravel()
    return Clip(anchors=anchor_array, frame_steps=frames, action_steps=actions)


def usable_starts(lengths: Sequence[int], languages: Sequence[Sequence | np.ndarray | None],
                  config: SamplingConfig = SamplingConfig()) -> np.ndarray:
    """Every (episode position, start) that yields a sample: int64[M, 2], in episode then step order.

    Drawing uniformly from these rows is drawing uniformly from all start steps and skipping the ones
    without a chunk, as the official loader does.

    Args:
        lengths: steps per episode. languages: per episode, as ``language`` of :func:`chunk_anchors`.
    """
    rows = [(position, start) for position, (length, language) in enumerate(zip(lengths, languages))
            for start in start_steps(length, config) if clip_for_start(start, length, language, config) is not None]
    return np.asarray(rows, dtype=np.int64).reshape(-1, 2)
