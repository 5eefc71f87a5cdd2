"""The control fine-tune: a teacher's control branch adapted to one consistency student (``videocm train-control
--student DIR --init-control DIR``), and the branch setup it shares with training a branch from scratch
(:mod:`videocm.training.control`).

:class:`ControlConsistencyTask`: the teacher with the original branch (both frozen) takes one guided ODE step across
the skipping interval, and the student's consistency function with the trainable branch is pulled towards that of
the student with an EMA copy of the branch: VideoLCM's loss with the branch as the only trainable part.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import Count, Decay, Fraction, Natural, NonNegative, Positive
from ..data.moving_digits import Geometry
from ..diffusion import skipping_grid
from ..errors import VideoCMError
from ..models.control import control_families, load_control, new_control_branch, save_control, with_control
from ..models.denoisers import ControlledDenoiser
from ..models.folder import load_model
from ..models.info import ModelInfo
from ..models.text_encoder import PromptCache, TextEncoder
from .batches import LatentBatches
from .consistency import consistency_step, draw_consistency_batch, expanded
from .core import TargetNetwork, refuse_two_stage
from .trainer import Step, TrainConfig, TrainTask


@dataclass
class ControlConfig(TrainConfig):
    """``videocm train-control``: a control branch on a frozen teacher."""

    SECTION = "control"

    teacher: str = "models/teacher-flow"  # teacher folder the branch is trained on (and joined to)
    control_blocks: Count = 4  # Wan: transformer blocks copied into the branch (the UNet copies its down path)
    init_control: str | None = None  # a control model to continue from
    caption_dropout: Fraction = 0.1  # share of captions replaced by ""
    prompt_cache: str | None = None  # MiniLM states from `videocm encode-captions` instead of running MiniLM
    latent_pool: Natural = 0  # > 0: encode this many train clips and silhouettes once (the VAE off the loop)
    logit_normal_mean: float = 0.0  # flow teachers: mean of the logit-normal training times
    logit_normal_std: Positive = 1.0  # flow teachers: spread of the logit-normal training times
    snr_gamma: NonNegative = 5.0  # VP teachers: min-SNR loss weighting gamma
    sample_clips: Count = 32  # clips of each monitoring sample
    sample_steps: Count = 25  # steps of the monitoring samples
    guidance: NonNegative | None = None  # for monitoring samples; None: the teacher's default
    # fine-tuning a trained branch for a consistency student (needs init_control)
    student: str | None = None  # a consistency student of the teacher to fine-tune the branch for (needs --init-control)
    target_decay: Decay = 0.95  # --student: EMA decay of the consistency target
    huber_c: Positive = 0.001  # --student: the pseudo-Huber loss's c


class ControlBranchTask(TrainTask):
    """A control branch (``model``) joined to a frozen teacher: what training it from scratch
    (:class:`videocm.training.control.ControlTask`) and fine-tuning it for a student (:class:`ControlConsistencyTask`)
    share: the teacher, the branch, the MovingDigits batches with silhouettes, the folder it is saved as."""

    def __init__(self, config: ControlConfig, device: torch.device | str | None = None) -> None:
        device = device or ("cuda" if torch.cuda.is_available() and not config.cpu else "cpu")
        self.config = config
        refuse_two_stage(config.teacher, "control training")
        self.teacher = load_model(config.teacher, device)
        info = self.teacher.info
        if self.teacher.is_student:
            raise VideoCMError(f"--teacher {config.teacher} is a student; train the control branch on its teacher "
                               f"and sample the student with it (videocm sample --model STUDENT --control-model ...)")
        if self.teacher.denoiser.family not in control_families():
            raise VideoCMError(f"control branches are built for {' and '.join(control_families())} networks; "
                               f"{config.teacher} is {self.teacher.denoiser.family}")
        if info.dataset != "MovingDigits-v1":
            raise VideoCMError(f"train-control trains on MovingDigits silhouettes; {config.teacher} was not trained "
                               f"on MovingDigits (its model description names dataset {info.dataset!r})")
        frames, height, width = info.video_shape
        if height != width:
            raise VideoCMError(f"MovingDigits clips are square; {config.teacher} makes {height}x{width} clips")
        self.geometry = Geometry(frames, height)
        vae = self.teacher.vae
        if config.init_control:
            branch, _ = load_control(config.init_control)
        else:
            torch.manual_seed(config.seed)
            branch = new_control_branch(self.teacher.denoiser.family, self.teacher.denoiser.network,
                                        config.control_blocks, vae.latent_channels)
        self.model = branch.train().requires_grad_(True)
        with_control([self.teacher.denoiser], self.model, where=f"teacher {config.teacher}")  # checks it fits
        text = (PromptCache(config.prompt_cache) if config.prompt_cache
                else TextEncoder(max_length=info.text_length))
        self.batches = LatentBatches(vae, self.geometry, text, config.seed, config.caption_dropout,
                                     config.latent_pool, device, control=True)
        self.text = text

    def prepare(self, engine) -> None:
        self.teacher.denoiser.to(engine.device)
        self.teacher.vae.to(engine.device)

    def info(self) -> ModelInfo:
        teacher = self.teacher
        return ModelInfo(kind="control", family=teacher.denoiser.family, teacher=str(Path(self.config.teacher)),
                         control_blocks=self.model.config.num_blocks,
                         control_encoding="the model's VAE, grey silhouette on all three channels",
                         video_shape=list(teacher.info.video_shape), latent_shape=list(teacher.latent_shape),
                         schedule=teacher.info.schedule, dataset="MovingDigits-v1 silhouettes",
                         default_guidance=teacher.default_guidance)

    def save(self, model, out):
        save_control(out, model, self.info())


class ControlConsistencyTask(ControlBranchTask):
    """Fine-tunes a teacher's branch for a consistency student (see the module docstring)."""

    def __init__(self, config: ControlConfig, device: torch.device | str | None = None) -> None:
        if not config.init_control:
            raise VideoCMError("--student fine-tunes a trained control branch for that student: give --init-control "
                               "CONTROL_DIR (the branch trained on its teacher)")
        super().__init__(config, device)
        device = next(self.teacher.denoiser.network.parameters()).device
        student = load_model(config.student, device)
        info = student.info
        if not student.is_student or info.is_phased:
            raise VideoCMError(f"--student {config.student} must be a single-network consistency student (videocm "
                               f"distill --method lcm); phased (DCM) students use the branch unchanged")
        if info.guidance is None or info.guidance.mode != "fixed":
            raise VideoCMError(f"--student {config.student} takes its guidance as an input; fine-tuning a branch "
                               f"is supported for students with guidance folded in")
        teacher_branch, _ = load_control(config.init_control, device)
        (self.controlled_teacher,) = with_control([self.teacher.denoiser], teacher_branch,
                                                  where=f"teacher {config.teacher}")
        with_control([student.denoiser], self.model, where=f"student {config.student}")  # checks it fits
        self.student = student
        consistency = info.consistency
        self.grid = skipping_grid(self.teacher.schedule, int(consistency.grid_points))
        self.skip = int(consistency.skip)
        self.scalings = (float(consistency.sigma_data), float(consistency.timestep_scaling))
        self.guidance = float(info.guidance.scale)
        self.negative = {k: v.to(device) for k, v in self.text.encode([info.negative_prompt]).items()}
        self.target_network = TargetNetwork(self.model, "ema", config.target_decay)

    def prepare(self, engine) -> None:
        super().prepare(engine)
        self.student.denoiser.to(engine.device)

    def checkpoint_state(self) -> dict:
        return {"target": self.target_network}

    def after_step(self, model) -> None:
        self.target_network.update(model)

    def loss(self, model, step: Step):
        """VideoLCM's consistency step with the student's branch the only trainable part: the student with the
        trainable branch against the student with the EMA branch, the teacher with its own branch."""
        n, device = step.batch_size, step.device
        latents, controls, text, _ = self.batches.draw_with_control(n, step.rng, step.shard, device)
        index, skip, _, noise = draw_consistency_batch(step.rng, step.generator, n, step.rows, (0, len(self.grid) - 1),
                                                       self.skip, latents.shape[1:], device)
        cond = {**text, "control": controls}
        uncond = {**expanded(self.negative, latents.shape[0]), "control": controls}
        w = torch.full((latents.shape[0],), self.guidance, device=device)
        terms = consistency_step(ControlledDenoiser(self.student.denoiser, model),
                                 ControlledDenoiser(self.student.denoiser, self.target_network(model)),
                                 self.controlled_teacher, self.teacher.schedule, self.grid, 0, latents, noise, index,
                                 skip, cond, uncond, w, cond, *self.scalings, "huber", self.config.huber_c)
        return terms.loss, {}

    def info(self) -> ModelInfo:
        return super().info().replace(fine_tuned_for=str(Path(self.config.student)),
                                      fine_tuned_from=str(Path(self.config.init_control)))

