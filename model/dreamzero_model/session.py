"""``WamSession``: chunk-wise inference with a KV cache (facts §2.5-2.9).

One session is one context of the World Action Model for a batch of B robots:
* ``reset`` embeds the text and image context once, builds the conditioning latents ``y`` and
  prefills the cache with the conditioning frame at timestep 0 (latent frame 0).
* ``step`` first writes the ground-truth latents of the chunk just executed at timestep 0 into the
  positions where the previous call's predictions were (predictions are never cached), then
  denoises 2 new latent frames and 24 actions jointly from seeded noise, conditioned on the state.
  Classifier-free guidance applies to video only (facts §2.8); the unconditional branch (negative
  prompt) runs as extra batch rows with its own cache rows. The DiT runs only at the steps of the
  cache schedule. The initial noise follows the official seeding (:func:`initial_noise`).
* CFG parallelism (facts §3.2): with a ``cfg_group`` of 2 processes, rank 0 of the group computes
  only the conditional rows (prompt) and rank 1 only the unconditional rows (negative prompt), each
  with its own KV cache of B rows. After every DiT evaluation the ranks all-gather their (video,
  action) velocities, both apply the same guidance formula and scheduler update (actions from the
  conditional rank), so both hold identical noisy states and return identical chunks. Both ranks
  must call ``reset`` and ``step`` with the same inputs.
* After ``max_chunk_size`` chunks (9 latent frames) or on a new prompt the context must be reset
  with the newest frame (``should_reset``); the policy layer owns the encoders that produce it.
* Several sessions step together (:func:`step_together`, the model server's batching) when their
  chunks align (:attr:`WamSession.step_key`: same DiT, sampler, cache mode, CFG group and chunk
  position, hence the same cache length): each writes its observed latents into its own cache, then
  one denoising loop runs on their rows stacked along the batch dimension (contexts, ``y`` and the
  valid part of the caches concatenated, branch by branch), one batched DiT call per step, and the
  chunks are split back. The loop only reads the caches, so nothing is written back. Each session's
  initial noise is drawn as if it ran alone, so its chunk equals its solo chunk to float rounding
  (CPU GEMMs sum few rows in another order). ``step`` is ``step_together`` of one session.

Shapes: B batch, z latent channels, h/w latent grid, Na actions per chunk (24), A action width (32),
S state width (64). Imports torch (and torch.distributed) only.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist

from dreamzero_model.config import DiTConfig, SamplerConfig
from dreamzero_model.dit import CausalWanModel, CrossContext, DiTInputs, SelfAttentionPlan
from dreamzero_model.kv_cache import KVCache
from dreamzero_model.masks import inference_mask
from dreamzero_model.sampler import CacheSchedule, FlowSampler


@dataclass(frozen=True)
class StepResult:
    """actions: float32[B, Na, A], normalized; latents: float32[B, z, 2, h, w] predicted; dit_calls: DiT forwards."""

    actions: torch.Tensor
    latents: torch.Tensor
    dit_calls: int


def default_conditioning(first_latent: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Conditioning ``y`` float[B, 4 + z, num_frames, h, w] from the first latent alone.

    Mask channels are 1 on frame 0 and 0 elsewhere (facts §2.1). The image-latent channels hold the
    first latent on frame 0 and zeros after it; the official ``y`` encodes black frames there with
    the VAE, which the policy layer passes to ``reset`` when it has the VAE.
    """
    batch, _, _, height, width = first_latent.shape
    mask = torch.zeros(batch, 4, num_frames, height, width, dtype=first_latent.dtype, device=first_latent.device)
    mask[:, :, 0] = 1.0
    latent = torch.zeros(batch, first_latent.shape[1], num_frames, height, width, dtype=first_latent.dtype,
                         device=first_latent.device)
    latent[:, :, :1] = first_latent
    return torch.cat([mask, latent], dim=1)


def initial_noise(batch: int, config: DiTConfig, seed: int | None, device: torch.device,
                  dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Initial noise of one chunk: video float32[B, z, 2, h, w] and actions float32[B, Na, A].

    As the official head (facts §10): the video noise comes from a generator seeded with ``seed`` and
    the action noise from a NEW generator seeded with the same ``seed`` (not the continuation of the
    video stream), both drawn in the model's dtype (bf16 on CUDA) on its device, then held as float32.
    Batch rule: row i is the i-th draw of each stream's generator, so a robot's noise depends only on
    its row and the seed, never on the robots after it; row 0 is the official noise on any device,
    and on CPU every row equals the official single draw of the whole batch (torch fills a tensor
    draw by draw when, as here, a row holds a multiple of 16 values). ``seed`` None: fresh noise from
    torch's global generator.
    """
    video_shape = (1, config.out_dim, config.num_frame_per_block, config.latent_height, config.latent_width)
    action_shape = (1, config.num_action_per_block, config.action_dim)
    streams = []
    for shape in (video_shape, action_shape):
        generator = None if seed is None else torch.Generator(device=device).manual_seed(seed)
        rows = [torch.randn(shape, generator=generator, device=device, dtype=dtype) for _ in range(batch)]
        streams.append(torch.cat(rows).float())
    return streams[0], streams[1]


class WamSession:
    """KV-cached chunk-wise inference over one DiT (see module docstring).

    Args:
        model: the DiT, on the device and in the dtype inference runs in.
        sampler: solver, steps, CFG scale, cache schedule and seed; default :class:`SamplerConfig`.
        use_kv_cache: False recomputes the whole context at every call (a reference for tests).
        cfg_group: a process group of 2 ranks sharing the two CFG branches (facts §3.2): group rank 0
            computes the conditional branch, group rank 1 the unconditional one. None runs both
            branches here, as batch rows.

    Raises:
        ValueError: ``cfg_group`` does not hold exactly 2 ranks including this one, or ``cfg_scale``
            is 1 (no unconditional branch to split; run one process instead).
    """

    def __init__(self, model: CausalWanModel, sampler: SamplerConfig | None = None, *, use_kv_cache: bool = True,
                 cfg_group: dist.ProcessGroup | None = None) -> None:
        self.model = model
        self.config = model.config
        self.sampler = sampler or SamplerConfig()
        self.use_kv_cache = use_kv_cache
        self._group = cfg_group
        if cfg_group is not None:
            size, rank = dist.get_world_size(cfg_group), dist.get_rank(cfg_group)
            if size != 2 or rank not in (0, 1):
                raise ValueError(f"cfg_group must hold 2 ranks (conditional, unconditional; facts §3.2) including "
                                 f"this process, got size {size}, rank {rank}")
            if not self.guided:
                raise ValueError("cfg_group splits the two CFG branches, but cfg_scale is 1.0 (no unconditional "
                                 "branch): run one process without cfg_group")
        self._frame = 0  # next latent frame position in the context ("current_start_frame")
        self._batch = 0
        self._text: torch.Tensor | None = None
        self._context: list[CrossContext] = []
        self._y: torch.Tensor | None = None
        self._cache: KVCache | None = None
        self._clean: torch.Tensor | None = None  # full-recompute mode: ground-truth latents so far

    @property
    def guided(self) -> bool:
        return self.sampler.cfg_scale != 1.0

    @property
    def branch(self) -> str:
        """What this process computes: ``both`` (one process), ``conditional`` or ``unconditional`` (facts §3.2)."""
        if self._group is None:
            return "both" if self.guided else "conditional"
        return ("conditional", "unconditional")[dist.get_rank(self._group)]

    @property
    def frame(self) -> int:
        """Latent-frame position where the next chunk will be generated (0 before ``reset``)."""
        return self._frame

    @property
    def needs_reset(self) -> bool:
        """True before the first reset and once the context window is full (4 chunks)."""
        return self._frame == 0 or self._frame + self.config.num_frame_per_block > self.config.local_attn_size

    def should_reset(self, text_context: torch.Tensor) -> bool:
        """Official reset rule (facts §2.5): context full, nothing seen yet, or a different prompt."""
        return self.needs_reset or self._text is None or not torch.equal(self._text, text_context)

    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """Duplicate per-robot inputs for the unconditional rows when both branches run here."""
        return torch.cat([x, x]) if self.branch == "both" else x

    @torch.no_grad()
    def reset(self, text_context: torch.Tensor, image_context: torch.Tensor, first_latent: torch.Tensor, *,
              negative_text_context: torch.Tensor | None = None, y: torch.Tensor | None = None) -> None:
        """Start a new context.

        Args:
            text_context: float[B, text_len, text_dim], umT5 features of the prompt.
            image_context: float[B, num_image_tokens, clip_dim], CLIP features of the newest frame.
            first_latent: float[B, z, 1, h, w], VAE latent of the newest frame (the conditioning frame).
            negative_text_context: float[B or 1, text_len, text_dim], umT5 features of the negative
                prompt; required when ``cfg_scale != 1`` (on both ranks of a ``cfg_group``).
            y: float[B, 4 + z, 9, h, w] conditioning for the window (i2v only); default
                :func:`default_conditioning`.
        """
        config, model = self.config, self.model
        batch = first_latent.shape[0]
        text = text_context
        if self.guided:
            if negative_text_context is None:
                raise ValueError(f"cfg_scale {self.sampler.cfg_scale} needs negative_text_context")
            negative = negative_text_context.expand_as(text_context)
            rows = {"both": [text_context, negative], "conditional": [text_context], "unconditional": [negative]}
            text = torch.cat(rows[self.branch])
        dtype = next(model.parameters()).dtype
        self._batch, self._text = batch, text_context.clone()
        self._context = model.prepare_context(text.to(dtype), self._rows(image_context).to(dtype))
        if config.concat_first_frame_latent:
            self._y = self._rows(y if y is not None else default_conditioning(first_latent, config.local_attn_size))
        self._cache = None
        self._clean = None
        if self.use_kv_cache:
            self._cache = KVCache.zeros(config.num_layers, self._rows(first_latent).shape[0],
                                        config.local_attn_size * config.frame_seqlen, config.num_heads,
                                        config.head_dim, device=first_latent.device, dtype=dtype)
        self._frame = 0
        self._write_clean(first_latent)

    def _video_input(self, latents: torch.Tensor, first_frame: int) -> torch.Tensor:
        """Concatenate the conditioning ``y`` slice of these frame positions (i2v)."""
        if self._y is None:
            return latents
        frames = latents.shape[2]
        return torch.cat([latents, self._y[:, :, first_frame:first_frame + frames].to(latents.dtype)], dim=1)

    def _write_clean(self, latents: torch.Tensor) -> None:
        """Append ground-truth latents float[B, z, n, h, w] at the current position, timestep 0."""
        rows = self._rows(latents)
        frames = rows.shape[2]
        if self.use_kv_cache:
            offset = self._frame * self.config.frame_seqlen
            inputs = DiTInputs(video=self._video_input(rows, self._frame),
                               video_timestep=rows.new_zeros(rows.shape[0], frames),
                               frame_index=torch.arange(self._frame, self._frame + frames, device=rows.device))
            self.model(inputs, self._context, SelfAttentionPlan(cache=self._cache, read_tokens=offset, write_at=offset))
        else:
            self._clean = rows if self._clean is None else torch.cat([self._clean, rows], dim=2)
        self._frame += frames

    def _denoise_call(self, video: torch.Tensor, actions: torch.Tensor, state: torch.Tensor, timestep: torch.Tensor,
                      chunk: int):
        """One DiT evaluation of the query tokens (2 noisy frames, 24 actions, 1 state)."""
        config, device = self.config, video.device
        rows = video.shape[0]
        frames = video.shape[2]
        num_actions = actions.shape[1]
        frame_index = torch.arange(self._frame, self._frame + frames, device=device)
        video_in = self._video_input(video, self._frame)
        video_t = timestep.expand(rows, frames)
        if self.use_kv_cache:
            plan = SelfAttentionPlan(cache=self._cache, read_tokens=self._frame * config.frame_seqlen)
        else:
            clean = self._video_input(self._clean, 0)
            video_in = torch.cat([clean.to(video_in.dtype), video_in], dim=2)
            video_t = torch.cat([video_t.new_zeros(rows, self._frame), video_t], dim=1)
            frame_index = torch.arange(0, self._frame + frames, device=device)
            plan = SelfAttentionPlan(mask=inference_mask(self._frame, config.frame_seqlen, config.num_frame_per_block,
                                                         frames * config.frame_seqlen + num_actions + 1).to(device))
        inputs = DiTInputs(
            video=video_in, video_timestep=video_t, frame_index=frame_index,
            actions=actions, action_timestep=timestep.expand(rows, num_actions),
            action_index=chunk * config.num_action_per_block + torch.arange(num_actions, device=device),
            state=state, state_timestep=timestep.expand(rows, 1), state_index=torch.tensor([chunk], device=device))
        out = self.model(inputs, self._context, plan)
        return out.video[:, :, -frames:], out.actions

    def _guide(self, video_velocity: torch.Tensor, action_velocity: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Guided float32 velocities of the B robots from this process's DiT output (facts §2.8, §3.2).

        Video: v_uncond + cfg_scale (v_cond - v_uncond); actions: the conditional branch's velocity.
        """
        if self._group is not None:
            (conditional, action_velocity), (unconditional, _) = self._exchange(video_velocity, action_velocity)
        elif self.guided:
            conditional, unconditional = video_velocity.float().chunk(2)
            action_velocity = action_velocity[:self._batch]
        else:
            return video_velocity.float(), action_velocity.float()
        return unconditional + self.sampler.cfg_scale * (conditional - unconditional), action_velocity.float()

    def _exchange(self, video_velocity: torch.Tensor,
                  action_velocity: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Every branch's float32 (video, action) velocities, conditional first, on both ranks (facts §3.2).

        One all_gather of both velocities packed flat; float32 is exact for a bf16 DiT output.
        """
        mine = torch.cat([video_velocity.float().flatten(), action_velocity.float().flatten()])
        gathered = [torch.empty_like(mine) for _ in range(2)]
        dist.all_gather(gathered, mine, group=self._group)
        split = video_velocity.numel()
        return [(flat[:split].view(video_velocity.shape), flat[split:].view(action_velocity.shape))
                for flat in gathered]

    @property
    def step_key(self) -> tuple:
        """Sessions with equal keys step together exactly (:func:`step_together`): the same DiT, sampler, cache
        mode and CFG group, and the same chunk position (hence the same cache length)."""
        return id(self.model), self.sampler, self.use_kv_cache, id(self._group), self._frame

    @torch.no_grad()
    def step(self, observed_latents: torch.Tensor | None, state: torch.Tensor) -> StepResult:
        """Predict the next chunk.

        Args:
            observed_latents: float[B, z, 2, h, w], VAE latents of the chunk just executed (the last 2
                of its encoding), or None on the first step after ``reset``.
            state: float[B, S], normalized state padded to max_state_dim, at the chunk's start.

        Raises:
            RuntimeError: no context (call ``reset``) or the context is full (4 chunks: reset with
                the newest frame).
            ValueError: observed latents missing after the first step, or given on the first one.
        """
        return step_together([self], [observed_latents], [state])[0]

    def _check_step(self, observed_latents: torch.Tensor | None) -> None:
        """Raise (as :meth:`step` documents) unless this session can take a step with ``observed_latents``."""
        if self.needs_reset:
            raise RuntimeError("context is full or was never started: call reset() with the newest frame"
                               if self._frame else "call reset() before step()")
        first_step = self._frame == 1
        if first_step and observed_latents is not None:
            raise ValueError("the first step of a context takes no observed latents (only the conditioning frame)")
        if not first_step and (observed_latents is None
                               or observed_latents.shape[2] != self.config.num_frame_per_block):
            raise ValueError(f"step needs the {self.config.num_frame_per_block} observed latent frames of the chunk "
                             "just executed")

    def _write_observed(self, observed_latents: torch.Tensor | None) -> None:
        """Write the executed chunk's latents where the previous call's predictions were (not on a first step)."""
        if observed_latents is not None:
            self._frame -= self.config.num_frame_per_block
            self._write_clean(observed_latents)

    @classmethod
    def _stacked(cls, sessions: Sequence[WamSession]) -> WamSession:
        """A session over the aligned ``sessions``' rows for one denoising loop (reads only; module docstring).

        Rows are stacked branch by branch (conditional rows of every session, then unconditional ones), the
        layout :meth:`_rows` and :meth:`_guide` use; the caches are cut to their valid tokens.
        """
        lead = sessions[0]
        stack = cls(lead.model, lead.sampler, use_kv_cache=lead.use_kv_cache, cfg_group=lead._group)
        branches = 2 if lead.branch == "both" else 1

        def rows(parts: Sequence[torch.Tensor], dim: int = 0) -> torch.Tensor:
            by_branch = zip(*(part.chunk(branches, dim) for part in parts))  # (conditional rows...), (unconditional...)
            return torch.cat([piece for branch in by_branch for piece in branch], dim)

        stack._frame, stack._batch = lead._frame, sum(s._batch for s in sessions)
        stack._context = [CrossContext(**{f.name: rows([getattr(c, f.name) for c in layer])
                                          for f in fields(CrossContext)})
                          for layer in zip(*(s._context for s in sessions))]
        if lead._y is not None:
            stack._y = rows([s._y for s in sessions])
        if lead.use_kv_cache:
            tokens = lead._frame * lead.config.frame_seqlen
            stack._cache = KVCache(rows([s._cache.k[:, :, :tokens] for s in sessions], dim=1),
                                   rows([s._cache.v[:, :, :tokens] for s in sessions], dim=1))
        else:
            stack._clean = rows([s._clean for s in sessions])
        return stack

    def _denoise(self, video: torch.Tensor, actions: torch.Tensor,
                 state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The denoising loop at the current position: noise video float32[B, z, 2, h, w] and actions
        float32[B, Na, A], state float[B, S] -> denoised video, actions and the number of DiT calls."""
        config, device = self.config, state.device
        state_rows = self._rows(state.reshape(self._batch, 1, config.max_state_dim).float())
        chunk = (self._frame - 1) // config.num_frame_per_block
        video_sampler, action_sampler = FlowSampler(self.sampler), FlowSampler(self.sampler)
        schedule = CacheSchedule(self.sampler.cache_schedule, self.sampler.num_steps)
        calls = 0
        for index, timestep in enumerate(video_sampler.timesteps.tolist()):
            if schedule.should_run(index):
                t = torch.tensor([[float(timestep)]], device=device)
                video_velocity, action_velocity = self._guide(
                    *self._denoise_call(self._rows(video), self._rows(actions), state_rows, t, chunk))
                schedule.record(video_velocity)
                calls += 1
            video = video_sampler.step(video_velocity, index, video)
            actions = action_sampler.step(action_velocity, index, actions)
        return video, actions, calls


@torch.no_grad()
def step_together(sessions: Sequence[WamSession], observed_latents: Sequence[torch.Tensor | None],
                  states: Sequence[torch.Tensor]) -> list[StepResult]:
    """Predict the next chunk of several sessions in one denoising loop (module docstring); as
    :meth:`WamSession.step` on each, to float rounding.

    Args:
        sessions: distinct sessions with equal :attr:`WamSession.step_key`.
        observed_latents, states: each session's arguments of :meth:`WamSession.step`.

    Returns:
        Each session's chunk, in order.

    Raises:
        ValueError: the sessions do not align or repeat; as :meth:`WamSession.step` (checked for every session
            before any is changed).
        RuntimeError: as :meth:`WamSession.step`.
    """
    keys = {session.step_key for session in sessions}
    if len(keys) != 1 or len({id(session) for session in sessions}) != len(sessions):
        raise ValueError(f"step_together needs distinct sessions at one chunk position of one model and sampler, "
                         f"got positions {[session.frame for session in sessions]}")
    for session, latents in zip(sessions, observed_latents, strict=True):
        session._check_step(latents)
    for session, latents in zip(sessions, observed_latents):
        session._write_observed(latents)
    lead = sessions[0]
    dtype = next(lead.model.parameters()).dtype
    noise = [initial_noise(s._batch, s.config, s.sampler.seed, states[0].device, dtype) for s in sessions]
    stack = lead if len(sessions) == 1 else WamSession._stacked(sessions)
    state = torch.cat([state.reshape(s._batch, -1) for s, state in zip(sessions, states, strict=True)])
    video, actions, calls = stack._denoise(torch.cat([v for v, _ in noise]), torch.cat([a for _, a in noise]), state)
    sizes = [session._batch for session in sessions]
    for session in sessions:
        session._frame += session.config.num_frame_per_block
    return [StepResult(actions=a, latents=v, dit_calls=calls)
            for a, v in zip(actions.split(sizes), video.split(sizes))]
