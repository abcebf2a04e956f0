"""Normalizer, prompt templates and the experiment_cfg reader/writer (facts §1.9-1.11, §5.1)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from checkpoint_fixtures import LAYOUTS, synthetic_metadata
from dreamzero_model.errors import CheckpointError
from dreamzero_model.metadata import load_embodiment_metadata, write_embodiment_metadata
from dreamzero_model.normalizer import Q99Normalizer
from dreamzero_model.prompts import NEGATIVE_PROMPT, format_prompt


def test_q99_normalisation_matches_hand_computed_values() -> None:
    normalizer = Q99Normalizer(np.array([0.0, -1.0, 2.0]), np.array([2.0, 1.0, 2.0]))
    assert np.allclose(normalizer.normalize([1.0, 0.5, 0.7]), [0.0, 0.5, 0.7])  # dim 3 constant: passes through
    assert np.allclose(normalizer.normalize([3.0, -4.0, 5.0]), [1.0, -1.0, 1.0])  # clamped, also pass-through
    assert np.allclose(normalizer.unnormalize([0.0, 0.5, 0.3]), [1.0, 0.5, 2.0])  # dim 3 constant: q01
    assert np.allclose(normalizer.unnormalize([2.0, -3.0, 9.0]), [3.0, -3.0, 2.0])  # inverse is not clamped
    chunk = np.random.default_rng(0).uniform(-1, 1, (24, 3))
    assert np.allclose(normalizer.normalize(normalizer.unnormalize(chunk))[:, :2], chunk[:, :2])


def test_q99_inverse_returns_the_constant_of_a_dimension_that_never_moved() -> None:
    """Issue 14 item 3 (facts §1.10, §10): the official inverse (x + 1) / 2 (q99 - q01) + q01 on float32
    statistics gives q01 where q01 == q99, also where the float64 statistics differ below float32 precision."""
    q01, q99 = [0.0, 0.3, 0.1, -1.5], [2.0, 0.3, 0.1 + 1e-12, 0.5]
    normalizer = Q99Normalizer(np.array(q01), np.array(q99))
    x_n = np.array([[0.5, 0.7, -0.2, 1.3], [-1.0, 0.0, 1.0, -1.2]])
    low, high = torch.tensor(q01), torch.tensor(q99)  # float32, as the official loader holds them
    expected = ((torch.tensor(x_n, dtype=torch.float32) + 1) / 2 * (high - low) + low).double().numpy()
    assert np.allclose(normalizer.unnormalize(x_n), expected, rtol=1e-6, atol=1e-7)
    assert np.array_equal(normalizer.unnormalize(x_n)[:, 1:3], np.broadcast_to(low[1:3].double().numpy(), (2, 2)))
    # Forward: the float32-constant dimension passes through (then clamps) instead of dividing by 1e-12.
    assert np.allclose(normalizer.normalize([1.0, 0.25, 0.05, 0.0]), [0.0, 0.25, 0.05, 0.5])


def test_normalizer_rejects_a_vector_of_the_wrong_width() -> None:
    with pytest.raises(ValueError, match="expected last dimension 2"):
        Q99Normalizer(np.zeros(2), np.ones(2)).normalize(np.zeros(3))


def test_prompt_templates_repeat_the_lower_cased_instruction() -> None:
    prompt = format_prompt("oxe_droid", "Put the <DREAM>Cup in the sink.")
    assert prompt.startswith("A multi-view video shows that a robot put the cup in the sink. The video is split into "
                             "three views: The top view shows the camera view from the robot's wrist")
    assert prompt.endswith("(dropped view). The robot put the cup in the sink.")
    assert "four views" in format_prompt("agibot", "Fold.") and "four views" in format_prompt("yam", "Fold.")
    assert "inactive view" in format_prompt("agibot", "x.") and "inactive view" not in format_prompt("yam", "x.")
    assert format_prompt("yam", "  ").endswith("The robot perform the default behavior.")
    assert NEGATIVE_PROMPT.startswith("Vibrant colors") and NEGATIVE_PROMPT.endswith("walking backwards.")
    with pytest.raises(ValueError, match="did you mean 'agibot'"):
        format_prompt("agibott", "x.")


def test_a_prompt_stored_as_a_list_literal_is_unwrapped_to_its_first_element() -> None:
    """Issue 14 item 8 (facts §10): LeRobot stores tasks as "['Push the button.']"; the official collate
    uses the first element. Anything that is not a list literal stays as it is."""
    prompt = format_prompt("oxe_droid", "['Push the button.', 'Press it.']")
    assert prompt.startswith("A multi-view video shows that a robot push the button. The video is split into ")
    assert prompt.endswith("(dropped view). The robot push the button.")
    assert format_prompt("yam", " [\"<DREAM>Fold the towel.\"] ").endswith("The robot fold the towel.")
    for kept in ("Press [A] then [B].", "[not a literal.", "[__import__('os').getcwd()]", "[]"):
        assert format_prompt("yam", kept).endswith(f"The robot {kept.lower()}"), kept


@pytest.mark.parametrize("tag", sorted(LAYOUTS))
def test_experiment_config_round_trips_for_each_embodiment(tmp_path: Path, tag: str) -> None:
    written = synthetic_metadata(tag)
    write_embodiment_metadata(tmp_path, [written], extra_conf={"tokenizer_path": "/models/umt5"})
    read = load_embodiment_metadata(tmp_path, tag)
    assert read.video_keys == written.video_keys and read.video_resolutions == written.video_resolutions
    assert [(k.name, k.dim) for k in read.action_keys] == [(k.name, k.dim) for k in written.action_keys]
    assert read.relative_action_keys == tuple(sorted(written.relative_action_keys))
    assert read.tokenizer_path == "/models/umt5"
    for ours, theirs in zip(read.state_keys + read.action_keys, written.state_keys + written.action_keys):
        assert set(ours.statistics) == {"max", "min", "mean", "std", "q01", "q99"}
        assert all(np.array_equal(ours.statistics[s], theirs.statistics[s]) for s in ours.statistics)
    conf = yaml.safe_load((tmp_path / "experiment_cfg" / "conf.yaml").read_text())
    assert conf["modality_configs"][tag]["action"]["modality_keys"][0].startswith("action.")


def test_droid_layout_is_8_dims_with_relative_joints_and_absolute_gripper(tmp_path: Path) -> None:
    write_embodiment_metadata(tmp_path, [synthetic_metadata("oxe_droid")])
    droid = load_embodiment_metadata(tmp_path, "oxe_droid")
    assert (droid.state_dim, droid.action_dim) == (8, 8)
    assert droid.relative_action_mask().tolist() == [True] * 7 + [False]
    assert droid.action_slices()["gripper_position"] == slice(7, 8)
    agibot_dir = tmp_path / "agibot"
    write_embodiment_metadata(agibot_dir, [synthetic_metadata("agibot")])
    agibot = load_embodiment_metadata(agibot_dir, "agibot")
    assert (agibot.state_dim, agibot.action_dim) == (20, 22)
    assert agibot.relative_action_mask().tolist() == [True] * 20 + [False, False]


def test_missing_files_and_entries_each_give_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="conf.yaml: missing"):
        load_embodiment_metadata(tmp_path, "oxe_droid")
    write_embodiment_metadata(tmp_path, [synthetic_metadata("oxe_droid")])
    with pytest.raises(CheckpointError, match="did you mean 'oxe_droid'"):
        load_embodiment_metadata(tmp_path, "oxe_droi")
    metadata_file = tmp_path / "experiment_cfg" / "metadata.json"
    metadata = json.loads(metadata_file.read_text())
    del metadata["oxe_droid"]["statistics"]["action"]["joint_position"]["q99"]
    metadata_file.write_text(json.dumps(metadata))
    with pytest.raises(CheckpointError, match=r"no entry 'oxe_droid\.statistics\.action\.joint_position\.q99'"):
        load_embodiment_metadata(tmp_path, "oxe_droid")


def test_relative_keys_must_name_action_keys(tmp_path: Path) -> None:
    write_embodiment_metadata(tmp_path, [synthetic_metadata("oxe_droid")], extra_conf={"relative_action_keys": ["elbow"]})
    with pytest.raises(CheckpointError, match=r"relative_action_keys \['elbow'\]"):
        load_embodiment_metadata(tmp_path, "oxe_droid")
