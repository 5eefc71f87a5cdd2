"""One probability-flow ODE step from time ``t`` to an earlier time ``s``: the solvers distillation uses.

* VP teachers: DDIM with eta = 0 (Song et al. 2021, eq. 12), identical to diffusers' ``DDIMScheduler.step``
  with ``eta=0`` and no clipping or thresholding.
* Flow teachers: Euler on the velocity, identical to ``FlowMatchEulerDiscreteScheduler.step``.
"""

from __future__ import annotations

import torch

from .predictions import predicted_noise, predicted_x0
from .schedules import FlowSchedule, Schedule, Tensorish, broadcast_to


def ddim_step(
    output: torch.Tensor,
    x: torch.Tensor,
    alpha_t: torch.Tensor,
    sigma_t: torch.Tensor,
    alpha_s: torch.Tensor,
    sigma_s: torch.Tensor,
    prediction_type: str,
) -> torch.Tensor:
    """``x_s = alpha_s * x0_hat + sigma_s * noise_hat``, all coefficients broadcast against ``x``."""
    x0 = predicted_x0(output, x, alpha_t, sigma_t, prediction_type)
    noise = predicted_noise(output, x, alpha_t, sigma_t, prediction_type)
    return alpha_s * x0 + sigma_s * noise


def euler_step(velocity: torch.Tensor, x: torch.Tensor, sigma_t: torch.Tensor, sigma_s: torch.Tensor) -> torch.Tensor:
    """``x_s = x_t + (s - t) * velocity``; computed in float32 like diffusers, returned in ``x``'s dtype."""
    step = x.float() + (sigma_s - sigma_t).float() * velocity.float()
    return step.to(x.dtype)


def ode_step(schedule: Schedule, output: torch.Tensor, x: torch.Tensor, t: Tensorish, s: Tensorish) -> torch.Tensor:
    """One solver step of ``schedule``'s ODE from ``t`` to ``s`` (scalars or ``(B,)``): Euler for flow, DDIM for VP."""
    alpha_t, sigma_t = (broadcast_to(v, x) for v in schedule.alpha_sigma(t, x.device))
    alpha_s, sigma_s = (broadcast_to(v, x) for v in schedule.alpha_sigma(s, x.device))
    if isinstance(schedule, FlowSchedule):
        return euler_step(output, x, sigma_t, sigma_s)
    return ddim_step(output, x, alpha_t, sigma_t, alpha_s, sigma_s, schedule.prediction_type)


def x0_and_noise(
    schedule: Schedule, output: torch.Tensor, x: torch.Tensor, t: Tensorish
) -> tuple[torch.Tensor, torch.Tensor]:
    """The clean sample and noise that ``output`` at ``(x, t)`` implies under ``schedule``."""
    alpha, sigma = (broadcast_to(v, x) for v in schedule.alpha_sigma(t, x.device))
    return (
        predicted_x0(output, x, alpha, sigma, schedule.prediction_type),
        predicted_noise(output, x, alpha, sigma, schedule.prediction_type),
    )
