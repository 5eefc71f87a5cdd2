"""VideoLCM: latent consistency distillation of a teacher (Wang et al. 2023, after Luo et al. 2023).

One training step, for a batch of clip latents ``z``:

1. pick grid indices ``n`` (uniform over ``0..N-k``) and noise ``z`` to ``t_{n+k}``;
2. the teacher, with classifier-free guidance at weight ``w`` (one batched forward for conditional and
   unconditional), takes one ODE step back to ``t_n`` (DDIM for VP teachers, Euler for flow teachers);
3. the student's consistency function at ``(x_{t_{n+k}}, t_{n+k})`` is pulled towards the target network's at
   ``(x_{t_n}, t_n)`` (no gradient): an EMA of the student (decay 0.95, VideoLCM) or the online student (DCM);
4. loss: pseudo-Huber ``sqrt(d^2 + c^2) - c`` (c = 0.001) or L2.

Guidance: a fixed ``w`` folded into the target (VideoLCM), or a range ``[w_min, w_max]`` sampled per clip with a
guidance embedding in the student (as diffusers' LCM script), so one student serves several strengths.
The student is the teacher's network, fully fine-tuned or with LoRA (peft).
"""


from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..config import RunFolder
from .consistency import consistency_step
from ..errors import VideoCMError
from .core import (ConsistencySettings, DistillationMethod, DistillConfig, StudentKindSettings, TargetNetwork,
                   new_student, shares_frozen, training_device)
from .trainer import Monitor, Step, run_and_summarise


@dataclass
class LCMConfig(ConsistencySettings, StudentKindSettings, DistillConfig):
    """``videocm distill --method lcm``: VideoLCM's own settings (the guidance embedding). Every field is a
    ``--key value`` flag."""

    SECTION = "lcm"

    out: RunFolder = "outputs/lcm"
    guidance_range: list[float] = field(default_factory=list)  # [w_min, w_max]: guidance embedding in the student


class LCMTask(DistillationMethod):
    """VideoLCM: the consistency step over the whole grid, from a student initialised from the teacher."""

    def __init__(self, config: LCMConfig, device: torch.device | str | None = None) -> None:
        if not 1 <= config.skip <= config.grid_points:
            raise VideoCMError(f"--skip {config.skip} must be between 1 and --grid-points {config.grid_points}")
        if config.guidance_range and (len(config.guidance_range) != 2 or
                                      not 1 <= config.guidance_range[0] <= config.guidance_range[1]):
            raise VideoCMError(f"--guidance-range {config.guidance_range}: give two values 1 <= w_min <= w_max, "
                               f"e.g. --guidance-range 2,8")
        device = training_device(config, device)
        super().__init__(config, device)
        context = self.teacher_context
        torch.manual_seed(config.seed)
        self.model = new_student(context.student_base(), config, device, config.student, config.guidance_range,
                                 (config.lora_rank, config.lora_alpha))
        self.matching = self.new_matching(device)  # copies the teacher before it is cast
        context.cast_teacher()
        self.target_network = TargetNetwork(self.model, config.target, config.target_decay, shares_frozen(config))
        self.segment = (0, config.grid_points)  # the whole grid, mapped to its clean end

    def guidance_range(self) -> list[float]:
        return list(self.config.guidance_range)

    def student_kind(self) -> str:
        return self.config.student

    def loss(self, model, step: Step):
        c, context = self.config, self.teacher_context
        # 1. this micro-step's clips (latents) and their text
        latents, text = context.draw(step)
        # 2. grid indices n and skip k, each clip's guidance weight w at t_{n+k}, the noise
        index, skip, w, noise = context.consistency_batch(step, self.segment, c.skip, latents)
        # 3. noise to t_{n+k}; the student's consistency function there; the guided teacher's ODE step to t_n; the
        #    target network's consistency function at t_n (no gradient); the distance between the two
        student_cond = {**text, "guidance": w} if c.guidance_range else text
        terms = consistency_step(model, self.target_network(model), context.teacher, context.schedule, context.grid,
                                 self.segment[0], latents, noise, index, skip, text,
                                 context.unconditional(text, len(latents)), w, student_cond, c.sigma_data,
                                 c.timestep_scaling, c.loss, c.huber_c)
        # 4. with --dmd-weight: the distribution-matching term on the student's clean estimate
        return self.with_matching(terms, w, text, step, latents)


def distill(config: LCMConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    """Run (or resume) a distillation; writes the resolved config, the student folder and a summary.
    ``monitor``: scores the periodic samples (None: no samples)."""
    return run_and_summarise(config, LCMTask, progress, monitor)
