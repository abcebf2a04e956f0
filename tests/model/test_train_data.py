"""The LeRobot reader and training samples (facts §1.7-1.10; training-serving-facts §1-2) on a written dataset."""
from __future__ import annotations

import json
import re
import shutil

import av
import numpy as np
import pytest
import torch

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_embodiments.stitching import resize_to, stitch_frames
from dreamzero_model.training.data import (Augmentation, SampleStream, StepSampler, dataset_metadata, make_loader,
                                           split_episodes, step_indices)
from dreamzero_model.training.images import color_jitter
from dreamzero_model.training.lerobot import DatasetError, LeRobotDataset
from dreamzero_model.training.sampling import SamplingConfig
from training_datasets import synthetic_episode, write_dataset

LENGTHS = (40, 75, 30)
SPEC = load_embodiment("droid")
MOSAIC = (32, 64)  # the tiny model's mosaic


@pytest.fixture(scope="module")
def dataset_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("data") / "droid", LENGTHS)


@pytest.fixture(scope="module")
def dataset(dataset_root):
    return LeRobotDataset(dataset_root, SPEC)


@pytest.fixture(scope="module")
def metadata(dataset):
    return dataset_metadata(dataset, SamplingConfig())


def _stream(dataset, metadata, augmentation=None, episodes=(0, 1, 2), seed=3):
    return SampleStream(dataset, metadata, list(episodes), 0, seed, MOSAIC, (64, 32), SamplingConfig(), augmentation)


def test_reader_returns_the_written_rows_in_embodiment_order(dataset) -> None:
    episode = synthetic_episode(SPEC, 1, LENGTHS[1], "Hold the squares.")
    data = dataset.read_episode(1)
    np.testing.assert_array_equal(data.state, episode.state.astype(np.float64))
    np.testing.assert_array_equal(data.action, episode.action.astype(np.float64))
    np.testing.assert_allclose(data.timestamps, np.arange(LENGTHS[1]) / 15.0, atol=1e-6)
    assert set(data.instructions[0]) == {"Hold the squares."} and len(data.instructions) == 3


def test_frames_are_the_video_frames_at_the_row_timestamps(dataset) -> None:
    path = dataset.video_file(1, "wrist_image_left")
    with av.open(str(path)) as container:
        every = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    assert len(every) == LENGTHS[1]
    steps = np.array([0, 3, 27, 51, 74])
    frames = dataset.read_frames(1, "wrist_image_left", dataset.read_episode(1).timestamps[steps])
    for frame, step in zip(frames, steps):
        np.testing.assert_array_equal(frame, every[step])


def test_sample_actions_are_relative_to_each_chunk_anchor_and_q99_normalised(dataset_root, dataset, metadata) -> None:
    """Reference from the files and facts §1.9-1.10 alone: joint actions minus the joint state at each chunk's
    anchor (gripper absolute), x_n = clip(2 (x - q01) / (q99 - q01) - 1, -1, 1), zero padding to 32."""
    stats = json.loads((dataset_root / "meta" / "stats.json").read_text())
    relative = json.loads((dataset_root / "meta" / "relative_stats_dreamzero.json").read_text())
    q01 = np.array(relative["joint_position"]["q01"] + stats["action"]["q01"][7:8])
    q99 = np.array(relative["joint_position"]["q99"] + stats["action"]["q99"][7:8])
    s01, s99 = np.array(stats["observation.state"]["q01"]), np.array(stats["observation.state"]["q99"])
    stream = _stream(dataset, metadata)
    checked_multi_chunk = False
    for index in range(6):
        sample = stream[index]
        episode = synthetic_episode(SPEC, sample.episode, LENGTHS[sample.episode], "")
        state, action = episode.state.astype(np.float64), episode.action.astype(np.float64)
        for chunk, anchor in enumerate(sample.anchors):
            rows = action[anchor:anchor + 24].copy()
            rows[:, :7] -= state[anchor, :7]
            expected = np.clip(2 * (rows - q01) / (q99 - q01) - 1, -1, 1)
            got = sample.actions[24 * chunk:24 * chunk + 24]
            np.testing.assert_allclose(got[:, :8], expected, atol=1e-6)
            assert not got[:, 8:].any()
            expected_state = np.clip(2 * (state[anchor] - s01) / (s99 - s01) - 1, -1, 1)
            np.testing.assert_allclose(sample.state[chunk, :8], expected_state, atol=1e-6)
            assert not sample.state[chunk, 8:].any()
        checked_multi_chunk |= sample.num_chunks > 1
        assert sample.action_mask.tolist() == [1.0] * 8 + [0.0] * 24
        assert sample.state_mask.tolist() == [1.0] * 8 + [0.0] * 56
    assert checked_multi_chunk, "no sample with several chunks was drawn; the relative reference is untested"


def test_sample_video_is_the_live_image_path_of_the_clip_frames(dataset, metadata) -> None:
    stream = _stream(dataset, metadata)
    sample = stream[2]
    _, clip, _ = stream.clip(2)
    data = dataset.read_episode(sample.episode)
    times = data.timestamps[clip.frame_steps]
    frames = {c.key: dataset.read_frames(sample.episode, c.key, times) for c in SPEC.cameras}
    live = np.stack([resize_to(mosaic, MOSAIC) for mosaic in stitch_frames(frames, SPEC)])  # as the local backend
    np.testing.assert_array_equal(sample.video, live)
    assert sample.video.shape == (8 * sample.num_chunks + 1, *MOSAIC, 3)


def test_samples_are_functions_of_their_index(dataset, metadata) -> None:
    first, second = _stream(dataset, metadata), _stream(dataset, metadata)
    for index in (5, 0, 5):
        a, b = first[index], second[index]
        assert (a.episode, a.anchors.tolist(), a.instruction) == (b.episode, b.anchors.tolist(), b.instruction)
        np.testing.assert_array_equal(a.video, b.video)
        np.testing.assert_array_equal(a.actions, b.actions)
    assert _stream(dataset, metadata, seed=4)[5].anchors.tolist() != first[5].anchors.tolist() or \
        _stream(dataset, metadata, seed=4)[5].episode != first[5].episode


def test_augmentation_changes_pixels_reproducibly(dataset, metadata) -> None:
    plain = _stream(dataset, metadata)[1]
    augmented = _stream(dataset, metadata, Augmentation())
    once, again = augmented[1], augmented[1]
    np.testing.assert_array_equal(once.video, again.video)
    assert once.video.shape == plain.video.shape
    assert np.abs(once.video.astype(int) - plain.video).mean() > 1.0
    np.testing.assert_array_equal(once.actions, plain.actions)


def test_hue_rotation_of_a_third_turn_makes_red_green() -> None:
    red = np.zeros((1, 4, 4, 3), np.uint8)
    red[..., 0] = 255
    only_hue = Augmentation(brightness=0, contrast=0, saturation=0, hue=0.34)

    class Third:  # a generator stub that draws exactly +1/3 turn
        def uniform(self, low, high):
            return 1 / 3

        def permutation(self, n):
            return np.arange(n)

    green = color_jitter(red, only_hue, Third())
    assert green[0, 0, 0].tolist() in ([0, 254, 0], [0, 255, 0])
    unchanged = color_jitter(red, Augmentation(brightness=0, contrast=0, saturation=0, hue=0), np.random.default_rng(0))
    np.testing.assert_array_equal(unchanged, red)


def test_statistics_are_recomputed_when_the_files_are_missing(dataset_root, tmp_path, metadata) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset_root, copy)
    (copy / "meta" / "stats.json").unlink()
    (copy / "meta" / "relative_stats_dreamzero.json").unlink()
    recomputed = dataset_metadata(LeRobotDataset(copy, SPEC), SamplingConfig())
    for ours, theirs in zip(recomputed.action_keys + recomputed.state_keys, metadata.action_keys + metadata.state_keys):
        for name in ("q01", "q99", "mean", "min", "max"):
            np.testing.assert_allclose(ours.statistics[name], theirs.statistics[name], atol=1e-6)


def test_starts_listed_in_the_step_filter_are_never_drawn(dataset_root, tmp_path, dataset, metadata) -> None:
    # The writer lists the official loader's unloadable starts of the short episodes (L = 40, 30: s = L - 24),
    # which our sampler skips anyway (no chunk); any other listed start is left out too.
    assert dataset.excluded_starts == {0: frozenset({16}), 1: frozenset(), 2: frozenset({6})}
    full = _stream(dataset, metadata).starts
    assert [16] not in full[full[:, 0] == 0, 1:].tolist() and [0, 10] in full.tolist()
    copy = tmp_path / "copy"
    shutil.copytree(dataset_root, copy)
    step_filter = copy / "meta" / "step_filter.jsonl"
    step_filter.write_text('{"episode_index": 0, "step_indices": [0, 10, 16]}\n'
                           '{"episode_index": 1, "step_indices": [3]}\n')
    starts = _stream(LeRobotDataset(copy, SPEC), metadata).starts.tolist()
    expected = [row for row in full.tolist() if tuple(row) not in {(0, 0), (0, 10), (1, 3)}]
    assert starts == expected  # episode 2 has no line: nothing of it is excluded
    step_filter.unlink()
    assert LeRobotDataset(copy, SPEC).excluded_starts == {}  # optional: no file, nothing excluded
    for bad in ('{"episode_index": 0, "step_indices": [1]}\n{"episode_index": 1}\n',
                '{"episode_index": 0, "step_indices": [1]}\n{"episode_index": 1, "step_indices": [2.5]}\n',
                '{"episode_index": 0, "step_indices": [1]}\n{"episode_index": 1, "step_indices": [2]\n'):
        step_filter.write_text(bad)
        with pytest.raises(DatasetError, match=re.escape(f"{step_filter}:2: ")):
            LeRobotDataset(copy, SPEC)
    step_filter.write_text('{"episode_index": 3, "step_indices": []}\n')
    with pytest.raises(DatasetError, match=r"step_filter.jsonl:1: episode_index 3 is not an episode"):
        LeRobotDataset(copy, SPEC)


def test_a_dataset_of_another_embodiment_is_refused(dataset_root) -> None:
    with pytest.raises(DatasetError, match="oxe_droid.*not 'agibot'"):
        LeRobotDataset(dataset_root, load_embodiment("agibot_g1"))


def test_a_video_with_missing_frames_is_an_error(dataset_root, tmp_path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(dataset_root, copy)
    broken = LeRobotDataset(copy, SPEC)
    with pytest.raises(DatasetError, match="no frame within"):
        broken.read_frames(2, "wrist_image_left", [1.0 / 15, 100.0])


def test_context_conditioning_of_a_clip_equals_the_policy_conditioning_cut_to_its_frames() -> None:
    from checkpoint_fixtures import synthetic_metadata
    from dreamzero_model.policy import WamPolicy
    from dreamzero_model.training.model_setup import conditioning

    policy = WamPolicy.random_tiny(synthetic_metadata("oxe_droid"), decode_video=False)
    first = torch.rand(2, 3, 1, *policy.mosaic_size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    full = policy._conditioning(first)
    for frames in (3, 5, 9):
        assert torch.equal(conditioning(policy, first, frames), full[:, :, :frames])


def test_the_global_batch_is_split_over_ranks_in_order() -> None:
    assert step_indices(3, 4, 0, 2) == [12, 13] and step_indices(3, 4, 1, 2) == [14, 15]
    assert list(StepSampler(2, 4, 4, 1, 2)) == [10, 11, 14, 15]
    one = list(StepSampler(0, 3, 4))
    assert sorted(list(StepSampler(0, 3, 4, 0, 2)) + list(StepSampler(0, 3, 4, 1, 2))) == one
    train, validation = split_episodes(10, 2, seed=1)
    assert len(validation) == 2 and sorted(train + validation) == list(range(10))


def test_a_loader_with_a_worker_process_yields_the_stream_samples_in_step_order(dataset, metadata) -> None:
    stream = _stream(dataset, metadata)
    batches = list(make_loader(stream, StepSampler(1, 3, 2), workers=1))
    assert [[s.index for s in batch] for batch in batches] == [[2, 3], [4, 5]]
    for batch in batches:
        for sample in batch:
            reference = stream[sample.index]
            np.testing.assert_array_equal(sample.video, reference.video)
            np.testing.assert_array_equal(sample.actions, reference.actions)
