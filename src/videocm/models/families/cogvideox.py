"""CogVideoX (``CogVideoXTransformer3DModel``, VP v-prediction with zero terminal SNR): ``CogVideoXPipeline`` and
``CogVideoXImageToVideoPipeline`` (the first frame's latents, zero beyond the first latent frame, concatenated to
the noisy latents on channels; the transformer takes twice the latent channels).

The network works on ``(B, T, C, h, w)`` and takes 3D rotary embeddings, made here as the pipeline makes them
(cached per latent shape); its VAE decodes an odd number of latent frames only.
"""

from __future__ import annotations

import torch
from torch import nn

from ...errors import VideoCMError
from .base import FamilySpec, PipelineLayout


class CogVideoXSpec(FamilySpec):
    name = "cogvideox"
    network_class = "CogVideoXTransformer3DModel"
    text_dim_key = "text_embed_dim"
    detail_own_modules = ("time_embedding", "norm_out", "proj_out")
    zero_padded_text = False  # the pipeline hands T5's padded states over as they are
    # CogVideoXPipeline keeps latents (B, T, C, h, w): both noises are drawn frames first
    pipeline = PipelineLayout("CogVideoXPipeline", ("text_encoder", "tokenizer"), 49, 480, 720, 6.0, 226,
                              noise_orders=("TChw", "TChw"))
    image_pipeline = PipelineLayout("CogVideoXImageToVideoPipeline", ("text_encoder", "tokenizer"), 49, 480, 720,
                                    6.0, 226, noise_orders=("TChw", "TChw"), image_condition="channels")

    def run(self, network, x, timestep, states, mask, pooled, extra, embedded_guidance, cache):
        dtype = next(network.parameters()).dtype
        if "image_latents" in extra:  # CogVideoXImageToVideoPipeline: [noisy latents, image latents] on channels
            x = torch.cat([x, extra["image_latents"].to(x.dtype)], dim=1)
        hidden = x.to(dtype).transpose(1, 2)
        out = network(hidden_states=hidden, encoder_hidden_states=states.to(dtype), timestep=timestep,
                      image_rotary_emb=self._rotary(network, hidden.shape, x.device, cache), return_dict=False)[0]
        return out.transpose(1, 2)

    def _rotary(self, network, shape, device, cache):
        """CogVideoX's 3D rotary embeddings for latents ``(B, T, C, h, w)``, as CogVideoXPipeline makes them."""
        config = network.config
        if not config.get("use_rotary_positional_embeddings", False):
            return None
        key = ("rotary", tuple(shape[1:]), str(device))
        if key not in cache:
            from diffusers.models.embeddings import get_3d_rotary_pos_embed
            from diffusers.pipelines.cogvideo.pipeline_cogvideox import get_resize_crop_region_for_grid

            frames, height, width = shape[1], shape[3], shape[4]
            patch, patch_t = config.patch_size, config.get("patch_size_t")
            grid = (height // patch, width // patch)
            base_height, base_width = config.sample_height // patch, config.sample_width // patch
            if patch_t is None:
                cache[key] = get_3d_rotary_pos_embed(
                    embed_dim=config.attention_head_dim,
                    crops_coords=get_resize_crop_region_for_grid(grid, base_width, base_height),
                    grid_size=grid, temporal_size=frames, device=device)
            else:
                cache[key] = get_3d_rotary_pos_embed(
                    embed_dim=config.attention_head_dim, crops_coords=None, grid_size=grid,
                    temporal_size=(frames + patch_t - 1) // patch_t, grid_type="slice",
                    max_size=(base_height, base_width), device=device)
        return cache[key]

    def pipeline_info(self, layout, pipeline) -> dict:
        if layout.image_condition and (pipeline.transformer.config.get("patch_size_t") or
                                       pipeline.vae.config.get("invert_scale_latents")):
            raise VideoCMError("CogVideoX 1.5 image to video (patch_size_t, invert_scale_latents) is not supported "
                               "yet; CogVideoX-5b-I2V's layout is")
        return {}

    def time_embedding(self, network: nn.Module) -> nn.Module:
        return network.time_embedding

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        return list(network.transformer_blocks)

    def patch_size(self, network: nn.Module) -> tuple[int, int, int]:
        config = network.config
        return config.get("patch_size_t") or 1, config.patch_size, config.patch_size

    def default_video_shape(self, network, spatial_factor):
        config = network.config
        return [int(config.get("sample_frames", self.pipeline.frames)), config.sample_height * spatial_factor,
                config.sample_width * spatial_factor]

    def check_video_shape(self, frames, vae, class_name):
        if vae.latent_frames(frames) % 2 == 0:
            # CogVideoX's VAE decodes an even number of latent frames into 4T frames, not 1 + 4(T - 1)
            raise VideoCMError(f"{class_name} needs 8k+1 frames (an odd number of latent frames); got {frames}: use "
                               f"e.g. {max(9, (frames - 1) // 8 * 8 + 1)}")


FAMILY = CogVideoXSpec()
