"""The video VAE: diffusers' ``AutoencoderKLCogVideoX`` with a small config (4x spatial, no temporal
compression) for the built-in teachers, or a diffusers pipeline's own VAE (CogVideoX, Wan, HunyuanVideo, or
ModelScope's image VAE frame by frame), wrapped so latents come out normalised as the pipeline normalises them.

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
    """A diffusers video (or image) VAE whose ``encode`` returns normalised latents ``(B, C, T', h, w)`` and whose
    ``decode`` takes them back to pixels ``(B, 3, T, H, W)`` in [-1, 1].

    Normalisation, ``(raw - mean) / std``: per-channel ``latents_mean`` / ``latents_std`` from the VAE's config
    (videocm's own VAEs, Wan), or, with ``normalisation="config"``, from its weights with its ``scaling_factor``
    (LTX-Video: ``(raw - mean) * scaling_factor / std``) or without statistics the pipeline's ``scaling_factor``
    and ``shift_factor`` (CogVideoX, HunyuanVideo, ModelScope's image VAE). A timestep-conditioned decoder
    (LTX-Video 0.9.1 on) decodes at timestep 0 without added noise, as the pipeline does by default. An image VAE
    (``AutoencoderKL``) is applied frame by frame, as ``TextToVideoSDPipeline`` does.
    """

    def __init__(self, vae, normalisation: str = "statistics") -> None:
        super().__init__()
        self.vae = vae
        config = vae.config
        channels = self.latent_channels
        mean, std = config.get("latents_mean"), config.get("latents_std")
        buffers = {name: buffer for name, buffer in vae.named_buffers() if name in ("latents_mean", "latents_std")}
        if mean and std:
            mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
        elif normalisation == "config" and len(buffers) == 2:  # statistics kept as weights (LTX-Video's VAE)
            scale = float(config.get("scaling_factor") or 1.0)
            mean = buffers["latents_mean"].detach().float().cpu()
            std = buffers["latents_std"].detach().float().cpu() / scale
        elif normalisation == "config":
            scale = float(config.get("scaling_factor") or 1.0)
            mean = torch.full((channels,), float(config.get("shift_factor") or 0.0))
            std = torch.full((channels,), 1.0 / scale)
        else:
            mean, std = torch.zeros(channels), torch.ones(channels)
        self.register_buffer("mean", mean.view(1, -1, 1, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, -1, 1, 1, 1), persistent=False)

    @property
    def per_frame(self) -> bool:
        """An image VAE (2D, ``AutoencoderKL``), applied to each frame."""
        return type(self.vae).__name__ == "AutoencoderKL"

    @property
    def latent_channels(self) -> int:
        config = self.vae.config
        return int(config.get("z_dim") or config.get("latent_channels"))

    def _ratio(self, config_keys: tuple[str, ...], attribute: str):
        """A compression ratio from the config, or from the attribute a VAE computes it into (LTX-Video's)."""
        config = self.vae.config
        return next((config[k] for k in config_keys if config.get(k)), None) or vars(self.vae).get(attribute)

    @property
    def spatial_factor(self) -> int:
        factor = self._ratio(("scale_factor_spatial", "spatial_compression_ratio"), "spatial_compression_ratio")
        return int(factor) if factor else 2 ** (len(self.vae.config.block_out_channels) - 1)

    @property
    def temporal_factor(self) -> int:
        if self.per_frame:
            return 1
        factor = self._ratio(("scale_factor_temporal", "temporal_compression_ratio"), "temporal_compression_ratio")
        return int(factor or 1)

    def latent_frames(self, frames: int) -> int:
        factor = self.temporal_factor
        return frames if factor == 1 else (frames - 1) // factor + 1

    def latent_shape(self, frames: int, height: int, width: int | None = None) -> tuple[int, int, int, int]:
        width = height if width is None else width
        return (self.latent_channels, self.latent_frames(frames), height // self.spatial_factor,
                width // self.spatial_factor)

    def _frames_as_batch(self, videos: torch.Tensor) -> torch.Tensor:
        return videos.transpose(1, 2).flatten(0, 1)  # (B, C, T, H, W) -> (B*T, C, H, W)

    def _batch_as_frames(self, images: torch.Tensor, batch: int) -> torch.Tensor:
        return images.unflatten(0, (batch, -1)).transpose(1, 2)

    def encode(self, videos: torch.Tensor, sample: bool = False, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        inputs = videos.to(self.vae.dtype)
        if self.per_frame:
            inputs = self._frames_as_batch(inputs)
        posterior = self.vae.encode(inputs).latent_dist
        latents = posterior.sample(generator) if sample else posterior.mode()
        if self.per_frame:
            latents = self._batch_as_frames(latents, videos.shape[0])
        return (latents.float() - self.mean) / self.std

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Clips in [-1, 1] on the latents' device (decoded where the VAE is: the CPU once it is offloaded)."""
        raw = (latents.float().to(self.mean.device) * self.std + self.mean).to(self.vae.dtype)
        if self.per_frame:
            frames = self.vae.decode(self._frames_as_batch(raw)).sample
            return self._batch_as_frames(frames, latents.shape[0]).float().clamp(-1, 1).to(latents.device)
        if self.vae.config.get("timestep_conditioning"):
            decoded = self.vae.decode(raw, torch.zeros(raw.shape[0], device=raw.device, dtype=raw.dtype)).sample
        else:
            decoded = self.vae.decode(raw).sample
        return decoded.float().clamp(-1, 1).to(latents.device)

    def set_statistics(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Record per-channel latent statistics in the config (so they are saved) and the buffers."""
        self.vae.register_to_config(latents_mean=[float(v) for v in mean], latents_std=[float(v) for v in std])
        self.mean.copy_(mean.view(1, -1, 1, 1, 1))
        self.std.copy_(std.view(1, -1, 1, 1, 1))


def to_uint8_frames(videos: torch.Tensor) -> "list":
    """Decoded ``(B, 3, T, H, W)`` in [-1, 1] -> list of uint8 ``(T, H, W, 3)`` numpy clips."""
    frames = ((videos.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 4, 1).cpu().numpy()
    return list(frames)
