"""Flow-matching samplers and DiT step caching for inference (facts §2.7, §2.9, §2.10).

Sigmas: linspace(sigma_max, 0, N + 1) without the last, shifted s' = shift s / (1 + (shift - 1) s),
then a final 0; timesteps = int(1000 s') (16 steps: 999, 986, ..., 416, 249). sigma_max is 0.999 as
the official scheduler holds it, in float32: 0.9990000128746033 (facts §10). The DiT predicts the
velocity v = noise - data, so data = x - s v.
* ``unipc``: flow UniPC multistep, order 2, bh2, x0-prediction, lower order at the end, final
  sigma 0: diffusers' ``UniPCMultistepScheduler`` configured exactly so (the official scheduler is
  Wan's port of it). One instance per stream (video, actions), as upstream.
* ``euler``: x <- x + (s_next - s) v, for any step count (1 and 4 for DreamZero-Flash).
Caching decides at which steps the DiT runs; skipped steps reuse the last velocities.
Imports torch, numpy and diffusers' scheduler only.
"""
from __future__ import annotations

import numpy as np
import torch

from dreamzero_model.config import CACHE_SCHEDULES, DIT_STEP_PRESET_STEPS, DIT_STEP_PRESETS, SamplerConfig

NUM_TRAIN_TIMESTEPS = 1000
# First unshifted inference sigma (facts §2.7): the official scheduler reads it from a float32 table
# (1 - 0.001), so it is float32(0.999) = 0.9990000128746033, not the float64 0.999 (facts §10).
SIGMA_MAX = float(np.float32(0.999))
# Dynamic schedule thresholds on the cosine similarity of the last two video velocities (facts §2.9).
DYNAMIC_ALWAYS_RUN = 2
DYNAMIC_SKIP_RULES = ((0.95, 4), (0.93, 2))  # (similarity above, steps skipped incl. the current)


def inference_sigmas(num_steps: int, shift: float) -> np.ndarray:
    """float64[num_steps]: shifted sigmas of the denoising steps (without the final 0)."""
    sigmas = np.linspace(SIGMA_MAX, 0.0, num_steps + 1)[:-1]
    return shift * sigmas / (1.0 + (shift - 1.0) * sigmas)


class FlowSampler:
    """Denoises one stream (video latents or actions) from noise with a fixed step schedule."""

    def __init__(self, config: SamplerConfig) -> None:
        self.config = config
        sigmas = inference_sigmas(config.num_steps, config.shift)
        self.sigmas = torch.tensor(np.append(sigmas, 0.0), dtype=torch.float32)
        self.timesteps = torch.from_numpy(sigmas * NUM_TRAIN_TIMESTEPS).to(torch.int64)
        self._unipc = None
        if config.solver == "unipc":
            from diffusers.schedulers.scheduling_unipc_multistep import UniPCMultistepScheduler

            self._unipc = UniPCMultistepScheduler(
                num_train_timesteps=NUM_TRAIN_TIMESTEPS, solver_order=2, solver_type="bh2", predict_x0=True,
                lower_order_final=True, final_sigmas_type="zero", prediction_type="flow_prediction",
                use_flow_sigmas=True, flow_shift=config.shift)
            self._unipc.set_timesteps(sigmas=np.linspace(SIGMA_MAX, 0.0, config.num_steps + 1)[:-1])
            if not torch.equal(self._unipc.timesteps, self.timesteps):
                raise RuntimeError(f"diffusers UniPC timesteps {self._unipc.timesteps.tolist()} differ from "
                                   f"facts §2.7 {self.timesteps.tolist()}")

    def step(self, velocity: torch.Tensor, index: int, sample: torch.Tensor) -> torch.Tensor:
        """Advance ``sample`` from step ``index`` to ``index + 1`` given the predicted velocity."""
        if self._unipc is not None:
            return self._unipc.step(velocity, self.timesteps[index], sample, return_dict=False)[0]
        delta = (self.sigmas[index + 1] - self.sigmas[index]).item()
        return (sample.float() + delta * velocity.float()).to(sample.dtype)


class CacheSchedule:
    """Decides per denoising step whether the DiT runs (facts §2.9).

    ``official``: steps 0,1,2,6,10,13,14,15 of 16; ``steps5`` ... ``steps8``: the other official
    ``NUM_DIT_STEPS`` masks (:data:`~dreamzero_model.config.DIT_STEP_PRESETS`); with any other step
    count than 16 these run all steps. ``all``: every step. ``dynamic``: the first 2 steps run;
    afterwards, when the cosine similarity of the last two computed video velocities exceeds 0.95,
    the current and next 3 steps are skipped, above 0.93 the current and next step; otherwise the
    step runs.
    """

    def __init__(self, kind: str, num_steps: int) -> None:
        if kind not in CACHE_SCHEDULES:
            raise ValueError(f"cache schedule must be one of {', '.join(CACHE_SCHEDULES)}, got {kind!r}")
        self.kind = kind
        self.num_steps = num_steps
        self._history: list[torch.Tensor] = []
        self._skip_left = 0
        self._run_after_skip = False

    def should_run(self, index: int) -> bool:
        if self.kind == "dynamic":
            return self._dynamic(index)
        if self.kind == "all" or self.num_steps != DIT_STEP_PRESET_STEPS:
            return True
        return index in DIT_STEP_PRESETS[self.kind]

    def _dynamic(self, index: int) -> bool:
        if self._skip_left > 0:
            self._skip_left -= 1
            return False
        if index < DYNAMIC_ALWAYS_RUN or len(self._history) < 2 or self._run_after_skip:
            self._run_after_skip = False
            return True
        similarity = torch.nn.functional.cosine_similarity(
            self._history[-1].flatten(1).float(), self._history[-2].flatten(1).float(), dim=1).mean().item()
        for threshold, skipped in DYNAMIC_SKIP_RULES:
            if similarity > threshold:
                self._skip_left, self._run_after_skip = skipped - 1, True
                return False
        return True

    def record(self, video_velocity: torch.Tensor) -> None:
        """Remember a freshly computed (CFG-combined) video velocity for the dynamic rule."""
        if self.kind == "dynamic":
            self._history = [*self._history[-1:], video_velocity.detach()]
