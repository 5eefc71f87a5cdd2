"""Consistency models on a teacher's ODE: the skipping-step grid, the boundary-condition parameterisation and
the multistep consistency sampler (Song et al. 2023, Algorithm 1; Luo et al. 2023, LCM).

Time is the schedule's own: integer timesteps ``0..999`` for VP, sigmas in ``[0, 1]`` for flow matching.

* Grid. ``N`` solver points ``t_1 < ... < t_N`` spread over the training range, plus ``t_0`` at the clean end.
  VP: ``t_i = i * (T / N) - 1`` as diffusers' ``LCMScheduler`` (``19, 39, ..., 999`` for ``N = 50``) and
  ``t_0 = 0``; flow: ``t_i = shift(i / N)`` and ``t_0 = 0``. Distillation teaches the student to map
  ``x_{t_{n+k}}`` and the teacher's one ODE step from it, ``x_{t_n}``, to the same origin.
* Parameterisation. ``f(x, t) = c_skip(t) x + c_out(t) x0_hat(x, t)`` with LCM's scalings on the network's
  timestep ``tau`` (the VP timestep itself; ``1000 * sigma`` for flow):
  ``c_skip = sd^2 / ((s tau)^2 + sd^2)``, ``c_out = s tau / sqrt((s tau)^2 + sd^2)`` (``sd = sigma_data = 0.5``,
  ``s = timestep_scaling = 10``). At ``tau = 0`` these are exactly 1 and 0, so ``f(x, 0) = x``: the boundary
  condition. For flow matching the same formula on ``tau = 1000 sigma`` is our flow equivalent: ``x0_hat = x -
  sigma v`` and ``sigma = 0`` is the clean end, so the condition holds at the flow ODE's origin too.
* Sampler. Timesteps are picked from the grid as ``LCMScheduler.set_timesteps`` does (``999, 759, 499, 259`` for
  4 of 50); at each, ``x0 = f(x_t, t)`` and, unless it is the last, ``x`` is re-noised to the next timestep with
  fresh noise. For a VP student this equals diffusers' ``LCMScheduler.step`` driven by the same network and noise.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from .sampling import Conditioning, Denoiser
from .schedules import FlowSchedule, Schedule, broadcast_to, shift_sigmas
from .solvers import x0_and_noise

NoiseSource = Callable[[int, tuple[int, ...]], torch.Tensor]


def boundary_scalings(model_timestep: torch.Tensor, sigma_data: float = 0.5,
                      timestep_scaling: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(c_skip, c_out)`` of LCM (diffusers' ``get_scalings_for_boundary_condition_discrete``); float32."""
    scaled = model_timestep.to(torch.float32) * timestep_scaling
    c_skip = sigma_data**2 / (scaled**2 + sigma_data**2)
    c_out = scaled / (scaled**2 + sigma_data**2) ** 0.5
    return c_skip, c_out


def skipping_grid(schedule: Schedule, num_points: int = 50) -> torch.Tensor:
    """The solver grid ``[t_0, t_1, ..., t_N]`` (ascending, ``t_0`` the clean end) in the schedule's time."""
    if num_points < 1:
        raise ValueError(f"the grid needs at least 1 point, got {num_points}")
    if isinstance(schedule, FlowSchedule):
        sigmas = torch.arange(0, num_points + 1, dtype=torch.float64) / num_points
        return torch.cat([torch.zeros(1, dtype=torch.float64),
                          shift_sigmas(sigmas[1:], schedule.shift, schedule.mu)]).to(torch.float32)
    total = schedule.num_train_timesteps
    if num_points > total:
        raise ValueError(f"the grid can have at most {total} points, got {num_points}")
    stride = total // num_points
    points = torch.arange(1, num_points + 1, dtype=torch.long) * stride - 1
    return torch.cat([torch.zeros(1, dtype=torch.long), points])


def consistency_times(grid: torch.Tensor, num_steps: int) -> torch.Tensor:
    """``num_steps`` sampling timesteps (descending) chosen from ``grid[1:]`` as ``LCMScheduler`` chooses them."""
    points = grid[1:].flip(0)
    if not 1 <= num_steps <= len(points):
        raise ValueError(f"steps must be between 1 and the grid size {len(points)}, got {num_steps}")
    indices = np.floor(np.linspace(0, len(points), num=num_steps, endpoint=False)).astype(np.int64)
    return points[torch.from_numpy(indices)]


def consistency_function(schedule: Schedule, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                         sigma_data: float = 0.5, timestep_scaling: float = 10.0) -> torch.Tensor:
    """``f(x, t) = c_skip x + c_out x0_hat``: the network ``output`` at ``(x, t)`` mapped to the ODE's origin.

    ``x``/``output``: ``(B, C, T, H, W)``; ``t``: scalar or ``(B,)`` in the schedule's time.
    """
    x0, _ = x0_and_noise(schedule, output, x, t)
    c_skip, c_out = boundary_scalings(schedule.model_timestep(t), sigma_data, timestep_scaling)
    return broadcast_to(c_skip, x) * x + broadcast_to(c_out, x) * x0


def pseudo_huber_loss(prediction: torch.Tensor, target: torch.Tensor, c: float = 0.001) -> torch.Tensor:
    """Mean of ``sqrt(d^2 + c^2) - c`` over all elements (Song & Dhariwal 2023; LCM's ``c = 0.001``), in float32."""
    difference = prediction.float() - target.float()
    return (torch.sqrt(difference**2 + c**2) - c).mean()


def seeded_noise(seeds: list[int], device: torch.device | str = "cpu") -> NoiseSource:
    """Re-noising noise for step ``i`` of clip ``b`` drawn from seed ``(seeds[b], i)`` alone (batch-independent)."""
    def draw(step: int, shape: tuple[int, ...]) -> torch.Tensor:
        return torch.stack([torch.randn(shape[1:], generator=torch.Generator().manual_seed(int(s) * 1009 + step + 1))
                            for s in seeds]).to(device)
    return draw


def generator_noise(generator: torch.Generator | None = None) -> NoiseSource:
    """Noise drawn from one generator in call order, as diffusers' ``randn_tensor`` does."""
    return lambda step, shape: torch.randn(shape, generator=generator)


@torch.inference_mode()
def sample_consistency(
    denoiser: Denoiser,
    noise: torch.Tensor,
    schedule: Schedule,
    times: torch.Tensor,
    cond: Conditioning,
    noise_source: NoiseSource | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Multistep consistency sampling over ``times`` (descending, from :func:`consistency_times`).

    One network evaluation per step; ``noise_source(step, shape)`` gives the re-noising noise (default: the
    global torch generator). Returns the last ``f(x, t)``, shape of ``noise``.
    """
    noise_source = noise_source or generator_noise()
    x = noise
    batch = x.shape[0]
    denoised = x
    # copied to the device once before the loop: the times, the network timesteps and every step's re-noising
    # noise (drawn in the same order as step by step, so the clips are the same)
    on_device = times.to(x.device)
    timesteps = schedule.model_timestep(on_device).to(x.device)
    fresh = [noise_source(i, tuple(x.shape)) for i in range(len(times) - 1)]
    fresh = torch.stack(fresh).to(device=x.device, dtype=x.dtype) if fresh else None
    for i in tqdm(range(len(times)), desc="sampling", disable=not progress, leave=False):
        t = on_device[i]
        output = denoiser(x, timesteps[i].expand(batch), **cond)
        denoised = consistency_function(schedule, output, x, t, sigma_data, timestep_scaling)
        if i + 1 < len(times):
            x = schedule.add_noise(denoised, fresh[i].to(denoised.dtype), on_device[i + 1])
        if callback is not None:
            callback({"step": i, "t": times[i], "x": x, "x0": denoised})
    return denoised
