"""Phased consistency: the ODE's time range split into K segments, one expert per segment (DCM, K = 2).

Segments are given by grid indices ``0 = b_0 < b_1 < ... < b_K = N`` on the skipping grid (``grid[b]`` the
time). Expert ``j`` owns segment ``(grid[b_j], grid[b_{j+1}]]``; a boundary time belongs to the lower segment.
Experts are listed from the highest-noise segment down (expert 0 is DCM's *semantic expert*, the last one its
*detail expert*).

* Phased consistency function. An expert maps any point of its segment to the segment's low end ``s``:
  for ``s > 0`` one ODE jump with the expert's own prediction, ``f_s(x, t) = step(x, output, t -> s)`` (DDIM for
  VP, Euler for flow; at ``t = s`` it returns ``x``, the boundary condition); for the last segment (``s = 0``)
  LCM's ``c_skip x + c_out x0_hat``, so K = 1 is exactly LCM.
* Sampler. ``steps`` are split between the experts (evenly; a remainder goes to the higher-noise experts first)
  and spread uniformly over each segment's grid indices, so each expert's last step lands on its boundary. At a
  timestep of a segment with ``s > 0`` the sampler jumps deterministically to the next timestep with the expert's
  prediction; in the last segment it takes ``x0 = f(x, t)`` and re-noises to the next timestep with fresh noise
  (LCM's multistep sampler). Explicit timesteps are honoured as given: each runs the expert that owns it.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch
from tqdm.auto import tqdm

from .consistency import NoiseSource, consistency_function, generator_noise
from .sampling import Conditioning, Denoiser
from .schedules import Schedule
from .solvers import ode_step, x0_and_noise


def segment_bounds(boundaries: Sequence[int], grid_points: int) -> list[tuple[int, int]]:
    """``(low, high)`` grid indices of each segment, highest-noise first, from the inner boundaries (any order)."""
    inner = sorted(int(b) for b in boundaries)
    if len(set(inner)) != len(inner) or any(not 0 < b < grid_points for b in inner):
        raise ValueError(f"boundaries {list(boundaries)} must be distinct grid indices strictly between 0 and "
                         f"{grid_points}")
    edges = [0, *inner, grid_points]
    return [(edges[j], edges[j + 1]) for j in range(len(edges) - 1)][::-1]


def owning_expert(t: torch.Tensor | float, grid: torch.Tensor, segments: list[tuple[int, int]]) -> int:
    """The expert whose segment ``(grid[low], grid[high]]`` holds time ``t`` (the top segment also holds above)."""
    value = float(t)
    for index, (low, _) in enumerate(segments):
        if value > float(grid[low]):
            return index
    return len(segments) - 1


def phased_function(schedule: Schedule, output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, s: torch.Tensor,
                    sigma_data: float = 0.5, timestep_scaling: float = 10.0) -> torch.Tensor:
    """The expert's estimate of the ODE solution at its segment end ``s`` from ``(x, t)``.

    ``x``/``output``: ``(B, C, T, H, W)``; ``t``, ``s``: scalars or ``(B,)``. Where ``s`` is the clean end (0) this
    is LCM's consistency function, elsewhere one ODE jump ``t -> s``; both return ``x`` at ``t = s``.
    """
    s = torch.as_tensor(s).to(x.device)
    t = torch.as_tensor(t).to(x.device)
    final = s == 0
    if bool(final.all()):
        return consistency_function(schedule, output, x, t, sigma_data, timestep_scaling)
    jump = ode_step(schedule, output, x, t, s)
    if not bool(final.any()):
        return jump  # no segment ends at the clean end: the consistency function is not needed
    consistency = consistency_function(schedule, output, x, t, sigma_data, timestep_scaling)
    return torch.where(final.reshape(-1, *([1] * (x.ndim - 1))), consistency, jump)


def split_steps(num_steps: int, segments: list[tuple[int, int]]) -> list[int]:
    """Steps per expert: even, the remainder to the higher-noise experts first; an expert whose segment has fewer
    grid points than its share takes them all and passes the rest to the others (a narrow semantic segment, as
    DCM's split gives on an unshifted grid)."""
    count = len(segments)
    if num_steps < 1:
        raise ValueError(f"steps must be at least 1, got {num_steps}")
    room = [high - low for low, high in segments]
    if num_steps > sum(room):
        raise ValueError(f"{num_steps} steps are more than the {sum(room)} grid points of the experts' segments; use "
                         f"fewer steps or a finer grid")
    counts = [min(num_steps // count + (1 if j < num_steps % count else 0), room[j]) for j in range(count)]
    while sum(counts) < num_steps:  # the overflow of full segments, to the highest-noise expert with room
        j = next(j for j in range(count) if counts[j] < room[j])
        counts[j] += 1
    return counts


def phased_times(grid: torch.Tensor, segments: list[tuple[int, int]], num_steps: int) -> torch.Tensor:
    """``num_steps`` descending sampling timesteps: each expert's share spread uniformly over its segment, starting
    at the segment's top grid point."""
    times = []
    for (low, high), steps in zip(segments, split_steps(num_steps, segments)):
        for i in range(steps):
            times.append(grid[high - (i * (high - low)) // steps])
    return torch.stack(times)


@torch.inference_mode()
def sample_phased(
    experts: Sequence[Denoiser],
    noise: torch.Tensor,
    schedule: Schedule,
    grid: torch.Tensor,
    segments: list[tuple[int, int]],
    times: torch.Tensor,
    cond: Conditioning,
    noise_source: NoiseSource | None = None,
    sigma_data: float = 0.5,
    timestep_scaling: float = 10.0,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
    solvers: Sequence[bool] | None = None,
) -> torch.Tensor:
    """Expert-switching sampling over ``times`` (descending): one network evaluation per step, by the expert that
    owns the step's timestep. ``experts[j]`` serves ``segments[j]``. Returns the clean latents. ``solvers[j]``:
    expert ``j`` is an ODE solver's network (a teacher, guidance folded into its callable): it steps to the next
    time of ``times`` instead of jumping to its segment's end (a student hands off to the teacher)."""
    if len(experts) != len(segments):
        raise ValueError(f"{len(experts)} experts for {len(segments)} segments")
    solvers = list(solvers) if solvers is not None else [False] * len(experts)
    if any(float(a) <= float(b) for a, b in zip(times[:-1], times[1:])):
        raise ValueError(f"timesteps must be strictly descending, got {[float(t) for t in times]}")
    noise_source = noise_source or generator_noise()
    x, batch = noise, noise.shape[0]
    # decisions (which expert, which end) on the host; the tensors the steps use copied to the device once
    owners = [owning_expert(t, grid, segments) for t in times]
    ends = [float(grid[segments[j][0]]) for j in owners]
    following = torch.cat([times[1:], torch.as_tensor([schedule.terminal], dtype=times.dtype)])
    on_device, next_on_device = times.to(x.device), following.to(x.device)
    timesteps = schedule.model_timestep(on_device).to(x.device)
    renoised = [i for i in range(len(times) - 1) if ends[i] <= 0 and not solvers[owners[i]]]
    fresh = {i: noise_source(i, tuple(x.shape)) for i in renoised}  # drawn in step order, as before
    fresh = {i: v.to(device=x.device, dtype=x.dtype) for i, v in fresh.items()}
    denoised = x
    for i in tqdm(range(len(times)), desc="sampling", disable=not progress, leave=False):
        t, expert = on_device[i], owners[i]
        output = experts[expert](x, timesteps[i].expand(batch), **cond)
        if solvers[expert]:
            denoised, _ = x0_and_noise(schedule, output, x, t)
            x = ode_step(schedule, output, x, t, next_on_device[i])
            if i + 1 == len(times):
                denoised = x
        elif ends[i] > 0:
            x = ode_step(schedule, output, x, t, next_on_device[i])
            denoised = x
        else:
            denoised = consistency_function(schedule, output, x, t, sigma_data, timestep_scaling)
            x = denoised
            if i + 1 < len(times):
                x = schedule.add_noise(denoised, fresh[i].to(denoised.dtype), next_on_device[i])
        if callback is not None:
            callback({"step": i, "t": times[i], "expert": expert, "x": x, "x0": denoised})
    return denoised
