"""``dreamzero train`` (also ``python -m dreamzero_model.training``): arguments, checks, exit status.

One process::

    dreamzero train DATASET --output runs/droid-tiny --init tiny --steps 2000 --batch-size 8

Several (DDP for small models, FSDP for the 14B; gloo on CPUs, NCCL on GPUs)::

    torchrun --nproc-per-node 8 $(which dreamzero) train DATASET --output runs/droid-lora \\
        --init checkpoints/DreamZero-DROID --mode lora --batch-size 32

Exit status: 0 done (or nothing left to do), 2 bad input (one line on stderr, before any long
work: a dataset of another embodiment, a checkpoint that does not fit the dataset, a LoRA checkpoint
without its base, an output folder holding another run, ...), 1 anything else.
Imports only argparse at module level; the trainer is imported when the command runs.
"""
from __future__ import annotations

import argparse
import sys

from dreamzero_model.training.config import DEFAULT_LR, TrainConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``dreamzero train`` (names follow :class:`TrainConfig`)."""
    defaults = TrainConfig(dataset="", output="")
    parser.add_argument("dataset", help="LeRobot v2.1 dataset folder (dreamzero dataset writes one)")
    parser.add_argument("--output", required=True, help="run folder: checkpoints, metrics, the final model")
    parser.add_argument("--embodiment", default=None, help="droid, agibot_g1, yam or a YAML (default: the dataset's)")
    model = parser.add_argument_group("model")
    model.add_argument("--init", default="tiny", help="'tiny' or 'tiny_sim' (every component from scratch, the CPU "
                       "presets: tiny_sim has a 64x128 mosaic) or a checkpoint folder")
    model.add_argument("--mode", default="full", choices=("full", "lora"), help="train the whole DiT, or LoRA + heads")
    model.add_argument("--base-checkpoint", default=None,
                       help="the full checkpoint a LoRA-only --init was trained on (default: the one it records)")
    model.add_argument("--tokenizer-path", default=None, help="local umT5 tokenizer (default: the checkpoint's)")
    model.add_argument("--lora-rank", type=int, default=defaults.lora_rank,
                       help="LoRA rank; alpha = rank (facts §6.2)")
    model.add_argument("--flash", action="store_true", help="decoupled video/action noise (DreamZero-Flash)")
    model.add_argument("--gradient-checkpointing", action="store_true", help="recompute DiT blocks in backward")
    model.add_argument("--vae-steps", type=int, default=defaults.vae_steps, help="--init tiny: VAE autoencoder steps")
    model.add_argument("--vae-lr", type=float, default=defaults.vae_lr)
    optimisation = parser.add_argument_group("optimisation")
    optimisation.add_argument("--steps", type=int, default=defaults.steps, help="optimizer steps")
    optimisation.add_argument("--batch-size", type=int, default=defaults.batch_size,
                              help="GLOBAL batch (samples per step over all processes)")
    optimisation.add_argument("--micro-batch", type=int, default=defaults.micro_batch,
                              help="samples per forward pass (1 keeps every sample's noise independent of processes)")
    optimisation.add_argument("--lr", type=float, default=None,
                              help=f"peak learning rate (default: tiny {DEFAULT_LR['tiny']}, "
                                   f"full {DEFAULT_LR['full']}, lora {DEFAULT_LR['lora']})")
    optimisation.add_argument("--text-lr-scale", type=float, default=defaults.text_lr_scale,
                              help="learning-rate multiplier for the DiT's text path (text embedding; cross-attention "
                                   "q, k, v, o and their norms). 1: the official recipe. A tiny model reading a random "
                                   "frozen text encoder learns the prompt only with more (checkpoints/sim_touch card)")
    optimisation.add_argument("--warmup-ratio", type=float, default=defaults.warmup_ratio)
    optimisation.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    optimisation.add_argument("--max-grad-norm", type=float, default=defaults.max_grad_norm)
    optimisation.add_argument("--seed", type=int, default=defaults.seed)
    optimisation.add_argument("--no-augment", dest="augment", action="store_false",
                              help="no random crop or colour jitter (the live image path only)")
    optimisation.add_argument("--start-stride", type=int, default=defaults.start_stride,
                              help="draw every n-th start step only (1: every step, as the official loader)")
    run = parser.add_argument_group("run")
    run.add_argument("--workers", type=int, default=defaults.workers, help="DataLoader worker processes per rank")
    run.add_argument("--cache-encodings", action="store_true",
                     help="with --no-augment: keep each clip's frozen-encoder outputs in OUTPUT/encodings and reuse "
                          "them (the VAE dominates a CPU step)")
    run.add_argument("--save-every", type=int, default=defaults.save_every, help="checkpoint every N steps")
    run.add_argument("--keep-checkpoints", type=int, default=defaults.keep_checkpoints, help="0 keeps all")
    run.add_argument("--val-every", type=int, default=defaults.val_every, help="validation every N steps (0: never)")
    run.add_argument("--val-episodes", type=int, default=None, help="held-out episodes (default 5%%, at least 1)")
    run.add_argument("--val-samples", type=int, default=defaults.val_samples)
    run.add_argument("--parallel", default="auto", choices=("auto", "ddp", "fsdp"),
                     help="under torchrun: DDP or FSDP (auto: FSDP from 1B trained parameters)")
    run.add_argument("--device", default="auto", help="auto, cpu or cuda")
    run.add_argument("--save-dtype", default=None, choices=("float32", "bfloat16"),
                     help="dtype of the servable weights (default: as trained)")
    run.add_argument("--no-merge-lora", dest="merge_lora", action="store_false",
                     help="LoRA runs: skip OUTPUT/merged (base + LoRA as one full checkpoint)")
    run.add_argument("--resume", action="store_true", help="continue the run in --output from its newest checkpoint")
    run.add_argument("--quiet", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    fields = TrainConfig.__dataclass_fields__
    return TrainConfig(**{name: getattr(args, name) for name in fields if hasattr(args, name)})


def run(args: argparse.Namespace) -> int:
    """Check the inputs, then train; the exit status of the module docstring."""
    import torch

    from dreamzero_model.training.config import TrainingInputError, prepare
    from dreamzero_model.training.distributed import close_processes, init_processes
    from dreamzero_model.training.trainer import Trainer

    config = config_from_args(args)
    if config.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"dreamzero train: --device {config.device}: torch sees no CUDA device", file=sys.stderr)
        return 2
    info = init_processes(config.device)
    try:
        plan = prepare(config, info.world_size)
        if plan.finished:
            if info.is_main:
                print(f"dreamzero train: {plan.output} holds a finished run (config.json); nothing to do",
                      file=sys.stderr)
            return 0
        trainer = Trainer(config, plan, info)
        trainer.setup()
        trainer.train()
        return 0
    except TrainingInputError as error:
        if info.is_main:
            print(f"dreamzero train: {error}", file=sys.stderr)
        return 2
    finally:
        close_processes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dreamzero train", description="Train DreamZero on a LeRobot dataset.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
