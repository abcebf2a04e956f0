"""The training loop of ``dreamzero train`` (facts §6; training-serving-facts §3).

Per optimizer step: the rank's slice of the global batch (:class:`~dreamzero_model.training.data.StepSampler`)
is grouped into micro-batches of one chunk count; each runs the frozen encoders
(:class:`~dreamzero_model.training.model_setup.Conditioner`) and the teacher-forcing flow-matching
loss (:func:`~dreamzero_model.loss.training_loss`, coupled noise, or decoupled with ``--flash``)
with noise drawn from a generator seeded by the micro-batch's first sample index, so the noise of a
sample does not depend on how samples are spread over processes; the loss is weighted by the
micro-batch's share of the global batch and back-propagated (gradients reduced after the last
micro-batch). Then gradient clipping, AdamW, the cosine schedule with linear warmup. bf16 autocast
on GPUs. Every ``val_every`` steps the loss of fixed samples of held-out episodes (fixed noise);
every ``save_every`` steps an atomic checkpoint (:mod:`.checkpoints`); metrics to ``metrics.jsonl``
and ``loss.png`` (:mod:`.metrics`); a tqdm bar with loss, steps/s and ETA.

``--resume`` restores the trained parameters, AdamW, the scheduler and RNG states from the newest
complete checkpoint and continues at its step; because samples and noise are functions of their
indices, the continued run computes exactly the losses the uninterrupted run would have.
"""
from __future__ import annotations

import json
import math
import re
import resource
import sys
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from dreamzero_model.checkpoint import iter_tensors, load_into, save_weights, weight_files, weights_fingerprint
from dreamzero_model.loss import LossConfig
from dreamzero_model.training import checkpoints
from dreamzero_model.training.config import RunPlan, TrainConfig
from dreamzero_model.training.data import (TRAIN_STREAM, VAE_STREAM, VALIDATION_STREAM, Augmentation, Sample,
                                           SampleStream, StepSampler, dataset_metadata, make_loader, split_episodes)
from dreamzero_model.training.encodings import EncodingCache, encoder_fingerprint
from dreamzero_model.training.distributed import (ProcessInfo, barrier, choose_parallel, grad_norm_value,
                                                  gradient_sync, load_full_state, sum_over_ranks, wrap)
from dreamzero_model.training.metrics import MetricsLog
from dreamzero_model.training.model_setup import (Conditioner, LoadedModel, TrainingDiT, build_tiny, inject_lora,
                                                  load_pretrained, load_pretrained_sharded, micro_batches,
                                                  release_dit, set_trainable, trained_parameter_count)
from dreamzero_model.training.sampling import SamplingConfig
from dreamzero_model.training.vae_stage import train_vae

VAE_STAGE_DIR = "vae_stage"
ENCODINGS_DIR = "encodings"  # --cache-encodings
SUMMARY_FILE = "train_summary.json"


def noise_seed(seed: int, stream: int, index: int) -> int:
    """Seed of the loss noise of the micro-batch that starts with sample ``index`` of ``stream``."""
    return int(np.random.SeedSequence([seed, stream, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


def cosine_with_warmup(total_steps: int, warmup_ratio: float):
    """lr factor: linear from 0 over ceil(ratio x steps) steps, then half a cosine to 0 (HF's schedule)."""
    warmup = math.ceil(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        progress = (step - warmup) / max(1, total_steps - warmup)
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * progress)))
    return factor


# The DiT's text path: the text embedding and each block's cross-attention q, k, v, o and their norms (the image
# keys and values, k_img/v_img/norm_k_img, are not); names relative to the trained module (``dit.`` prefix).
TEXT_PATH = re.compile(r"(^|\.)text_embedding\.|\.cross_attn\.(q|k|v|o|norm_q|norm_k)\.")


def parameter_groups(module: torch.nn.Module, weight_decay: float, lr: float,
                     text_lr_scale: float = 1.0) -> list[dict]:
    """AdamW groups: weight decay on weights, none on biases and norm gains (1-D tensors, ``.b`` biases); with
    ``text_lr_scale`` != 1 the text path (:data:`TEXT_PATH`) gets its own two groups at ``lr`` x the scale.

    The order is fixed (weights, plain, then text weights, text plain; empty text groups left out), so a scale of
    1 gives the two groups of the official recipe and resumes optimizer states saved before the option existed.
    """
    order = ((False, False), (True, False), (False, True), (True, True))  # (plain, text)
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {key: [] for key in order}
    for name, parameter in module.named_parameters():
        if parameter.requires_grad:
            plain = parameter.ndim < 2 or name.endswith((".bias", ".b"))
            text = text_lr_scale != 1.0 and TEXT_PATH.search(name) is not None
            groups[plain, text].append(parameter)
    return [{"params": params, "weight_decay": 0.0 if plain else weight_decay,
             "lr": lr * (text_lr_scale if text else 1.0)}
            for (plain, text), params in groups.items() if params or not text]


def peak_memory_mb(device: torch.device) -> dict[str, float]:
    """Peak resident memory of this process and of finished children (workers), and CUDA's peak allocation."""
    to_mb = 1 / 1024  # ru_maxrss is in KiB on Linux
    peaks = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * to_mb,
             "peak_children_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * to_mb}
    if device.type == "cuda":
        peaks["peak_cuda_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return peaks


class Trainer:
    """One run (see module docstring); build with :meth:`create`, then :meth:`train`."""

    def __init__(self, config: TrainConfig, plan: RunPlan, info: ProcessInfo) -> None:
        self.config, self.plan, self.info = config, plan, info
        self.output = plan.output
        self.device = info.device
        self.autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda"
                         else nullcontext())
        spec = plan.spec
        self.sampling = SamplingConfig(horizon=spec.timing.horizon, frame_stride=spec.timing.frame_stride,
                                       start_stride=config.start_stride)
        self.lora = config.mode == "lora"

    # -------------------------------------------------------------------------------------- setup
    def setup(self) -> None:
        config, plan, info = self.config, self.plan, self.info
        self.metadata = dataset_metadata(plan.dataset, self.sampling)
        cuda = self.device.type == "cuda"
        sharded = self._sharded_load()
        dtype = torch.bfloat16 if cuda else torch.float32
        base = plan.base_checkpoint if plan.init != plan.base_checkpoint else None
        progress = info.is_main and config.progress
        if plan.init is None:
            loaded = build_tiny(self.metadata, config.seed, config.init)
        elif sharded:  # rank 0 reads the DiT; the others build it on the meta device (.distributed)
            loaded = load_pretrained_sharded(plan.init, plan.spec.embodiment_tag, self.metadata, dtype, base,
                                             config.tokenizer_path, progress, info.is_main)
        else:  # on the CPU first, then to the device
            loaded = load_pretrained(plan.init, plan.spec.embodiment_tag, self.metadata, torch.device("cpu"), dtype,
                                     base, config.tokenizer_path, progress)
        self.loaded: LoadedModel = loaded
        dit_config = loaded.policy.config.dit
        frames_per_chunk = dit_config.num_frame_per_block * loaded.policy.config.vae.temporal_downsample
        if (self.sampling.horizon, self.sampling.frames_per_chunk) != (dit_config.num_action_per_block,
                                                                      frames_per_chunk):
            raise ValueError(f"embodiment chunks ({self.sampling.horizon} actions, {self.sampling.frames_per_chunk} "
                             f"frames) do not fit the model ({dit_config.num_action_per_block}, {frames_per_chunk})")
        self.sampling = replace(self.sampling, max_chunks=dit_config.max_chunk_size)
        head = loaded.model.action_head
        for encoder in (head.text_encoder, head.image_encoder, head.vae):
            encoder.to(self.device)
        train_episodes, val_episodes = split_episodes(plan.dataset.num_episodes, plan.validation_episodes, config.seed)
        self.train_episodes, self.val_episodes = train_episodes, val_episodes
        padded = (dit_config.max_state_dim, dit_config.action_dim)
        mosaic = loaded.policy.mosaic_size
        self.train_stream = SampleStream(plan.dataset, self.metadata, train_episodes, TRAIN_STREAM, config.seed, mosaic,
                                         padded, self.sampling, Augmentation() if config.augment else None)
        self.val_stream = (SampleStream(plan.dataset, self.metadata, val_episodes, VALIDATION_STREAM, config.seed,
                                        mosaic, padded, self.sampling) if val_episodes else None)
        if plan.init is None:
            self._vae_stage()
        if cuda:  # frozen encoders in bf16 (facts §6.2)
            for encoder in (head.text_encoder, head.image_encoder, head.vae):
                encoder.to(torch.bfloat16)
        self.encodings = None
        if config.cache_encodings:  # the encoders are final now
            self.encodings = EncodingCache(self.output / ENCODINGS_DIR, encoder_fingerprint(head.vae, head.image_encoder))
            for stream in (self.train_stream, self.val_stream):
                if stream is not None:
                    stream.encoded = self.encodings
        if self.lora:
            inject_lora(loaded.dit, config.lora_rank, config.seed)
        trainable = set_trainable(loaded.model, config.mode)
        dit_state = release_dit(loaded.dit, info.is_main) if sharded else None
        for parameter in loaded.dit.parameters():  # float32 masters of what is trained; a LoRA base stays bf16 on GPUs
            if parameter.requires_grad:
                parameter.data = parameter.data.float()
        self.trainable_count = sum(p.numel() for p in loaded.dit.parameters() if p.requires_grad)
        self.parallel = choose_parallel(config.parallel, self.trainable_count, info)
        if sharded and self.parallel != "fsdp":
            raise ValueError(f"the DiT was loaded for FSDP but {self.parallel} was chosen afterwards")
        if self.parallel != "fsdp":
            loaded.dit.to(self.device)
        self.module = TrainingDiT(loaded.dit, LossConfig(flash=config.flash), config.gradient_checkpointing)
        self.trained = wrap(self.module, self.parallel, info)
        if sharded:
            load_full_state(self.trained, None if dit_state is None else
                            {f"dit.{name}": tensor for name, tensor in dit_state.items()}, info)
            del dit_state
        self.parameters = [p for p in self.module.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(parameter_groups(self.module, config.weight_decay, config.learning_rate(),
                                                            config.text_lr_scale),
                                           lr=config.learning_rate(), betas=(config.adam_beta1, config.adam_beta2),
                                           eps=config.adam_eps)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer,
                                                           cosine_with_warmup(config.steps, config.warmup_ratio))
        self.conditioner = Conditioner(loaded.policy, self.device,
                                       torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.start_step = 0
        if plan.resume_from is not None:
            state = checkpoints.load_training_state(plan.resume_from / checkpoints.STATE_DIR, self.trained,
                                                    self.optimizer, self.scheduler, self.parallel, info)
            self.start_step = int(state["step"])
        self.metrics = MetricsLog(self.output, info.is_main,
                                  resume_step=self.start_step if plan.resume_from is not None else 0)
        if info.is_main:
            self._log(f"{plan.dataset.root}: {plan.dataset.num_episodes} episodes ({len(train_episodes)} train, "
                      f"{len(val_episodes)} validation), {len(self.train_stream)} start steps; model "
                      f"{loaded.policy.config.name}, {config.mode}, {self.trainable_count:,} trained parameters "
                      f"({len(trainable)} tensors); {info.world_size} process(es), parallel {self.parallel}, "
                      f"device {self.device}; steps {self.start_step}..{config.steps}, global batch "
                      f"{config.batch_size}")

    def _sharded_load(self) -> bool:
        """True when the init checkpoint's DiT is to be read by rank 0 alone (FSDP, :mod:`.distributed`)."""
        config, plan, info = self.config, self.plan, self.info
        if plan.init is None or not info.distributed:
            return False
        count = trained_parameter_count(plan.init, config.mode, config.lora_rank) if config.parallel == "auto" else 0
        return choose_parallel(config.parallel, count, info) == "fsdp"

    def _log(self, message: str) -> None:
        if self.info.is_main:
            print(f"dreamzero train: {message}", file=sys.stderr, flush=True)

    def _vae_stage(self) -> None:
        """Train the tiny VAE once (rank 0), store it in ``OUTPUT/vae_stage``, load it on every rank."""
        config, info, vae = self.config, self.info, self.loaded.model.action_head.vae
        folder = self.output / VAE_STAGE_DIR
        if not (folder / "model.safetensors").is_file() and info.is_main:
            stream = replace_stream(self.train_stream, VAE_STREAM)
            loader = make_loader(stream, StepSampler(0, config.vae_steps, config.batch_size), config.workers)
            if config.vae_steps:
                self._log(f"VAE stage: {config.vae_steps} steps of {config.batch_size} clips (the tiny VAE as an "
                          f"autoencoder)")
            lines: list[dict] = []

            def report(step: int, mse: float, seconds: float) -> None:
                lines.append({"vae_step": step, "vae_mse": mse, "elapsed_s": seconds})

            history = train_vae(vae, loader, config.vae_steps, config.vae_lr, config.seed, self.device, report)
            self._log(f"VAE stage done: reconstruction MSE {history[0]:.4f} -> {history[-1]:.4f}" if history else
                      "VAE stage skipped (--vae-steps 0): the randomly initialised VAE is frozen as it is")
            staging = self.output / f".{VAE_STAGE_DIR}.tmp"
            staging.mkdir(parents=True, exist_ok=True)
            save_weights({n: t.detach().cpu() for n, t in vae.state_dict().items()}, staging)
            (staging / "history.json").write_text(json.dumps(lines))
            checkpoints.replace_dir(staging, folder)
        barrier(info)
        files = weight_files(folder)
        load_into(vae, iter_tensors(files, list(files), self.device, None, progress=False), str(folder))
        vae.eval().requires_grad_(False)

    # ---------------------------------------------------------------------------------------- steps
    def _forward(self, samples: list[Sample], stream: int, scale_by: int) -> torch.Tensor:
        """Run micro-batches of ``samples``; backward when training. Returns [total, video, action] x count."""
        training = torch.is_grad_enabled()
        sums = torch.zeros(3, dtype=torch.float64)
        pieces = micro_batches(samples, self.config.micro_batch)
        weights = [len(p) for p in pieces]
        if self.parallel == "fsdp":  # every rank must run as many forwards as the busiest one
            most = self._max_over_ranks(len(pieces))
            while len(pieces) < most:
                pieces.append(pieces[-1])
                weights.append(0)
        for position, (piece, weight) in enumerate(zip(pieces, weights)):
            batch = self.conditioner.batch(piece, self.encodings)
            generator = torch.Generator().manual_seed(noise_seed(self.config.seed, stream, piece[0].index))
            last = position == len(pieces) - 1
            sync = gradient_sync(self.trained, self.parallel, last) if training else nullcontext()
            with sync:
                with self.autocast:
                    total, video, action = self.trained(batch, generator)
                if training:
                    (total * (weight / scale_by)).backward()
            sums += torch.tensor([float(total.detach()), float(video.detach()), float(action.detach())],
                                 dtype=torch.float64) * weight
        return sums

    def _max_over_ranks(self, value: int) -> int:
        import torch.distributed as dist

        tensor = torch.tensor([value], dtype=torch.int64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def _train_step(self, samples: list[Sample]) -> dict[str, float]:
        self.trained.train()
        self.optimizer.zero_grad(set_to_none=True)
        local = self.config.batch_size // self.info.world_size
        sums = self._forward(samples, TRAIN_STREAM, local)
        norm = torch.nn.utils.clip_grad_norm_(self.parameters, self.config.max_grad_norm)
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        total, video, action = (sum_over_ranks(sums, self.info) / self.config.batch_size).tolist()
        return {"loss": total, "video_loss": video, "action_loss": action, "lr": lr,
                "grad_norm": grad_norm_value(norm)}

    @torch.no_grad()
    def validate(self) -> dict[str, float] | None:
        """Mean loss of ``val_samples`` fixed samples of the held-out episodes, with fixed noise."""
        if self.val_stream is None:
            return None
        self.trained.eval()
        count, world = self.config.val_samples, self.info.world_size
        sums = torch.zeros(3, dtype=torch.float64)
        for slot in range(math.ceil(count / world)):  # equal work per rank (FSDP needs it)
            index = slot * world + self.info.rank
            sample = self.val_stream[min(index, count - 1)]
            part = self._forward([sample], VALIDATION_STREAM, 1)
            sums += part if index < count else 0.0
        total, video, action = (sum_over_ranks(sums, self.info) / count).tolist()
        return {"val_loss": total, "val_video_loss": video, "val_action_loss": action}

    # ------------------------------------------------------------------------------------------ run
    def _conf(self) -> dict:
        plan, config = self.plan, self.config
        conf = {"training": {k: plan.settings[k] for k in ("dataset", "embodiment", "init", "mode", "steps",
                                                             "batch_size", "lr", "text_lr_scale", "flash", "lora_rank",
                                                             "seed")}}
        if self.lora and plan.base_checkpoint is not None:
            conf["base_checkpoint"] = str(plan.base_checkpoint.resolve())
            conf["base_checkpoint_fingerprint"] = weights_fingerprint(plan.base_checkpoint)
        if config.mode == "lora":
            conf["lora_rank"], conf["lora_alpha"] = config.lora_rank, config.lora_rank
        return conf

    def _save(self, step: int, conf: dict, last_loss: float | None) -> Path:
        state = {"step": step, "samples_seen": step * self.config.batch_size, "global_batch": self.config.batch_size,
                 "world_size": self.info.world_size, "loss": last_loss, "settings": self.plan.settings}
        save_dtype = getattr(torch, self.config.save_dtype) if self.config.save_dtype else None
        return checkpoints.save_checkpoint(self.output, step, self.loaded.policy, self.metadata, self.trained,
                                           self.optimizer, self.scheduler, self.parallel, self.info, self.lora, conf,
                                           state, self.config.keep_checkpoints, save_dtype)

    def train(self) -> dict:
        """Run from the start (or resumed) step to the end; returns the summary written to train_summary.json."""
        config, info = self.config, self.info
        self.output.mkdir(parents=True, exist_ok=True)
        conf = self._conf()
        loader = make_loader(self.train_stream, StepSampler(self.start_step, config.steps, config.batch_size,
                                                            info.rank, info.world_size), config.workers)
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=self.start_step, unit="step", desc="train",
                   disable=not (info.is_main and config.progress), dynamic_ncols=True)
        started, rates, last = time.perf_counter(), [], None
        saved_at = None
        step = self.start_step
        for step, samples in zip(range(self.start_step, config.steps), loader):
            tick = time.perf_counter()
            line = {"step": step, **self._train_step(samples)}
            elapsed = time.perf_counter() - tick
            rates.append(config.batch_size / elapsed)
            line.update(samples_per_s=rates[-1], elapsed_s=time.perf_counter() - started)
            self.metrics.write(line)
            last = line["loss"]
            bar.set_postfix(loss=f"{last:.4f}", lr=f"{line['lr']:.2e}")
            bar.update(1)
            done = step + 1
            if config.val_every and (done % config.val_every == 0 or done == config.steps):
                validation = self.validate()
                if validation is not None:
                    self.metrics.write({"step": step, **validation})
            if done % config.save_every == 0 or done == config.steps:
                saved_at = self._save(done, conf, last)
                self.metrics.plot()
        bar.close()
        if saved_at is None and self.start_step >= config.steps:
            saved_at = checkpoints.list_checkpoints(self.output)[-1][1]
        summary = {"steps": config.steps, "start_step": self.start_step, "global_batch": config.batch_size,
                   "world_size": info.world_size, "parallel": self.parallel, "device": str(self.device),
                   "trained_parameters": self.trainable_count, "final_loss": last,
                   "samples_per_s": float(np.median(rates[1:] if len(rates) > 1 else rates)) if rates else None,
                   "seconds": time.perf_counter() - started, **peak_memory_mb(self.device)}
        if info.is_main:
            checkpoints.export_final(self.output, saved_at, self.plan.base_checkpoint, self.lora,
                                     self.config.merge_lora)
            (self.output / SUMMARY_FILE).write_text(json.dumps(summary, indent=1))
            self.metrics.plot()
            self._log(f"done: {self.output} (final loss {last}, {summary['samples_per_s']} samples/s, peak RSS "
                      f"{summary['peak_rss_mb']:.0f} MB)")
        barrier(info)
        return summary


def replace_stream(stream: SampleStream, number: int) -> SampleStream:
    """The same episodes and settings as ``stream`` under another stream number (other samples)."""
    copy = SampleStream.__new__(SampleStream)
    copy.__dict__.update(stream.__dict__)
    copy.stream = number
    copy._cache = type(stream._cache)()
    copy.encoded = None  # the VAE stage trains on pixels
    return copy
