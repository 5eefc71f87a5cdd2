"""TrigFlow (Lu and Song 2024, sCM): a teacher's own schedule seen in continuous trigonometric time.

TrigFlow writes the forward process as ``x_t = cos(t) x0 + sin(t) z`` with ``z ~ N(0, sd^2 I)`` (``sd`` its
``sigma_data``) and ``t`` in ``[0, pi/2]``; its probability-flow ODE is ``dx_t/dt = sd F(x_t, t)`` and the
consistency function it learns is ``f(x_t, t) = cos(t) x_t - sd sin(t) F(x_t, t)``.

Every teacher here is one of the same family of Gaussian paths, only parameterised differently, so the conversion
is exact: a point of noise-to-signal ratio ``rho = sigma / alpha`` is ``alpha (x0 + rho z)`` in the teacher's own
units and ``cos(t) (x0 + rho z)`` in TrigFlow's when ``rho = sd tan t``. So a TrigFlow point ``x`` at ``t`` is the
teacher's point ``scale(t) x`` with ``scale = alpha / cos t``:

* flow matching (``x_s = (1 - s) x0 + s z``, velocity ``z - x0``): ``s = sd sin t / (cos t + sd sin t)``,
  ``scale = 1 / (cos t + sd sin t)``, the network's timestep ``1000 s`` (the schedule's shift only chooses times;
  it does not change this map);
* VP (``x = alpha x0 + sigma z``, ``alpha^2 + sigma^2 = 1``): ``alpha = cos t / n``, ``sigma = sd sin t / n`` with
  ``n = sqrt(cos^2 t + sd^2 sin^2 t)``, ``scale = 1 / n``; the network's timestep, an integer in training, is the
  continuous one whose noise level is ``t``: linear in ``t`` between the table's timesteps (exact at each of them),
  held at 0 below the first. With ``sd = 1`` a VP point is its TrigFlow point (``scale = 1``).

The network keeps its own prediction type; :meth:`TrigFlow.clean` turns its output into the clean estimate
``x0_hat`` and :meth:`TrigFlow.velocity` into ``F = (cos t x - x0_hat) / (sd sin t)``, so ``f = x0_hat``: the
boundary condition ``f(x, 0) = x`` holds without extra scalings for epsilon, v and flow networks (``x0_hat``
tends to ``x`` as the noise goes to 0), not for one that predicts ``x0`` itself (``sample``). Everything here is
differentiable in ``t`` (forward mode included), which the continuous-time objective needs.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

from .predictions import predicted_x0
from .sampling import Conditioning, Denoiser
from .schedules import FlowSchedule, Schedule, VPSchedule

HALF_PI = math.pi / 2


def _like(values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``(B,)`` or ``()`` values shaped to broadcast against ``x`` ``(B, ...)``, in its dtype (differentiably)."""
    values = values.to(device=x.device, dtype=x.dtype)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (x.ndim - 1)))


@dataclass(frozen=True)
class NativePoint:
    """Where a TrigFlow time lands on the teacher's schedule: the network's (continuous) timestep, the teacher's
    ``alpha`` and ``sigma`` there, and ``scale`` (the teacher's point is ``scale * x_trig``); each shaped as ``t``."""

    timestep: torch.Tensor
    alpha: torch.Tensor
    sigma: torch.Tensor
    scale: torch.Tensor


@dataclass(frozen=True)
class TrigFlow:
    """A teacher's schedule in TrigFlow time with data scale ``sigma_data``."""

    schedule: Schedule
    sigma_data: float = 1.0
    _table: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.sigma_data <= 0:
            raise ValueError(f"TrigFlow's sigma_data must be positive, got {self.sigma_data}")
        if isinstance(self.schedule, VPSchedule):
            abar = self.schedule.alphas_cumprod.to(torch.float64)
            ratio = ((1 - abar) / abar.clamp(min=1e-300)).sqrt()  # rho_i of each integer timestep (inf at zero SNR)
            times = torch.atan(ratio / self.sigma_data)
            times = torch.where(abar > 0, times, torch.full_like(times, HALF_PI))
            object.__setattr__(self, "_table", times)

    # ---- time ------------------------------------------------------------------------------------------------

    @property
    def t_top(self) -> float:
        """The largest TrigFlow time the teacher was trained at: pi/2 for flow and zero-terminal-SNR VP teachers,
        the last timestep's noise level otherwise (an epsilon network cannot give ``x0`` at zero SNR: just below)."""
        if self._table is None:
            return HALF_PI
        top = float(self._table[-1])
        if top >= HALF_PI and self.schedule.prediction_type == "epsilon":
            top = float(self._table[-2])
        return top

    def time_of_sigma(self, sigma: float | torch.Tensor) -> torch.Tensor:
        """The TrigFlow time of an EDM noise level ``sigma = rho`` (``atan(sigma / sd)``)."""
        return torch.atan(torch.as_tensor(sigma, dtype=torch.float64) / self.sigma_data)

    def time_of(self, native: float | torch.Tensor) -> torch.Tensor:
        """The TrigFlow time of the teacher's own time (a flow sigma; a VP timestep, -1 the clean end)."""
        native = torch.as_tensor(native, dtype=torch.float64)
        if isinstance(self.schedule, FlowSchedule):
            return torch.atan2(native, (1 - native) * self.sigma_data)
        alpha, sigma = self.schedule.alpha_sigma(native.round().long())
        return torch.atan2(sigma.double(), alpha.double() * self.sigma_data)

    def native(self, t: torch.Tensor) -> NativePoint:
        """The teacher's view of TrigFlow time ``t`` (any shape, float32 or float64), differentiable in ``t``."""
        cos, sin = torch.cos(t), self.sigma_data * torch.sin(t)
        if isinstance(self.schedule, FlowSchedule):
            denominator = cos + sin
            s = sin / denominator
            return NativePoint(s * self.schedule.num_train_timesteps, cos / denominator, s, 1 / denominator)
        norm = torch.sqrt(cos**2 + sin**2)
        return NativePoint(self._vp_timestep(t), cos / norm, sin / norm, 1 / norm)

    def _vp_timestep(self, t: torch.Tensor) -> torch.Tensor:
        """The continuous VP timestep of noise level ``t``: linear in ``t`` between integer timesteps."""
        table = self._table.to(device=t.device, dtype=t.dtype)
        last = len(table) - 1
        upper = torch.searchsorted(table, t.detach().contiguous()).clamp(1, last)
        low, high = table[upper - 1], table[upper]
        fraction = (t - low) / (high - low).clamp(min=1e-12)
        return (upper - 1 + fraction).clamp(0, last)

    # ---- the network's output in TrigFlow terms --------------------------------------------------------------

    def clean(self, output: torch.Tensor, x: torch.Tensor, point: NativePoint) -> torch.Tensor:
        """``x0_hat``: the clean estimate of the teacher-parameterised network's ``output`` at the TrigFlow point
        ``x`` (its native input was ``point.scale * x``)."""
        alpha, sigma, scale = (_like(v, x) for v in (point.alpha, point.sigma, point.scale))
        return predicted_x0(output, scale * x, alpha, sigma, self.schedule.prediction_type)

    def velocity(self, x0: torch.Tensor, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """TrigFlow's ``F = (cos t x - x0) / (sd sin t)`` of a clean estimate ``x0`` at ``(x, t)``."""
        cos, sin = _like(torch.cos(t), x), _like(torch.sin(t), x)
        return (cos * x - x0) / (self.sigma_data * sin)

    def start(self, noise: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
        """The TrigFlow point at time ``t`` (the top) where the teacher's own samplers and the diffusers pipelines
        start from ``noise``: ``noise / scale(t)`` (``sd noise`` at pi/2 on a flow or zero-terminal-SNR teacher)."""
        scale = self.native(torch.as_tensor(t, dtype=torch.float64)).scale
        return noise / _like(scale, noise) if scale.ndim else noise / float(scale)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``cos t x0 + sd sin t noise`` (``noise`` of unit variance)."""
        cos, sin = _like(torch.cos(t), x0), _like(torch.sin(t), x0)
        return cos * x0 + self.sigma_data * sin * noise

    def call(self, denoiser: Denoiser, x: torch.Tensor, t: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """``x0_hat`` of ``denoiser`` (a teacher-parameterised network) at the TrigFlow point ``(x, t)``; ``t``
        ``(B,)``."""
        point = self.native(t)
        timestep = point.timestep.to(torch.float64 if x.dtype == torch.float64 else torch.float32)  # never bf16
        output = denoiser(_like(point.scale, x) * x, timestep, **cond)
        return self.clean(output.to(x.dtype), x, point)

    def ddim_step(self, x: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """The exact step of the ODE from ``t`` to ``s`` with ``x0`` held (DDIM): ``cos(t-s) x - sd sin(t-s) F``
        (``cos s x0 + sin s z_hat``): the teacher's own DDIM (VP) or Euler (flow) step, in TrigFlow units."""
        h = t - s
        velocity = self.velocity(x0, x, t)
        return _like(torch.cos(h), x) * x - self.sigma_data * _like(torch.sin(h), x) * velocity


# ---- the sCM multistep sampler -------------------------------------------------------------------------------

RCM_MID_TIMES = (1.5, 1.4, 1.0)  # rCM's intermediate times for 2, 3 and 4 steps (TrigFlow, sd 1; NVlabs/rcm)
RCM_SIGMA_MAX = 80.0  # rCM's starting noise level (EDM sigma; t = atan(80))


def scm_times(trigflow: TrigFlow, steps: int, sigma_max: float = RCM_SIGMA_MAX,
              mid_times: tuple[float, ...] | list[float] = RCM_MID_TIMES) -> torch.Tensor:
    """The ``steps`` descending TrigFlow times of the sCM sampler: ``atan(sigma_max / sd)`` (at most the
    teacher's top), then the first ``steps - 1`` of ``mid_times``, and the clean end 0 (length ``steps + 1``)."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    if steps - 1 > len(mid_times):
        raise ValueError(f"{steps} steps need {steps - 1} intermediate times; {len(mid_times)} given")
    top = min(float(trigflow.time_of_sigma(sigma_max)), trigflow.t_top)
    times = [top, *[float(m) for m in mid_times[:steps - 1]], 0.0]
    if any(a <= b for a, b in zip(times, times[1:])):
        raise ValueError(f"the sampler's times {times[:-1]} must descend from {top:.4f} to above 0")
    return torch.tensor(times, dtype=torch.float64)


@torch.inference_mode()
def sample_trigflow(
    denoiser: Denoiser,
    noise: torch.Tensor,
    trigflow: TrigFlow,
    times: torch.Tensor,
    cond: Conditioning,
    noise_source: Callable[[int, tuple[int, ...]], torch.Tensor] | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Multistep consistency sampling in TrigFlow time (sCM's sampler, rCM's times): at each time the clean
    estimate ``x0 = f(x, t)``, then re-noised to the next time with fresh noise. ``times``: from :func:`scm_times`.
    It starts where the teacher's own samplers and the diffusers pipelines start, the teacher's point ``noise``
    (TrigFlow's ``noise / scale(t_0)``), so an exported scheduler reproduces it; rCM starts its flow sampler at
    ``s_0 noise`` instead, 1.2% smaller at ``sigma_max`` 80. ``noise`` in, the clean latents out."""
    noise_source = noise_source or (lambda step, shape: torch.randn(shape))
    batch = noise.shape[0]
    times = times.to(torch.float64)
    x = trigflow.start(noise, times[0])
    x0 = x
    for i in tqdm(range(len(times) - 1), desc="sampling", disable=not progress, leave=False):
        t = times[i].to(noise.device).expand(batch)
        x0 = trigflow.call(denoiser, x, t, cond)
        if i + 2 < len(times):
            fresh = noise_source(i, tuple(x.shape)).to(device=x.device, dtype=x.dtype)
            x = trigflow.add_noise(x0, fresh, times[i + 1].to(x.device).to(x.dtype))
        if callback is not None:
            callback({"step": i, "t": times[i], "x": x, "x0": x0})
    return x0


# ---- the time derivative of a network's F: forward-mode differentiation ----------------------------------------

def velocity_jvp(denoiser: Denoiser, trigflow: TrigFlow, x: torch.Tensor, t: torch.Tensor, cond: Conditioning,
                 tangent_x: torch.Tensor, tangent_t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(F, dF)``: TrigFlow's ``F`` of ``denoiser`` at ``(x, t)`` and its directional derivative along
    ``(tangent_x, tangent_t)`` (``dF/dt`` along the ODE when ``tangent_x = dx/dt`` and ``tangent_t = 1``), by one
    forward-mode pass (``torch.func.jvp``) through the time conversion and the network.

    Attention runs on PyTorch's math kernel inside: the fused ones (flash, memory-efficient; the CPU's flash
    kernel too) have no forward-mode rule in PyTorch, and the math kernel computes the same attention with one.
    Group norms get contiguous inputs: PyTorch's forward-mode group norm fails on a permuted tensor, which
    diffusers' temporal transformer (UNet3D) hands it."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    def velocity(x, t):
        return trigflow.velocity(trigflow.call(denoiser, x, t, cond), x, t)

    with sdpa_kernel([SDPBackend.MATH]), contiguous_group_norm_inputs(denoiser):
        return torch.func.jvp(velocity, (x, t), (tangent_x, tangent_t))


@contextlib.contextmanager
def contiguous_group_norm_inputs(network):
    """For the ``with`` block, every ``GroupNorm`` of ``network`` (an ``nn.Module``; anything else is left alone)
    gets its input made contiguous first."""
    norms = [m for m in network.modules() if isinstance(m, torch.nn.GroupNorm)] if isinstance(
        network, torch.nn.Module) else []
    handles = [m.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:])) for m in norms]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
