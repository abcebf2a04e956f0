"""First stage of ``--init tiny``: train the tiny VAE as an autoencoder on the dataset's clips, then freeze it.

The released model's VAE is Wan2.1's, trained elsewhere and frozen (facts §6.2); a from-scratch
tiny model needs one of its own before the DiT can learn anything from its latents. The stage
trains the same network (diffusers' ``AutoencoderKLWan`` behind :class:`~dreamzero_model.vae.WanVideoVAE`)
on the training clips (the mosaics of the live image path, 8K + 1 frames, so both the lone first
frame and the 4-frame causal groups are learned): reconstruction MSE in [-1, 1] pixel space of a
posterior sample, plus ``kl_weight`` times the KL divergence of the *normalised* posterior
((mu - latents_mean) / latents_std, the latent the DiT sees) from N(0, 1), which keeps those latents
near unit scale for flow matching. AdamW, constant learning rate; afterwards the VAE is put back in
eval mode with gradients off, as the real VAE is.

Dimensions: B clips, T frames, h x w pixels, Z latent channels, F latent frames.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch

from dreamzero_model.training.data import Sample
from dreamzero_model.vae import WanVideoVAE

KL_WEIGHT = 1e-3  # chosen for the tiny model: reconstruction dominates, normalised latents stay O(1)


def _video(samples: list[Sample], device: torch.device) -> torch.Tensor:
    """uint8 mosaics -> float32[B, 3, T, h, w] in [-1, 1] (the pixel scaling of facts §1.7)."""
    video = torch.stack([torch.from_numpy(s.video) for s in samples]).to(device)  # B, T, h, w, 3
    return video.permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


def autoencoder_loss(vae: WanVideoVAE, video: torch.Tensor, generator: torch.Generator,
                     kl_weight: float = KL_WEIGHT) -> tuple[torch.Tensor, torch.Tensor]:
    """(total, reconstruction MSE) of one batch of clips float32[B, 3, T, h, w]."""
    posterior = vae.model.encode(video).latent_dist
    noise = torch.randn(posterior.mean.shape, generator=generator).to(video.device)
    latent = posterior.mean + posterior.std * noise
    reconstruction = vae.model.decode(latent).sample
    mse = torch.mean((reconstruction.float() - video) ** 2)
    shape = (1, vae.config.z_dim, 1, 1, 1)
    mean, std = vae.latents_mean.to(video.device).view(shape), vae.latents_std.to(video.device).view(shape)
    normalised_mean, normalised_var = (posterior.mean - mean) / std, posterior.var / std ** 2
    kl = 0.5 * torch.mean(normalised_mean ** 2 + normalised_var - torch.log(normalised_var) - 1.0)
    return mse + kl_weight * kl, mse


def train_vae(vae: WanVideoVAE, batches: Iterable[list[Sample]], steps: int, lr: float, seed: int,
              device: torch.device, report: Callable[[int, float, float], None] | None = None) -> list[float]:
    """Train ``vae`` on ``steps`` batches of samples; returns the reconstruction MSE per step, then freezes it.

    Samples of different chunk counts in one batch are run as separate pieces, weighted by size.
    """
    vae.train().requires_grad_(True)
    optimizer = torch.optim.AdamW(vae.parameters(), lr=lr, betas=(0.9, 0.999), weight_decay=0.0)
    history: list[float] = []
    started = time.perf_counter()
    for step, samples in zip(range(steps), batches):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        groups: dict[int, list[Sample]] = {}
        for sample in samples:
            groups.setdefault(sample.num_chunks, []).append(sample)
        optimizer.zero_grad(set_to_none=True)
        mse_total = 0.0
        for group in groups.values():
            total, mse = autoencoder_loss(vae, _video(group, device), generator)
            (total * len(group) / len(samples)).backward()
            mse_total += float(mse.detach()) * len(group) / len(samples)
        optimizer.step()
        history.append(mse_total)
        if report is not None:
            report(step, mse_total, time.perf_counter() - started)
    vae.eval().requires_grad_(False)
    return history
