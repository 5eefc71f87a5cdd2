"""Distribution matching (DMD, Yin et al. 2024; DMD2, Yin et al. 2024b): the term and its fake score network.

The generator's clean estimates ``x0`` (``(B, C, T, h, w)``) are pulled towards the teacher's distribution by the
difference of two scores on re-noised copies of them:

1. re-noise ``x0`` to a time ``t`` of the skipping grid (grid indices uniform over ``--dmd-timestep-range``, a
   fraction of the grid; DMD2's 0.02-0.98);
2. the *real* score: the frozen teacher with classifier-free guidance at the distillation's weight; the *fake*
   score: a copy of the teacher trained online, without guidance, on the generator's samples;
3. the gradient ``(x0_fake - x0_real) / mean|x0 - x0_real|`` (each clip normalised by its own mean absolute
   distance to the real score's estimate, as DMD2), applied through ``0.5 * mse(x0, sg(x0 - gradient))``.

The fake score learns with the teacher's own denoising loss (its prediction type) on ``x0`` detached, at grid times
uniform over the whole grid, ``--fake-updates`` optimiser steps per generator step (DMD2's two time-scale rule),
with its own AdamW and learning rate (``--fake-lr``). It is a full copy of the teacher's network or LoRA on one
(``--fake-score lora``). The same code serves ``--method dmd`` (the term alone, on a few-step generator) and
``--dmd-weight W`` on LCM and DCM's detail stage (the term added to the consistency loss, as rCM regularises a
consistency student).

*Optional GAN term* (DMD2 section 4.3, ``--dmd-gan-weight`` above 0): a light head on the fake score's middle block
(its bottleneck; per-frame logits) tells real clips from the generator's, both re-noised to times of the term's
range. The head and the fake score's network learn the non-saturating classifier loss (weighted by
``--dmd-gan-classifier-weight``) inside each fake-score update, one forward for both losses; the generator gets
``--dmd-gan-weight`` times ``softplus(-logit)`` of its re-noised ``x0``, read through frozen copies of the fake
score and the head. It needs real clips (MovingDigits or your videos), not a prompt list.

Randomness: every draw is for the global batch, from the step's streams, and each process keeps its rows, as the
consistency step draws its batch: the figures do not depend on the process count.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..diffusion.predictions import prediction_target
from ..diffusion.sampling import concat_conditioning, guidance_at, guided_output
from ..diffusion.schedules import broadcast_to
from ..diffusion.solvers import x0_and_noise
from ..errors import VideoCMError
from ..models.experts import FeatureTap
from ..models.student import add_lora, without_dropout
from .discriminator import (FeatureDiscriminator, logistic_discriminator_loss, logistic_generator_loss,
                            with_frozen_weights)

NO_REAL_CLIPS = ("--dmd-gan-weight compares the generator's clips with real ones, and a prompt list has none: give "
                 "clips (leave --data out, or --data DIR) or set --dmd-gan-weight 0")


def timestep_range(fractions, grid_points: int) -> tuple[int, int]:
    """Grid indices ``(low, high)`` (inclusive) of ``--dmd-timestep-range LOW,HIGH`` given as grid fractions."""
    values = [float(v) for v in fractions]
    if len(values) != 2 or not 0 <= values[0] < values[1] <= 1:
        raise VideoCMError(f"--dmd-timestep-range {values}: give two fractions 0 <= low < high <= 1, e.g. 0.02,0.98")
    low = max(1, math.ceil(values[0] * grid_points))
    high = min(grid_points, max(low, math.floor(values[1] * grid_points)))
    return low, high


def matching_gradient(x0: torch.Tensor, real_x0: torch.Tensor, fake_x0: torch.Tensor) -> torch.Tensor:
    """DMD2's normalised distribution-matching gradient ``(fake - real) / mean|x0 - real|`` per clip (float32)."""
    dims = tuple(range(1, x0.ndim))
    weight = (x0.float() - real_x0.float()).abs().mean(dim=dims, keepdim=True).clamp_min(1e-8)
    return torch.nan_to_num((fake_x0.float() - real_x0.float()) / weight)


def matching_loss(x0: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """``0.5 * mean((x0 - sg(x0 - gradient))^2)``: its gradient with respect to ``x0`` is ``gradient / x0.numel()``."""
    return 0.5 * nn.functional.mse_loss(x0.float(), (x0.float() - gradient).detach())


class DistributionMatching:
    """The fake score network, its optimiser and the distribution-matching term of one distillation.

    ``teacher``: the frozen (guided) teacher denoiser, copied for the fake score before it is cast or sharded;
    ``schedule``/``grid``: the teacher's schedule and skipping grid; ``settings``: the method's config (the
    ``fake_*`` and ``dmd_*`` fields); ``guidance_2``: a Wan 2.2 two-expert teacher's guidance where its low-noise
    network runs (None: each clip's own weight at every time); ``feature_channels(denoiser, tap)``: the channels of
    the maps ``tap`` reads from ``denoiser`` (a probe forward; needed with the GAN term); ``share_base``: a LoRA fake
    score's frozen base is the teacher's own weights (not a copy)."""

    def __init__(self, teacher, schedule, grid: torch.Tensor, settings, device, guidance_2: float | None = None,
                 feature_channels=None, share_base: bool = False) -> None:
        if settings.gradient_accumulation_steps > 1 and settings.fake_updates > 0:
            raise VideoCMError("distribution matching steps its fake score inside each optimiser step, which "
                               "gradient accumulation would merge: use --gradient-accumulation-steps 1 (more "
                               "processes or a smaller --batch-size instead)")
        self.teacher, self.schedule, self.grid, self.settings = teacher, schedule, grid, settings
        self.guidance_2 = guidance_2
        self.range = timestep_range(settings.dmd_timestep_range, len(grid) - 1)
        base = teacher.experts()[-1] if hasattr(teacher, "experts") else teacher  # a two-expert teacher: low noise
        if settings.fake_score == "lora" and share_base:
            fake = copy.deepcopy(base, {id(p): p for p in base.parameters()}).train().to(device)
        else:
            fake = copy.deepcopy(base).float().train().to(device)
        without_dropout(fake)
        if settings.fake_score == "lora":
            add_lora(fake.spec, fake.network, settings.fake_lora_rank, settings.fake_lora_alpha,
                     settings.lora_targets)
        else:
            fake.requires_grad_(True)
        self.fake = fake
        self.optimizer = torch.optim.AdamW([p for p in fake.parameters() if p.requires_grad], lr=settings.fake_lr,
                                           betas=(0.0, 0.999), weight_decay=0.0)
        self.heads = self.heads_optimizer = None
        self.classifier_loss: float | None = None  # the last fake-score update's GAN classifier loss
        if settings.dmd_gan_weight > 0:
            blocks = fake.spec.feature_blocks(fake.network)
            self.tap = FeatureTap(fake, [blocks[len(blocks) // 2]])  # DMD2's classifier reads the bottleneck
            self.heads = FeatureDiscriminator(feature_channels(fake, self.tap)).to(device)
            self.heads_optimizer = torch.optim.AdamW(self.heads.parameters(), lr=settings.fake_lr,
                                                     betas=(0.0, 0.999), weight_decay=0.0)
        self.engine = None

    def prepare(self, engine) -> None:
        """The fake score and its optimiser join the run (replicated over processes, checkpointed)."""
        self.engine = engine
        self.fake, self.optimizer = engine.prepare(fake_score=self.fake, fake_score_optimizer=self.optimizer)
        if self.heads is not None:
            self.heads, self.heads_optimizer = engine.prepare(gan_head=self.heads,
                                                              gan_head_optimizer=self.heads_optimizer)

    def _unwrapped(self, module):
        return self.engine.unwrap_model(module) if self.engine is not None else module

    def _backward(self, loss: torch.Tensor) -> None:
        if self.engine is not None:
            self.engine.backward(loss)
        else:
            loss.backward()

    def _noised(self, x0: torch.Tensor, low: int, high: int, rng, generator, n: int, rows: slice):
        """``x0`` re-noised at grid indices uniform over ``[low, high]``: ``(x_t, t, noise)``."""
        index = torch.from_numpy(rng.integers(low, high + 1, size=n))[rows]
        noise = torch.randn((n, *x0.shape[1:]), generator=generator)[rows].to(x0.device, x0.dtype)
        t = self.grid[index].to(x0.device)
        return self.schedule.add_noise(x0, noise, t), t, noise

    def update_fake(self, x0: torch.Tensor, cond: dict, rng, generator, n: int, rows: slice,
                    real: torch.Tensor | None = None) -> float:
        """``--fake-updates`` steps of the fake score's denoising loss on the generator's ``x0``; the last loss.
        With the GAN term, each step also trains the head (and the fake score under it) to tell ``real`` clips'
        latents from ``x0``, in the same forward; the last classifier loss is kept in ``classifier_loss``."""
        x0 = x0.detach()
        value = 0.0
        for _ in range(self.settings.fake_updates):
            x_t, t, noise = self._noised(x0, 1, len(self.grid) - 1, rng, generator, n, rows)
            if self.heads is None:
                output = self.fake(x_t, self.schedule.model_timestep(t).to(x0.device), **cond)
                classifier = output.new_zeros(())
            else:
                output, classifier = self._denoise_and_classify(x_t, t, x0, real, cond, rng, generator, n, rows)
            alpha, sigma = (broadcast_to(v, x0) for v in self.schedule.alpha_sigma(t, x0.device))
            wanted = prediction_target(x0, noise, alpha, sigma, self.schedule.prediction_type)
            loss = nn.functional.mse_loss(output.float(), wanted.float())
            total = loss + self.settings.dmd_gan_classifier_weight * classifier
            if not torch.isfinite(total):
                raise VideoCMError(f"the fake score's loss became {total.item()}; lower --fake-lr and rerun with "
                                   f"--resume")
            self._backward(total)
            for optimizer in (self.optimizer, self.heads_optimizer):
                if optimizer is not None:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
            value = float(loss.detach())
            if self.heads is not None:
                self.classifier_loss = float(classifier.detach())
        return value

    def _denoise_and_classify(self, x_t, t, x0, real, cond, rng, generator, n, rows):
        """One fake-score forward over ``[x_t; real re-noised; x0 re-noised]``: its output on ``x_t`` and the
        head's logistic classifier loss (real against generated)."""
        if real is None:
            raise VideoCMError(NO_REAL_CLIPS)
        real_t, t_real, _ = self._noised(real.to(x0.dtype), *self.range, rng, generator, n, rows)
        fake_t, t_fake, _ = self._noised(x0, *self.range, rng, generator, n, rows)
        inputs = torch.cat([x_t, real_t, fake_t])
        timestep = self.schedule.model_timestep(torch.cat([t, t_real, t_fake])).to(x0.device)
        with self.tap(tuple(inputs.shape)) as tap:
            output = self.fake(inputs, timestep, **concat_conditioning(concat_conditioning(cond, cond), cond))
        m = len(x0)
        logits = self.heads([f[m:] for f in tap.features])
        classifier = logistic_discriminator_loss([x[:m] for x in logits], [x[m:] for x in logits])
        return output[:m], classifier

    def _generator_gan(self, x0: torch.Tensor, cond: dict, rng, generator, n: int, rows: slice) -> torch.Tensor:
        """``softplus(-logit)`` of ``x0`` re-noised, through frozen copies of the fake score and the head (the
        gradient reaches ``x0`` only)."""
        x_t, t, _ = self._noised(x0, *self.range, rng, generator, n, rows)
        fake, heads = self._unwrapped(self.fake), self._unwrapped(self.heads)
        with self.tap(tuple(x_t.shape)) as tap:
            with_frozen_weights(fake, x_t, self.schedule.model_timestep(t).to(x0.device), **cond)
        return logistic_generator_loss(with_frozen_weights(heads, tap.features))

    def term(self, x0: torch.Tensor, cond: dict, uncond: dict, guidance: torch.Tensor, rng, generator, n: int,
             rows: slice) -> tuple[torch.Tensor, dict[str, float]]:
        """The distribution-matching loss of ``x0`` (with its graph) and the figures to log."""
        x_t, t, _ = self._noised(x0.detach(), *self.range, rng, generator, n, rows)
        timestep = self.schedule.model_timestep(t).to(x0.device)
        if self.guidance_2 is not None:
            guidance = guidance_at(timestep, guidance, self.guidance_2, self.teacher.boundary)
        with torch.no_grad():
            real = guided_output(self.teacher, x_t, timestep, cond, uncond, guidance)
            fake = self.fake(x_t, timestep, **cond)
            real_x0, _ = x0_and_noise(self.schedule, real.float(), x_t.float(), t)
            fake_x0, _ = x0_and_noise(self.schedule, fake.float(), x_t.float(), t)
            gradient = matching_gradient(x0.detach(), real_x0, fake_x0)
        loss = matching_loss(x0, gradient)
        return loss, {"dmd": float(loss.detach()), "dmd_gradient": float(gradient.abs().mean())}

    def step(self, x0: torch.Tensor, cond: dict, uncond: dict, guidance: torch.Tensor, rng, generator, n: int,
             rows: slice, real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """The fake score's updates on ``x0``, then the weighted loss against the updated fake score:
        ``--dmd-weight`` times the term, plus ``--dmd-gan-weight`` times the GAN generator loss when it is on
        (``real``: this process's real clip latents, which the GAN term needs)."""
        fake_loss = self.update_fake(x0, cond, rng, generator, n, rows, real)
        loss, logs = self.term(x0, cond, uncond, guidance, rng, generator, n, rows)
        loss = self.settings.dmd_weight * loss
        logs["fake_score"] = fake_loss
        if self.heads is not None:
            adversarial = self._generator_gan(x0, cond, rng, generator, n, rows)
            loss = loss + self.settings.dmd_gan_weight * adversarial
            logs.update({"gan_generator": float(adversarial.detach()), "gan_classifier": self.classifier_loss})
        return loss, logs
