"""``torchrun`` with 2 gloo CPU processes (DDP, FSDP) against one process, an FSDP run resumed, and FSDP from a
checkpoint (``--init``): rank 0 alone reads the DiT, the other rank holds only its shards.

The global batch defines the run: each sample's noise depends on its index only (micro-batch 1), so
N processes compute the same per-sample losses as one and only the order of gradient sums differs.
These start fresh Python processes (imports take most of the time), hence ``slow``. A run killed
in-process and resumed is in test_train_run.py; a real SIGKILL test was left out for CI time (it passed
when written: the resumed curve equalled one uninterrupted run exactly).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from checkpoint_fixtures import synthetic_metadata
from dreamzero_model.checkpoint import PLAIN_DIT_PREFIX
from dreamzero_model.policy import WamPolicy
from dreamzero_model.training import cli
from dreamzero_model.training.metrics import MetricsLog
from dreamzero_model.training.model_setup import inject_lora, set_trainable, trained_parameter_count
from training_datasets import write_dataset

REPO = Path(__file__).resolve().parents[2]
ARGS = ["--steps", "4", "--batch-size", "4", "--lr", "3e-3", "--seed", "5", "--vae-steps", "0", "--save-every", "2",
        "--val-every", "0", "--val-episodes", "0", "--workers", "0", "--no-augment", "--quiet"]
PROBE = REPO / "tests" / "fsdp_loading_probe.py"
pytestmark = pytest.mark.slow


def _environment() -> dict[str, str]:
    paths = [str(REPO / "embodiments"), str(REPO / "model"), str(REPO), os.environ.get("PYTHONPATH", "")]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1"}


def _torchrun(dataset: Path, output: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "dreamzero_model.training", str(dataset), "--output", str(output), *ARGS, *extra]
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]


def _curve(output: Path) -> list[tuple[int, float, float]]:
    return [(m["step"], m["loss"], m["grad_norm"]) for m in MetricsLog(output, True).read() if "loss" in m]


def _assert_same_run(ours: Path, reference: Path, tolerance: float = 1e-5, steps: int = 4) -> None:
    mine, theirs = _curve(ours), _curve(reference)
    assert [s for s, *_ in mine] == [s for s, *_ in theirs] == list(range(steps))
    for (_, loss, norm), (_, loss_ref, norm_ref) in zip(mine, theirs):
        assert loss == pytest.approx(loss_ref, rel=tolerance) and norm == pytest.approx(norm_ref, rel=tolerance)
    a, b = load_file(ours / "model.safetensors"), load_file(reference / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-5, name


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "droid", (30, 40, 55, 34))


@pytest.fixture(scope="module")
def one_process(dataset, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("runs") / "one"
    assert cli.main([str(dataset), "--output", str(output), *ARGS]) == 0
    return output


def test_two_ddp_processes_follow_the_one_process_loss_curve(dataset, one_process, tmp_path) -> None:
    _torchrun(dataset, tmp_path / "ddp", "--parallel", "ddp")
    _assert_same_run(tmp_path / "ddp", one_process)
    assert json.loads((tmp_path / "ddp" / "train_summary.json").read_text())["parallel"] == "ddp"


def test_two_fsdp_processes_follow_the_one_process_loss_curve_and_resume(dataset, one_process, tmp_path) -> None:
    _torchrun(dataset, tmp_path / "fsdp", "--parallel", "fsdp")
    _assert_same_run(tmp_path / "fsdp", one_process)
    assert (tmp_path / "fsdp" / "checkpoint-4" / "training_state" / "rng_1.pt").is_file()
    # Killed after checkpoint 2: the sharded optimizer state restores on the same 2 ranks.
    killed = tmp_path / "fsdp-killed"
    killed.mkdir()
    for name in ("vae_stage", "checkpoint-2"):
        shutil.copytree(tmp_path / "fsdp" / name, killed / name)
    shutil.copy(tmp_path / "fsdp" / "metrics.jsonl", killed)  # lines of steps 2, 3 are dropped on resume
    _torchrun(dataset, killed, "--parallel", "fsdp", "--resume")
    _assert_same_run(killed, one_process)


@pytest.fixture(scope="module")
def init_checkpoint(tmp_path_factory) -> Path:
    """A tiny model with random weights saved in the official layout: what ``--init`` reads."""
    folder = tmp_path_factory.mktemp("init") / "tiny"
    WamPolicy.random_tiny(synthetic_metadata("oxe_droid"), seed=3, decode_video=False).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def fsdp_from_checkpoint(dataset, init_checkpoint, tmp_path_factory) -> Path:
    """2 processes under the loading probes (tests/fsdp_loading_probe.py), from ``init_checkpoint`` with
    ``--parallel fsdp``: run ``full`` (2 steps), then run ``lora`` (1 step) in the same processes."""
    root = tmp_path_factory.mktemp("fsdp-init")
    runs = [[str(dataset), "--output", str(root / mode), *ARGS, "--init", str(init_checkpoint), "--parallel", "fsdp",
             "--mode", mode, "--steps", str(steps)] for mode, steps in (("full", 2), ("lora", 1))]
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(PROBE),
               str(root / "report"), json.dumps(runs)]
    done = subprocess.run(command, env=_environment(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _records(report: Path) -> list[dict]:
    return [json.loads((report / f"rank_{rank}.json").read_text()) for rank in (0, 1)]


def _assert_rank_0_alone_read_the_dit(records: list[dict], checkpoint: Path) -> None:
    """Rank 1 read the encoders but no DiT tensor and the DiT was on meta when sharded; each rank's shard of every
    DiT parameter holds at most half of its first dimension, and the two shards make the whole."""
    names = set(load_file(checkpoint / "model.safetensors"))
    dit = {name for name in names if name.startswith(PLAIN_DIT_PREFIX)}
    first, second = records
    assert dit <= set(first["read"])
    assert not dit & set(second["read"])
    assert set(second["read"]) == names - dit  # the frozen encoders, replicated
    assert first["devices_before_sharding"] == second["devices_before_sharding"] == ["meta"]
    assert first["shards"].keys() == second["shards"].keys() and first["shards"]
    for name, (local, full, rows) in first["shards"].items():
        other = second["shards"][name][0]
        assert local + other == full and max(local, other) <= -(-rows // 2) * (full // rows), name


def _checkpoint_name(loaded_name: str) -> str:
    """``dit.<module>[.base_layer].<tensor>`` (the trained module's key) -> the checkpoint's key."""
    return PLAIN_DIT_PREFIX + loaded_name.removeprefix("dit.").replace(".base_layer.", ".")


def test_fsdp_from_a_checkpoint_loads_the_dit_on_rank_0_only_and_follows_one_process(dataset, init_checkpoint,
                                                                                   fsdp_from_checkpoint,
                                                                                   tmp_path) -> None:
    report = fsdp_from_checkpoint / "report" / "0"
    _assert_rank_0_alone_read_the_dit(_records(report), init_checkpoint)
    loaded, saved = load_file(report / "loaded.safetensors"), load_file(init_checkpoint / "model.safetensors")
    assert {_checkpoint_name(name) for name in loaded} == {name for name in saved if name.startswith(PLAIN_DIT_PREFIX)}
    for name, tensor in loaded.items():
        assert torch.equal(tensor, saved[_checkpoint_name(name)]), name
    assert cli.main([str(dataset), "--output", str(tmp_path / "one"), *ARGS, "--init", str(init_checkpoint),
                     "--steps", "2"]) == 0
    _assert_same_run(fsdp_from_checkpoint / "full", tmp_path / "one", steps=2)
    assert json.loads((fsdp_from_checkpoint / "full" / "train_summary.json").read_text())["parallel"] == "fsdp"


def test_lora_under_fsdp_from_a_checkpoint_loads_the_base_on_rank_0_only_and_trains(init_checkpoint,
                                                                                    fsdp_from_checkpoint) -> None:
    """The adapters' initial values come from rank 0 (B zero); the base weights equal the checkpoint's. (The
    curve is not compared with one process: a LoRA run from a checkpoint draws A from an unseeded generator.)"""
    report = fsdp_from_checkpoint / "report" / "1"
    _assert_rank_0_alone_read_the_dit(_records(report), init_checkpoint)
    loaded, saved = load_file(report / "loaded.safetensors"), load_file(init_checkpoint / "model.safetensors")
    adapters = {name for name in loaded if ".lora_" in name}
    assert adapters and all(loaded[n].abs().sum() == 0 for n in adapters if ".lora_B." in n)
    for name in (n for n in adapters if ".lora_A." in n):  # kaiming-uniform: 0 < |A| <= 1 / sqrt(fan-in)
        values = loaded[name].abs()
        assert values.min() > 0 and values.max() <= loaded[name].shape[1] ** -0.5, name
    for name in loaded.keys() - adapters:
        assert torch.equal(loaded[name], saved[_checkpoint_name(name)]), name
    summary = json.loads((fsdp_from_checkpoint / "lora" / "train_summary.json").read_text())
    assert summary["parallel"] == "fsdp" and math.isfinite(summary["final_loss"])


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_the_trained_parameter_count_for_auto_is_counted_on_meta_without_drawing_random_numbers(init_checkpoint,
                                                                                                mode: str) -> None:
    """``--parallel auto`` decides FSDP before loading: the count must equal the loaded model's and leave the
    generator that draws the LoRA adapters untouched."""
    model = WamPolicy.from_pretrained(init_checkpoint, progress=False).model
    if mode == "lora":
        inject_lora(model.action_head.model, 4, seed=0)
    set_trainable(model, mode)
    expected = sum(p.numel() for p in model.action_head.model.parameters() if p.requires_grad)
    state = torch.get_rng_state()
    assert trained_parameter_count(init_checkpoint, mode, 4) == expected
    assert torch.equal(torch.get_rng_state(), state)


def test_lora_adapters_are_drawn_from_the_run_seed_and_leave_the_global_generator_alone(init_checkpoint) -> None:
    """A LoRA run from a checkpoint starts from the same adapters every time (and on every rank)."""
    def adapters(seed: int) -> dict[str, torch.Tensor]:
        dit = WamPolicy.from_pretrained(init_checkpoint, progress=False).model.action_head.model
        inject_lora(dit, 4, seed)
        return {name: tensor for name, tensor in dit.state_dict().items() if ".lora_A." in name}

    state = torch.get_rng_state()
    first, again, other = adapters(3), adapters(3), adapters(4)
    assert torch.equal(torch.get_rng_state(), state)
    assert first and all(torch.equal(first[name], again[name]) for name in first)
    assert all(not torch.equal(first[name], other[name]) for name in first)
