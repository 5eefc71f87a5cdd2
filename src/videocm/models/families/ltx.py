"""LTX-Video (``LTXVideoTransformer3DModel``, flow matching): ``LTXPipeline``.

The network reads packed tokens ``(B, T*h*w, C)`` (the pipeline's ``_pack_latents`` at patch size 1, which every
released LTX-Video checkpoint has), the latent grid's size, and a ``rope_interpolation_scale`` made from the VAE's
compression and the frame rate (the pipeline's default 25): that scale is fixed at loading and kept in the model's
``network_options``. The text is T5 states with their attention mask, handed to the network itself. The scheduler
shifts its timesteps by the latent sequence length (``use_dynamic_shifting``): videocm fixes that shift at the
distilled clip shape (:func:`models.pipelines.dynamic_shift`). The VAE keeps its latent statistics as weights and
decodes at a timestep (0, as the pipeline does by default).
"""

from __future__ import annotations

import json

from torch import nn

from ...errors import VideoCMError
from .base import FamilySpec, PipelineLayout

FRAME_RATE = 25  # LTXPipeline's default frame_rate: the rope scale's time axis


class LTXSpec(FamilySpec):
    name = "ltx"
    network_class = "LTXVideoTransformer3DModel"
    text_dim_key = "caption_channels"
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    detail_own_modules = ("time_embed", "scale_shift_table", "norm_out", "proj_out")
    zero_padded_text = False  # the pipeline hands T5's padded states over with their mask
    # the starting noise is drawn as (B, C, T, h, w) and packed; the re-noising noise (our scheduler's step) is
    # drawn in the packed latents' shape, tokens then channels
    pipeline = PipelineLayout("LTXPipeline", ("text_encoder", "tokenizer"), 161, 512, 704, 3.0, 128,
                              noise_orders=("CThw", "ThwC"))
    latent_factors = (8, 32)

    def run(self, network, x, timestep, states, mask, pooled, extra, embedded_guidance, cache):
        dtype = next(network.parameters()).dtype
        batch, channels, frames, height, width = x.shape
        tokens = x.to(dtype).flatten(2).transpose(1, 2)  # (B, T*h*w, C): LTXPipeline._pack_latents at patch 1
        if mask is None:
            mask = states.new_ones(states.shape[:2])
        scale = extra.get("rope_interpolation_scale")
        out = network(hidden_states=tokens, encoder_hidden_states=states.to(dtype), timestep=timestep,
                      encoder_attention_mask=mask.to(dtype), num_frames=frames, height=height, width=width,
                      rope_interpolation_scale=tuple(scale) if scale is not None else None, return_dict=False)[0]
        return out.transpose(1, 2).reshape(batch, channels, frames, height, width)

    def time_embedding(self, network: nn.Module) -> nn.Module:
        return network.time_embed.emb.timestep_embedder

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        return list(network.transformer_blocks)

    def patch_size(self, network: nn.Module) -> tuple[int, int, int]:
        config = network.config
        return int(config.patch_size_t), int(config.patch_size), int(config.patch_size)

    def size_multiple(self, spatial_factor):
        return max(32, spatial_factor)  # patch size 1; LTXPipeline checks multiples of 32

    def encode_prompt(self, pipeline, prompts, device, max_length):
        states, mask, _, _ = pipeline.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                                    max_sequence_length=max_length, device=device)
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask}

    def check_model_index(self, index, folder):
        path = folder / self.subfolder / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        patch = (config.get("patch_size", 1), config.get("patch_size_t", 1))
        if patch != (1, 1):
            raise VideoCMError(f"{folder}: its LTX transformer packs {patch[1]}x{patch[0]}x{patch[0]} patches; "
                               f"videocm distils LTX-Video transformers of patch size 1 (every released checkpoint)")

    def pipeline_info(self, layout, pipeline):
        vae = pipeline.vae
        return {"network_options": {"rope_interpolation_scale": [vae.temporal_compression_ratio / FRAME_RATE,
                                                                 vae.spatial_compression_ratio,
                                                                 vae.spatial_compression_ratio]}}

    def export_call_arguments(self, info):
        return {"frame_rate": FRAME_RATE}


FAMILY = LTXSpec()
