"""The consistency distillation step, once: what LCM, every DCM stage and the control fine-tune compute.

For clip latents ``z`` ``(B, C, T, h, w)``, grid indices ``n`` and skip ``k`` on the skipping grid:

1. noise ``z`` to ``t_{n+k}`` with ``noise``;
2. the teacher, with classifier-free guidance at per-clip weight ``w`` (one batched forward for conditional and
   unconditional), takes one ODE step back to ``t_n`` (DDIM for VP teachers, Euler for flow teachers);
3. the student's (phased) consistency function at ``(x_{t_{n+k}}, t_{n+k})`` is pulled towards the target
   network's at ``(x_{t_n}, t_n)`` (no gradient), both mapping to the segment's low end ``grid[end]`` (the clean
   end for LCM: ``f(x, t) = c_skip x + c_out x0_hat``);
4. loss: pseudo-Huber ``sqrt(d^2 + c^2) - c`` or L2.

:func:`consistency_step` is that pure function of its inputs; :func:`draw_consistency_batch` draws the inputs of a
training step from the step's random streams (so every method draws them alike, and the figures do not depend on
the process count).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..diffusion import ode_step, pseudo_huber_loss
from ..diffusion.phased import phased_function
from ..diffusion.sampling import guided_output


@dataclass
class ConsistencyTerms:
    """The step's loss and the two consistency estimates it compares (``(B, C, T, h, w)``): the student's
    (``prediction``, with its graph) and the target network's at the teacher's ODE step (``target_estimate``)."""

    loss: torch.Tensor
    prediction: torch.Tensor
    target_estimate: torch.Tensor


def consistency_step(student, target, teacher, schedule, grid: torch.Tensor, end: int, latents: torch.Tensor,
                     noise: torch.Tensor, index: torch.Tensor, skip: int, teacher_cond: dict, teacher_uncond: dict,
                     guidance: torch.Tensor, student_cond: dict, sigma_data: float = 0.5,
                     timestep_scaling: float = 10.0, loss: str = "huber", huber_c: float = 0.001) -> ConsistencyTerms:
    """One consistency distillation loss (see the module docstring).

    ``student``, ``target`` and ``teacher`` are denoisers; ``index`` ``(B,)`` the grid indices ``n``; ``end`` the
    grid index both consistency functions map to; ``guidance`` ``(B,)`` the teacher's guidance weight per clip;
    ``teacher_cond`` / ``teacher_uncond`` the teacher's conditional and unconditional inputs, ``student_cond``
    what student and target read (text, and a guidance scale for a guidance-embedded student).
    """
    device = latents.device
    t_high, t_low = grid[index + skip].to(device), grid[index].to(device)
    segment_end = grid[end].to(device)
    x_high = schedule.add_noise(latents, noise, t_high)
    student_output = student(x_high, schedule.model_timestep(t_high).to(device), **student_cond)
    prediction = phased_function(schedule, student_output, x_high, t_high, segment_end, sigma_data, timestep_scaling)
    # no_grad, not inference_mode: an FSDP-sharded teacher gathers its weights into buffers it reuses in DCM's
    # detail stage, where it runs with autograd; inference tensors there cannot be written outside inference mode
    with torch.no_grad():
        teacher_output = guided_output(teacher, x_high, schedule.model_timestep(t_high).to(device), teacher_cond,
                                       teacher_uncond, guidance)
        x_low = ode_step(schedule, teacher_output, x_high, t_high, t_low)
        target_output = target(x_low, schedule.model_timestep(t_low).to(device), **student_cond)
        target_value = phased_function(schedule, target_output, x_low, t_low, segment_end, sigma_data,
                                       timestep_scaling)
    if loss == "huber":
        value = pseudo_huber_loss(prediction, target_value, huber_c)
    else:
        value = ((prediction.float() - target_value.float()) ** 2).mean()
    return ConsistencyTerms(value, prediction, target_value)


def draw_consistency_batch(rng: np.random.Generator, generator: torch.Generator, n: int, rows: slice,
                           segment: tuple[int, int], skip: int, latent_shape: tuple[int, ...], device,
                           guidance=None) -> tuple[torch.Tensor, int, torch.Tensor | None, torch.Tensor]:
    """Grid indices ``n`` (uniform over the segment ``[low, high - k]``), the skip ``k`` clamped to the segment,
    the guidance weights (``guidance(n, rng)``, drawn after the indices; None without) and the noise, for the
    global batch of ``n``, of which this process keeps ``rows``."""
    low, high = segment
    skip = min(skip, high - low)
    index = torch.from_numpy(rng.integers(low, high - skip + 1, size=n))[rows]
    weights = guidance(n, rng)[rows].to(device) if guidance is not None else None
    noise = torch.randn((n, *latent_shape), generator=generator)[rows].to(device)
    return index, skip, weights, noise


def expanded(conditioning: dict, batch: int) -> dict:
    """A one-row conditioning (e.g. the negative prompt's states) repeated for ``batch`` rows."""
    return {k: v.expand(batch, *v.shape[1:]) for k, v in conditioning.items()}
