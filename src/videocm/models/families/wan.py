"""Wan (``WanTransformer3DModel``, flow matching): videocm's built-in flow teacher and diffusers' ``WanPipeline``.

The network takes latents ``(B, C, T, h, w)`` and text states as they are; LoRA on the attention and feed-forward
projections; the detail expert owns the condition embedder, the modulation table and the output layers; features
are the transformer blocks' token maps on the patch grid. The control branch is diffusers' Wan control block
(``WanVACETransformerBlock``) copied from the network's first blocks.
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


class WanSpec(FamilySpec):
    name = "wan"
    network_class = "WanTransformer3DModel"
    lora_targets = ("to_q", "to_k", "to_v", "to_out.0", "ffn.net.0.proj", "ffn.net.2")
    detail_own_modules = ("condition_embedder", "scale_shift_table", "norm_out", "proj_out")
    pipeline = PipelineLayout("WanPipeline", ("text_encoder", "tokenizer"), 81, 480, 832, 5.0, 512)
    # Wan 2.1 I2V (with the CLIP image encoder) and Wan 2.2 I2V-A14B (two experts, no image encoder)
    image_pipeline = PipelineLayout("WanImageToVideoPipeline", ("text_encoder", "tokenizer"), 81, 480, 832, 5.0, 512,
                                    image_condition="mask-channels")
    teacher_schedule = "flow"
    second_subfolder = "transformer_2"  # Wan 2.2 A14B: the low-noise expert

    def build_network(self, latent_channels: int, text_dim: int, sample_size: int,
                      options: Mapping[str, Any]) -> nn.Module:
        from diffusers import WanTransformer3DModel

        return WanTransformer3DModel(
            patch_size=tuple(options.get("wan_patch", (1, 2, 2))),
            num_attention_heads=int(options.get("wan_heads", 4)),
            attention_head_dim=int(options.get("wan_head_dim", 32)), in_channels=latent_channels,
            out_channels=latent_channels, text_dim=text_dim, freq_dim=int(options.get("wan_freq_dim", 128)),
            ffn_dim=int(options.get("wan_ffn_dim", 512)),
            num_layers=int(options.get("wan_layers", 8)), cross_attn_norm=True, qk_norm="rms_norm_across_heads",
            rope_max_seq_len=64,
        )

    def run(self, network, x, timestep, states, mask, pooled, extra, embedded_guidance, cache):
        dtype = next(network.parameters()).dtype
        if "image_latents" in extra:  # WanImageToVideoPipeline: [noisy latents, mask, image latents] on channels
            x = torch.cat([x, extra["image_latents"].to(x.dtype)], dim=1)
        image = extra.get("image_states")
        first = extra.get("first_frame_latents")
        call_timestep, noisy = timestep, x
        if first is not None:  # TI2V-5B's image mode: the image's latents are the first frame, at timestep 0
            _, ph, pw = network.config.patch_size
            batch, _, frames, height, width = x.shape
            x = torch.cat([first.to(x.dtype), x[:, :, 1:]], dim=2)
            grid = timestep.reshape(-1, 1, 1, 1).expand(batch, frames, height // ph, width // pw).clone()
            grid[:, 0] = 0
            call_timestep = grid.flatten(1)  # one per token, as the pipeline passes them
        out = network(hidden_states=x.to(dtype), timestep=call_timestep, encoder_hidden_states=states.to(dtype),
                      encoder_hidden_states_image=None if image is None else image.to(dtype), return_dict=False)[0]
        if first is not None:
            # the pipeline overwrites the first frame with the image's latents; videocm's samplers and
            # consistency step see it land there: the velocity that carries the noisy first frame to the image
            # (x0 = x - sigma v, sigma = timestep / 1000 on Wan's flow schedule)
            sigma = timestep.float().reshape(-1, 1, 1, 1, 1).clamp(min=1e-3) / 1000
            out = torch.cat([((noisy[:, :, :1] - first) / sigma).to(out.dtype), out[:, :, 1:]], dim=2)
        return out

    def pipeline_info(self, layout, pipeline) -> dict:
        if layout.image_condition and getattr(pipeline.config, "expand_timesteps", False):
            return {"image_condition": "first-frame"}  # TI2V-5B's image mode
        return {}

    def time_embedding(self, network: nn.Module) -> nn.Module:
        return network.condition_embedder.time_embedder

    # diffusers' module names in a block -> Wan's own (what diffusers' _convert_non_diffusers_wan_lora_to_diffusers
    # maps back)
    ORIGINAL_NAMES = {"attn1.to_q": "self_attn.q", "attn1.to_k": "self_attn.k", "attn1.to_v": "self_attn.v",
                      "attn1.to_out.0": "self_attn.o", "attn2.to_q": "cross_attn.q", "attn2.to_k": "cross_attn.k",
                      "attn2.to_v": "cross_attn.v", "attn2.to_out.0": "cross_attn.o",
                      "attn2.add_k_proj": "cross_attn.k_img", "attn2.add_v_proj": "cross_attn.v_img",
                      "ffn.net.0.proj": "ffn.0", "ffn.net.2": "ffn.2"}

    def original_lora_state(self, weights, alpha):
        state = {}
        for name, value in weights.items():
            module, _, kind = name.rpartition(".lora_")  # "blocks.3.attn1.to_q", "A.weight"
            head, _, rest = module.partition(".")
            index, _, inner = rest.partition(".")
            if head != "blocks" or inner not in self.ORIGINAL_NAMES:
                raise VideoCMError(f"--format lora-original: the adapter has {module}, which Wan's original layout "
                                   f"does not name; use --format lora")
            original = f"diffusion_model.blocks.{index}.{self.ORIGINAL_NAMES[inner]}"
            state[f"{original}.lora_{kind}"] = value
            state[f"{original}.alpha"] = torch.tensor(float(alpha))
        return state

    def export_index(self, index):
        # an LCM student of a Wan 2.2 two-expert teacher is one network: the stock one-transformer layout
        return {**index, **({"transformer_2": [None, None], "boundary_ratio": None} if "transformer_2" in index
                            else {})}

    def check_model_index(self, index, folder):
        second = index.get("transformer_2")
        two = bool(second and second[0] is not None)
        if two != (index.get("boundary_ratio") is not None):
            raise VideoCMError(f"{folder}: a Wan 2.2 two-expert pipeline needs both transformer_2 and boundary_ratio "
                               f"in model_index.json (it has {'only transformer_2' if two else 'only boundary_ratio'})")
        # Wan 2.2 TI2V (expand_timesteps) as WanPipeline runs it, text to video: every token of a clip gets the
        # clip's timestep, which the network computes exactly as it does one timestep per clip; videocm passes the
        # latter (the 48-channel VAE needs nothing of its own)

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        return list(network.blocks)

    def patch_size(self, network: nn.Module) -> tuple[int, int, int]:
        return tuple(network.config.patch_size)

    def control_branch_class(self) -> type:
        return WanControlBranch

    def output_projection(self, network: nn.Module) -> "WanOutputProjection":
        return WanOutputProjection(network)


class WanOutputProjection:
    """A block's tokens through a ``WanTransformer3DModel``'s output layer: ``norm_out``, modulated by the
    ``scale_shift_table`` and this forward's timestep embedding (captured from ``condition_embedder``), then
    ``proj_out`` (DCM's ``final_layer`` features; unpatchifying is left out, as a mean squared error does not see
    the order)."""

    def __init__(self, network: nn.Module) -> None:
        self.network, self.temb = network, None

    def hooks(self) -> list:
        def keep(module, args, output):
            self.temb = output[0]

        return [self.network.condition_embedder.register_forward_hook(keep)]

    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        network, temb = self.network, self.temb
        if temb is None:
            raise RuntimeError("the output projection reads the forward's timestep embedding: run the network first")
        table = network.scale_shift_table.to(temb.device)
        if temb.ndim == 3:  # a timestep per token (Wan 2.2 TI2V)
            if temb.shape[1] != tokens.shape[1]:
                raise VideoCMError("feature matching through the output layer needs the whole sequence's timestep "
                                   "embedding; with --context-parallel give --feature-matching-on blocks")
            shift, scale = (table.unsqueeze(0) + temb.unsqueeze(2)).chunk(2, dim=2)
            shift, scale = shift.squeeze(2), scale.squeeze(2)
        else:
            shift, scale = (table + temb.unsqueeze(1)).chunk(2, dim=1)
        modulated = network.norm_out(tokens.float()) * (1 + scale) + shift
        return network.proj_out(modulated.type_as(tokens))


class WanControlBranch(ControlBranch):
    """Control branch of a ``WanTransformer3DModel``: ``forward`` returns one residual ``(B, L, D)`` per copied
    block, to be added to the output of the network's block of the same index."""

    family = "wan"

    @register_to_config
    def __init__(self, network_config: dict, num_blocks: int = 4, control_channels: int = 4) -> None:
        super().__init__()
        from diffusers import WanTransformer3DModel
        from diffusers.models.transformers.transformer_wan_vace import WanVACETransformerBlock

        if not 1 <= num_blocks <= int(network_config["num_layers"]):
            raise VideoCMError(f"a Wan control branch copies between 1 and the network's {network_config['num_layers']} "
                               f"blocks, not {num_blocks}")
        trunk = WanTransformer3DModel(**{**network_config, "num_layers": 0})
        self.rope, self.patch_embedding, self.condition_embedder = (trunk.rope, trunk.patch_embedding,
                                                                    trunk.condition_embedder)
        dim = int(network_config["num_attention_heads"]) * int(network_config["attention_head_dim"])
        patch = tuple(network_config["patch_size"])
        self.control_embedding = nn.Conv3d(control_channels, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(
            WanVACETransformerBlock(dim, int(network_config["ffn_dim"]), int(network_config["num_attention_heads"]),
                                    network_config.get("qk_norm"), bool(network_config.get("cross_attn_norm")),
                                    float(network_config.get("eps", 1e-6)), network_config.get("added_kv_proj_dim"),
                                    apply_input_projection=i == 0, apply_output_projection=True)
            for i in range(num_blocks))
        zero_init(self.blocks[0].proj_in)
        for block in self.blocks:
            zero_init(block.proj_out)

    @classmethod
    def from_network(cls, network: nn.Module, num_blocks: int, control_channels: int) -> "WanControlBranch":
        """A branch whose embeddings and blocks start as copies of ``network``'s."""
        branch = cls(network_config(network), num_blocks, control_channels)
        state = network.state_dict()
        for name in ("patch_embedding", "condition_embedder"):
            getattr(branch, name).load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                                                   if k.startswith(name + ".")})
        for i, block in enumerate(branch.blocks):
            prefix = f"blocks.{i}."
            missing, unexpected = block.load_state_dict(
                {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=False)
            if unexpected or any(not k.startswith(("proj_in.", "proj_out.")) for k in missing):
                raise VideoCMError(f"block {i} of this Wan network does not fit a Wan control block "
                                   f"({(unexpected or missing)[:3]})")
        return branch

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                control: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``(B, C, T, h, w)`` latents, ``timestep`` ``(B,)``, text states ``(B, L, D)``, ``control`` latents
        ``(B, C', T, h, w)`` -> residuals ``[(B, tokens, dim)] * num_blocks``."""
        dtype = self.patch_embedding.weight.dtype
        x, control = x.to(dtype), control.to(dtype)
        rotary = self.rope(x)
        hidden = self.patch_embedding(x).flatten(2).transpose(1, 2)
        control_hidden = self.control_embedding(control).flatten(2).transpose(1, 2)
        _, projection, text, _ = self.condition_embedder(timestep, encoder_hidden_states.to(dtype), None)
        projection = projection.unflatten(1, (6, -1))
        residuals = []
        for block in self.blocks:
            residual, control_hidden = block(hidden, text, control_hidden, projection, rotary)
            residuals.append(residual)
        return residuals

    @contextlib.contextmanager
    def joined(self, network: nn.Module, residuals: list[torch.Tensor], scale: float = 1.0):
        """Inside the block, ``network``'s first blocks add the residuals to their outputs; yields no extra
        keyword arguments for the network's call."""
        def adder(residual):
            return lambda module, args, output: output + scale * residual.to(output.dtype)

        handles = [block.register_forward_hook(adder(r)) for block, r in zip(network.blocks, residuals)]
        try:
            yield {}
        finally:
            for handle in handles:
                handle.remove()


FAMILY = WanSpec()
