"""The Wan video VAE of DreamZero: diffusers' ``AutoencoderKLWan`` behind the official Wan names.

Owns the VAE configuration (presets ``wan21``, ``wan22`` and ``tiny``), the rename table between
diffusers' parameter names and the official Wan names, and the wrapper :class:`WanVideoVAE` that
turns mosaic video into normalised latents and back (facts §2.1, VAE row: z_dim 16, spatial /8,
causal temporal /4 with the first frame alone, so T frames -> 1 + (T-1)/4 latent frames, base width
96, per-channel latent mean/std normalisation; facts §7 for the Wan2.2 variant: z_dim 48, spatial /16
= 8x convolution + 2x2 patchify). The network itself is the field's maintained implementation,
diffusers' ``AutoencoderKLWan``; only its state-dict keys are renamed, through state-dict hooks on
``WanVideoVAE.model``, so ``model.state_dict()`` and ``model.load_state_dict()`` speak the official
names of ``Wan2.1_VAE.pth`` / ``Wan2.2_VAE.pth``, which equal the checkpoint manifest
(``reference/checkpoint-manifest/wan21_vae.json``, ``wan22_vae.json``; full-model prefix
``action_head.vae.model.``). No tensor is reshaped: every diffusers tensor has exactly the shape of
its official counterpart. The latent mean/std are plain float32 tensor attributes of the wrapper,
never saved (manifest ``not_in_state_dict``).

Dimensions: B batch, C = 3 colour channels, T video frames, H/W pixels, Z latent channels (z_dim),
F = 1 + (T-1)/4 latent frames, h/w = H/s, W/s latent grid with s the spatial factor (8 or 16).
This module never opens a file and imports torch and diffusers only (diffusers lazily: importing it
costs seconds on a CPU, so it is loaded when the first VAE is built).
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from dreamzero_model.construction import build_on, pick

# Wan2.1 per-channel latent statistics: the defaults ``latents_mean`` / ``latents_std`` of diffusers
# 0.42.1 ``AutoencoderKLWan.__init__`` (the Wan2.1 VAE config), equal to the constants hard-coded in
# upstream ``WanVideoVAE`` (manifest wan21_vae.json ``not_in_state_dict``: mean [16], std [16]).
WAN21_LATENTS_MEAN = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)
WAN21_LATENTS_STD = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)
# Wan2.2 per-channel latent statistics (z_dim 48): hard-coded in the official ``Wan2_2_VAE.__init__``
# (github.com/Wan-Video/Wan2.2, ``wan/modules/vae2_2.py``) and in upstream ``WanVideoVAE38``
# (manifest wan22_vae.json ``not_in_state_dict``: mean [48], std [48]); diffusers keeps them in the
# Wan2.2-TI2V-5B-Diffusers ``vae/config.json``, not in code.
WAN22_LATENTS_MEAN = (
    -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
    -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
    -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
    -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
    -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
    0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
)
WAN22_LATENTS_STD = (
    0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
    0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
    0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
    0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
    0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
    0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
)


@dataclass(frozen=True)
class VAEConfig:
    """Hyperparameters of the Wan video VAE (facts §2.1, §7; manifest ``config.inner_args``).

    Field names follow the official constructor (``VideoVAE_`` / ``VideoVAE38_``), including Wan's
    spelling ``temperal_downsample``.

    Attributes:
        name: Preset name.
        dim: Encoder base width (96 for Wan2.1, 160 for Wan2.2); stage widths are ``dim * dim_mult``.
        z_dim: Z, latent channels (16 or 48); the encoder emits 2Z (posterior mean and log-variance).
        dim_mult: Width multiplier per stage; every stage but the last halves H and W.
        num_res_blocks: Residual blocks per encoder stage (the decoder has one more per stage).
        attn_scales: Scales with attention in the stages; Wan uses none (only the middle blocks attend).
        temperal_downsample: Per downsampling stage, whether it also halves time (two of them: 4x).
        latents_mean / latents_std: Z per-channel statistics; the latent is (mu - mean) / std.
        decoder_dim: Decoder base width, or None for ``dim`` (Wan2.2: 256, official ``dec_dim``).
        is_residual: Wan2.2 stages (``Down_ResidualBlock`` / ``Up_ResidualBlock`` with parameter-free
            average/duplicate shortcuts) instead of Wan2.1's flat list of blocks.
        patch_size: Spatial pixel (un)shuffle around the network: 1 for Wan2.1, 2 for Wan2.2, whose
            encoder sees 3 * 2 * 2 = 12 channels.
    """

    name: str
    dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    attn_scales: tuple[float, ...] = ()
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    decoder_dim: int | None = None
    is_residual: bool = False
    patch_size: int = 1

    def __post_init__(self) -> None:
        problems = []
        if min(self.dim, self.z_dim, self.num_res_blocks, self.patch_size, self.decoder_dim or 1) < 1:
            problems.append("dim, z_dim, num_res_blocks, patch_size and decoder_dim must be >= 1")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            problems.append(f"temperal_downsample needs {len(self.dim_mult) - 1} entries (one per downsampling "
                            f"stage of dim_mult {self.dim_mult}), got {len(self.temperal_downsample)}")
        if sum(self.temperal_downsample) != 2:
            # AutoencoderKLWan._encode reads the first frame alone, then groups of 4 (facts §2.1).
            problems.append(f"temperal_downsample must halve time exactly twice (4x, facts §2.1), got "
                            f"{self.temperal_downsample}")
        if self.attn_scales:
            # diffusers' WanDecoder3d builds no attention for attn_scales, so the names could not match.
            problems.append(f"attn_scales must be empty (Wan attends only in the middle blocks), "
                            f"got {self.attn_scales}")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            problems.append(f"latents_mean / latents_std need z_dim={self.z_dim} values, got "
                            f"{len(self.latents_mean)} / {len(self.latents_std)}")
        elif min(self.latents_std) <= 0:
            problems.append("latents_std must be > 0")
        if problems:
            raise ValueError(f"VAEConfig {self.name!r}: " + "; ".join(problems))

    @property
    def spatial_downsample(self) -> int:
        """s, pixels per latent cell along H and W: 8 for Wan2.1, 16 for Wan2.2 (facts §2.1, §7)."""
        return 2 ** (len(self.dim_mult) - 1) * self.patch_size

    @property
    def temporal_downsample(self) -> int:
        """Frames per latent frame after the first: 4 (facts §2.1)."""
        return 2 ** sum(self.temperal_downsample)

    def latent_frames(self, num_frames: int) -> int:
        """F = 1 + (T - 1) / 4 latent frames for T = 1 + 4k video frames (facts §2.1)."""
        return 1 + (num_frames - 1) // self.temporal_downsample

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> VAEConfig:
        values = dict(values)
        for key in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            values[key] = tuple(values[key])
        return cls(**values)


_PRESETS: dict[str, VAEConfig] = {
    # Wan2.1 VAE (facts §2.1; manifest wan21_vae.json: 194 tensors, 126,892,531 params).
    "wan21": VAEConfig(name="wan21"),
    # Wan2.2 VAE of the 5B variant (facts §7; manifest wan22_vae.json: 196 tensors, 704,688,668 params).
    "wan22": VAEConfig(
        name="wan22", dim=160, z_dim=48, decoder_dim=256, is_residual=True, patch_size=2,
        latents_mean=WAN22_LATENTS_MEAN, latents_std=WAN22_LATENTS_STD,
    ),
    # CPU tests: the Wan2.1 structure and statistics (z 16, 8x spatial, 4x causal temporal), width 8.
    "tiny": VAEConfig(name="tiny", dim=8),
    # Half the width and one residual block per stage: about 3x cheaper on a CPU at 64x128 mosaics (issue 16).
    "tiny_sim": VAEConfig(name="tiny_sim", dim=4, num_res_blocks=1),
}


def get_vae_config(name: str, /, **overrides) -> VAEConfig:
    """Return a VAE preset by name, optionally with fields replaced.

    Raises:
        ValueError: unknown name (the message suggests the closest preset) or an inconsistent override.
    """
    return pick(_PRESETS, name, "VAE config", **overrides)


def vae_config_names() -> list[str]:
    return list(_PRESETS)


# ---------------------------------------------------------------------------------------------------
# Rename table: diffusers AutoencoderKLWan key -> official Wan key.
# ---------------------------------------------------------------------------------------------------

# Inside a residual block: diffusers names the layers, Wan indexes ``residual = Sequential(RMS_norm,
# SiLU, CausalConv3d, RMS_norm, SiLU, Dropout, CausalConv3d)`` and calls the 1x1 projection ``shortcut``.
# These run first, while ``.conv1.`` can only be a residual block's (stems are still ``conv_in``).
_RESIDUAL_BLOCK_RULES: tuple[tuple[str, str], ...] = (
    (r"\.norm1\.", ".residual.0."),
    (r"\.conv1\.", ".residual.2."),
    (r"\.norm2\.", ".residual.3."),
    (r"\.conv2\.", ".residual.6."),
    (r"\.conv_shortcut\.", ".shortcut."),
)
# Latent 1x1 convolutions, stems, heads (``head = Sequential(RMS_norm, SiLU, CausalConv3d)``) and the
# middle blocks (``middle = Sequential(ResidualBlock, AttentionBlock, ResidualBlock)``).
_OUTER_RULES: tuple[tuple[str, str], ...] = (
    (r"^quant_conv\.", "conv1."),
    (r"^post_quant_conv\.", "conv2."),
    (r"^(encoder|decoder)\.conv_in\.", r"\1.conv1."),
    (r"^(encoder|decoder)\.norm_out\.", r"\1.head.0."),
    (r"^(encoder|decoder)\.conv_out\.", r"\1.head.2."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.0\.", r"\1.middle.0."),
    (r"^(encoder|decoder)\.mid_block\.attentions\.0\.", r"\1.middle.1."),
    (r"^(encoder|decoder)\.mid_block\.resnets\.1\.", r"\1.middle.2."),
)


def _stage_rules(config: VAEConfig) -> tuple[tuple[str, str], ...]:
    """Rules for the down/up stages, which depend on ``num_res_blocks`` and the stage count."""
    n = config.num_res_blocks
    if config.is_residual:
        # Wan2.2: nested on both sides; stage i holds its blocks then its resampler in ``downsamples`` /
        # ``upsamples`` (n residual blocks down, n + 1 up).
        return (
            (r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.downsamples.\1.downsamples.\2."),
            (r"^encoder\.down_blocks\.(\d+)\.downsampler\.", rf"encoder.downsamples.\1.downsamples.{n}."),
            (r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.", r"decoder.upsamples.\1.upsamples.\2."),
            (r"^decoder\.up_blocks\.(\d+)\.upsampler\.", rf"decoder.upsamples.\1.upsamples.{n + 1}."),
        )
    # Wan2.1: the encoder list is flat on both sides; the decoder is flat in Wan but grouped per stage
    # in diffusers, so stage i (n + 1 blocks, then a resampler except in the last stage) starts at
    # official index i * (n + 2).
    rules = [(r"^encoder\.down_blocks\.", "encoder.downsamples.")]
    for stage in range(len(config.dim_mult)):
        first = stage * (n + 2)
        rules += [(rf"^decoder\.up_blocks\.{stage}\.resnets\.{block}\.", f"decoder.upsamples.{first + block}.")
                  for block in range(n + 1)]
        if stage != len(config.dim_mult) - 1:
            rules.append((rf"^decoder\.up_blocks\.{stage}\.upsamplers\.0\.", f"decoder.upsamples.{first + n + 1}."))
    return tuple(rules)


def rename_rules(config: VAEConfig) -> tuple[tuple[str, str], ...]:
    """The rename table: ordered (regex on the diffusers key, replacement) pairs.

    Each rule is applied once, in order, with :func:`re.sub` (see :func:`official_names`): 13 shared
    rules (residual-block layers, stems, heads, middle blocks) then the stage rules, 1 encoder + 15
    decoder rules for Wan2.1-shaped configs (29 in all), 4 for Wan2.2 (17 in all).
    """
    return _RESIDUAL_BLOCK_RULES + _OUTER_RULES + _stage_rules(config)


def official_names(config: VAEConfig, diffusers_names: Iterable[str]) -> dict[str, str]:
    """Map every diffusers state-dict key to its official Wan key through :func:`rename_rules`.

    Returns:
        ``{diffusers_key: official_key}`` in the order of ``diffusers_names``.

    Raises:
        ValueError: two keys map to one official name (a broken table; it must be a bijection).
    """
    rules = [(re.compile(pattern), replacement) for pattern, replacement in rename_rules(config)]
    mapping = {}
    for name in diffusers_names:
        official = name
        for pattern, replacement in rules:
            official = pattern.sub(replacement, official)
        mapping[name] = official
    clashes = sorted(name for name, count in Counter(mapping.values()).items() if count > 1)
    if clashes:
        raise ValueError(f"VAE rename table for {config.name!r} is not one-to-one: {clashes[:5]}")
    return mapping


class _SaveOfficialNames:
    """``state_dict`` post-hook: renames this module's keys (those under ``prefix``) to the official ones.

    A callable object, not a bound method, because torch marks public hooks with an attribute.
    """

    def __init__(self, to_official: dict[str, str]) -> None:
        self.to_official = to_official

    def __call__(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict) -> None:
        keys = [key for key in state_dict if key.startswith(prefix)]
        # Pop all, then re-insert in the same order, so the module's keys keep their relative order.
        values = [state_dict.pop(key) for key in keys]
        for key, value in zip(keys, values):
            local = key[len(prefix):]
            state_dict[prefix + self.to_official.get(local, local)] = value


class _LoadOfficialNames:
    """``load_state_dict`` hooks: official keys in, diffusers keys to the module, official keys in errors.

    :meth:`pre` renames the keys under ``prefix`` before the module loads them. Only the official names
    are accepted: any other key (a diffusers name, a typo) is removed and reported as unexpected, so
    ``strict=True`` fails on it instead of loading it silently. :meth:`post` reports missing keys and
    size mismatches under their official names too.
    """

    _SIZE_MISMATCH = re.compile(r"size mismatch for (\S+):")

    def __init__(self, to_official: dict[str, str]) -> None:
        self.to_official = to_official
        self.to_diffusers = {official: name for name, official in to_official.items()}
        # Handed from pre to post of the same load: the module's prefix and torch's error list.
        self._prefix = ""
        self._error_msgs: list[str] = []

    def pre(self, module: nn.Module, state_dict: dict, prefix: str, local_metadata: dict, strict: bool,
            missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        self._prefix, self._error_msgs = prefix, error_msgs
        keys = [key for key in state_dict if key.startswith(prefix)]
        values = [state_dict.pop(key) for key in keys]
        for key, value in zip(keys, values):
            local = key[len(prefix):]
            if local in self.to_diffusers:
                state_dict[prefix + self.to_diffusers[local]] = value
            else:
                unexpected_keys.append(key)

    def _official(self, key: str) -> str:
        local = key[len(self._prefix):] if key.startswith(self._prefix) else None
        return self._prefix + self.to_official[local] if local in self.to_official else key

    def post(self, module: nn.Module, incompatible_keys: Any) -> None:
        missing = incompatible_keys.missing_keys
        missing[:] = [self._official(key) for key in missing]
        self._error_msgs[:] = [self._SIZE_MISMATCH.sub(lambda m: f"size mismatch for {self._official(m[1])}:", msg)
                               for msg in self._error_msgs]
        self._error_msgs = []


def _diffusers_kwargs(config: VAEConfig) -> dict:
    """Constructor arguments of diffusers' ``AutoencoderKLWan`` for ``config``."""
    channels = 3 * config.patch_size ** 2  # RGB after the 2x2 pixel unshuffle of Wan2.2
    return dict(
        base_dim=config.dim, decoder_base_dim=config.decoder_dim, z_dim=config.z_dim,
        dim_mult=list(config.dim_mult), num_res_blocks=config.num_res_blocks, attn_scales=list(config.attn_scales),
        temperal_downsample=list(config.temperal_downsample), latents_mean=list(config.latents_mean),
        latents_std=list(config.latents_std), is_residual=config.is_residual, in_channels=channels,
        out_channels=channels, patch_size=config.patch_size if config.patch_size > 1 else None,
        scale_factor_temporal=config.temporal_downsample, scale_factor_spatial=config.spatial_downsample,
    )


class WanVideoVAE(nn.Module):
    """Causal video VAE (facts §2.1): mosaic video in [-1, 1] <-> normalised latents.

    ``self.model`` is diffusers' ``AutoencoderKLWan``. Its parameter *attributes* keep diffusers' names,
    but its state dict uses the official Wan names (manifest ``wan21_vae.json`` / ``wan22_vae.json``
    without the prefix ``action_head.vae.model.``): ``model.state_dict()`` returns them and
    ``model.load_state_dict()`` expects them. The wrapper holds no other parameter or buffer; the latent
    statistics are plain float32 attributes ``latents_mean`` / ``latents_std``: float32[Z].
    """

    def __init__(self, config: VAEConfig) -> None:
        super().__init__()
        from diffusers.models.autoencoders.autoencoder_kl_wan import AutoencoderKLWan

        self.config = config
        self.model = AutoencoderKLWan(**_diffusers_kwargs(config))
        to_official = official_names(config, self.model.state_dict())
        self.model.register_state_dict_post_hook(_SaveOfficialNames(to_official))
        loader = _LoadOfficialNames(to_official)
        self.model.register_load_state_dict_pre_hook(loader.pre)
        self.model.register_load_state_dict_post_hook(loader.post)
        # Never saved (manifest not_in_state_dict); explicit CPU so a meta-device build keeps the values.
        self.latents_mean = torch.tensor(config.latents_mean, dtype=torch.float32, device="cpu")
        self.latents_std = torch.tensor(config.latents_std, dtype=torch.float32, device="cpu")

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def init_weights(self) -> None:
        """Fresh initialisation in place: PyTorch's default convolution init, RMS-norm gains of one."""
        for module in self.model.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                module.reset_parameters()
            elif isinstance(getattr(module, "gamma", None), nn.Parameter):
                nn.init.ones_(module.gamma)

    def _statistics(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """mean, std: float32[1, Z, 1, 1, 1] on ``device``."""
        shape = (1, self.config.z_dim, 1, 1, 1)
        return self.latents_mean.to(device).view(shape), self.latents_std.to(device).view(shape)

    @torch.no_grad()
    def encode(self, video: torch.Tensor) -> torch.Tensor:
        """Encode video into the normalised latent, using the posterior mean (no sampling).

        Args:
            video: float[B, 3, T, H, W] in [-1, 1] (facts §1.7), T = 1 + 4k, H and W multiples of s.
                Moved to the module's device and dtype.

        Returns:
            float32[B, Z, F, H/s, W/s], F = 1 + (T-1)/4: (mu - mean) / std per channel. Latent frame 0
            depends on video frame 0 only, latent frame f on frames up to 4f (causal).

        Raises:
            ValueError: ``video`` is not a float [B, 3, T, H, W], T is not 1 + 4k, or H or W is not a
                multiple of s.
        """
        if video.ndim != 5 or video.shape[1] != 3 or not video.is_floating_point():
            raise ValueError(f"encode: video must be float[B, 3, T, H, W] in [-1, 1], got {video.dtype} "
                             f"{list(video.shape)}")
        frames, height, width = video.shape[2:]
        step, s = self.config.temporal_downsample, self.config.spatial_downsample
        if frames < 1 or (frames - 1) % step:
            raise ValueError(f"encode: the causal VAE needs T = 1 + {step}k frames (facts §2.1), got T={frames}")
        if height % s or width % s:
            raise ValueError(f"encode: frame height and width must be multiples of {s} (spatial downsampling of "
                             f"{self.config.name!r}), got H={height}, W={width}")
        video = video.to(device=self.device, dtype=self.dtype)
        mu = self.model.encode(video).latent_dist.mean  # B, Z, F, h, w (module dtype)
        mean, std = self._statistics(mu.device)
        return (mu.float() - mean) / std

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents into video.

        Args:
            latents: float[B, Z, F, h, w] as returned by :meth:`encode`; moved to the module's device.

        Returns:
            float32[B, 3, 1 + 4(F-1), s h, s w], clamped to [-1, 1].

        Raises:
            ValueError: ``latents`` is not a float [B, Z, F, h, w] with Z = z_dim and F >= 1.
        """
        if (latents.ndim != 5 or latents.shape[1] != self.config.z_dim or latents.shape[2] < 1
                or not latents.is_floating_point()):
            raise ValueError(f"decode: latents must be float[B, {self.config.z_dim}, F >= 1, h, w], got "
                             f"{latents.dtype} {list(latents.shape)}")
        latents = latents.to(device=self.device, dtype=torch.float32)
        mean, std = self._statistics(latents.device)
        mu = (latents * std + mean).to(self.dtype)  # un-normalise in fp32, run in the module dtype
        return self.model.decode(mu).sample.float()  # diffusers clamps to [-1, 1]


def build_vae(name_or_config: str | VAEConfig, device: torch.device | str | None = None,
              dtype: torch.dtype | None = None) -> WanVideoVAE:
    """Build the VAE straight on ``device`` in ``dtype`` (``device="meta"`` allocates nothing).

    On a real device the parameters are created empty there and initialised in place (load the
    official weights with ``vae.model.load_state_dict``). The module is returned in eval mode; the
    latent statistics stay float32 whatever ``dtype``.
    """
    config = get_vae_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    return build_on(lambda: WanVideoVAE(config), device, dtype).eval()


__all__ = ["WAN21_LATENTS_MEAN", "WAN21_LATENTS_STD", "WAN22_LATENTS_MEAN", "WAN22_LATENTS_STD", "VAEConfig",
           "WanVideoVAE", "build_vae", "get_vae_config", "official_names", "rename_rules", "vae_config_names"]
