"""``WamPolicy``: one object a node holds to run DreamZero on one embodiment (facts §2.5, §3.6).

Wires the encoders, the KV-cached :class:`~dreamzero_model.session.WamSession`, the q99 normalizer
and the prompt template of a checkpoint:
* ``infer(video, state)`` takes the stitched mosaic frames (the embodiment layer crops, resizes and
  stitches the camera views, facts §1.7) and the raw state vector in the checkpoint's concatenation
  order, and returns 24 de-normalised actions (relative dimensions still relative to that state,
  facts §1.9) plus, optionally, the decoded predicted frames.
* A new context starts on the first call after ``reset``, when a call brings one frame, when the
  prompt changes or after 4 chunks; it is conditioned on the newest frame (CLIP features, its VAE
  latent and the window's ``y``). Continuation calls bring the frames of the chunk just executed:
  9 (training spacing), 8 (the newest-but-8 frame is prepended) or 4 (each doubled, then the first
  prepended, as the official server does); they are VAE-encoded and the last 2 latents written to
  the cache.
* Text embeddings (prompt and negative prompt) are computed once per prompt; image embeddings
  once per context.
* ``infer`` = ``prepare`` (checks, encoders, the session's reset or observed latents) + denoising +
  de-normalising. :func:`infer_together` denoises prepared calls of several policies (one model,
  aligned sessions: the model server's batching) in one batched loop (``session.step_together``).
Shapes: T frames, H x W mosaic pixels, S state dims, A action dims of the embodiment.
Imports torch and numpy, and the sibling modules.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dreamzero_model.checkpoint import (CONFIG_FILE, is_lora_checkpoint, load_checkpoint_weights, load_into,
                                        lora_base, merged_lora_tensors, read_config, save_weights, weight_files)
from dreamzero_model.config import SamplerConfig
from dreamzero_model.errors import CheckpointError
from dreamzero_model.full_model import VLA, FullModelConfig, build_full_model, get_full_config
from dreamzero_model.metadata import EmbodimentMetadata, load_embodiment_metadata, write_embodiment_metadata
from dreamzero_model.prompts import NEGATIVE_PROMPT, format_prompt
from dreamzero_model.session import StepResult, WamSession, step_together
from dreamzero_model.text_encoder import PromptTokenizer

TOKENIZER_DIR = "tokenizer"  # where save_pretrained puts the tokenizer (the official layout has none)
OUR_CONFIG_KEY = "dreamzero_ros"  # our block in config.json: the exact component configs
CONTEXT_FRAMES = 9  # frames VAE-encoded per continuation call: 3 latents, the last 2 observed (facts §2.5)


@dataclass(frozen=True)
class Prediction:
    """One chunk.

    Attributes:
        actions: float64[24, A], de-normalised; dims where ``relative`` is True are relative to the state given.
        relative: bool[A], per action dimension.
        frames: uint8[8, H, W, 3], the decoded predicted mosaic frames of the chunk, or None.
        new_context: True when this call started a new context.
        seconds: wall time per stage (text, image, vae_encode, denoise, vae_decode, total); in a batch
            ``denoise`` is the shared loop's and ``total`` this call's stages plus it.
        batch_size: chunks denoised together with this one in one batched loop (1: alone, :func:`infer_together`).
    """

    actions: np.ndarray
    relative: np.ndarray
    frames: np.ndarray | None
    new_context: bool
    seconds: dict[str, float]
    batch_size: int = 1


@dataclass(frozen=True)
class PreparedChunk:
    """A call of :meth:`WamPolicy.infer` up to its denoising (:meth:`WamPolicy.prepare`).

    Attributes:
        policy: whose call it is. observed: float[1, z, 2, h, w] latents of the executed chunk, None on a
        context's first call. state: float32[1, S] normalized padded state. new_context: the call started one.
        seconds: wall time per stage so far. prepare_s: wall time of the preparation.
    """

    policy: WamPolicy
    observed: torch.Tensor | None
    state: torch.Tensor
    new_context: bool
    seconds: dict[str, float]
    prepare_s: float

    @property
    def step_key(self) -> tuple:
        """Chunks with equal keys are denoised together exactly (:func:`infer_together`)."""
        return self.policy.session.step_key


def _default_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def checkpoint_full_config(folder: Path) -> FullModelConfig:
    """The component configs of the checkpoint in ``folder`` from its ``config.json``: our block when it has one,
    else the official preset its DiT matches (:func:`_official_full_config`).

    Raises:
        CheckpointError: an unreadable config.json or one that matches no known model.
    """
    config_json = read_config(folder)
    return (FullModelConfig.from_dict(config_json[OUR_CONFIG_KEY]) if OUR_CONFIG_KEY in config_json
            else _official_full_config(config_json))


def _official_full_config(config_json: dict) -> FullModelConfig:
    """Match an official ``config.json`` (no block of ours) to a preset by its DiT width (facts §5.1)."""
    try:
        dit = config_json["action_head_cfg"]["config"]["diffusion_model_cfg"]
    except (KeyError, TypeError) as error:
        raise CheckpointError(f"{CONFIG_FILE}: no action_head_cfg.config.diffusion_model_cfg ({error})") from error
    for name in ("dreamzero_14b", "dreamzero_5b"):
        preset = get_full_config(name)
        if (dit.get("dim"), dit.get("num_layers"), dit.get("in_dim")) == (preset.dit.dim, preset.dit.num_layers,
                                                                          preset.dit.in_dim):
            return preset
    raise CheckpointError(f"{CONFIG_FILE}: DiT dim {dit.get('dim')} / {dit.get('num_layers')} layers matches no "
                          f"known model (dreamzero_14b, dreamzero_5b)")


class WamPolicy:
    """The World Action Model for one embodiment: encoders + session + normaliser + prompt.

    ``cfg_group``: a process group of 2 ranks sharing the CFG branches (facts §3.2, see
    :class:`~dreamzero_model.session.WamSession`); both ranks must make the same calls.
    """

    def __init__(self, model: VLA, metadata: EmbodimentMetadata, tokenizer: PromptTokenizer,
                 sampler: SamplerConfig | None = None, decode_video: bool = True,
                 cfg_group: torch.distributed.ProcessGroup | None = None) -> None:
        self.model = model
        self.config: FullModelConfig = model.config
        self.metadata = metadata
        self.tokenizer = tokenizer
        self.decode_video = decode_video
        self.session = WamSession(model.action_head.model, sampler, cfg_group=cfg_group)
        self.device = next(model.parameters()).device
        self.dtype = next(model.parameters()).dtype
        self._prompt: str | None = None
        self._context_prompt: str | None = None
        self._text: tuple[torch.Tensor, torch.Tensor] | None = None
        self._text_prompt: str | None = None
        self._start_new_context = True
        self._last_latent: torch.Tensor | None = None
        if metadata.state_dim > self.config.dit.max_state_dim or metadata.action_dim > self.config.dit.action_dim:
            raise CheckpointError(f"embodiment {metadata.tag!r}: state {metadata.state_dim} / action "
                                  f"{metadata.action_dim} dims exceed the model's {self.config.dit.max_state_dim} / "
                                  f"{self.config.dit.action_dim}")

    # ---------------------------------------------------------------- loading and saving
    @classmethod
    def from_pretrained(cls, path: str | Path, embodiment_tag: str | None = None, device: str | torch.device = "cpu",
                        dtype: torch.dtype | None = None, sampler: SamplerConfig | None = None,
                        base_checkpoint: str | Path | None = None, tokenizer_path: str | Path | None = None,
                        decode_video: bool = True, progress: bool = True,
                        cfg_group: torch.distributed.ProcessGroup | None = None) -> WamPolicy:
        """Load a checkpoint directory in the official layout (facts §5.1).

        Args:
            embodiment_tag: which statistics to use (``oxe_droid``, ``agibot``, ``yam``); optional when
                ``metadata.json`` holds one embodiment.
            dtype: default bfloat16 on CUDA, float32 elsewhere.
            base_checkpoint: for LoRA-only checkpoints, the full checkpoint the LoRA was trained on
                (e.g. DreamZero-AgiBot, facts §5.4); default: the one its conf.yaml records (``dreamzero train``),
                checked against the recorded fingerprint.
            tokenizer_path: local umT5 tokenizer directory; default ``tokenizer_path`` of conf.yaml
                (relative paths are relative to the checkpoint) or ``<path>/tokenizer``.
            cfg_group: 2 ranks sharing the CFG branches (facts §3.2); None computes both here.

        Raises:
            CheckpointError: missing or inconsistent files (each names the file and the key).
        """
        folder = Path(path)
        device = torch.device(device)
        dtype = dtype or _default_dtype(device)
        full = checkpoint_full_config(folder)
        metadata = load_embodiment_metadata(folder, embodiment_tag or cls._only_tag(folder))
        model = build_full_model(full, device="meta", dtype=dtype)
        names = list(weight_files(folder))
        if is_lora_checkpoint(names) or metadata.save_lora_only:
            base = lora_base(folder, base_checkpoint)
            load_into(model, merged_lora_tensors(folder, base, device, dtype, progress=progress), f"{folder} + {base}")
        else:
            load_checkpoint_weights(model, folder, device, dtype, progress=progress)
        tokenizer = PromptTokenizer.from_pretrained(cls.tokenizer_dir(folder, metadata, tokenizer_path))
        return cls(model, metadata, tokenizer, sampler=sampler, decode_video=decode_video, cfg_group=cfg_group)

    @staticmethod
    def _only_tag(folder: Path) -> str:
        tags = list(json.loads((folder / "experiment_cfg" / "metadata.json").read_text())) if (
            folder / "experiment_cfg" / "metadata.json").is_file() else []
        if len(tags) != 1:
            raise CheckpointError(f"{folder}: pass embodiment_tag (metadata.json holds {tags or 'no embodiments'})")
        return tags[0]

    @staticmethod
    def tokenizer_dir(folder: Path, metadata: EmbodimentMetadata, override: str | Path | None) -> Path:
        """Where the checkpoint in ``folder`` keeps its tokenizer: ``override``, else the path ``metadata`` records
        (relative to ``folder``), else ``folder/tokenizer``."""
        if override is not None:
            return Path(override)
        if metadata.tokenizer_path:
            recorded = Path(metadata.tokenizer_path).expanduser()
            return recorded if recorded.is_absolute() else folder / recorded
        return folder / TOKENIZER_DIR

    def save_pretrained(self, path: str | Path, max_shard_bytes: int | None = None) -> None:
        """Write config.json, safetensors weights, experiment_cfg/ and the tokenizer (official layout)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        dit = self.config.dit
        config_json = {
            "model_type": "vla", "action_horizon": dit.num_action_per_block, "action_dim": dit.action_dim,
            "action_head_cfg": {"config": {"diffusion_model_cfg": dit.to_dict(), "train_architecture": "full"}},
            OUR_CONFIG_KEY: self.config.to_dict(),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config_json, indent=1))
        kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
        save_weights(self.model.state_dict(), folder, **kwargs)
        write_embodiment_metadata(folder, [self.metadata], extra_conf={"tokenizer_path": TOKENIZER_DIR})
        self.tokenizer.tokenizer.save_pretrained(str(folder / TOKENIZER_DIR))

    # ---------------------------------------------------------------- inference
    @property
    def mosaic_size(self) -> tuple[int, int]:
        """(H, W) of the stitched frames ``infer`` takes."""
        return self.config.mosaic_size

    @property
    def horizon(self) -> int:
        return self.config.dit.num_action_per_block

    def reset(self, prompt: str | None = None) -> None:
        """End the current context; the next ``infer`` starts a new one (optionally with a new prompt)."""
        if prompt is not None:
            self._prompt = prompt
        self._start_new_context = True

    @torch.no_grad()
    def _encode_text(self, instruction: str) -> tuple[torch.Tensor, torch.Tensor]:
        if self._text is None or self._text_prompt != instruction:
            dit = self.config.dit
            prompts = [format_prompt(self.metadata.tag, instruction), NEGATIVE_PROMPT]
            ids, mask = self.tokenizer(prompts, max_length=dit.text_len)
            features = self.model.action_head.text_encoder(ids.to(self.device), mask.to(self.device))
            self._text, self._text_prompt = (features[:1], features[1:]), instruction
        return self._text

    def _video_tensor(self, video: np.ndarray) -> torch.Tensor:
        """uint8[T, H, W, 3] -> float[1, 3, T, H, W] in [-1, 1] (facts §1.7)."""
        video = np.asarray(video)
        if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
            raise ValueError(f"video must be uint8[T, H, W, 3], got {video.dtype}{list(video.shape)}")
        if tuple(video.shape[1:3]) != self.mosaic_size:
            raise ValueError(f"video frames are {video.shape[1]}x{video.shape[2]}, the model takes "
                             f"{self.mosaic_size[0]}x{self.mosaic_size[1]} mosaics")
        tensor = torch.from_numpy(video).to(self.device).permute(3, 0, 1, 2)[None]
        return (tensor.float() / 127.5 - 1.0).to(self.dtype)

    @staticmethod
    def _context_frames(video: torch.Tensor) -> torch.Tensor:
        """Frames of the executed chunk -> the 9 frames the VAE encodes (facts §2.5)."""
        frames = video.shape[2]
        if frames == CONTEXT_FRAMES:
            return video
        if frames == CONTEXT_FRAMES - 1:
            return torch.cat([video[:, :, :1], video], dim=2)
        if frames == 4:
            doubled = video.repeat_interleave(2, dim=2)
            return torch.cat([doubled[:, :, :1], doubled], dim=2)
        raise ValueError(f"a continuation call takes 4, 8 or 9 frames, got {frames} (1 frame starts a new context)")

    def _conditioning(self, newest: torch.Tensor) -> torch.Tensor | None:
        """``y`` for the window: mask + VAE latents of [newest frame, zero frames] (facts §2.1).

        The zero frames are zeros in the model's [-1, 1] pixel space, Wan's image-to-video convention.
        """
        dit = self.config.dit
        if not dit.concat_first_frame_latent:
            return None
        frames = 1 + (dit.local_attn_size - 1) * self.config.vae.temporal_downsample
        clip = torch.cat([newest, torch.zeros_like(newest).expand(-1, -1, frames - 1, -1, -1)], dim=2)
        latents = self.model.action_head.vae.encode(clip)  # 1, z, local_attn_size, h, w
        mask = torch.zeros_like(latents[:, :4])
        mask[:, :, 0] = 1.0
        return torch.cat([mask, latents], dim=1)

    @torch.no_grad()
    def infer(self, video: np.ndarray, state: np.ndarray, prompt: str | None = None) -> Prediction:
        """Predict the next chunk.

        Args:
            video: uint8[T, H, W, 3] mosaics; T = 1 starts a new context, else 4, 8 or 9 frames covering
                the chunk just executed, the newest last.
            state: float[S] raw state at the newest frame, in the checkpoint's concatenation order.
            prompt: the instruction; None keeps the current one.

        Raises:
            ValueError: wrong frame size or count, wrong state width, non-finite state, no prompt yet.
        """
        return infer_together([self.prepare(video, state, prompt)])[0]

    @torch.no_grad()
    def prepare(self, video: np.ndarray, state: np.ndarray, prompt: str | None = None) -> PreparedChunk:
        """Everything of :meth:`infer` before the denoising: checks, encoders, the context's reset or the
        executed chunk's latents; :func:`infer_together` completes it (arguments and errors: :meth:`infer`)."""
        seconds: dict[str, float] = {}
        started = time.perf_counter()

        def lap(stage: str, since: float) -> float:
            now = time.perf_counter()
            seconds[stage] = now - since
            return now

        if prompt is not None:
            self._prompt = prompt
        if self._prompt is None:
            raise ValueError("no prompt: pass prompt= or call reset(prompt)")
        state = np.asarray(state, dtype=np.float64)
        if state.shape != (self.metadata.state_dim,) or not np.all(np.isfinite(state)):
            raise ValueError(f"state must be {self.metadata.state_dim} finite values "
                             f"({', '.join(k.name for k in self.metadata.state_keys)}), got {state.tolist()}")
        frames = self._video_tensor(video)
        text, negative = self._encode_text(self._prompt)
        clock = lap("text", started)
        # Official rule (facts §2.5): one frame, a different prompt, or a full context. The prompt is compared
        # as text here (the official code compares token ids), so a prompt truncated to the same tokens still resets.
        new_context = (self._start_new_context or frames.shape[2] == 1 or self._prompt != self._context_prompt
                       or self.session.should_reset(text))
        action_head = self.model.action_head
        if new_context:
            newest = frames[:, :, -1:]
            image = action_head.image_encoder.encode(newest[:, :, 0])
            clock = lap("image", clock)
            first_latent = action_head.vae.encode(newest)
            y = self._conditioning(newest)
            clock = lap("vae_encode", clock)
            self.session.reset(text, image, first_latent, negative_text_context=negative, y=y)
            observed, self._last_latent = None, first_latent
            self._start_new_context, self._context_prompt = False, self._prompt
        else:
            observed = action_head.vae.encode(self._context_frames(frames))[:, :, 1:]
            clock = lap("vae_encode", clock)
            self._last_latent = observed[:, :, -1:]
        padded = np.zeros(self.config.dit.max_state_dim)
        padded[:self.metadata.state_dim] = self.metadata.state_normalizer.normalize(state)
        state_tensor = torch.from_numpy(padded).float()[None].to(self.device)
        return PreparedChunk(policy=self, observed=observed, state=state_tensor, new_context=new_context,
                             seconds=seconds, prepare_s=time.perf_counter() - started)

    def _finish(self, chunk: PreparedChunk, result: StepResult, denoise_s: float, batch_size: int) -> Prediction:
        """The denoised chunk -> de-normalised actions (and decoded frames)."""
        started = time.perf_counter()
        seconds = {**chunk.seconds, "denoise": denoise_s}
        normalized = result.actions[0, :, :self.metadata.action_dim].double().cpu().numpy()
        actions = self.metadata.action_normalizer.unnormalize(normalized)
        predicted = None
        if self.decode_video:
            action_head = self.model.action_head
            decoded = action_head.vae.decode(torch.cat([self._last_latent.float(), result.latents], dim=2))
            pixels = ((decoded[0, :, 1:].clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)  # 3, 8, H, W
            predicted = pixels.permute(1, 2, 3, 0).cpu().numpy()
            seconds["vae_decode"] = time.perf_counter() - started
        seconds["total"] = chunk.prepare_s + denoise_s + time.perf_counter() - started
        return Prediction(actions=actions, relative=self.metadata.relative_action_mask(), frames=predicted,
                          new_context=chunk.new_context, seconds=seconds, batch_size=batch_size)

    # ---------------------------------------------------------------- tiny random models
    @classmethod
    def random_tiny(cls, metadata: EmbodimentMetadata, seed: int = 0, sampler: SamplerConfig | None = None,
                    decode_video: bool = True) -> WamPolicy:
        """A ``tiny`` policy with random weights and the local byte-level tokenizer (tests, demo)."""
        from dreamzero_model.tiny_tokenizer import build_tiny_tokenizer

        torch.manual_seed(seed)
        return cls(build_full_model("tiny"), metadata, build_tiny_tokenizer(), sampler=sampler,
                   decode_video=decode_video)


@torch.no_grad()
def infer_together(chunks: Sequence[PreparedChunk]) -> list[Prediction]:
    """Complete prepared chunks of distinct policies whose sessions align (:attr:`PreparedChunk.step_key`) with one
    denoising loop (:func:`~dreamzero_model.session.step_together`); each prediction equals its policy's
    :meth:`WamPolicy.infer` to float rounding. ``seconds["denoise"]`` is the shared loop's.

    Raises:
        ValueError: the chunks do not align.
    """
    started = time.perf_counter()
    results = step_together([c.policy.session for c in chunks], [c.observed for c in chunks], [c.state for c in chunks])
    denoise_s = time.perf_counter() - started
    return [c.policy._finish(c, result, denoise_s, len(chunks)) for c, result in zip(chunks, results)]
