"""Teacher samplers: N-step DDIM (VP) or Euler (flow) with classifier-free guidance.

A *denoiser* is any callable ``denoiser(x, timestep, **conditioning) -> output`` with ``x`` of shape
``(B, C, T, H, W)``, ``timestep`` of shape ``(B,)`` as the network expects it (``schedule.model_timestep``), and
``conditioning`` a dict of tensors whose first dimension is the batch (e.g. text states ``(B, L, D)`` and their
mask ``(B, L)``). The output has ``x``'s shape and is interpreted by ``schedule.prediction_type``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .schedules import Schedule
from .solvers import ode_step, x0_and_noise

Denoiser = Callable[..., torch.Tensor]
Conditioning = dict[str, torch.Tensor]


def concat_conditioning(first: Conditioning, second: Conditioning) -> Conditioning:
    """Stack two conditionings along the batch; both must carry the same keys."""
    if first.keys() != second.keys():
        raise ValueError(f"conditional and unconditional inputs differ in keys: {sorted(first)} vs {sorted(second)}")
    return {key: torch.cat([first[key], second[key]]) for key in first}


def guided_output(
    denoiser: Denoiser,
    x: torch.Tensor,
    timestep: torch.Tensor,
    cond: Conditioning,
    uncond: Conditioning | None = None,
    guidance_scale: float | torch.Tensor = 1.0,
    paired: Conditioning | None = None,
) -> torch.Tensor:
    """Classifier-free guidance ``u + w (c - u)`` (Ho & Salimans 2022) in one batched forward.

    ``guidance_scale`` follows diffusers: 1 means no guidance, and then the unconditional pass is skipped. It is a
    number, or one scale per clip ``(B,)`` (distillation over a guidance range). ``paired``:
    ``concat_conditioning(uncond, cond)`` made once by a caller that guides many steps.
    """
    per_clip = isinstance(guidance_scale, torch.Tensor)
    no_guidance = bool(torch.all(guidance_scale == 1)) if per_clip else guidance_scale == 1.0
    if uncond is None or no_guidance:
        return denoiser(x, timestep, **cond)
    paired = concat_conditioning(uncond, cond) if paired is None else paired
    both = denoiser(torch.cat([x, x]), torch.cat([timestep, timestep]), **paired)
    unconditional, conditional = both.chunk(2)
    if per_clip:
        guidance_scale = guidance_scale.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return unconditional + guidance_scale * (conditional - unconditional)


def guidance_at(timesteps, scale, scale_2: float | None = None, boundary: float | None = None):
    """The classifier-free guidance scale at each model timestep: ``scale`` everywhere, except Wan 2.2's rule for a
    two-expert teacher (``WanPipeline``'s ``guidance_scale_2``): ``scale_2`` where the low-noise expert runs, at
    timesteps below ``boundary``. The one definition of that rule: sampling, prompt-cache generation, the
    consistency step and distribution matching all ask it.

    ``scale`` a number (one per sampling step is returned, as Python floats, for ``timesteps`` a 1-D sequence of
    sampling times) or one weight per clip ``(B,)`` (returned as a tensor of the same dtype, for ``timesteps``
    ``(B,)``). Without ``scale_2``, ``scale`` itself comes back unchanged.
    """
    if scale_2 is None:
        return scale
    if boundary is None:
        raise ValueError("guidance_at: scale_2 needs the two-expert boundary")
    if isinstance(scale, torch.Tensor):
        low = torch.as_tensor(timesteps).to(scale.device) < boundary
        return torch.where(low, torch.full_like(scale, float(scale_2)), scale)
    return [float(scale) if float(t) >= boundary else float(scale_2) for t in timesteps]


def network_evaluations(num_steps: int, guidance_scale: float, has_uncond: bool) -> int:
    """NFE of :func:`sample_teacher`, counting conditional and unconditional passes separately."""
    return num_steps * (2 if has_uncond and guidance_scale != 1.0 else 1)


@torch.inference_mode()
def sample_teacher(
    denoiser: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    num_steps: int,
    cond: Conditioning,
    uncond: Conditioning | None = None,
    guidance_scale: float | Sequence[float] = 1.0,
    times: torch.Tensor | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Integrate the teacher's probability-flow ODE from ``noise`` to a clean sample.

    DDIM (eta 0) for VP schedules, Euler for flow schedules, over ``schedule.sampling_times(num_steps)`` unless
    ``times`` (descending, ending at the clean terminal) is given. ``noise``: ``(B, C, T, H, W)``; returns the same
    shape. ``callback`` receives ``{"step", "t", "x", "x0"}`` after every step. ``guidance_scale``: one scale, or
    one per step (Wan 2.2's two experts each have their own).
    """
    times = schedule.sampling_times(num_steps) if times is None else times
    x = noise
    batch = x.shape[0]
    # everything the loop needs on the device, copied once: no host-device traffic between network calls
    on_device = times.to(x.device)
    timesteps = schedule.model_timestep(on_device).to(x.device)
    scales = [float(guidance_scale)] * (len(times) - 1) if isinstance(guidance_scale, (int, float)) else \
        [float(g) for g in guidance_scale]
    if len(scales) != len(times) - 1:
        raise ValueError(f"{len(scales)} guidance scales for {len(times) - 1} steps")
    paired = concat_conditioning(uncond, cond) if uncond is not None and any(g != 1.0 for g in scales) else None
    for i in tqdm(range(len(times) - 1), desc="sampling", disable=not progress, leave=False):
        t, s = on_device[i], on_device[i + 1]
        output = guided_output(denoiser, x, timesteps[i].expand(batch), cond, uncond, scales[i], paired)
        if callback is not None:
            x0, _ = x0_and_noise(schedule, output, x, t)
            x = ode_step(schedule, output, x, t, s)
            callback({"step": i, "t": times[i], "x": x, "x0": x0})
        else:
            x = ode_step(schedule, output, x, t, s)
    return x
