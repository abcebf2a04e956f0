"""``dreamzero train`` on the tiny config: learning, checkpoints, resume, LoRA, bad input (facts §6).

One tiny run (VAE stage + 12 steps) is shared by the tests; a LoRA run starts from its checkpoint.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file

from dreamzero_model.checkpoint import PEFT_PREFIX
from dreamzero_model.policy import WamPolicy
from dreamzero_model.training import cli
from dreamzero_model.training.checkpoints import MERGED_DIR, list_checkpoints
from dreamzero_model.training.config import TrainConfig, prepare
from dreamzero_model.training.distributed import init_processes
from dreamzero_model.training.metrics import MetricsLog
from dreamzero_model.training.trainer import Trainer
from training_datasets import synthetic_episode, write_dataset

LENGTHS = (30, 40, 55, 34)  # short episodes: mostly 1-chunk samples (9 frames), some 2-chunk ones


def _config(dataset: Path, output: Path, **overrides) -> TrainConfig:
    base = TrainConfig(dataset=str(dataset), output=str(output), steps=12, batch_size=2, lr=3e-3, vae_steps=4,
                       save_every=6, val_every=6, val_episodes=1, val_samples=6, workers=0, augment=False,
                       progress=False, seed=5)
    return replace(base, **overrides)


def _trainer(config: TrainConfig) -> Trainer:
    info = init_processes("cpu")
    trainer = Trainer(config, prepare(config, info.world_size), info)
    trainer.setup()
    return trainer


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "droid", LENGTHS)


@pytest.fixture(scope="module")
def tiny_run(dataset, tmp_path_factory):
    """(trainer, validation loss before training, output) of a 12-step tiny run."""
    output = tmp_path_factory.mktemp("runs") / "tiny"
    trainer = _trainer(_config(dataset, output))
    before = trainer.validate()
    trainer.train()
    return trainer, before, output


@pytest.fixture(scope="module")
def lora_run(dataset, tiny_run, tmp_path_factory):
    _, _, base = tiny_run
    output = tmp_path_factory.mktemp("runs") / "lora"
    trainer = _trainer(_config(dataset, output, init=str(base), mode="lora", steps=3, lr=3e-3, save_every=3,
                               val_every=0))
    trainer.train()
    return trainer, base, output


def test_tiny_training_from_a_dataset_lowers_the_loss(tiny_run) -> None:
    trainer, before, output = tiny_run
    lines = MetricsLog(output, True).read()
    train = [line["loss"] for line in lines if "loss" in line]
    validation = [line["val_loss"] for line in lines if "val_loss" in line]
    assert len(train) == 12 and len(validation) == 2
    # Validation: 6 fixed held-out samples with fixed noise, so the comparison is deterministic (a few steps of
    # batch 2 are too few for the noisy training loss to show a trend).
    assert validation[-1] < 0.95 * before["val_loss"], (before, validation)
    vae = json.loads((output / "vae_stage" / "history.json").read_text())
    assert vae[-1]["vae_mse"] < vae[0]["vae_mse"], "the VAE stage did not learn"
    summary = json.loads((output / "train_summary.json").read_text())
    assert summary["samples_per_s"] > 0 and summary["peak_rss_mb"] > 0
    assert (output / "loss.png").stat().st_size > 1000


def test_the_trained_checkpoint_loads_as_a_released_one(tiny_run, dataset) -> None:
    trainer, _, output = tiny_run
    assert [step for step, _ in list_checkpoints(output)] == [6, 12]
    policy = WamPolicy.from_pretrained(output, progress=False)  # the one tag of metadata.json: oxe_droid
    assert policy.metadata.tag == "oxe_droid" and policy.metadata.relative_action_keys == ("joint_position",)
    stats = json.loads((dataset / "meta" / "relative_stats_dreamzero.json").read_text())["joint_position"]
    np.testing.assert_allclose(policy.metadata.action_keys[0].q99, stats["q99"])
    trained = trainer.module.dit.state_dict()
    loaded = policy.model.action_head.model.state_dict()
    assert all(torch.equal(trained[name], loaded[name]) for name in loaded)
    mosaic = np.zeros((1, *policy.mosaic_size, 3), np.uint8)
    prediction = policy.infer(mosaic, np.zeros(8), prompt="Move the squares.")
    assert prediction.actions.shape == (24, 8) and np.isfinite(prediction.actions).all()


def test_the_policy_node_backend_loads_the_trained_checkpoint(tiny_run) -> None:
    """The local backend of policy_node (checkpoint:=OUTPUT) and eval-bag (--checkpoint OUTPUT): camera views in,
    de-normalised actions out, the layout checked against the embodiment YAML."""
    from dreamzero_embodiments.spec import load_embodiment
    from dreamzero_policy.backends.base import Observation
    from dreamzero_policy.backends.local import LocalBackend

    _, _, output = tiny_run
    spec = load_embodiment("droid")
    episode = synthetic_episode(spec, 0, 30, "Move the squares.")
    backend = LocalBackend(spec, checkpoint=str(output))
    backend.reset("Move the squares.", "session")
    prediction = backend.infer(Observation(t_obs_ns=0, views={k: v[:1] for k, v in episode.frames.items()},
                                           state=episode.state[0].astype(np.float64), prompt="Move the squares.",
                                           session_id="session", first_of_session=True))
    assert prediction.actions.shape == (24, 8) and prediction.relative.tolist() == [True] * 7 + [False]


@pytest.mark.parametrize("checkpointing", [False, True])
def test_the_trained_module_computes_training_loss_exactly(checkpointing: bool) -> None:
    """TrainingDiT projects the cross-attention context inside each block (for FSDP) and may recompute blocks:
    the loss and every gradient equal training_loss on the plain DiT."""
    import copy

    from dreamzero_model import build_dit, get_config
    from dreamzero_model.loss import LossConfig, training_loss
    from dreamzero_model.training.model_setup import TrainingDiT
    from moving_squares import make_batch

    config = get_config("tiny")
    torch.manual_seed(0)
    dit = build_dit(config)
    with torch.no_grad():
        for parameter in dit.parameters():
            parameter.add_(0.05 * torch.randn_like(parameter))
    generator = torch.Generator().manual_seed(2)
    text = torch.randn(1, config.text_len, config.text_dim, generator=generator)
    image = torch.randn(1, config.num_image_tokens, config.clip_dim, generator=generator)
    batch, _ = make_batch(config, 2, 2, generator, text, image)
    reference = copy.deepcopy(dit)
    expected = training_loss(reference, batch, LossConfig(flash=True), torch.Generator().manual_seed(9))
    expected.total.backward()
    module = TrainingDiT(dit, LossConfig(flash=True), checkpointing)
    total, video, action = module(batch, torch.Generator().manual_seed(9))
    total.backward()
    assert torch.equal(total, expected.total) and torch.equal(action, expected.action)
    for (name, ours), theirs in zip(dit.named_parameters(), reference.parameters()):
        assert torch.equal(ours.grad, theirs.grad), name


def test_resume_after_a_kill_continues_the_exact_loss_sequence(tiny_run, dataset, tmp_path) -> None:
    """A run killed after logging step 8, mid-way through writing checkpoint 12: its folder holds checkpoint-6, a
    half-written .checkpoint-12.tmp and metrics up to step 8. --resume must repeat steps 6..11 exactly."""
    _, _, reference = tiny_run
    killed = tmp_path / "killed"
    killed.mkdir()
    shutil.copytree(reference / "vae_stage", killed / "vae_stage")
    shutil.copytree(reference / "checkpoint-6", killed / "checkpoint-6")
    partial = killed / ".checkpoint-12.tmp" / "training_state"
    partial.mkdir(parents=True)
    (partial / "rng_0.pt").write_bytes(b"half")
    lines = [line for line in MetricsLog(reference, True).read() if line["step"] <= 8]
    (killed / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))

    resumed = _trainer(_config(dataset, killed, resume=True))
    assert resumed.start_step == 6
    resumed.train()

    def curve(folder: Path) -> list[tuple]:
        return [(m["step"], m.get("loss"), m.get("grad_norm"), m.get("lr"), m.get("val_loss"))
                for m in MetricsLog(folder, True).read()]

    assert curve(killed) == curve(reference)
    ours, theirs = load_file(killed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_cached_encodings_give_the_exact_losses_and_spare_the_frames(tiny_run, dataset, tmp_path, monkeypatch) -> None:
    """--cache-encodings (not a resume setting: it changes no number): a run resumed at step 6 that encodes each clip
    on its first draw repeats the reference curve exactly; a second one, given those files, does too without
    decoding a single frame."""
    from dreamzero_model.training.lerobot import LeRobotDataset
    from dreamzero_model.training.trainer import ENCODINGS_DIR

    _, _, reference = tiny_run

    def curve(folder: Path) -> list[tuple]:
        return [(m["step"], m.get("loss"), m.get("grad_norm"), m.get("val_loss")) for m in MetricsLog(folder, True).read()]

    def resume_with_cache(folder: Path) -> list[tuple]:
        shutil.copytree(reference / "vae_stage", folder / "vae_stage")
        shutil.copytree(reference / "checkpoint-6", folder / "checkpoint-6")
        lines = [line for line in MetricsLog(reference, True).read() if line["step"] < 6]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
        _trainer(_config(dataset, folder, resume=True, cache_encodings=True)).train()
        return curve(folder)

    first = tmp_path / "first"
    assert resume_with_cache(first) == curve(reference)
    files = sorted((first / ENCODINGS_DIR).rglob("*.safetensors"))
    assert files and set(load_file(files[0])) == {"latents", "image", "y"}

    second = tmp_path / "second"
    shutil.copytree(first / ENCODINGS_DIR, second / ENCODINGS_DIR)

    def no_frames(*args, **kwargs):
        raise AssertionError("the frames of a cached clip were decoded")

    monkeypatch.setattr(LeRobotDataset, "read_frames", no_frames)
    assert resume_with_cache(second) == curve(reference)


def test_an_encoding_cache_of_other_encoders_is_refused(tmp_path) -> None:
    from dreamzero_model.training.encodings import EncodingCache, EncodingCacheError

    EncodingCache(tmp_path, "a" * 64)
    EncodingCache(tmp_path, "a" * 64)  # the same encoders: reused
    with pytest.raises(EncodingCacheError, match="other encoder weights"):
        EncodingCache(tmp_path, "b" * 64)


def test_cached_encodings_need_no_augmentation(dataset, tmp_path, capsys) -> None:
    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "run"), "--cache-encodings"])
    assert status == 2 and "--cache-encodings needs --no-augment" in line


def test_lora_trains_only_the_adapters_and_heads_and_merges_back(lora_run) -> None:
    trainer, base, output = lora_run
    tensors = load_file(output / "model.safetensors")
    names = [name.removeprefix(PEFT_PREFIX) for name in tensors]
    assert all(name.startswith(PEFT_PREFIX) for name in tensors)
    lora = [n for n in names if ".lora_" in n]
    heads = [n for n in names if n.split(".")[0] in ("state_encoder", "action_encoder", "action_decoder")]
    assert len(lora) == 2 * 10 * 2 and len(lora) + len(heads) == len(names)  # 2 blocks x (q,k,v,o x 2, ffn.0, ffn.2)
    conf = yaml.safe_load((output / "experiment_cfg" / "conf.yaml").read_text())
    assert conf["save_lora_only"] is True and conf["base_checkpoint"] == str(base.resolve())
    assert conf["base_checkpoint_fingerprint"]

    base_tensors = load_file(base / "model.safetensors")
    dit = trainer.module.dit
    q = dit.blocks[0].self_attn.q
    assert torch.equal(q.base_layer.weight, base_tensors["action_head.model.blocks.0.self_attn.q.weight"])
    assert q.lora_B["default"].weight.abs().max() > 0, "LoRA B did not move"
    assert not torch.equal(dit.action_decoder.layer2.W, base_tensors["action_head.model.action_decoder.layer2.W"])

    merged = WamPolicy.from_pretrained(output, progress=False)  # onto the base its conf.yaml records
    expected = q.base_layer.weight + q.lora_B["default"].weight @ q.lora_A["default"].weight  # alpha = rank: scale 1
    got = merged.model.action_head.model.blocks[0].self_attn.q.weight
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-6)
    standalone = WamPolicy.from_pretrained(output / MERGED_DIR, progress=False)  # the same, as one full checkpoint
    for name, tensor in merged.model.state_dict().items():
        assert torch.equal(tensor, standalone.model.state_dict()[name]), name


def _exit_line(capsys, argv: list[str]) -> tuple[int, str]:
    status = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    return status, err[-1] if err else ""


def test_a_dataset_of_another_embodiment_exits_2_with_one_line(dataset, tmp_path, capsys) -> None:
    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "out"), "--embodiment", "agibot_g1"])
    assert status == 2 and "agibot" in line and "oxe_droid" in line
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_that_does_not_fit_the_dataset_exits_2(dataset, tmp_path, capsys) -> None:
    from checkpoint_fixtures import synthetic_metadata
    from dreamzero_model.metadata import KeyLayout

    metadata = synthetic_metadata("oxe_droid")
    joints = metadata.state_keys[0]
    six = KeyLayout(joints.name, 6, {k: v[:6] for k, v in joints.statistics.items()})
    checkpoint = tmp_path / "ckpt"
    WamPolicy.random_tiny(replace(metadata, state_keys=(six, metadata.state_keys[1]))).save_pretrained(checkpoint)
    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "out"), "--init", str(checkpoint)])
    assert status == 2 and "does not fit" in line


def test_a_lora_checkpoint_without_its_base_exits_2(lora_run, dataset, tmp_path, capsys) -> None:
    _, _, lora = lora_run
    orphan = tmp_path / "orphan"
    shutil.copytree(lora, orphan, ignore=shutil.ignore_patterns("checkpoint-*", MERGED_DIR))
    conf_path = orphan / "experiment_cfg" / "conf.yaml"
    conf = yaml.safe_load(conf_path.read_text())
    conf.pop("base_checkpoint")
    conf_path.write_text(yaml.safe_dump(conf))
    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "out"), "--init", str(orphan)])
    assert status == 2 and "LoRA weights only" in line and "--base-checkpoint" in line
    conf["base_checkpoint"] = str(tmp_path / "gone")
    conf_path.write_text(yaml.safe_dump(conf))
    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "out"), "--init", str(orphan)])
    assert status == 2 and "gone" in line


def test_an_output_holding_another_run_exits_2_unless_resumed(tiny_run, dataset, capsys) -> None:
    _, _, output = tiny_run
    status, line = _exit_line(capsys, [str(dataset), "--output", str(output)])
    assert status == 2 and "--resume" in line
    status, line = _exit_line(capsys, [str(dataset), "--output", str(output), "--resume"])
    assert status == 0 and "finished" in line


def test_the_text_lr_scale_speeds_up_only_the_dits_text_path(tiny_run, dataset, tmp_path, capsys) -> None:
    """--text-lr-scale: the text embedding and the cross-attention q/k/v/o and their norms take lr x the scale,
    every other trained tensor (the image keys and values included) the plain lr; 1 keeps the official two groups."""
    _, _, base = tiny_run
    trainer = _trainer(_config(dataset, tmp_path / "scaled", init=str(base), steps=1, text_lr_scale=10.0))
    # the peak learning rates (the schedule holds the current ones, 0 at the first warm-up step)
    lr_of = {id(p): group["initial_lr"] for group in trainer.optimizer.param_groups for p in group["params"]}
    names = {name: lr_of[id(p)] for name, p in trainer.module.named_parameters() if p.requires_grad}
    text = {name for name in names if ".text_embedding." in name
            or any(f".cross_attn.{part}." in name for part in ("q", "k", "v", "o", "norm_q", "norm_k"))}
    assert {"dit.text_embedding.0.weight", "dit.blocks.0.cross_attn.k.weight", "dit.blocks.0.cross_attn.norm_q.weight",
            "dit.blocks.1.cross_attn.o.bias"} <= text
    assert {name for name, lr in names.items() if lr == pytest.approx(3e-2)} == text
    assert {name for name, lr in names.items() if lr == pytest.approx(3e-3)} == set(names) - text
    assert any("cross_attn.k_img" in name for name in set(names) - text)

    official = _trainer(_config(dataset, tmp_path / "official", init=str(base), steps=1))
    trained = [(n, p) for n, p in official.module.named_parameters() if p.requires_grad]
    plain = sum(p.ndim < 2 or n.endswith((".bias", ".b")) for n, p in trained)
    assert [(len(g["params"]), g["weight_decay"], g["initial_lr"]) for g in official.optimizer.param_groups] == [
        (len(trained) - plain, 1e-5, 3e-3), (plain, 0.0, 3e-3)]

    status, line = _exit_line(capsys, [str(dataset), "--output", str(tmp_path / "bad"), "--text-lr-scale", "0"])
    assert status == 2 and "--text-lr-scale" in line
