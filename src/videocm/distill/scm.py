"""sCM: continuous-time consistency distillation in TrigFlow time (Lu and Song 2024), as rCM scales it to video
(Zheng et al. 2025, github NVlabs/rcm).

The student is the teacher's network with the teacher's own parameterisation, read in TrigFlow time
(:mod:`diffusion.trigflow`): its clean estimate ``x0_hat`` is the consistency function ``f(x_t, t)`` and
``F = (cos t x_t - x0_hat) / (sd sin t)``. One training step, for a batch of clip latents ``x0``:

1. a time per clip, ``t = atan(e^tau / sd)`` with ``tau ~ N(time_mean, time_std)`` (EDM log-sigma), and noise:
   ``x_t = cos t x0 + sd sin t z``;
2. the guided teacher's ODE velocity there, ``dx_t/dt = sd F_teacher`` (classifier-free guidance at a fixed weight
   folded in, one batched forward);
3. the student's ``F`` and its derivative along the ODE by forward-mode differentiation, with the tangent scaled
   by ``cos t sin t`` (sCM's "JVP rearrangement": ``(cos t sin t dx_t/dt, cos t sin t)``), without gradient;
4. the tangent ``g = -cos^2 t (sd F^- - dx_t/dt) - r cos t sin t (x_t + sd dF^-/dt)``, ``r`` ramping from 0 to 1
   over ``--tangent-warmup`` steps (sCM; rCM ramps only the ``x_t`` term and keeps ``g``'s scale with
   ``sqrt(1 - r^2 sin^2 t)``: ``--warmup-form rcm``), normalised ``g / (||g|| + c)`` per clip (or clipped to
   ``[-1, 1]``);
5. the loss ``||F_theta - sg(F_theta) - g||^2`` (its gradient is sCM's), per clip: rCM's ``--scm-loss-scale``
   times the mean over elements, or with sCM's adaptive weighting ``e^{w(t)} mean(...) - w(t)`` and a small
   learned ``w`` of the time.

Sampling: the sCM multistep sampler (:func:`diffusion.trigflow.sample_trigflow`) from ``atan(sigma_max / sd)``
through rCM's intermediate times ``1.5, 1.4, 1.0`` (the first ``steps - 1``), recorded in the student folder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Annotated, Literal

import torch
from torch import nn

from ..config import Count, Fraction, Natural, NonNegative, Positive, Range, RunFolder
from ..diffusion import guidance_at, guided_output
from ..diffusion.trigflow import RCM_MID_TIMES, RCM_SIGMA_MAX, TrigFlow, scm_times, velocity_jvp
from ..errors import VideoCMError
from ..models.info import ConsistencyInfo
from .core import DistillationMethod, DistillConfig, StudentKindSettings, new_student, training_device
from .trainer import Monitor, Step, adam_betas, run_and_summarise

LogSigma = Annotated[float, Range(-10, 10)]  # an EDM log noise level (sigma from 4.5e-5 to 22000)
SIGMA_MIN = 0.002  # the smallest EDM noise level a training time is drawn at (EDM's sigma_min)


@dataclass
class SCMSettings:
    """sCM's objective: TrigFlow's data scale, the time distribution and the stabilisers (sCM's and rCM's values
    beside each; the defaults are rCM's for Wan 2.1, NVlabs/rcm ``rcm/configs/experiments/rcm/wan2pt1_t2v.py``
    and ``rcm/models/t2v_model_distill_rcm.py``)."""

    SECTION = "scm"

    trigflow_sigma_data: Positive = 1.0  # TrigFlow's sigma_d (rCM: 1.0 on video latents; sCM: 0.5 on pixels)
    time_mean: LogSigma = 0.7  # mean of the training time's log-sigma, t = atan(e^tau / sigma_d) (rCM Wan: 0.7; sCM: -0.8 at ImageNet 512, -1.0 on CIFAR-10)
    time_std: Positive = 1.6  # its standard deviation (rCM Wan: 1.6; sCM: 1.6 at ImageNet 512, 1.4 on CIFAR-10)
    tangent_warmup: Natural = 1000  # steps over which the tangent's warm-up factor r ramps from 0 to 1 (rCM Wan: 1000; sCM: 10000; 0: off)
    warmup_form: Literal["scm", "rcm"] = "rcm"  # scm: r multiplies the whole time-derivative term (sCM's Algorithm 1); rcm: only the x_t term, the rest scaled by sqrt(1 - r^2 sin^2 t) (NVlabs/rcm)
    tangent_norm: Literal["normalize", "clip", "none"] = "normalize"  # g / (||g|| + c) per clip (sCM, rCM), g clipped to [-1, 1] (sCM's alternative) or left as it is
    tangent_norm_c: Positive = 0.1  # the c of the tangent normalisation (sCM, rCM: 0.1)
    adaptive_weighting: bool = False  # sCM's learned weighting e^{w(t)} L - w(t) (sCM: on; rCM: off, a fixed scale)
    scm_loss_scale: Positive = 100.0  # without adaptive weighting: the loss's scale on the mean over elements (rCM: 100 on the sum, the same ratio to its DMD term)
    sigma_max: Positive = RCM_SIGMA_MAX  # the sampler's starting noise level, t = atan(sigma_max / sigma_d) (rCM: 80)
    mid_times: list[Positive] = field(default_factory=lambda: list(RCM_MID_TIMES))  # the sampler's intermediate TrigFlow times for 2, 3, 4 steps (rCM: 1.5, 1.4, 1.0; its faster-looking alternative 1.3, 1.0, 0.6)


@dataclass
class SCMConfig(SCMSettings, StudentKindSettings, DistillConfig):
    """``videocm distill --method scm``: sCM's own settings. Every field is a ``--key value`` flag."""

    SECTION = "scm"

    method: Literal["lcm", "dcm", "dmd", "scm", "rcm"] = "scm"  # scm: this config (lcm, dcm, dmd, rcm: theirs)
    out: RunFolder = "outputs/scm"
    lr: Positive = 2e-6  # the student's peak learning rate (rCM Wan 2.1 1.3B: 2e-6)
    weight_decay: NonNegative = 0.01  # AdamW weight decay (rCM: 0.01)
    adam_betas: list[Fraction] = field(default_factory=lambda: [0.0, 0.999])  # AdamW betas (rCM: 0, 0.999)
    grad_clip: NonNegative = 0.0  # gradient-norm clipping (rCM: off)
    warmup_steps: Natural = 100  # linear learning-rate warm-up steps (rCM: 100, then constant)
    min_lr_ratio: Fraction = 1.0  # the cosine decay ends at lr times this (rCM: 1, a constant rate)


class AdaptiveWeighting(nn.Module):
    """sCM's learned weighting ``w(t)``: a linear layer on a sinusoidal embedding of the time (zero at the start,
    so the first steps weigh every time alike)."""

    def __init__(self, channels: int = 128) -> None:
        super().__init__()
        self.channels = channels
        self.linear = nn.Linear(channels, 1)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.channels // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)
        angles = (t.float() * 1000 / (math.pi / 2))[:, None] * frequencies[None]
        return self.linear(torch.cat([angles.sin(), angles.cos()], dim=1))[:, 0]


def warmup_ratio(step: int, warmup: int) -> float:
    """The tangent warm-up's ``r``: ``step / warmup`` up to 1 (1 without warm-up)."""
    return 1.0 if warmup <= 0 else min(1.0, step / warmup)


def scm_tangent(velocity: torch.Tensor, tangent: torch.Tensor, x: torch.Tensor, ode_velocity: torch.Tensor,
                t: torch.Tensor, sigma_data: float, r: float, form: str = "rcm") -> torch.Tensor:
    """sCM's ``g`` from the student's ``F^-`` (``velocity``), ``cos t sin t dF^-/dt`` (``tangent``, the JVP along
    the scaled tangent), ``x_t``, the teacher's ``dx_t/dt`` (``ode_velocity``) and ``t`` ``(B,)``."""
    shape = (-1, *[1] * (x.ndim - 1))
    cos, sin = torch.cos(t).reshape(shape).to(x.dtype), torch.sin(t).reshape(shape).to(x.dtype)
    mismatch = sigma_data * velocity - ode_velocity
    if form == "scm":
        return -cos**2 * mismatch - r * (cos * sin * x + sigma_data * tangent)
    return -cos * torch.sqrt(1 - r**2 * sin**2) * mismatch - (r * cos * sin * x + sigma_data * tangent)


def normalised_tangent(g: torch.Tensor, how: str = "normalize", c: float = 0.1) -> torch.Tensor:
    """``g / (||g|| + c)`` per clip (in float64, as rCM), ``g`` clipped to ``[-1, 1]``, or ``g``."""
    if how == "normalize":
        norm = g.double().flatten(1).norm(dim=1).reshape(-1, *[1] * (g.ndim - 1))
        return (g.double() / (norm + c)).to(g.dtype)
    if how == "clip":
        return g.clamp(-1, 1)
    return g


class SCMTask(DistillationMethod):
    """sCM on the teacher's network (fully fine-tuned or with LoRA): the continuous-time consistency objective
    with the teacher's guided ODE as the tangent."""

    def __init__(self, config: SCMConfig, device: torch.device | str | None = None) -> None:
        device = training_device(config, device)
        super().__init__(config, device)
        context = self.teacher_context
        if context.schedule.prediction_type == "sample":
            raise VideoCMError(f"{config.teacher} predicts the clean sample itself, which gives sCM's consistency "
                               f"function no boundary condition: distil it with --method lcm")
        self.trigflow = TrigFlow(context.schedule, config.trigflow_sigma_data)
        try:  # the sampler's times, checked before anything trains
            scm_times(self.trigflow, len(config.mid_times) + 1, config.sigma_max, config.mid_times)
        except ValueError as error:
            raise VideoCMError(f"--mid-times {config.mid_times}: {error}") from error
        torch.manual_seed(config.seed)
        self.model = new_student(context.student_base(), config, device, config.student, (),
                                 (config.lora_rank, config.lora_alpha))
        self.matching = self.new_matching(device)  # copies the teacher before it is cast
        context.cast_teacher()
        self.weighting = AdaptiveWeighting().to(device) if config.adaptive_weighting else None
        self.weighting_optimizer = (torch.optim.AdamW(self.weighting.parameters(), lr=config.lr, weight_decay=0.0,
                                                      betas=adam_betas(config))
                                    if self.weighting is not None else None)
        self.engine = None

    def student_kind(self) -> str:
        return self.config.student

    def consistency_info(self) -> ConsistencyInfo:
        c = self.config
        return ConsistencyInfo(c.grid_points, 1, c.sigma_data, c.timestep_scaling, "online", "trigflow",
                               c.trigflow_sigma_data, c.sigma_max, list(c.mid_times))

    def prepare(self, engine) -> None:
        """The adaptive weighting and its optimiser join the run (several processes, checkpoints)."""
        self.engine = engine
        if self.weighting is not None:
            self.weighting, self.weighting_optimizer = engine.prepare(
                scm_weighting=self.weighting, scm_weighting_optimizer=self.weighting_optimizer)
        super().prepare(engine)

    def after_step(self, model) -> None:
        if self.weighting_optimizer is not None:
            self.weighting_optimizer.step()
            self.weighting_optimizer.zero_grad(set_to_none=True)
        super().after_step(model)

    def _unwrapped(self, model):
        return self.engine.unwrap_model(model) if self.engine is not None else model

    def training_times(self, step: Step) -> torch.Tensor:
        """Each clip's TrigFlow time of this micro-step: ``atan(e^tau / sd)``, ``tau ~ N(time_mean, time_std)``,
        kept between EDM's smallest noise level and the teacher's top."""
        c = self.config
        tau = torch.from_numpy(step.rng.normal(c.time_mean, c.time_std, size=step.batch_size))[step.rows]
        t = self.trigflow.time_of_sigma(tau.exp())
        low = float(self.trigflow.time_of_sigma(SIGMA_MIN))
        return t.clamp(low, self.trigflow.t_top).to(torch.float32)

    def teacher_velocity(self, x: torch.Tensor, t: torch.Tensor, text: dict, w: torch.Tensor) -> torch.Tensor:
        """``dx_t/dt = sd F``: the guided teacher's ODE velocity at the TrigFlow point ``(x, t)``."""
        context, trig = self.teacher_context, self.trigflow
        point = trig.native(t)
        timestep = point.timestep.to(torch.float32)
        if context.guidance_2 is not None:
            w = guidance_at(timestep, w, context.guidance_2, context.teacher.boundary)
        scale = point.scale.to(x.dtype).reshape(-1, *[1] * (x.ndim - 1))
        output = guided_output(context.teacher, scale * x, timestep, text, context.unconditional(text, len(x)), w)
        x0 = trig.clean(output.float(), x, point)
        return trig.sigma_data * trig.velocity(x0, x, t)

    def consistency_loss(self, model, step: Step):
        """sCM's loss of this micro-step and its logs, with what a regulariser reuses: the student's clean estimate
        (with its graph), the text, each clip's guidance weight and the clips' latents."""
        c, context, trig = self.config, self.teacher_context, self.trigflow
        # 1. this micro-step's clips and text; each clip's time, the noise, the point x_t
        latents, text = context.draw(step)
        latents = latents.float()
        t = self.training_times(step).to(latents.device)
        noise = torch.randn((step.batch_size, *latents.shape[1:]), generator=step.generator)[step.rows]
        x = trig.add_noise(latents, noise.to(latents.device), t)
        w = context.guidance_weights(step.batch_size, step.rng)[step.rows].to(latents.device)
        shape = (-1, *[1] * (x.ndim - 1))
        cos_sin = (torch.cos(t) * torch.sin(t)).to(x.dtype)
        with torch.no_grad():
            # 2. the guided teacher's ODE velocity
            ode_velocity = self.teacher_velocity(x, t, text, w)
            # 3. the student's F and cos t sin t dF/dt along the ODE, by forward mode (no gradient)
            velocity, tangent = velocity_jvp(self._unwrapped(model), trig, x, t, text,
                                             cos_sin.reshape(shape) * ode_velocity, cos_sin)
            # 4. the tangent g, warmed up and normalised (a clip whose g is not finite is left out, as rCM does)
            r = warmup_ratio(step.number, c.tangent_warmup)
            g = scm_tangent(velocity, tangent, x, ode_velocity, t, trig.sigma_data, r, c.warmup_form)
            finite = torch.isfinite(g).flatten(1).all(dim=1) & torch.isfinite(velocity).flatten(1).all(dim=1)
            g = normalised_tangent(torch.where(finite.reshape(shape), g, torch.zeros_like(g)), c.tangent_norm,
                                   c.tangent_norm_c)
        # 5. the student's F with gradient; the loss whose gradient is sCM's
        x0 = trig.call(model, x, t, text)
        student = trig.velocity(x0.float(), x, t)
        student = torch.where(finite.reshape(shape), student, torch.zeros_like(student))
        per_clip = ((student - student.detach() - g) ** 2).flatten(1).mean(dim=1)
        if self.weighting is not None:
            log_weight = self.weighting(t)
            loss = (torch.exp(log_weight) * per_clip - log_weight).mean()
        else:
            loss = c.scm_loss_scale * per_clip.mean()
        logs = {"tangent_norm": float(g.flatten(1).norm(dim=1).mean()), "warmup": r,
                "skipped_clips": float((~finite).sum())}
        if self.weighting is not None:  # w's mean over fixed times: the same on every process of a run
            with torch.no_grad():
                probe = torch.linspace(0.05, trig.t_top - 0.05, 8, device=t.device)
                logs["adaptive_weight"] = float(self.weighting(probe).mean())
        return loss, logs, (x0, text, w, latents)

    def loss(self, model, step: Step):
        loss, logs, (x0, text, w, latents) = self.consistency_loss(model, step)
        if self.matching is None:
            return loss, logs
        # with --dmd-weight: the distribution-matching term on the student's clean estimate
        context = self.teacher_context
        term, matching_logs = self.matching.step(x0, text, context.unconditional(text, len(x0)), w, step.rng,
                                                 step.generator, step.batch_size, step.rows, latents)
        return loss + term, {**logs, "scm": float(loss.detach()), **matching_logs}


@dataclass
class RCMConfig(SCMConfig):
    """``videocm distill --method rcm``: sCM plus rCM's score-distillation regulariser (the distribution-matching
    term of :mod:`.matching` on the student's own few-step samples). Every field is a ``--key value`` flag; the
    defaults are rCM's for Wan 2.1 1.3B (NVlabs/rcm)."""

    SECTION = "rcm"

    method: Literal["lcm", "dcm", "dmd", "scm", "rcm"] = "rcm"  # rcm: this config (lcm, dcm, dmd, scm: theirs)
    out: RunFolder = "outputs/rcm"
    dmd_weight: NonNegative = 2.0  # the distribution-matching term's weight (rCM: 1 on its summed loss; ours is half a mean, so 2 keeps rCM's ratio to the sCM term)
    fake_updates: Natural = 4  # fake-score updates per student update (rCM: student_update_freq 5, the other 4 iterations update the fake score)
    fake_lr: Positive = 4e-7  # the fake score's learning rate (rCM Wan 1.3B: 4e-7)
    simulation_steps: Count = 4  # the student's samples for the term take 1, 2, ... this many steps in turn (rCM: max_simulation_steps_fake 4)


class RCMTask(SCMTask):
    """rCM: the sCM objective, and after the tangent warm-up the distribution-matching term on the student's own
    samples (backward simulation: from noise, its sampler for 1 to ``--simulation-steps`` steps in turn, at
    intermediate times drawn as the term draws its own and never rising; the last step with gradient)."""

    def __init__(self, config: RCMConfig, device: torch.device | str | None = None) -> None:
        if config.dmd_weight <= 0:
            raise VideoCMError("--method rcm is sCM plus the distribution-matching term: give --dmd-weight above 0 "
                               "(or use --method scm)")
        super().__init__(config, device)

    def simulated_sample(self, model, text: dict, steps: int, step: Step) -> torch.Tensor:
        """The student's clean sample after ``steps`` of its sampler from noise (gradient through the last)."""
        trig, matching = self.trigflow, self.matching
        n, rows, device = step.batch_size, step.rows, step.device
        shape = (n, *self.latent_shape)
        t = torch.full((n,), trig.t_top, dtype=torch.float32)  # every draw is the global batch's (any process)
        noise = torch.randn(shape, generator=step.generator)[rows].to(device)
        x = trig.start(noise, trig.t_top)  # where the sampler starts from the same noise (the teacher's point)
        for i in range(steps - 1):
            with torch.no_grad():
                x0 = trig.call(self._unwrapped(model), x, t[rows].to(device), text)
            index = torch.from_numpy(step.rng.integers(matching.range[0], matching.range[1] + 1, size=n))
            t = torch.minimum(trig.time_of(matching.grid[index]).to(torch.float32), t)
            fresh = torch.randn(shape, generator=step.generator)[rows].to(device)
            x = trig.add_noise(x0, fresh, t[rows].to(device))
        return trig.call(model, x, t[rows].to(device), text)

    def loss(self, model, step: Step):
        c, context = self.config, self.teacher_context
        loss, logs, (_, text, w, latents) = self.consistency_loss(model, step)
        if step.number < c.tangent_warmup:  # rCM: the term and the fake score start after the tangent warm-up
            return loss, logs
        steps = (step.number - c.tangent_warmup) % c.simulation_steps + 1
        x0 = self.simulated_sample(model, text, steps, step)
        term, matching_logs = self.matching.step(x0, text, context.unconditional(text, len(x0)), w, step.rng,
                                                 step.generator, step.batch_size, step.rows, latents)
        return loss + term, {**logs, "scm": float(loss.detach()), "simulation_steps": steps, **matching_logs}


def distill_scm(config: SCMConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    """Run (or resume) an sCM distillation; writes the resolved config, the student folder and a summary."""
    return run_and_summarise(config, SCMTask, progress, monitor)


def distill_rcm(config: RCMConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    """Run (or resume) an rCM distillation; writes the resolved config, the student folder and a summary."""
    return run_and_summarise(config, RCMTask, progress, monitor)
