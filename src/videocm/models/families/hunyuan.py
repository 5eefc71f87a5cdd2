"""HunyuanVideo (``HunyuanVideoTransformer3DModel``, flow matching): ``HunyuanVideoPipeline``.

Guidance is embedded in the network (``guidance_embeds``: the pipeline's ``guidance_scale`` sent as ``1000 *
scale``), so a teacher step is one forward; the text comes as Llama states with their attention mask plus pooled
CLIP states, and the mask goes to the network itself.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import FamilySpec, PipelineLayout


class HunyuanSpec(FamilySpec):
    name = "hunyuan"
    network_class = "HunyuanVideoTransformer3DModel"
    text_dim_key = "text_embed_dim"
    pooled_dim_key = "pooled_projection_dim"
    detail_own_modules = ("time_text_embed", "norm_out", "proj_out")
    zero_padded_text = False
    pipeline = PipelineLayout("HunyuanVideoPipeline", ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"),
                              129, 720, 1280, 6.0, 256)

    def embeds_guidance(self, network: nn.Module) -> bool:
        return bool(network.config.get("guidance_embeds", False))

    def run(self, network, x, timestep, states, mask, pooled, extra, embedded_guidance, cache):
        dtype = next(network.parameters()).dtype
        states = states.to(dtype)
        batch = x.shape[0]
        mask = mask if mask is not None else torch.ones(states.shape[:2], dtype=torch.long, device=states.device)
        pooled = (pooled if pooled is not None else states.new_zeros(batch, network.config.pooled_projection_dim)
                  ).to(dtype)
        guidance = None
        if self.embeds_guidance(network):
            scale = 6.0 if embedded_guidance is None else float(embedded_guidance)
            guidance = torch.full((batch,), scale * 1000.0, dtype=dtype, device=x.device)
        return network(hidden_states=x.to(dtype), timestep=timestep, encoder_hidden_states=states,
                       encoder_attention_mask=mask, pooled_projections=pooled, guidance=guidance,
                       return_dict=False)[0]

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        return [*network.transformer_blocks, *network.single_transformer_blocks]

    def patch_size(self, network: nn.Module) -> tuple[int, int, int]:
        config = network.config
        return config.get("patch_size_t") or 1, config.patch_size, config.patch_size

    def encode_prompt(self, pipeline, prompts, device, max_length):
        states, pooled, mask = pipeline.encode_prompt(prompt=prompts, prompt_2=prompts, device=device,
                                                      max_sequence_length=max_length)
        return {"encoder_hidden_states": states, "encoder_attention_mask": mask, "pooled_projections": pooled}

    def pipeline_info(self, layout: PipelineLayout, pipeline) -> dict:
        return {"embedded_guidance": layout.guidance}

    def export_guidance(self, embedded_guidance):
        return float(embedded_guidance)


FAMILY = HunyuanSpec()
