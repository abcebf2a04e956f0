"""The settings of one training run and the checks that run before any long work.

:class:`TrainConfig` holds every option of ``dreamzero train`` (defaults cite facts §6.2 and
training-serving-facts §3.1: AdamW beta1 0.95, beta2 0.999, eps 1e-8, weight decay 1e-5, cosine
schedule with 5% warmup, gradient clipping at 1.0, LoRA rank 4). :func:`prepare` resolves and checks
them in seconds: the embodiment, the dataset's files and layout, the init checkpoint, its dims and
(for a LoRA-only checkpoint) its base, the output folder and, when resuming, that the run's settings
are unchanged. Every problem raises :class:`TrainingInputError` with one line naming what to fix;
``dreamzero train`` prints it and exits with status 2. Imports the standard library, the
embodiment spec and the model's metadata and checkpoint readers.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


from dreamzero_embodiments.spec import EmbodimentSpec, EmbodimentSpecError, embodiment_names, load_embodiment
from dreamzero_model.errors import CheckpointError
from dreamzero_model.metadata import load_embodiment_metadata
from dreamzero_model.training.lerobot import DatasetError, LeRobotDataset

SCRATCH_PRESETS = ("tiny", "tiny_sim")  # --init values that build every component from scratch (full_model presets)
DEFAULT_LR = {"tiny": 1e-3, "full": 1e-5, "lora": 1e-4}  # tiny: measured on the moving-squares test; facts §6.2
# Settings a resumed run must share with the run it continues (anything else may change, e.g. workers).
RESUME_KEYS = ("dataset", "embodiment", "init", "mode", "base_checkpoint", "steps", "batch_size", "micro_batch",
               "lr", "warmup_ratio", "weight_decay", "adam_beta1", "adam_beta2", "adam_eps", "max_grad_norm",
               "lora_rank", "flash", "augment", "seed", "val_episodes", "val_samples", "vae_steps", "vae_lr",
               "gradient_checkpointing", "start_stride", "text_lr_scale")


class TrainingInputError(ValueError):
    """A dataset, checkpoint, folder or option the user must fix; the message is one line."""


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a run (see ``dreamzero train --help`` for each)."""

    dataset: str
    output: str
    embodiment: str | None = None
    init: str = "tiny"
    mode: str = "full"
    base_checkpoint: str | None = None
    tokenizer_path: str | None = None
    steps: int = 1000
    batch_size: int = 8
    micro_batch: int = 1
    lr: float | None = None
    text_lr_scale: float = 1.0
    warmup_ratio: float = 0.05
    weight_decay: float = 1e-5
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    lora_rank: int = 4
    flash: bool = False
    augment: bool = True
    start_stride: int = 1
    cache_encodings: bool = False
    workers: int = 2
    seed: int = 42
    save_every: int = 500
    keep_checkpoints: int = 2
    val_every: int = 100
    val_episodes: int | None = None
    val_samples: int = 8
    vae_steps: int = 500
    vae_lr: float = 1e-3
    gradient_checkpointing: bool = False
    parallel: str = "auto"
    device: str = "auto"
    save_dtype: str | None = None
    merge_lora: bool = True
    resume: bool = False
    progress: bool = True

    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR["tiny" if self.init in SCRATCH_PRESETS else self.mode]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunPlan:
    """What :func:`prepare` resolved.

    Attributes:
        spec: the embodiment. dataset: the opened dataset. init: None for a scratch preset (``tiny``,
            ``tiny_sim``: the name is ``settings["init"]``), else the checkpoint.
        base_checkpoint: for LoRA runs the full checkpoint the adapters apply to; for a LoRA-only init,
            its base. output: the run folder. resume_from: the checkpoint to resume, if any.
        finished: the output already holds a finished run (nothing to do).
        validation_episodes: held-out episode count.
    """

    spec: EmbodimentSpec
    dataset: LeRobotDataset
    init: Path | None
    base_checkpoint: Path | None
    output: Path
    resume_from: Path | None = None
    finished: bool = False
    validation_episodes: int = 0
    settings: dict[str, Any] = field(default_factory=dict)


def _fail(message: str) -> None:
    raise TrainingInputError(message)


def _embodiment(config: TrainConfig) -> EmbodimentSpec:
    name = config.embodiment
    if name is None:
        tag_file = Path(config.dataset) / "meta" / "embodiment.json"
        try:
            document = json.loads(tag_file.read_text())
        except (OSError, json.JSONDecodeError):
            _fail(f"--embodiment not given and {tag_file} is missing or unreadable; pass --embodiment "
                  f"({', '.join(embodiment_names())})")
        name = document.get("embodiment") or document.get("embodiment_tag")
        for candidate in embodiment_names():
            if load_embodiment(candidate).embodiment_tag == name:
                name = candidate
    try:
        return load_embodiment(name)
    except EmbodimentSpecError as error:
        _fail(f"embodiment: {error}")


def _checkpoint_dims(checkpoint: Path, spec: EmbodimentSpec) -> None:
    """The checkpoint's padded widths must hold the embodiment; its statistics, if any, must fit its layout."""
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as error:
        _fail(f"--init {checkpoint}: not a checkpoint (config.json: {error})")
    dit = (config.get("action_head_cfg") or {}).get("config", {}).get("diffusion_model_cfg") or {}
    state_width, action_width = int(dit.get("max_state_dim", 64)), int(dit.get("action_dim", 32))
    state_dim, action_dim = sum(k.dim for k in spec.state), sum(k.dim for k in spec.action)
    if state_dim > state_width or action_dim > action_width:
        _fail(f"--init {checkpoint}: the model takes {state_width} state / {action_width} action dims, the dataset "
              f"({spec.name}) has {state_dim} / {action_dim}")
    tags_file = checkpoint / "experiment_cfg" / "metadata.json"
    try:
        tags = json.loads(tags_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        _fail(f"--init {checkpoint}: {tags_file} missing or unreadable ({error}); a checkpoint needs it (facts §5.1)")
    if spec.embodiment_tag not in tags:
        return  # a new embodiment for this checkpoint: the dataset's statistics are used
    try:
        metadata = load_embodiment_metadata(checkpoint, spec.embodiment_tag)
    except CheckpointError as error:
        _fail(f"--init {checkpoint}: {error}")
    ours = [(k.key, k.dim) for k in spec.state], [(k.key, k.dim) for k in spec.action]
    theirs = [(k.name, k.dim) for k in metadata.state_keys], [(k.name, k.dim) for k in metadata.action_keys]
    if ours != theirs:
        _fail(f"--init {checkpoint}: its {spec.embodiment_tag!r} layout state {theirs[0]} action {theirs[1]} does not "
              f"fit the dataset's state {ours[0]} action {ours[1]}")


def _lora_base(config: TrainConfig, checkpoint: Path) -> Path:
    """The base a LoRA-only ``checkpoint`` was trained on: --base-checkpoint or the one it records."""
    from dreamzero_model.checkpoint import lora_base

    try:
        return lora_base(checkpoint, config.base_checkpoint)
    except CheckpointError as error:
        _fail(f"--init {error} (--base-checkpoint)")


def _output(config: TrainConfig, plan: RunPlan) -> None:
    from dreamzero_model.training.checkpoints import STATE_DIR, TRAINER_STATE, list_checkpoints

    output = plan.output
    if output.exists() and not output.is_dir():
        _fail(f"--output {output} is a file")
    busy = output.is_dir() and any(output.iterdir())
    if not config.resume:
        if busy:
            _fail(f"--output {output} already holds a run; pass --resume to continue it or choose another folder")
        return
    if (output / "config.json").is_file():
        plan.finished = True
        return
    checkpoints = list_checkpoints(output)
    if not checkpoints:
        return  # nothing saved yet: the run starts from the beginning
    plan.resume_from = checkpoints[-1][1]
    saved = json.loads((plan.resume_from / STATE_DIR / TRAINER_STATE).read_text()).get("settings", {})
    changed = [f"{key}: {saved.get(key)!r} -> {plan.settings.get(key)!r}" for key in RESUME_KEYS
               if key in saved and saved.get(key) != plan.settings.get(key)]
    if changed:
        _fail(f"--resume {output}: settings differ from the run it continues ({'; '.join(changed)})")


def prepare(config: TrainConfig, world_size: int = 1) -> RunPlan:
    """Resolve and check everything cheap to check (module docstring); raises :class:`TrainingInputError`."""
    if config.mode not in ("full", "lora"):
        _fail(f"--mode must be full or lora, got {config.mode!r}")
    if config.parallel not in ("auto", "ddp", "fsdp"):
        _fail(f"--parallel must be auto, ddp or fsdp, got {config.parallel!r}")
    for name in ("steps", "batch_size", "micro_batch", "save_every", "lora_rank", "val_samples", "start_stride"):
        if getattr(config, name) < 1:
            _fail(f"--{name.replace('_', '-')} must be >= 1, got {getattr(config, name)}")
    if not config.text_lr_scale > 0:
        _fail(f"--text-lr-scale must be > 0, got {config.text_lr_scale}")
    if config.vae_steps < 0:
        _fail(f"--vae-steps must be >= 0, got {config.vae_steps}")
    if config.cache_encodings and config.augment:
        _fail("--cache-encodings needs --no-augment: an augmented clip differs on every draw, so nothing could be "
              "reused")
    if config.batch_size % world_size:
        _fail(f"--batch-size {config.batch_size} (global) is not divisible by {world_size} processes")
    if not (Path(config.dataset) / "meta").is_dir():
        _fail(f"dataset: {config.dataset} is not a LeRobot dataset folder (no meta/)")
    spec = _embodiment(config)
    try:
        dataset = LeRobotDataset(config.dataset, spec)
    except DatasetError as error:
        _fail(f"dataset: {error}")
    init = base = None
    if config.init in SCRATCH_PRESETS:
        if config.mode == "lora":
            _fail(f"--mode lora needs --init CHECKPOINT (a trained model to adapt), not {config.init}")
    else:
        init = Path(config.init)
        if not (init / "config.json").is_file():
            _fail(f"--init {init}: not one of {', '.join(SCRATCH_PRESETS)} and not a checkpoint directory "
                  f"(no config.json)")
        _checkpoint_dims(init, spec)
        from dreamzero_model.training.model_setup import is_lora_only

        try:
            lora_only = is_lora_only(init)
        except CheckpointError as error:
            _fail(f"--init {init}: {error}")
        if lora_only:
            base = _lora_base(config, init)
            if config.mode == "lora":
                _fail(f"--init {init} is a LoRA checkpoint: train LoRA from the full checkpoint it was trained on "
                      f"({base}), or pass --mode full to fine-tune the merged model")
        elif config.mode == "lora":
            base = init
    episodes = dataset.num_episodes
    validation = config.val_episodes if config.val_episodes is not None else (max(1, episodes // 20) if episodes >= 2
                                                                              else 0)
    if not 0 <= validation < episodes:
        _fail(f"--val-episodes {validation}: the dataset has {episodes} episodes and at least one must train")
    settings = {**config.to_dict(), "dataset": str(Path(config.dataset).resolve()), "embodiment": spec.name,
                "init": config.init if init is None else str(init.resolve()),
                "base_checkpoint": None if base is None else str(base.resolve()),
                "lr": config.learning_rate(), "val_episodes": validation}
    plan = RunPlan(spec=spec, dataset=dataset, init=init, base_checkpoint=base, output=Path(config.output),
                   validation_episodes=validation, settings=settings)
    _output(config, plan)
    return plan
