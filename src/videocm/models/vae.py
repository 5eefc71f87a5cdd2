"""The video VAE: diffusers' ``AutoencoderKLCogVideoX`` with a small config (4x spatial, no temporal
compression), wrapped so latents come out normalised per channel (zero mean, unit std over training clips).

Videos are float ``(B, 3, T, H, W)`` in [-1, 1]; latents ``(B, C, T, H/4, W/4)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import AutoencoderKLCogVideoX


@dataclass
class VAEConfig:
    block_out_channels: tuple[int, ...] = (16, 32, 32)
    latent_channels: int = 4
    layers_per_block: int = 1
    norm_num_groups: int = 8
    size: int = 32


def build_vae(config: VAEConfig) -> AutoencoderKLCogVideoX:
    """A fresh small CogVideoX VAE: ``len(block_out_channels) - 1`` spatial halvings, no temporal compression."""
    depth = len(config.block_out_channels)
    return AutoencoderKLCogVideoX(
        in_channels=3, out_channels=3, down_block_types=("CogVideoXDownBlock3D",) * depth,
        up_block_types=("CogVideoXUpBlock3D",) * depth, block_out_channels=tuple(config.block_out_channels),
        latent_channels=config.latent_channels, layers_per_block=config.layers_per_block,
        norm_num_groups=config.norm_num_groups, temporal_compression_ratio=1, sample_height=config.size,
        sample_width=config.size, use_quant_conv=False, use_post_quant_conv=False,
    )


class VideoVAE(torch.nn.Module):
    """A CogVideoX-style VAE plus per-channel latent statistics (stored in its config as ``latents_mean`` /
    ``latents_std``): ``encode`` returns normalised latents, ``decode`` takes them back to pixels."""

    def __init__(self, vae: AutoencoderKLCogVideoX) -> None:
        super().__init__()
        self.vae = vae
        channels = vae.config.latent_channels
        mean = vae.config.latents_mean or [0.0] * channels
        std = vae.config.latents_std or [1.0] * channels
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1, 1), persistent=False)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config.latent_channels)

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.vae.config.block_out_channels) - 1)

    def latent_shape(self, frames: int, size: int) -> tuple[int, int, int, int]:
        return (self.latent_channels, frames, size // self.spatial_factor, size // self.spatial_factor)

    def encode(self, videos: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        posterior = self.vae.encode(videos.to(self.vae.dtype)).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()
        return (latents.float() - self.mean) / self.std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        raw = latents.float() * self.std + self.mean
        return self.vae.decode(raw.to(self.vae.dtype)).sample.float().clamp(-1, 1)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Record per-channel latent statistics in the config (so they are saved) and the buffers."""
        self.vae.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])
        self.mean.copy_(mean.view(1, -1, 1, 1, 1))
        self.std.copy_(std.view(1, -1, 1, 1, 1))


def to_uint8_frames(videos: torch.Tensor) -> "list":
    """Decoded ``(B, 3, T, H, W)`` in [-1, 1] -> list of uint8 ``(T, H, W, 3)`` numpy clips."""
    frames = ((videos.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    return list(frames)
