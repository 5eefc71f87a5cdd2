"""Denoisers: each network family behind one call signature, and wrappers that add to it by composition.

    denoiser(x, timestep, encoder_hidden_states, encoder_attention_mask=None, pooled_projections=None) -> output

with ``x`` and the output ``(B, C, T, h, w)`` latents, ``timestep`` ``(B,)`` as the schedule hands it to the
network, text states ``(B, L, D)``, mask ``(B, L)`` and pooled states ``(B, D')``.

* :class:`DenoiserAdapter`: a diffusers network of a family (:mod:`models.families`), called the family's way.
  ``embedded_guidance`` is the scale a guidance-distilled network (HunyuanVideo) takes itself; it is fixed when
  the adapter is made (:meth:`DenoiserAdapter.with_embedded_guidance` gives another adapter of the same network).
* :class:`GuidanceEmbeddedDenoiser`: a student's guidance embedding (:mod:`models.student`); it then takes
  ``guidance=`` ``(B,)``.
* :class:`ControlledDenoiser`: a control branch's residuals joined to the network; it then takes ``control=``
  latents ``(B, C', T, h, w)`` (without them it is the plain denoiser).
* :class:`TwoStageDenoiser`: Wan 2.2's high-noise and low-noise transformers, switched by timestep.

Wrappers nest (``ControlledDenoiser(GuidanceEmbeddedDenoiser(adapter, e), branch)``) and never change the
denoiser they wrap. Masks: families with ``zero_padded_text`` zero padding tokens before the network (what the
Wan pipeline does to its states), so prompts of any length behave alike; the others get the mask themselves.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import VideoCMError
from .families import FamilySpec, get_family


class DenoiserAdapter(nn.Module):
    """Calls a diffusers network with videocm's denoiser signature."""

    def __init__(self, family: str | FamilySpec, network: nn.Module, embedded_guidance: float | None = None,
                 options: dict | None = None) -> None:
        super().__init__()
        self.spec = family if isinstance(family, FamilySpec) else get_family(family)
        self.family = self.spec.name
        self.network = network
        self.embedded_guidance = None if embedded_guidance is None else float(embedded_guidance)
        self.options = dict(options or {})  # ModelInfo.network_options: fixed keyword arguments of every call
        self._cache: dict = {}  # the family's per-shape tables (CogVideoX's rotary embeddings)

    @property
    def embeds_guidance(self) -> bool:
        """Whether the network itself takes a guidance scale (HunyuanVideo's guidance-distilled transformer)."""
        return self.spec.embeds_guidance(self.network)

    def with_embedded_guidance(self, scale: float | None) -> "DenoiserAdapter":
        """The same network, given ``scale`` as its embedded guidance."""
        return DenoiserAdapter(self.spec, self.network, scale, self.options)

    def of(self, network: nn.Module) -> "DenoiserAdapter":
        """An adapter of ``network`` (a copy or expert of this one's) called the same way."""
        return DenoiserAdapter(self.spec, network, self.embedded_guidance, self.options)

    def text_states(self, states: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """The text states the network reads (padding zeroed where the family's pipeline does so)."""
        if mask is not None and self.spec.zero_padded_text:
            return states * mask.unsqueeze(-1).to(states.dtype)
        return states

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None, pooled_projections: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None, control: torch.Tensor | None = None,
                network_arguments: dict | None = None, image_latents: torch.Tensor | None = None,
                image_states: torch.Tensor | None = None, first_frame_latents: torch.Tensor | None = None
                ) -> torch.Tensor:
        """``network_arguments``: keyword arguments a wrapper adds to the network's call (control residuals);
        ``image_latents`` / ``image_states``: an image-to-video network's first-frame inputs
        (:mod:`models.image_condition`)."""
        if guidance is not None:
            raise ValueError("this network has no guidance embedding; do not pass guidance=")
        if control is not None:
            raise ValueError("control latents given to a denoiser without a control branch (ControlledDenoiser)")
        states = self.text_states(encoder_hidden_states, encoder_attention_mask)
        extra = {**self.options, **(network_arguments or {})}
        if image_latents is not None:
            extra["image_latents"] = image_latents
        if image_states is not None:
            extra["image_states"] = image_states
        if first_frame_latents is not None:
            extra["first_frame_latents"] = first_frame_latents
        out = self.spec.run(self.network, x, timestep, states, encoder_attention_mask, pooled_projections, extra,
                            self.embedded_guidance, self._cache)
        return out.to(x.dtype)


class DenoiserWrapper(nn.Module):
    """A denoiser around another one (``base``); the network, family and guidance settings are the base's."""

    def __init__(self, base: nn.Module) -> None:
        super().__init__()
        self.base = base

    @property
    def network(self) -> nn.Module:
        return self.base.network

    @property
    def spec(self) -> FamilySpec:
        return self.base.spec

    @property
    def family(self) -> str:
        return self.base.family

    @property
    def embeds_guidance(self) -> bool:
        return self.base.embeds_guidance

    @property
    def embedded_guidance(self) -> float | None:
        return self.base.embedded_guidance

    @property
    def options(self) -> dict:
        return self.base.options

    def text_states(self, states, mask):
        return self.base.text_states(states, mask)


class GuidanceHook:
    """Adds a pending guidance embedding to the output of the network's time embedding."""

    def __init__(self) -> None:
        self.pending: torch.Tensor | None = None

    def __call__(self, module, args, output):
        if self.pending is None:
            return output
        if self.pending.shape[0] != output.shape[0]:
            raise VideoCMError(f"guidance for {self.pending.shape[0]} clips given to a batch of {output.shape[0]}")
        return output + self.pending.to(output.dtype)


class GuidanceEmbeddedDenoiser(DenoiserWrapper):
    """``base`` with a guidance input: ``embedding(guidance)`` is added to the network's timestep embedding (a
    forward hook on the family's time-embedding module, a no-op unless this wrapper is calling)."""

    def __init__(self, base: nn.Module, embedding: nn.Module) -> None:
        super().__init__(base)
        self.guidance_embedding = embedding
        self.hook = GuidanceHook()
        base.spec.time_embedding(base.network).register_forward_hook(self.hook)

    def forward(self, x, timestep, *args, guidance: torch.Tensor | None = None, **kwargs):
        if guidance is None:
            raise ValueError("this student was distilled with a guidance embedding: pass guidance= (B,)")
        self.hook.pending = self.guidance_embedding(guidance.to(x.device).reshape(-1))
        try:
            return self.base(x, timestep, *args, **kwargs)
        finally:
            self.hook.pending = None


class ControlledDenoiser(DenoiserWrapper):
    """``base`` with a control branch (:mod:`models.control`): given ``control=`` latents, the branch's residuals
    (times ``scale``) join the network; without them it is ``base`` unchanged. ``branch`` may be wrapped for
    several processes (its ``module`` is then the branch)."""

    def __init__(self, base: nn.Module, branch: nn.Module, scale: float = 1.0) -> None:
        super().__init__(base)
        self.branch = branch
        self.scale = float(scale)

    def forward(self, x, timestep, encoder_hidden_states, encoder_attention_mask=None, pooled_projections=None,
                control: torch.Tensor | None = None, **kwargs):
        if control is None:
            return self.base(x, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                             **kwargs)
        states = self.base.text_states(encoder_hidden_states, encoder_attention_mask)
        residuals = self.branch(x, timestep, states, control)
        branch = getattr(self.branch, "module", self.branch)
        with branch.joined(self.base.network, residuals, self.scale) as arguments:
            return self.base(x, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections,
                             network_arguments=arguments, **kwargs)


class TwoStageDenoiser(DenoiserWrapper):
    """Wan 2.2's two-expert layout (``WanPipeline`` with ``transformer_2`` and ``boundary_ratio``): ``base`` (the
    pipeline's ``transformer``) denoises timesteps at or above ``boundary`` (``boundary_ratio`` times the number of
    training timesteps, as the pipeline compares them), ``low`` (``transformer_2``) those below. Each row of a
    batch goes to the expert that owns its timestep; ``base`` is what :func:`unwrapped` finds."""

    def __init__(self, base: DenoiserAdapter, low: DenoiserAdapter, boundary: float) -> None:
        super().__init__(base)
        self.low = low
        self.boundary = float(boundary)

    def experts(self) -> list[nn.Module]:
        """``[high-noise, low-noise]`` adapters."""
        return [self.base, self.low]

    def forward(self, x, timestep, encoder_hidden_states, encoder_attention_mask=None, pooled_projections=None,
                **kwargs):
        timestep = torch.as_tensor(timestep, device=x.device).reshape(-1).expand(x.shape[0])
        high = timestep >= self.boundary
        if bool(high.all()) or not bool(high.any()):  # one expert for the whole batch (always when sampling)
            expert = self.base if bool(high.all()) else self.low
            return expert(x, timestep, encoder_hidden_states, encoder_attention_mask, pooled_projections, **kwargs)

        def rows(value, chosen):
            return value[chosen] if isinstance(value, torch.Tensor) and value.shape[:1] == x.shape[:1] else value

        out = torch.empty_like(x)
        for expert, chosen in ((self.base, high), (self.low, ~high)):
            out[chosen] = expert(x[chosen], timestep[chosen], encoder_hidden_states[chosen],
                                 rows(encoder_attention_mask, chosen), rows(pooled_projections, chosen),
                                 **{k: rows(v, chosen) for k, v in kwargs.items()})
        return out


def unwrapped(denoiser: nn.Module) -> DenoiserAdapter:
    """The :class:`DenoiserAdapter` at the centre of any nesting of wrappers."""
    while isinstance(denoiser, DenoiserWrapper):
        denoiser = denoiser.base
    return denoiser
