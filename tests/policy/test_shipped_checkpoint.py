"""The shipped trained checkpoint ``checkpoints/sim_touch`` (its README.md is the model card).

It must load through ``WamPolicy.from_pretrained``, carry the statistics of the dataset it was trained on
(``dataset_meta/``, copied from the dataset's ``meta/``), be what ``make setup`` installs, and predict, for a
stored observation, exactly the stored chunk (``tests/data/sim_touch_golden.npz``, written once by
``scripts/sim_touch/golden.py``): a change to the model code, the sampler or the image path that changes what the
trained model does fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dreamzero_embodiments.spec import load_embodiment
from dreamzero_policy.backends.base import Observation

ROOT = Path(__file__).resolve().parents[2]
CHECKPOINT = ROOT / "checkpoints" / "sim_touch"
GOLDEN = ROOT / "tests" / "data" / "sim_touch_golden.npz"
MAX_BYTES = 25 * 1024 * 1024  # the one binary checkpoint the repository may hold


def test_the_shipped_checkpoint_is_small_and_documented() -> None:
    size = sum(p.stat().st_size for p in CHECKPOINT.rglob("*") if p.is_file())
    assert 0 < size <= MAX_BYTES, size
    card = (CHECKPOINT / "README.md").read_text()
    for heading in ("## Data", "## Training", "## Evaluation", "## Reproduce"):
        assert heading in card, heading


def test_its_metadata_holds_the_statistics_of_its_dataset() -> None:
    """State statistics are the dataset's ``stats.json`` columns sliced as ``modality.json`` says; relative action
    statistics are ``relative_stats_dreamzero.json``'s (facts §1.9-1.10)."""
    from dreamzero_model.policy import WamPolicy

    policy = WamPolicy.from_pretrained(CHECKPOINT, progress=False)
    meta = CHECKPOINT / "dataset_meta"
    stats = json.loads((meta / "stats.json").read_text())
    modality = json.loads((meta / "modality.json").read_text())
    relative = json.loads((meta / "relative_stats_dreamzero.json").read_text())
    spec = load_embodiment("droid")
    checked = 0
    for group, layouts in (("state", policy.metadata.state_keys), ("action", policy.metadata.action_keys)):
        for layout in layouts:
            piece = modality[group][layout.name]
            expected = (relative[layout.name] if group == "action" and layout.name in policy.metadata.relative_action_keys
                        else {name: np.asarray(values)[piece["start"]:piece["end"]]
                              for name, values in stats[piece["original_key"]].items()})
            for name in ("mean", "std", "min", "max", "q01", "q99"):
                np.testing.assert_allclose(np.asarray(layout.statistics[name], dtype=np.float64).reshape(-1),
                                           np.asarray(expected[name], dtype=np.float64), rtol=1e-6, atol=1e-7,
                                           err_msg=f"{group}.{layout.name}.{name}")
                checked += 1
    assert checked == 6 * (len(spec.state) + len(spec.action))
    assert set(policy.metadata.relative_action_keys) == {k.key for k in spec.action if k.relative}


def test_make_setup_installs_it() -> None:
    from dreamzero_policy.paths import resolve_checkpoint

    installed = Path(resolve_checkpoint("sim_touch"))
    for name in ("model.safetensors", "config.json", "experiment_cfg/metadata.json", "README.md"):
        assert (installed / name).read_bytes() == (CHECKPOINT / name).read_bytes(), name


@pytest.mark.slow
def test_a_stored_observation_gives_the_stored_chunk() -> None:
    """The local backend (live image path, model, standard sampler, de-normalisation) on the stored first query."""
    from dreamzero_policy.backends.local import LocalBackend

    golden = np.load(GOLDEN)
    spec = load_embodiment("droid")
    views = {c.key: golden[f"view_{c.key}"] for c in spec.cameras}
    query = Observation(t_obs_ns=0, views=views, state=golden["state"], prompt=str(golden["prompt"]),
                        session_id="golden", first_of_session=True)
    backend = LocalBackend(spec, str(CHECKPOINT), decode_video=False)
    try:
        backend.reset(query.prompt, query.session_id)
        prediction = backend.infer(query)
    finally:
        backend.close()
    np.testing.assert_array_equal(prediction.relative, golden["relative"])
    np.testing.assert_allclose(prediction.actions, golden["actions"], rtol=0, atol=1e-5)
