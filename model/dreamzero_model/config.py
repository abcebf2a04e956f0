"""Model configurations: frozen dataclasses and the named presets ``tiny``, ``dreamzero_14b``, ``dreamzero_5b``.

Owns every hyperparameter of the causal video-action DiT and its chunking. Numbers cite
``reference/dreamzero-facts.md`` (facts §N) and the checkpoint manifest
(``reference/checkpoint-manifest/dreamzero_14b_dit.json``, ``dreamzero_5b_dit.json``).
Imports the standard library only.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

from dreamzero_model.construction import pick

# Static DiT step caches: the denoising steps (of 16) at which the DiT runs; the other steps reuse
# the last velocities (facts §2.9). They are the official ``NUM_DIT_STEPS`` presets: ``stepsN`` is
# ``NUM_DIT_STEPS=N`` and ``official`` the official default (unset, i.e. 8), the same mask as ``steps8``.
DIT_STEP_PRESETS: dict[str, tuple[int, ...]] = {
    "official": (0, 1, 2, 6, 10, 13, 14, 15),
    "steps5": (0, 1, 2, 7, 12),
    "steps6": (0, 1, 5, 10, 14, 15),
    "steps7": (0, 1, 2, 6, 10, 14, 15),
    "steps8": (0, 1, 2, 6, 10, 13, 14, 15),
}
DIT_STEP_PRESET_STEPS = 16  # the presets are defined for 16 steps; other step counts run every step
# Every value of ``SamplerConfig.cache_schedule`` (the policy node's ``cache_schedule`` choices).
CACHE_SCHEDULES: tuple[str, ...] = ("official", "all", "dynamic", "steps5", "steps6", "steps7", "steps8")


@dataclass(frozen=True)
class DiTConfig:
    """Hyperparameters of the causal video-action DiT (``CausalWanModel``, facts §2.1-2.3).

    Attributes:
        name: Preset name.
        model_type: ``i2v`` (Wan2.1-I2V) or ``ti2v`` (Wan2.2-TI2V); both build the image
            cross-attention (manifest README).
        dim: Hidden width. num_layers / num_heads: transformer depth and heads (head dim = dim/heads).
        ffn_dim: FFN width (GELU-tanh). freq_dim: width of the timestep sinusoid.
        in_dim: Channels into the patch embedding (latent + mask + image latent for i2v).
        out_dim: Latent channels predicted per pixel (z_dim of the VAE).
        text_dim / text_len: umT5 feature width and token count. clip_dim / num_image_tokens: CLIP
            feature width and token count of the image context.
        patch_size: (t, h, w) patch of the 3D patch embedding.
        eps: Norm epsilon. concat_first_frame_latent: i2v conditioning by channel concatenation.
        action_dim / max_state_dim: padded action and state widths (facts §1.3).
        hidden_size: width of the state encoder and action decoder MLPs (manifest README).
        latent_height / latent_width: latent grid of one frame of the stitched mosaic.
        num_frame_per_block / num_action_per_block / num_state_per_block: tokens per chunk.
        max_chunk_size: chunks per context before a reset (facts §1.3).
        rope_theta, rope_video_len, rope_action_len, rope_state_len: RoPE base and table lengths
            (manifest ``not_in_state_dict``: 1024, 10240, 1024).
    """

    name: str
    model_type: str
    dim: int
    num_layers: int
    num_heads: int
    ffn_dim: int
    in_dim: int
    out_dim: int
    text_dim: int = 4096
    text_len: int = 512
    clip_dim: int = 1280
    num_image_tokens: int = 257
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    concat_first_frame_latent: bool = True
    action_dim: int = 32
    max_state_dim: int = 64
    hidden_size: int = 1024
    latent_height: int = 44
    latent_width: int = 80
    num_frame_per_block: int = 2
    num_action_per_block: int = 24
    num_state_per_block: int = 1
    max_chunk_size: int = 4
    rope_theta: float = 10000.0
    rope_video_len: int = 1024
    rope_action_len: int = 10240
    rope_state_len: int = 1024

    def __post_init__(self) -> None:
        problems = []
        if self.model_type not in ("i2v", "ti2v"):
            problems.append(f"model_type must be 'i2v' or 'ti2v', got {self.model_type!r}")
        if self.dim % self.num_heads:
            problems.append(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        elif (self.dim // self.num_heads) % 2:
            problems.append(f"head dim {self.dim // self.num_heads} must be even for RoPE")
        expected_in = self.out_dim + (4 + self.out_dim if self.concat_first_frame_latent else 0)
        if self.in_dim != expected_in:
            problems.append(f"in_dim {self.in_dim} != out_dim + mask + image latent = {expected_in}")
        _, ph, pw = self.patch_size
        if self.latent_height % ph or self.latent_width % pw:
            problems.append(f"latent grid {self.latent_height}x{self.latent_width} is not divisible "
                            f"by patch {ph}x{pw}")
        if problems:
            raise ValueError(f"DiTConfig {self.name!r}: " + "; ".join(problems))

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def frame_seqlen(self) -> int:
        """DiT tokens per latent frame (880 for the 14B model at 352x640, facts §2.3)."""
        _, ph, pw = self.patch_size
        return (self.latent_height // ph) * (self.latent_width // pw)

    @property
    def local_attn_size(self) -> int:
        """Latent frames per context: conditioning frame + max_chunk_size blocks (9, facts §2.5)."""
        return 1 + self.max_chunk_size * self.num_frame_per_block

    @property
    def y_channels(self) -> int:
        """Conditioning channels concatenated to the noisy latent: 4 mask + image latent (facts §2.1)."""
        return self.in_dim - self.out_dim

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> DiTConfig:
        values = dict(values)
        values["patch_size"] = tuple(values["patch_size"])
        return cls(**values)


@dataclass(frozen=True)
class SamplerConfig:
    """Inference sampler and DiT step caching (facts §2.7-2.10).

    Attributes:
        solver: ``unipc`` (flow UniPC, order 2, bh2; the official sampler) or ``euler``.
        num_steps: Denoising steps (16 official; 1 or 4 for Flash with Euler).
        shift: Sigma shift s' = shift s / (1 + (shift - 1) s).
        cfg_scale: Classifier-free guidance on video only; 1.0 disables the unconditional branch.
        cache_schedule: ``official`` (8 of 16: steps 0,1,2,6,10,13,14,15), ``all``, ``dynamic``, or
            ``steps5`` / ``steps6`` / ``steps7`` / ``steps8``: the official ``NUM_DIT_STEPS`` presets
            (:data:`DIT_STEP_PRESETS`; ``steps8`` equals ``official``). Step masks apply to 16 steps only.
        seed: Seed of the initial noise of every call (official 1140), or None for fresh noise.
    """

    solver: str = "unipc"
    num_steps: int = 16
    shift: float = 5.0
    cfg_scale: float = 5.0
    cache_schedule: str = "official"
    seed: int | None = 1140

    def __post_init__(self) -> None:
        if self.solver not in ("unipc", "euler"):
            raise ValueError(f"solver must be 'unipc' or 'euler', got {self.solver!r}")
        if self.num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {self.num_steps}")
        if self.cache_schedule not in CACHE_SCHEDULES:
            raise ValueError(f"cache_schedule must be one of {', '.join(CACHE_SCHEDULES)}, "
                             f"got {self.cache_schedule!r}")


FLASH_SAMPLER = SamplerConfig(solver="euler", num_steps=1, cfg_scale=1.0, cache_schedule="all")

_PRESETS: dict[str, DiTConfig] = {
    # CPU tests: same structure (i2v, 36 input channels, padded state/action, chunking), small sizes.
    "tiny": DiTConfig(
        name="tiny", model_type="i2v", dim=64, num_layers=2, num_heads=2, ffn_dim=128, in_dim=36,
        out_dim=16, text_dim=32, text_len=16, clip_dim=32, num_image_tokens=5, freq_dim=32,
        hidden_size=64, latent_height=4, latent_width=8,
    ),
    # The tiny model trained on the simulated DROID tasks (issue 16, checkpoints/droid_sim_tiny): the tiny DiT
    # with a 64x128 mosaic (8x16 latents: a cube spans a few pixels of a view), prompts long enough for the
    # DROID template and the instruction (the byte tokenizer: up to ~70 tokens), and a third block.
    "tiny_sim": DiTConfig(
        name="tiny_sim", model_type="i2v", dim=64, num_layers=3, num_heads=2, ffn_dim=128, in_dim=36,
        out_dim=16, text_dim=32, text_len=80, clip_dim=32, num_image_tokens=5, freq_dim=32,
        hidden_size=64, latent_height=8, latent_width=16,
    ),
    # Wan2.1-I2V-14B + DreamZero heads (facts §2.1; manifest dreamzero_14b_dit.json).
    "dreamzero_14b": DiTConfig(
        name="dreamzero_14b", model_type="i2v", dim=5120, num_layers=40, num_heads=40, ffn_dim=13824,
        in_dim=36, out_dim=16,
    ),
    # Wan2.2-TI2V-5B + DreamZero heads: 48-channel latent, no channel concat, 10x20 latent (facts §7).
    "dreamzero_5b": DiTConfig(
        name="dreamzero_5b", model_type="ti2v", dim=3072, num_layers=30, num_heads=24, ffn_dim=14336,
        in_dim=48, out_dim=48, concat_first_frame_latent=False, latent_height=10, latent_width=20,
    ),
}


def get_config(name: str, **overrides) -> DiTConfig:
    """Return a preset by name, optionally with fields replaced.

    Raises:
        ValueError: unknown name (the message suggests the closest preset).
    """
    return pick(_PRESETS, name, "model config", **overrides)


def config_names() -> list[str]:
    return list(_PRESETS)


__all__ = ["CACHE_SCHEDULES", "DIT_STEP_PRESETS", "DiTConfig", "FLASH_SAMPLER", "SamplerConfig", "config_names",
           "get_config"]
