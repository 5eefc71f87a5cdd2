"""Denoiser adapters: each network family behind one call signature,

    adapter(x, timestep, encoder_hidden_states, encoder_attention_mask=None, pooled_projections=None) -> output

with ``x`` and the output ``(B, C, T, h, w)`` latents, ``timestep`` ``(B,)`` as the schedule hands it to the
network, text states ``(B, L, D)``, mask ``(B, L)`` and pooled states ``(B, D')``. Families: ``wan``
(``WanTransformer3DModel``, flow matching), ``unet3d`` (``UNet3DConditionModel``, VP), ``cogvideox``
(``CogVideoXTransformer3DModel``, VP v-prediction; it takes ``(B, T, C, h, w)`` and rotary embeddings, both
handled here) and ``hunyuan`` (``HunyuanVideoTransformer3DModel``, flow matching, with pooled CLIP states and
guidance embedded in the network: :attr:`DenoiserAdapter.embedded_guidance`).

Masks: for ``wan`` and ``unet3d`` a given mask zeroes padding tokens before they reach the network (what
diffusers' Wan pipeline does to its states), so prompts of any length behave alike; ``hunyuan`` receives its mask
as the network's ``encoder_attention_mask``. Text encoders of diffusers pipelines (:mod:`models.pipelines`) hand
over exactly what their pipeline feeds the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

FAMILIES = ("wan", "unet3d", "cogvideox", "hunyuan")
FLOW_FAMILIES = ("wan", "hunyuan")


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
        # HunyuanVideo: the guidance scale the network's own guidance embedding receives (the pipeline's
        # ``guidance_scale``; sent as ``1000 * scale``, as HunyuanVideoPipeline does)
        self.embedded_guidance: float | None = None
        self._rotary_cache: dict = {}
        # a control branch (models.control.attach_control): its residuals join the network when ``control=`` is given
        self.control_branch: nn.Module | None = None
        self.control_scale = 1.0

    @property
    def embeds_guidance(self) -> bool:
        """Whether the network itself takes a guidance scale (HunyuanVideo's guidance-distilled transformer)."""
        return self.family == "hunyuan" and bool(self.network.config.get("guidance_embeds", False))

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None, guidance: torch.Tensor | None = None,
                pooled_projections: torch.Tensor | None = None, control: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``control``: control latents ``(B, C', T, h, w)`` for the attached control branch."""
        if control is not None and self.control_branch is None:
            raise ValueError("control latents given to a denoiser without a control branch (attach_control)")
        text = (encoder_hidden_states, encoder_attention_mask, pooled_projections, control)
        if self.guidance_embedding is None:
            if guidance is not None:
                raise ValueError("this network has no guidance embedding; do not pass guidance=")
            return self._call_network(x, timestep, *text)
        if guidance is None:
            raise ValueError("this student was distilled with a guidance embedding: pass guidance= (B,)")
        self.guidance_hook.pending = self.guidance_embedding(guidance.to(x.device).reshape(-1))
        try:
            return self._call_network(x, timestep, *text)
        finally:
            self.guidance_hook.pending = None

    def _call_network(self, x, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                      control=None):
        states = encoder_hidden_states
        if encoder_attention_mask is not None and self.family in ("wan", "unet3d"):
            states = states * encoder_attention_mask.unsqueeze(-1).to(states.dtype)
        if control is None:
            return self._run_network(x, timestep, states, encoder_attention_mask, pooled_projections, {})
        branch = self.control_branch
        residuals = branch(x, timestep, states, control)
        with branch.joined(self.network, residuals, self.control_scale) as extra:
            return self._run_network(x, timestep, states, encoder_attention_mask, pooled_projections, extra)

    def _run_network(self, x, timestep, states, encoder_attention_mask, pooled_projections, extra: dict):
        """``extra``: keyword arguments a control branch adds to the network's call (UNet3D's residuals)."""
        dtype = next(self.network.parameters()).dtype
        states = states.to(dtype)
        if self.family == "wan":
            out = self.network(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=states,
                               return_dict=False)[0]
        elif self.family == "cogvideox":
            hidden = x.to(dtype).transpose(1, 2)  # CogVideoX works on (B, T, C, h, w)
            out = self.network(hidden_states=hidden, encoder_hidden_states=states, timestep=timestep,
                               image_rotary_emb=self._rotary(hidden.shape, x.device), return_dict=False)[0]
            out = out.transpose(1, 2)
        elif self.family == "hunyuan":
            batch = x.shape[0]
            mask = (encoder_attention_mask if encoder_attention_mask is not None
                    else torch.ones(states.shape[:2], dtype=torch.long, device=states.device))
            pooled = (pooled_projections if pooled_projections is not None
                      else states.new_zeros(batch, self.network.config.pooled_projection_dim)).to(dtype)
            guidance = None
            if self.embeds_guidance:
                scale = 6.0 if self.embedded_guidance is None else float(self.embedded_guidance)
                guidance = torch.full((batch,), scale * 1000.0, dtype=dtype, device=x.device)
            out = self.network(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=states,
                               encoder_attention_mask=mask, pooled_projections=pooled, guidance=guidance,
                               return_dict=False)[0]
        else:
            out = self.network(x.to(dtype), timestep, encoder_hidden_states=states, return_dict=False, **extra)[0]
        return out.to(x.dtype)

    def _rotary(self, shape: tuple[int, ...], device: torch.device):
        """CogVideoX's 3D rotary embeddings for latents ``(B, T, C, h, w)``, as CogVideoXPipeline makes them."""
        config = self.network.config
        if not config.get("use_rotary_positional_embeddings", False):
            return None
        key = (tuple(shape[1:]), str(device))
        if key not in self._rotary_cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

            frames, height, width = shape[1], shape[3], shape[4]
            patch, patch_t = config.patch_size, config.get("patch_size_t")
            grid = (height // patch, width // patch)
            base_height, base_width = config.sample_height // patch, config.sample_width // patch
            if patch_t is None:
                self._rotary_cache[key] = get_3d_rotary_pos_embed(
                    embed_dim=config.attention_head_dim,
                    crops_coords=get_resize_crop_region_for_grid(grid, base_width, base_height),
                    grid_size=grid, temporal_size=frames, device=device)
            else:
                self._rotary_cache[key] = get_3d_rotary_pos_embed(
                    embed_dim=config.attention_head_dim, crops_coords=None, grid_size=grid,
                    temporal_size=(frames + patch_t - 1) // patch_t, grid_type="slice",
                    max_size=(base_height, base_width), device=device)
        return self._rotary_cache[key]
