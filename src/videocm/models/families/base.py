"""What videocm needs to know about one network family, in one object: :class:`FamilySpec`.

A family file (``models/families/NAME.py``) defines a subclass of :class:`FamilySpec` and a module-level
``FAMILY = ThatSpec()``; the registry (:mod:`models.families`) finds it by itself. Nothing outside
``models/families/`` branches on a family name: every family-specific choice is an attribute or a method here.
See ``docs/adding-a-family.md`` for what a new family must provide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
from torch import nn

from ...errors import VideoCMError


@dataclass(frozen=True)
class PipelineLayout:
    """A diffusers pipeline class of this family: its text parts and its own defaults (the denoiser is in the
    family's ``subfolder``)."""

    class_name: str
    text_parts: tuple[str, ...]
    frames: int
    height: int
    width: int
    guidance: float
    max_sequence_length: int
    # the order the pipeline draws noise per clip, as the axes of the tensor it draws (C channels, T frames, h
    # rows, w columns): (starting noise, re-noising noise). "CThw" as videocm's latents; "TChw" frames first
    # (CogVideoX); "ThwC" packed tokens, channels last (LTX-Video)
    noise_orders: tuple[str, str] = ("CThw", "CThw")
    # image to video: how the first frame conditions the network ("" none; "channels": its VAE latents, zero
    # beyond the first latent frame, concatenated to the noisy latents on channels, as CogVideoX-I2V does)
    image_condition: str = ""


class FamilySpec:
    """One network family: its diffusers class and how videocm calls, extends and saves it.

    Latents are ``(B, C, T, h, w)`` everywhere in videocm; :meth:`run` turns them into the network's own layout.
    """

    name: str = ""
    network_class: str = ""  # the diffusers model class
    subfolder: str = "transformer"  # where a model or pipeline folder keeps the network
    second_subfolder: str | None = None  # a pipeline's second denoiser, when the family has such layouts
    # peft LoRA targets of a LoRA student (empty: LoRA students are not supported for the family)
    lora_targets: tuple[str, ...] = ()
    # a DCM detail expert's own trainable copies: the timestep / condition embedding and the output layers
    detail_own_modules: tuple[str, ...] = ()
    # padding tokens of the text states are zeroed before the network (the pipeline does so); else the mask is
    # handed to the network itself
    zero_padded_text: bool = True
    pipeline: PipelineLayout | None = None
    image_pipeline: PipelineLayout | None = None  # the family's image-to-video pipeline, when videocm takes it

    @property
    def layouts(self) -> tuple[PipelineLayout, ...]:
        return tuple(layout for layout in (self.pipeline, self.image_pipeline) if layout is not None)

    def layout(self, class_name: str | None) -> PipelineLayout | None:
        """This family's layout of the pipeline class ``class_name`` (None: the text-to-video one)."""
        found = [layout for layout in self.layouts if layout.class_name == class_name]
        return found[0] if found else self.pipeline
    # the noise schedule ``videocm train-teacher`` trains this family with ("flow" or "vp"; "" = not trainable)
    teacher_schedule: str = ""
    # the pipeline VAE's compression (frames, pixels per side): ``videocm plan``'s latent shape of a clip
    latent_factors: tuple[int, int] = (4, 8)
    # the network's config key of its text states' width, and of its pooled text width ("" = none)
    text_dim_key: str = "text_dim"
    pooled_dim_key: str = ""

    # ---- the network ---------------------------------------------------------------------------------------

    def diffusers_class(self) -> type:
        import diffusers

        return getattr(diffusers, self.network_class)

    def load_network(self, path, dtype: torch.dtype = torch.float32) -> nn.Module:
        from ...errors import reading_weights

        with reading_weights(path, f"{self.network_class} weights"):
            return self.diffusers_class().from_pretrained(path, torch_dtype=dtype)

    def build_network(self, latent_channels: int, text_dim: int, sample_size: int,
                      options: Mapping[str, Any]) -> nn.Module:
        """A freshly initialised small network (``videocm train-teacher``); ``options``: the teacher config's
        fields (``wan_layers``, ``unet_channels``, ...; each family reads its own, with defaults)."""
        raise VideoCMError(f"videocm trains teachers of the families that have a built-in network, not {self.name}; "
                           f"distil a {self.name} pipeline folder instead")

    def latent_frames(self, frames: int) -> int:
        """Latent frames of a clip of ``frames`` frames (causal video VAEs keep the first frame alone)."""
        temporal = self.latent_factors[0]
        return frames if temporal == 1 else (frames - 1) // temporal + 1

    def example_inputs(self, network: nn.Module, batch: int, latent_shape: tuple[int, int, int, int],
                       text_tokens: int, device, dtype: torch.dtype) -> dict:
        """Random inputs of :meth:`run` for ``batch`` clips of ``latent_shape`` ``(C, T, h, w)`` (``videocm plan``
        runs them on the meta device)."""
        config = network.config
        pooled = (torch.zeros(batch, config[self.pooled_dim_key], device=device, dtype=dtype)
                  if self.pooled_dim_key else None)
        return {"x": torch.zeros(batch, *latent_shape, device=device, dtype=dtype),
                "timestep": torch.full((batch,), 500.0, device=device),
                "states": torch.zeros(batch, text_tokens, config[self.text_dim_key], device=device, dtype=dtype),
                "mask": None, "pooled": pooled, "extra": {}, "embedded_guidance": None, "cache": {}}

    def embeds_guidance(self, network: nn.Module) -> bool:
        """Whether the network takes the guidance scale itself (a guidance-distilled teacher)."""
        return False

    def run(self, network: nn.Module, x: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor,
            mask: torch.Tensor | None, pooled: torch.Tensor | None, extra: dict, embedded_guidance: float | None,
            cache: dict) -> torch.Tensor:
        """The network's output for latents ``x`` ``(B, C, T, h, w)`` in the same layout; ``extra``: keyword
        arguments a control branch adds to the call; ``cache``: per-denoiser scratch (e.g. rotary tables)."""
        raise NotImplementedError

    def time_embedding(self, network: nn.Module) -> nn.Module:
        """The module whose output ``(B, D)`` is the timestep embedding (a guidance embedding is added to it)."""
        raise VideoCMError(f"{self.name} networks take no guidance embedding; distil with a fixed --guidance")

    # ---- features (DCM's discriminator) -------------------------------------------------------------------

    def feature_blocks(self, network: nn.Module) -> list[nn.Module]:
        """The blocks whose outputs the discriminator heads read, input side first."""
        raise NotImplementedError

    def shard_blocks(self, network: nn.Module) -> list[nn.Module]:
        """The units ``--parallel fsdp`` shards one at a time (each gathered for its own forward): the blocks."""
        return self.feature_blocks(network)

    def features_as_video(self, network: nn.Module, hidden: torch.Tensor, latent_shape: tuple[int, ...]
                          ) -> torch.Tensor:
        """A block's output as a video-shaped map ``(B, D, T', H', W')``. Default: transformer tokens in (frame,
        row, column) order on the grid of :meth:`patch_size`."""
        batch, _, frames, height, width = latent_shape
        pt, ph, pw = self.patch_size(network)
        grid = (-(-frames // pt), height // ph, width // pw)
        tokens = grid[0] * grid[1] * grid[2]
        return hidden[:, :tokens].transpose(1, 2).reshape(batch, hidden.shape[-1], *grid)

    def patch_size(self, network: nn.Module) -> tuple[int, int, int]:
        raise NotImplementedError

    def output_projection(self, network: nn.Module):
        """The network's own output layer as a map of a block's tokens ``(B, L, D)`` (DCM's feature matching reads
        the read blocks through it): an object with ``hooks()`` (forward hooks that capture what the layer needs
        from the forward, e.g. its timestep embedding; returns their handles) and ``__call__(tokens)``; None for a
        family whose blocks do not share the output layer's width (UNets)."""
        return None

    # ---- control branches -----------------------------------------------------------------------------------

    def control_branch_class(self) -> type | None:
        """The :class:`models.control_branch.ControlBranch` subclass of this family, or None."""
        return None

    # ---- diffusers pipelines ----------------------------------------------------------------------------------

    def encode_prompt(self, pipeline, prompts: list[str], device, max_length: int) -> dict[str, torch.Tensor]:
        """The pipeline's own ``encode_prompt``, as the denoiser's keyword arguments."""
        states, _ = pipeline.encode_prompt(prompt=prompts, do_classifier_free_guidance=False,
                                           max_sequence_length=max_length, device=device)
        return {"encoder_hidden_states": states}

    def default_video_shape(self, network: nn.Module, spatial_factor: int) -> list[int]:
        """``[frames, height, width]`` the pipeline makes by default."""
        layout = self.pipeline
        return [layout.frames, layout.height, layout.width]

    def original_lora_state(self, weights: dict, alpha: float) -> dict:
        """A peft LoRA state of this family's network in its original (non-diffusers) key layout, for
        ``videocm export --format lora-original``."""
        raise VideoCMError(f"--format lora-original: no original LoRA layout is known for {self.name} networks; "
                           f"use --format lora")

    def export_index(self, index: dict) -> dict:
        """A teacher pipeline's ``model_index.json`` as the export of a one-network student of it writes it."""
        return dict(index)

    def check_model_index(self, index: dict, folder) -> None:
        """A one-line error for a pipeline layout of this family that videocm cannot distil (yet)."""

    def size_multiple(self, spatial_factor: int) -> int:
        """What a clip's height and width must be multiples of, for a VAE compressing ``spatial_factor`` x: whole
        2x2 patches of latents."""
        return spatial_factor * 2

    def check_video_shape(self, frames: int, vae, class_name: str) -> None:
        """A one-line error for clip shapes the family's VAE cannot decode back (beyond the generic checks)."""

    def pipeline_info(self, layout: PipelineLayout, pipeline) -> dict:
        """Extra keys of a pipeline teacher's model description (e.g. an embedded guidance scale, or
        ``network_options``: fixed keyword arguments of every network call, which :meth:`run` finds in ``extra``)."""
        return {}

    def export_call_arguments(self, info) -> dict:
        """Keyword arguments of the pipeline's call, beyond steps, guidance, shape and text length, that the
        export's ``HOW_TO_USE.md`` passes so the pipeline runs the network as videocm did."""
        return {}

    def export_guidance(self, embedded_guidance: float | None) -> float:
        """The ``guidance_scale`` a user passes to the exported pipeline (HOW_TO_USE.md): 1, guidance being
        folded into the student."""
        return 1.0
