"""DMD2: a few-step generator distilled by distribution matching alone (Yin et al. 2024b).

The student (DMD2's *generator*) is the teacher's network (fully fine-tuned or with LoRA) on a fixed list of ``--generator-steps``
timesteps of the skipping grid, chosen as the consistency sampler chooses them (``999, 759, 499, 259`` for 4 of a
VP teacher's 50 points), so the student folder samples, exports (diffusers' ``LCMScheduler``), evaluates and serves
as an LCM student does, at any step count whose times are in the list (1, 2 and 4 of a 4-step list). Its clean
estimate is LCM's parameterisation ``c_skip x + c_out x0_hat`` (at the list's times practically ``x0_hat``).

One training step:

1. *Backward simulation* (DMD2): a step index ``k`` of the list, uniform; from pure noise the student itself
   (no gradient) runs the first ``k`` steps of its sampler (clean estimate, re-noised with fresh noise to the next
   time), so the input it learns on at ``t_k`` is the one it meets when sampling;
2. its clean estimate at ``(x_{t_k}, t_k)``, with gradient;
3. the fake score's ``--fake-updates`` steps on that estimate, then the distribution-matching loss of it
   (:mod:`.matching`), times ``--dmd-weight``; with ``--dmd-gan-weight`` above 0, plus DMD2's GAN term (a head on
   the fake score's features, real clips against the student's).

Only prompts are needed: the default data are MovingDigits captions, ``--data DIR`` the captions of your videos or
their latent cache, ``--data prompts:FILE`` a prompt list (one per line). The clips themselves are used only by
the optional GAN term.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from ..config import Count, NonNegative, Positive, RunFolder
from ..diffusion import consistency_function, consistency_times
from ..errors import VideoCMError
from ..models.info import ConsistencyInfo
from .core import DistillationMethod, DistillConfig, StudentKindSettings, new_student, training_device
from .trainer import Monitor, Step, run_and_summarise


@dataclass
class DMDConfig(StudentKindSettings, DistillConfig):
    """``videocm distill --method dmd``: DMD2's own settings: the student's timesteps and backward simulation. Every
    field is a ``--key value`` flag."""

    SECTION = "dmd"

    method: Literal["lcm", "dcm", "dmd", "scm", "rcm"] = "dmd"  # dmd: this config (lcm, dcm, scm, rcm: theirs)
    out: RunFolder = "outputs/dmd"
    lr: Positive = 5e-5  # the student's peak learning rate (the shipped dmd-flow's; not tuned)
    dmd_weight: NonNegative = 1.0  # weight of the distribution-matching loss (the student's whole loss)
    generator_steps: Count = 4  # the student's timestep list: this many points of the grid, as the sampler picks them
    backward_simulation: bool = True  # train on the student's own sampler inputs (DMD2); false: on noise only (1 step)


class DMDTask(DistillationMethod):
    """DMD2's few-step student on the teacher's network, with the shared fake score and term of :mod:`.matching`."""

    prompts_only = True  # the term needs prompts alone: a prompt list is used as it is, with no teacher clips

    def __init__(self, config: DMDConfig, device: torch.device | str | None = None) -> None:
        if config.dmd_weight <= 0:
            raise VideoCMError("--method dmd trains by distribution matching alone: give --dmd-weight above 0")
        if not 1 <= config.generator_steps <= config.grid_points:
            raise VideoCMError(f"--generator-steps {config.generator_steps} must be between 1 and --grid-points "
                               f"{config.grid_points}")
        device = training_device(config, device)
        super().__init__(config, device)
        context = self.teacher_context
        torch.manual_seed(config.seed)
        self.model = new_student(context.student_base(), config, device, config.student, (),
                                 (config.lora_rank, config.lora_alpha))
        self.matching = self.new_matching(device)  # copies the teacher before it is cast
        context.cast_teacher()
        self.times = consistency_times(context.grid, config.generator_steps)

    def student_kind(self) -> str:
        return self.config.student

    def consistency_info(self) -> ConsistencyInfo:
        """LCM's parameterisation at the list's times, with no skip and no target network."""
        c = self.config
        return ConsistencyInfo(c.grid_points, 1, c.sigma_data, c.timestep_scaling, "online")

    def loss(self, model, step: Step):
        c, context = self.config, self.teacher_context
        n, rows, device = step.batch_size, step.rows, step.device
        real, text, _ = context.batches.draw(n, step.rng, step.shard, device)  # real: None for a prompt list
        schedule, times = context.schedule, self.times.to(device)
        # 1. the step index k of the student's list (uniform), and pure noise
        k = int(step.rng.integers(len(times))) if c.backward_simulation else 0
        x = torch.randn((n, *self.latent_shape), generator=step.generator)[rows].to(device)
        batch = x.shape[0]

        def clean(x, i):
            output = model(x, schedule.model_timestep(times[i]).to(device).expand(batch), **text)
            return consistency_function(schedule, output, x, times[i], c.sigma_data, c.timestep_scaling)

        # 2. backward simulation: the student's own first k sampler steps (no gradient) give its input at t_k
        with torch.no_grad():
            for i in range(k):
                fresh = torch.randn((n, *self.latent_shape), generator=step.generator)[rows].to(device)
                x = schedule.add_noise(clean(x, i), fresh, times[i + 1])
        # 3. its clean estimate at t_k, with gradient
        x0 = clean(x, k)
        # 4. the fake score's updates on it, then the distribution-matching loss (and DMD2's GAN term)
        guidance = context.guidance_weights(batch, step.rng).to(device)
        loss, logs = self.matching.step(x0, text, context.unconditional(text, batch), guidance, step.rng,
                                        step.generator, n, rows, real)
        return loss, {"generator_step": float(times[k]), **logs}


def distill_dmd(config: DMDConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    """Run (or resume) a DMD2 distillation; writes the resolved config, the student folder and a summary."""
    config = dataclasses.replace(config, default_steps=min(config.default_steps, config.generator_steps))
    return run_and_summarise(config, DMDTask, progress, monitor)
