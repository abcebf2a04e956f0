"""Training samples: dataset statistics, the sample stream, and one sample's tensors (facts §1.7-1.10).

A sample is a pure function of (seed, stream, sample index): its random generator is seeded with
those three numbers and draws, in order, the start row (uniform over every start of the stream's
episodes that yields a chunk, :func:`~dreamzero_model.training.sampling.usable_starts`), the
instruction (one of the annotation columns at random, as DROID's three instructions, facts §1.4)
and the augmentation. So a run that resumes at step s reads exactly the samples it would have read,
on any number of processes and DataLoader workers, without saving any data-loader state.

Per sample (facts §1.8-1.10): the clip's frames through the live image path (:mod:`.images`), unless
the run's encoding cache (:mod:`.encodings`, ``encoded``) already holds the clip's encodings; per
chunk the state at its anchor and the 24 actions after it; relative action keys minus the same key's
state at the chunk's anchor; q99 normalisation with the dataset statistics (those written to the
checkpoint); zero padding to the model's 64 state / 32 action dims with masks of the real ones.

Dimensions: K chunks, T = 8K + 1 frames, h x w mosaic pixels, S/A embodiment dims padded to Sp/Ap.
Imports numpy, torch (the Dataset base class) and the sibling modules.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from dreamzero_model.metadata import EmbodimentMetadata, KeyLayout
from dreamzero_model.training.encodings import EncodingCache
from dreamzero_model.training.images import Augmentation, clip_mosaics
from dreamzero_model.training.lerobot import EpisodeData, LeRobotDataset
from dreamzero_model.training.sampling import Clip, SamplingConfig, clip_for_start, start_steps

TRAIN_STREAM, VALIDATION_STREAM, VAE_STREAM = 0, 1, 2
EPISODE_CACHE = 16  # episodes' rows kept per worker (a few kB each)


def dataset_metadata(dataset: LeRobotDataset, sampling: SamplingConfig) -> EmbodimentMetadata:
    """The checkpoint metadata of a model trained on ``dataset``: its statistics under the embodiment tag."""
    spec = dataset.spec
    state_stats, action_stats = dataset.statistics(sampling.horizon)
    return EmbodimentMetadata(
        tag=spec.embodiment_tag, video_keys=tuple(c.key for c in spec.cameras),
        video_resolutions={c.key: dataset.resolutions[c.key] for c in spec.cameras},
        state_keys=tuple(KeyLayout(k.key, k.dim, state_stats[k.key]) for k in spec.state),
        action_keys=tuple(KeyLayout(k.key, k.dim, action_stats[k.key]) for k in spec.action),
        relative_action_keys=tuple(k.key for k in spec.action if k.relative), max_chunk_size=sampling.max_chunks,
        tokenizer_path=None, save_lora_only=False)


def split_episodes(count: int, validation: int, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) episode indices: ``validation`` episodes held out by a seeded permutation."""
    if validation < 0 or validation >= count:
        raise ValueError(f"cannot hold out {validation} of {count} episodes for validation (at least one must train)")
    order = np.random.default_rng([seed, 7]).permutation(count)
    return sorted(int(e) for e in order[validation:]), sorted(int(e) for e in order[:validation])


@dataclass(frozen=True)
class Sample:
    """One training sample.

    Attributes:
        index: position in its stream. episode: episode index. anchors: int64[K] chunk start rows.
        video: uint8[T, h, w, 3] mosaics, or None when the stream's encoding cache holds the clip's encodings.
        state: float32[K, Sp] normalised, zero-padded.
        actions: float32[24K, Ap] normalised (relative keys relative to each chunk's anchor state).
        state_mask: float32[Sp], action_mask: float32[Ap]: 1 on real dimensions. instruction: text.
    """

    index: int
    episode: int
    anchors: np.ndarray
    video: np.ndarray | None
    state: np.ndarray
    actions: np.ndarray
    state_mask: np.ndarray
    action_mask: np.ndarray
    instruction: str

    @property
    def num_chunks(self) -> int:
        return int(self.anchors.size)


class SampleStream(torch.utils.data.Dataset):
    """Map-style dataset: sample index -> :class:`Sample` of one stream over a set of episodes.

    Indexing is unbounded (any non-negative int); a sampler decides which indices a process reads.
    ``encoded``: the run's encoding cache once the encoders are final (the trainer sets it), or None.
    """

    def __init__(self, dataset: LeRobotDataset, metadata: EmbodimentMetadata, episodes: list[int], stream: int,
                 seed: int, mosaic_size: tuple[int, int], padded_dims: tuple[int, int],
                 sampling: SamplingConfig = SamplingConfig(), augmentation: Augmentation | None = None) -> None:
        self.dataset, self.metadata, self.episodes = dataset, metadata, list(episodes)
        self.stream, self.seed, self.sampling, self.augmentation = stream, seed, sampling, augmentation
        self.mosaic_size, (self.state_width, self.action_width) = tuple(mosaic_size), padded_dims
        if metadata.state_dim > self.state_width or metadata.action_dim > self.action_width:
            raise ValueError(f"state {metadata.state_dim} / action {metadata.action_dim} dims exceed the model's "
                             f"{self.state_width} / {self.action_width}")
        self._cache: OrderedDict[int, EpisodeData] = OrderedDict()
        self.encoded: EncodingCache | None = None
        self.starts = self._usable_starts()
        if not len(self.starts):
            raise ValueError(f"{dataset.root}: no episode among {len(self.episodes)} has a start step with a full "
                             f"chunk ({sampling.horizon + 1} rows needed)")
        spec = dataset.spec
        self._relative = [(dataset.action_columns(k.key), dataset.state_columns(k.key)) for k in spec.action
                          if k.relative]

    def _usable_starts(self) -> np.ndarray:
        """int64[M, 2] (episode, start), as :func:`~dreamzero_model.training.sampling.usable_starts`.

        An episode with one instruction (every row the same language) depends only on its length, so
        starts are computed once per length; others row by row. The dataset's step filter then removes
        its excluded starts (``meta/step_filter.jsonl``).
        """
        by_length: dict[int, list[int]] = {}
        rows = []
        for episode in self.episodes:
            length = self.dataset.lengths[episode]
            language = self._language(episode)
            if language is None:
                if length not in by_length:
                    by_length[length] = [s for s in start_steps(length, self.sampling)
                                         if clip_for_start(s, length, None, self.sampling) is not None]
                starts = by_length[length]
            else:
                starts = [s for s in start_steps(length, self.sampling)
                          if clip_for_start(s, length, language, self.sampling) is not None]
            excluded = self.dataset.excluded_starts.get(episode, frozenset())
            rows.extend((episode, s) for s in starts if s not in excluded)
        return np.asarray(rows, dtype=np.int64).reshape(-1, 2)

    def _language(self, episode: int) -> np.ndarray | None:
        language = self._episode(episode).language
        return None if (language == language[0]).all() else language

    def _episode(self, episode: int) -> EpisodeData:
        cache = self._cache
        if episode in cache:
            cache.move_to_end(episode)
            return cache[episode]
        data = self.dataset.read_episode(episode)
        cache[episode] = data
        while len(cache) > EPISODE_CACHE:
            cache.popitem(last=False)
        return data

    def __len__(self) -> int:
        return len(self.starts)

    def clip(self, index: int) -> tuple[int, Clip, np.random.Generator]:
        """(episode, clip, generator) of sample ``index``; the generator has drawn the start."""
        rng = np.random.default_rng([self.seed, self.stream, index])
        episode, start = (int(v) for v in self.starts[rng.integers(len(self.starts))])
        data = self._episode(episode)
        language = None if (data.language == data.language[0]).all() else data.language
        clip = clip_for_start(start, len(data.action), language, self.sampling)
        assert clip is not None, "usable_starts lists only starts with a chunk"
        return episode, clip, rng

    def __getitem__(self, index: int) -> Sample:
        episode, clip, rng = self.clip(int(index))
        data = self._episode(episode)
        candidates = data.instructions
        instruction = candidates[int(rng.integers(len(candidates)))][int(clip.anchors[0])]
        video = None
        if self.encoded is None or not self.encoded.has(episode, int(clip.anchors[0]), clip.num_chunks):
            frames = {c.key: self.dataset.read_frames(episode, c.key, data.timestamps[clip.frame_steps])
                      for c in self.dataset.spec.cameras}
            video = clip_mosaics(frames, self.dataset.spec, self.mosaic_size, self.augmentation,
                                 rng if self.augmentation is not None else None)
        state, actions = self._vectors(data, clip)
        state_mask = np.zeros(self.state_width, np.float32)
        state_mask[:self.metadata.state_dim] = 1.0
        action_mask = np.zeros(self.action_width, np.float32)
        action_mask[:self.metadata.action_dim] = 1.0
        return Sample(index=int(index), episode=episode, anchors=clip.anchors, video=video, state=state,
                      actions=actions, state_mask=state_mask, action_mask=action_mask, instruction=instruction)

    def _vectors(self, data: EpisodeData, clip: Clip) -> tuple[np.ndarray, np.ndarray]:
        """Normalised, padded state float32[K, Sp] and actions float32[24K, Ap] (facts §1.9-1.10)."""
        horizon = self.sampling.horizon
        state = data.state[clip.anchors]  # K, S
        actions = data.action[clip.action_steps].copy()  # 24K, A
        anchor_state = np.repeat(state, horizon, axis=0)  # 24K, S: each chunk's anchor state
        for action_columns, state_columns in self._relative:
            actions[:, action_columns] -= anchor_state[:, state_columns]
        padded_state = np.zeros((len(state), self.state_width), np.float32)
        padded_state[:, :state.shape[1]] = self.metadata.state_normalizer.normalize(state)
        padded_actions = np.zeros((len(actions), self.action_width), np.float32)
        padded_actions[:, :actions.shape[1]] = self.metadata.action_normalizer.normalize(actions)
        return padded_state, padded_actions


def step_indices(step: int, global_batch: int, rank: int, world_size: int) -> list[int]:
    """Stream indices rank ``rank`` reads at optimizer step ``step``: its slice of the global batch."""
    local = global_batch // world_size
    first = step * global_batch + rank * local
    return list(range(first, first + local))


class StepSampler(torch.utils.data.Sampler[int]):
    """Stream indices of steps ``start_step .. end_step - 1`` for one rank, in order (resumable by step)."""

    def __init__(self, start_step: int, end_step: int, global_batch: int, rank: int = 0, world_size: int = 1) -> None:
        if global_batch % world_size:
            raise ValueError(f"global batch {global_batch} is not divisible by {world_size} processes")
        self.start_step, self.end_step = start_step, end_step
        self.global_batch, self.rank, self.world_size = global_batch, rank, world_size

    def __iter__(self):
        for step in range(self.start_step, self.end_step):
            yield from step_indices(step, self.global_batch, self.rank, self.world_size)

    def __len__(self) -> int:
        return max(0, self.end_step - self.start_step) * (self.global_batch // self.world_size)


def collate_samples(samples: list[Sample]) -> list[Sample]:
    """Keep samples as a list: they may differ in chunk count (the trainer groups them)."""
    return samples


def make_loader(stream: SampleStream, sampler: StepSampler, workers: int) -> torch.utils.data.DataLoader:
    """Batches of one rank's samples per step, decoded by ``workers`` processes (0: in this process)."""
    local_batch = sampler.global_batch // sampler.world_size
    return torch.utils.data.DataLoader(stream, batch_size=local_batch, sampler=sampler, num_workers=workers,
                                       collate_fn=collate_samples, persistent_workers=False,
                                       prefetch_factor=2 if workers else None)


__all__ = ["Augmentation", "Sample", "SampleStream", "StepSampler", "TRAIN_STREAM", "VAE_STREAM", "VALIDATION_STREAM",
           "collate_samples", "dataset_metadata", "make_loader", "split_episodes", "step_indices"]

