"""Diffusion math as small pure functions on tensors: schedules, prediction conversions, ODE steps, samplers.

Imports torch (and numpy) only, nothing else of videocm.
"""

from .consistency import (boundary_scalings, consistency_function, consistency_times, generator_noise,
                          pseudo_huber_loss, sample_consistency, seeded_noise, skipping_grid)
from .predictions import PREDICTION_TYPES, predicted_noise, predicted_x0, prediction_target
from .sampling import concat_conditioning, guidance_at, guided_output, network_evaluations, sample_teacher
from .schedules import FlowSchedule, Schedule, VPSchedule, broadcast_to, make_betas, shift_sigmas, vp_schedule
from .solvers import ddim_step, euler_step, ode_step, x0_and_noise

__all__ = [
    "PREDICTION_TYPES",
    "FlowSchedule",
    "Schedule",
    "VPSchedule",
    "boundary_scalings",
    "broadcast_to",
    "consistency_function",
    "consistency_times",
    "generator_noise",
    "pseudo_huber_loss",
    "sample_consistency",
    "seeded_noise",
    "skipping_grid",
    "concat_conditioning",
    "ddim_step",
    "euler_step",
    "guidance_at",
    "guided_output",
    "make_betas",
    "network_evaluations",
    "ode_step",
    "predicted_noise",
    "predicted_x0",
    "prediction_target",
    "sample_teacher",
    "shift_sigmas",
    "vp_schedule",
    "x0_and_noise",
]
