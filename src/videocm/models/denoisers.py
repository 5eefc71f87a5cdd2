"""Denoiser adapters: each network family behind one call signature,

    adapter(x, timestep, encoder_hidden_states, encoder_attention_mask) -> output

with ``x`` and the output ``(B, C, T, h, w)`` latents, ``timestep`` ``(B,)`` as the schedule hands it to the
network, text states ``(B, L, D)`` and mask ``(B, L)``. Families: ``wan`` (``WanTransformer3DModel``, flow
matching) and ``unet3d`` (``UNet3DConditionModel``, VP). Padding tokens are zeroed before they reach the network,
as diffusers' Wan pipeline does, so prompts of any length behave alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

FAMILIES = ("wan", "unet3d")


@dataclass
class WanConfig:
    num_layers: int = 8
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    ffn_dim: int = 512
    freq_dim: int = 128
    patch_size: list[int] = field(default_factory=lambda: [1, 2, 2])


@dataclass
class UNet3DConfig:
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    attention_head_dim: int = 16
    norm_num_groups: int = 16


def build_network(family: str, latent_channels: int, text_dim: int, sample_size: int, config) -> nn.Module:
    """A freshly initialised diffusers network of ``family`` with a small config."""
    if family == "wan":
        from diffusers import WanTransformer3DModel

        return WanTransformer3DModel(
            patch_size=tuple(config.patch_size), num_attention_heads=config.num_attention_heads,
            attention_head_dim=config.attention_head_dim, in_channels=latent_channels,
            out_channels=latent_channels, text_dim=text_dim, freq_dim=config.freq_dim, ffn_dim=config.ffn_dim,
            num_layers=config.num_layers, cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            rope_max_seq_len=64,
        )
    if family == "unet3d":
        from diffusers import UNet3DConditionModel

        depth = len(config.block_out_channels)
        return UNet3DConditionModel(
            sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlock3D",) * (depth - 1) + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (depth - 1),
            block_out_channels=tuple(config.block_out_channels), layers_per_block=config.layers_per_block,
            norm_num_groups=config.norm_num_groups, cross_attention_dim=text_dim,
            attention_head_dim=config.attention_head_dim,
        )
    raise ValueError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")


class DenoiserAdapter(nn.Module):
    """Calls a diffusers network with videocm's denoiser signature."""

    def __init__(self, family: str, network: nn.Module) -> None:
        super().__init__()
        if family not in FAMILIES:
            raise ValueError(f"unknown family {family!r}: use one of {', '.join(FAMILIES)}")
        self.family = family
        self.network = network
        self.guidance_embedding: nn.Module | None = None  # set by models.student.attach_guidance_embedding
        self.guidance_hook = None

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None
                ) -> torch.Tensor:
        if self.guidance_embedding is None:
            if guidance is not None:
                raise ValueError("this network has no guidance embedding; do not pass guidance=")
            return self._call_network(x, timestep, encoder_hidden_states, encoder_attention_mask)
        if guidance is None:
            raise ValueError("this student was distilled with a guidance embedding: pass guidance= (B,)")
        self.guidance_hook.pending = self.guidance_embedding(guidance.to(x.device).reshape(-1))
        try:
            return self._call_network(x, timestep, encoder_hidden_states, encoder_attention_mask)
        finally:
            self.guidance_hook.pending = None

    def _call_network(self, x, timestep, encoder_hidden_states, encoder_attention_mask):
        dtype = next(self.network.parameters()).dtype
        states = encoder_hidden_states
        if encoder_attention_mask is not None:
            states = states * encoder_attention_mask.unsqueeze(-1).to(states.dtype)
        states = states.to(dtype)
        if self.family == "wan":
            out = self.network(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=states,
                               return_dict=False)[0]
        else:
            out = self.network(x.to(dtype), timestep, encoder_hidden_states=states, return_dict=False)[0]
        return out.to(x.dtype)
