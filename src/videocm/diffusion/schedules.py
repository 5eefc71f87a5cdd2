"""Noise schedules: discrete VP (DDPM) and flow matching, as small frozen dataclasses.

Both describe the forward process ``x_t = alpha_t * x0 + sigma_t * noise``:

* VP: ``alpha_t = sqrt(abar_t)``, ``sigma_t = sqrt(1 - abar_t)``, ``t`` an integer training timestep in
  ``[0, num_train_timesteps)``; ``t = -1`` stands for the clean end of the ODE (``abar = final_alpha_cumprod``,
  1.0 unless configured otherwise, as in diffusers' ``DDIMScheduler(set_alpha_to_one=...)``).
* Flow matching (rectified flow): ``alpha_t = 1 - s``, ``sigma_t = s``, ``t = s`` a float in ``[0, 1]``; the
  network sees ``s * num_train_timesteps`` and predicts the velocity ``noise - x0``.

Values match diffusers' ``DDIMScheduler`` and ``FlowMatchEulerDiscreteScheduler`` bit for bit where they overlap;
``tests/test_diffusion_math.py`` checks that.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch

VP_PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
TIMESTEP_SPACINGS = ("leading", "trailing", "linspace")

Tensorish = torch.Tensor | float | int


def _cosine_betas(num_train_timesteps: int, max_beta: float = 0.999) -> torch.Tensor:
    """Betas of the GLIDE / improved-DDPM cosine schedule (diffusers' ``squaredcos_cap_v2``)."""

    def alpha_bar(u: float) -> float:
        return math.cos((u + 0.008) / 1.008 * math.pi / 2) ** 2

    betas = [
        min(1 - alpha_bar((i + 1) / num_train_timesteps) / alpha_bar(i / num_train_timesteps), max_beta)
        for i in range(num_train_timesteps)
    ]
    return torch.tensor(betas, dtype=torch.float32)


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(abar) so the last timestep has zero SNR (Lin et al. 2023, Algorithm 1)."""
    alphas_bar_sqrt = torch.cumprod(1.0 - betas, dim=0).sqrt()
    first, last = alphas_bar_sqrt[0].clone(), alphas_bar_sqrt[-1].clone()
    alphas_bar_sqrt = (alphas_bar_sqrt - last) * (first / (first - last))
    alphas_bar = alphas_bar_sqrt**2
    alphas = torch.cat([alphas_bar[0:1], alphas_bar[1:] / alphas_bar[:-1]])
    return 1 - alphas


def make_betas(
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    num_train_timesteps: int = 1000,
    zero_terminal_snr: bool = False,
) -> torch.Tensor:
    """Betas (float32, ``(num_train_timesteps,)``) exactly as diffusers builds them."""
    if beta_schedule == "linear":
        betas = torch.linspace(beta_start, beta_end, num_train_timesteps, dtype=torch.float32)
    elif beta_schedule == "scaled_linear":
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float32) ** 2
    elif beta_schedule == "squaredcos_cap_v2":
        betas = _cosine_betas(num_train_timesteps)
    else:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}: use one of {', '.join(BETA_SCHEDULES)}")
    return rescale_zero_terminal_snr(betas) if zero_terminal_snr else betas


def _as_tensor(t: Tensorish, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    if isinstance(t, torch.Tensor):
        return t.to(dtype=dtype, device=device if device is not None else t.device)
    return torch.tensor(t, dtype=dtype, device=device)


@dataclass(frozen=True)
class VPSchedule:
    """A discrete variance-preserving schedule (DDPM / DDIM family).

    ``alphas_cumprod``: ``(num_train_timesteps,)`` float32. ``prediction_type``: what the network outputs.
    """

    alphas_cumprod: torch.Tensor
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    final_alpha_cumprod: float = 1.0
    timestep_spacing: Literal["leading", "trailing", "linspace"] = "leading"
    steps_offset: int = 0
    kind: str = field(default="vp", init=False)

    def __post_init__(self) -> None:
        if self.prediction_type not in VP_PREDICTION_TYPES:
            raise ValueError(
                f"unknown VP prediction_type {self.prediction_type!r}: use one of {', '.join(VP_PREDICTION_TYPES)}"
            )
        if self.timestep_spacing not in TIMESTEP_SPACINGS:
            raise ValueError(
                f"unknown timestep_spacing {self.timestep_spacing!r}: use one of {', '.join(TIMESTEP_SPACINGS)}"
            )
        object.__setattr__(self, "_tables", {})  # alphas_cumprod per device: copied once, not at every step

    def _table(self, device: torch.device) -> torch.Tensor:
        key = str(device)
        if key not in self._tables:
            self._tables[key] = self.alphas_cumprod.to(device)
        return self._tables[key]

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    @property
    def terminal(self) -> int:
        """The time of the clean end of the ODE."""
        return -1

    @property
    def zero_terminal_snr(self) -> bool:
        return bool(self.alphas_cumprod[-1] < 1e-12)

    def alpha_sigma(self, t: Tensorish, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` float32 tensors of ``t``'s shape; ``t == -1`` gives the clean end."""
        t = _as_tensor(t, torch.long, device)
        table = self._table(t.device)
        abar = torch.where(t >= 0, table[t.clamp(min=0)], torch.full_like(table[:1], self.final_alpha_cumprod))
        return abar.sqrt(), (1 - abar).sqrt()

    def model_timestep(self, t: Tensorish) -> torch.Tensor:
        """What the network is conditioned on: the integer timestep itself."""
        return _as_tensor(t, torch.long)

    def sampling_times(self, num_steps: int) -> torch.Tensor:
        """``num_steps`` timesteps, descending, as diffusers' ``DDIMScheduler.set_timesteps``, then the terminal -1.

        Returns a long tensor of length ``num_steps + 1``.
        """
        n = self.num_train_timesteps
        if not 1 <= num_steps <= n:
            raise ValueError(f"num_steps must be in [1, {n}], got {num_steps}")
        if self.timestep_spacing == "linspace":
            steps = np.linspace(0, n - 1, num_steps).round()[::-1].copy().astype(np.int64)
        elif self.timestep_spacing == "leading":
            steps = (np.arange(0, num_steps) * (n // num_steps)).round()[::-1].copy().astype(np.int64)
            steps += self.steps_offset
        else:
            steps = np.round(np.arange(n, 0, -n / num_steps)).astype(np.int64) - 1
        return torch.cat([torch.from_numpy(steps), torch.tensor([self.terminal])])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: Tensorish) -> torch.Tensor:
        """``x_t = alpha_t x0 + sigma_t noise``; ``t`` is a scalar or ``(B,)``."""
        alpha, sigma = self.alpha_sigma(t, x0.device)
        return broadcast_to(alpha, x0) * x0 + broadcast_to(sigma, x0) * noise


def vp_schedule(
    beta_schedule: str = "scaled_linear",
    beta_start: float = 0.00085,
    beta_end: float = 0.012,
    num_train_timesteps: int = 1000,
    prediction_type: str = "epsilon",
    zero_terminal_snr: bool = False,
    set_alpha_to_one: bool = True,
    timestep_spacing: str = "leading",
    steps_offset: int = 0,
    snr_shift_scale: float = 1.0,
) -> VPSchedule:
    """Build a :class:`VPSchedule` from the same arguments as diffusers' ``DDIMScheduler`` (``snr_shift_scale``:
    ``CogVideoXDDIMScheduler``'s SNR shift, applied to ``abar`` before the zero-terminal-SNR rescale)."""
    if snr_shift_scale == 1.0:
        betas = make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps, zero_terminal_snr)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
    else:
        betas = make_betas(beta_schedule, beta_start, beta_end, num_train_timesteps, False)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        alphas_cumprod = alphas_cumprod / (snr_shift_scale + (1 - snr_shift_scale) * alphas_cumprod)
        if zero_terminal_snr:
            root = alphas_cumprod.sqrt()
            first, last = root[0].clone(), root[-1].clone()
            alphas_cumprod = ((root - last) * (first / (first - last))) ** 2
    final = 1.0 if set_alpha_to_one else float(alphas_cumprod[0])
    return VPSchedule(alphas_cumprod, prediction_type, final, timestep_spacing, steps_offset)  # type: ignore[arg-type]


def shift_sigmas(sigmas: torch.Tensor, shift: float = 1.0, mu: float | None = None) -> torch.Tensor:
    """diffusers' timestep shift: static ``shift*s / (1 + (shift-1)*s)``, or with ``mu`` the exponential
    resolution-dependent shift ``e^mu / (e^mu + (1/s - 1))`` (Flux / SD3 ``use_dynamic_shifting``)."""
    if mu is not None:
        return math.exp(mu) / (math.exp(mu) + (1 / sigmas - 1))
    return shift * sigmas / (1 + (shift - 1) * sigmas)


@dataclass(frozen=True)
class FlowSchedule:
    """Flow matching: ``x_s = (1 - s) x0 + s noise``, the network predicts the velocity ``noise - x0``.

    ``shift`` is diffusers' ``FlowMatchEulerDiscreteScheduler(shift=...)`` (Wan uses 3-5, HunyuanVideo 7).
    """

    shift: float = 1.0
    num_train_timesteps: int = 1000
    mu: float | None = None
    prediction_type: str = field(default="flow", init=False)
    kind: str = field(default="flow", init=False)

    def __post_init__(self) -> None:
        if self.shift <= 0:
            raise ValueError(f"flow shift must be positive, got {self.shift}")

    @property
    def terminal(self) -> float:
        return 0.0

    @property
    def sigma_min(self) -> float:
        """Smallest training sigma as diffusers stores it (float32; shifted unless ``mu`` is used)."""
        smallest = torch.tensor([1.0 / self.num_train_timesteps], dtype=torch.float32)
        if self.mu is None:
            smallest = shift_sigmas(smallest, self.shift)
        return float(smallest[0])

    def alpha_sigma(self, t: Tensorish, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        s = _as_tensor(t, torch.float32, device)
        return 1 - s, s

    def model_timestep(self, t: Tensorish) -> torch.Tensor:
        return _as_tensor(t, torch.float32) * self.num_train_timesteps

    def sampling_times(self, num_steps: int) -> torch.Tensor:
        """Sigmas of diffusers' ``FlowMatchEulerDiscreteScheduler.set_timesteps(num_steps)``, then 0.

        diffusers spaces ``[sigma_min, 1]`` linearly and then applies the shift (so, as there, the smallest
        sigma is shifted twice under a static shift). Returns float32, length ``num_steps + 1``.
        """
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}")
        n = self.num_train_timesteps
        sigmas = np.linspace(1.0 * n, self.sigma_min * n, num_steps) / n
        sigmas = torch.from_numpy(np.asarray(shift_sigmas(sigmas, self.shift, self.mu))).to(torch.float32)
        return torch.cat([sigmas, torch.zeros(1)])

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: Tensorish) -> torch.Tensor:
        s = broadcast_to(_as_tensor(t, torch.float32, x0.device), x0)
        return (1 - s) * x0 + s * noise


Schedule = VPSchedule | FlowSchedule


def broadcast_to(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape per-sample values ``()`` or ``(B,)`` to broadcast against ``like`` ``(B, ...)``, in its dtype."""
    values = values.to(device=like.device, dtype=like.dtype if like.is_floating_point() else torch.float32)
    if values.ndim == 0:
        return values
    return values.reshape(values.shape[0], *([1] * (like.ndim - 1)))
