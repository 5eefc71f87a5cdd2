"""UNet3D (``UNet3DConditionModel``, VP): videocm's built-in VP teacher and ModelScope-style
``TextToVideoSDPipeline``.

The UNet runs frames as batch rows, so its block outputs are ``(B*T, C, h, w)``; LoRA on the attention and
feed-forward projections; the detail expert owns the time embedding and the output layers. The control branch
copies the UNet's input convolution, time embedding, down blocks and mid block (diffusers has no ControlNet for
``UNet3DConditionModel``, hence this class) and hands its residuals over as the UNet's
``down_block_additional_residuals`` / ``mid_block_additional_residual``.
"""

from __future__ import annotations

import contextlib
from typing import Any, Mapping

import torch
from diffusers.configuration_utils import register_to_config
from torch import nn

from ...errors import VideoCMError
from ..control_branch import ControlBranch, network_config, zero_init
from .base import FamilySpec, PipelineLayout


class UNet3DSpec(FamilySpec):
    name = "unet3d"
    network_class = "UNet3DConditionModel"
    latent_factors = (1, 8)  # ModelScope's image VAE, frame by frame
    text_dim_key = "cross_attention_dim"
    subfolder = "unet"
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    detail_own_modules = ("time_embedding", "conv_norm_out", "conv_out")
    # TextToVideoSDPipeline steps its scheduler on frames stacked as a batch: re-noising noise is drawn frames first
    pipeline = PipelineLayout("TextToVideoSDPipeline", ("text_encoder", "tokenizer"), 16, 256, 256, 9.0, 77,
                              noise_orders=("CThw", "TChw"))
    teacher_schedule = "vp"

    def build_network(self, latent_channels: int, text_dim: int, sample_size: int,
                      options: Mapping[str, Any]) -> nn.Module:
        from diffusers import UNet3DConditionModel

        channels = tuple(options.get("unet_channels", (32, 64, 64)))
        depth = len(channels)
        return UNet3DConditionModel(
            sample_size=sample_size, in_channels=latent_channels, out_channels=latent_channels,
            down_block_types=("CrossAttnDownBlock3D",) * (depth - 1) + ("DownBlock3D",),
            up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * (depth - 1),
            block_out_channels=channels, layers_per_block=int(options.get("unet_layers_per_block", 1)),
            norm_num_groups=int(options.get("unet_norm_groups", 16)), cross_attention_dim=text_dim,
            attention_head_dim=int(options.get("unet_head_dim", 16)),
        )

    def run(self, network, x, timestep, states, mask, pooled, extra, embedded_guidance, cache):
        dtype = next(network.parameters()).dtype
        return network(x.to(dtype), timestep, encoder_hidden_states=states.to(dtype), return_dict=False, **extra)[0]

    def time_embedding(self, network: nn.Module) -> nn.Module:
        return network.time_embedding

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        return [*network.down_blocks, network.mid_block, *network.up_blocks]

    def features_as_video(self, network, hidden, latent_shape):
        batch, _, frames = latent_shape[:3]
        channels, h, w = hidden.shape[1:]
        return hidden.reshape(batch, frames, channels, h, w).transpose(1, 2)

    def control_branch_class(self) -> type:
        return UNet3DControlBranch

    def encode_prompt(self, pipeline, prompts, device, max_length):
        states, _ = pipeline.encode_prompt(prompts, device, 1, False)
        return {"encoder_hidden_states": states}

    def default_video_shape(self, network, spatial_factor):
        side = int(network.config.sample_size) * spatial_factor
        return [self.pipeline.frames, side, side]


class UNet3DControlBranch(ControlBranch):
    """Control branch of a ``UNet3DConditionModel``: ``forward`` returns ``(down residuals, mid residual)`` in the
    layout ``UNet3DConditionModel.forward`` adds them (frames stacked into the batch)."""

    family = "unet3d"

    @register_to_config
    def __init__(self, network_config: dict, num_blocks: int = 0, control_channels: int = 4,
                 conditioning_channels: int = 32) -> None:
        super().__init__()
        from diffusers import UNet3DConditionModel
        from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

        unet = UNet3DConditionModel(**network_config)
        self.time_proj, self.time_embedding = unet.time_proj, unet.time_embedding
        self.conv_in, self.transformer_in = unet.conv_in, unet.transformer_in
        self.down_blocks, self.mid_block = unet.down_blocks, unet.mid_block
        channels = list(network_config["block_out_channels"])
        self.control_embedding = ControlNetConditioningEmbedding(channels[0], control_channels,
                                                                 (conditioning_channels,))
        skips = [channels[0]]
        for i, block in enumerate(self.down_blocks):
            skips += [channels[i]] * len(block.resnets) + ([channels[i]] if block.downsamplers else [])
        self.skip_projections = nn.ModuleList(zero_init(nn.Conv2d(c, c, 1)) for c in skips)
        self.mid_projection = zero_init(nn.Conv2d(channels[-1], channels[-1], 1))

    @classmethod
    def from_network(cls, network: nn.Module, num_blocks: int, control_channels: int) -> "UNet3DControlBranch":
        branch = cls(network_config(network), 0, control_channels)
        own = set(branch.state_dict())
        copied = {k: v for k, v in network.state_dict().items() if k in own}
        missing, _ = branch.load_state_dict(copied, strict=False)
        if any(not k.startswith(("control_embedding.", "skip_projections.", "mid_projection.")) for k in missing):
            raise VideoCMError(f"this UNet3D network does not fit its control branch ({missing[:3]})")
        return branch

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                control: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x`` ``(B, C, T, h, w)``, ``timestep`` ``(B,)``, text ``(B, L, D)``, ``control`` ``(B, C', T, h, w)``."""
        dtype = self.conv_in.weight.dtype
        batch, _, frames = x.shape[:3]
        timesteps = timestep.expand(batch) if timestep.dim() else timestep[None].expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype)).repeat_interleave(frames, dim=0)
        text = encoder_hidden_states.to(dtype).repeat_interleave(frames, dim=0)

        def frames_as_batch(video: torch.Tensor) -> torch.Tensor:
            return video.to(dtype).transpose(1, 2).flatten(0, 1)

        sample = self.conv_in(frames_as_batch(x)) + self.control_embedding(frames_as_batch(control))
        sample = self.transformer_in(sample, num_frames=frames, return_dict=False)[0]
        skips = [sample]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, outputs = block(hidden_states=sample, temb=emb, encoder_hidden_states=text, num_frames=frames)
            else:
                sample, outputs = block(hidden_states=sample, temb=emb, num_frames=frames)
            skips += list(outputs)
        sample = self.mid_block(sample, emb, encoder_hidden_states=text, num_frames=frames)
        return ([projection(s) for projection, s in zip(self.skip_projections, skips)],
                self.mid_projection(sample))

    @contextlib.contextmanager
    def joined(self, network: nn.Module, residuals, scale: float = 1.0):
        down, mid = residuals
        yield {"down_block_additional_residuals": [scale * r for r in down],
               "mid_block_additional_residual": scale * mid}


FAMILY = UNet3DSpec()
