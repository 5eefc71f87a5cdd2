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

import copy
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..data.moving_digits import Geometry
from ..diffusion import ode_step, skipping_grid
from ..diffusion.phased import phased_function
from ..diffusion.sampling import concat_conditioning
from ..errors import VideoCMError
from ..models.denoisers import DenoiserAdapter
from ..models.folder import STORE_DTYPES, cast_for_storage, load_model, save_model
from ..models.student import (GUIDANCE_FOLDER, LORA_FOLDER, add_lora, attach_guidance_embedding, has_lora,
                              merged_network_state, new_guidance_embedding, save_guidance_embedding, save_lora)
from ..models.text_encoder import PromptCache, TextEncoder
from .batches import LatentBatches
from .trainer import TrainConfig, run_and_summarise, sample_and_score, shard_rows

METHODS = ("lcm",)


@dataclass
class LCMConfig(TrainConfig):
    """``videocm distill --method lcm``: every field is a ``--key value`` flag."""

    method: str = "lcm"
    teacher: str = "models/teacher-vp"
    out: str = "outputs/lcm"
    steps: int = 2000
    batch_size: int = 16
    lr: float = 1e-4
    warmup_steps: int = 50
    min_lr_ratio: float = 0.1
    ema_decay: float = 0.0  # the trainer's sampling EMA; the consistency target below plays that part
    sample_every: int = 500
    # skipping-step discretisation
    grid_points: int = 50
    skip: int = 1  # k, in grid steps
    # guidance (diffusers' scale: 1 = none); None = the teacher's default guidance
    guidance: float | None = None
    guidance_range: list[float] = field(default_factory=list)  # [w_min, w_max]: guidance embedding in the student
    negative_prompt: str = ""
    # consistency function and target
    sigma_data: float = 0.5
    timestep_scaling: float = 10.0
    target: str = "ema"  # "ema" (VideoLCM) or "online" (DCM)
    target_decay: float = 0.95
    loss: str = "huber"  # "huber" (pseudo-Huber) or "l2"
    huber_c: float = 0.001
    # student
    student: str = "full"  # "full" fine-tune or "lora"
    gradient_checkpointing: bool = False  # recompute the student's block activations in the backward (less memory)
    teacher_dtype: str = "auto"  # the frozen teacher's weights: auto = bfloat16 on a GPU, float32 on the CPU
    lora_rank: int = 16
    lora_alpha: float = 16.0
    lora_targets: list[str] = field(default_factory=list)  # empty: attention and feed-forward projections
    # data: MovingDigits (default), or your own videos: a video folder (encoded once into a latent cache under
    # OUT/latent-cache, or --cache DIR) or a cache written by `videocm encode`
    data: str | None = None
    cache: str | None = None
    frame_stride: int = 0  # frames picked from your videos: 0 = spread over the clip, s = every s-th from the start
    latent_pool: int = 4096
    prompt_cache: str | None = None
    caption_dropout: float = 0.0
    # diffusers pipeline teachers: the clip shape to distil at (default: the pipeline's) and the text length
    frames: int | None = None
    height: int | None = None
    width: int | None = None
    max_sequence_length: int | None = None
    # output
    default_steps: int = 4
    sample_clips: int = 48
    sample_steps: int = 4
    store_dtype: str = "float16"


def check_config(config: LCMConfig, teacher_info: dict) -> None:
    """One-line errors for settings that cannot work, before anything is trained."""
    if config.target not in ("ema", "online"):
        raise VideoCMError(f"--target {config.target!r}: use 'ema' or 'online'")
    if config.loss not in ("huber", "l2"):
        raise VideoCMError(f"--loss {config.loss!r}: use 'huber' or 'l2'")
    if config.student not in ("full", "lora"):
        raise VideoCMError(f"--student {config.student!r}: use 'full' or 'lora'")
    if not 1 <= config.skip <= config.grid_points:
        raise VideoCMError(f"--skip {config.skip} must be between 1 and --grid-points {config.grid_points}")
    if config.guidance_range and (len(config.guidance_range) != 2 or
                                  not 1 <= config.guidance_range[0] <= config.guidance_range[1]):
        raise VideoCMError(f"--guidance-range {config.guidance_range}: give two values 1 <= w_min <= w_max, "
                           f"e.g. --guidance-range 2,8")
    if not 1 <= config.default_steps <= config.grid_points:
        raise VideoCMError(f"--default-steps must be between 1 and --grid-points, got {config.default_steps}")
    if teacher_info.get("kind") != "teacher":
        raise VideoCMError(f"{config.teacher} is a {teacher_info.get('kind')} folder; --teacher needs a teacher")


def video_shape_override(config) -> list[int] | None:
    """``[frames, height, width]`` from ``--frames --height --width`` (all three or none)."""
    shape = [config.frames, config.height, config.width]
    if all(v is None for v in shape):
        return None
    if any(v is None for v in shape):
        raise VideoCMError("give --frames, --height and --width together (the clip shape to distil at)")
    return [int(v) for v in shape]


def load_teacher(config, device):
    """The teacher of a distillation config: a videocm folder or a diffusers pipeline folder."""
    return load_model(config.teacher, device, video_shape_override(config), config.max_sequence_length)


def teacher_text(teacher, prompt_cache: str | None = None, device="cpu"):
    """The teacher's text encoder: its diffusers pipeline's, else a MiniLM prompt cache or MiniLM itself."""
    if teacher.text is not None:
        return teacher.text
    if prompt_cache:
        return PromptCache(prompt_cache)
    return TextEncoder(max_length=int(teacher.info.get("text_max_length", 16)), device=device)


def training_batches(config, teacher, text, device):
    """Latent batches of the run: MovingDigits clips, or the user's videos through a latent cache."""
    if config.data is None:
        if "pipeline" in teacher.info:
            raise VideoCMError(f"{config.teacher} is a diffusers pipeline: give your videos with --data DIR "
                               f"(a folder of videos with captions, or a cache from `videocm encode`)")
        video = teacher.info.get("video_shape", [8, 32, 32])
        return LatentBatches(teacher.vae, Geometry(int(video[0]), int(video[1])), text, config.seed,
                             config.caption_dropout, config.latent_pool, device)
    from .batches import CachedLatentBatches, ensure_latent_cache

    from accelerate import PartialState

    with PartialState(cpu=config.cpu).main_process_first():  # one process encodes, the others then read the cache
        cache = ensure_latent_cache(teacher, text, Path(config.data),
                                    config.cache or str(Path(config.out) / "latent-cache"), config.frame_stride, device)
    return CachedLatentBatches(cache, text, config.caption_dropout)


TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_teacher_dtype(name: str, device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (half the memory and bandwidth of the frozen teacher), float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    if name not in TEACHER_DTYPES:
        raise VideoCMError(f"--teacher-dtype {name!r}: use auto, {', '.join(TEACHER_DTYPES)}")
    return TEACHER_DTYPES[name]


class TargetNetwork:
    """The consistency target: an EMA copy of the student (checkpointed with the run) or the student itself."""

    def __init__(self, student: DenoiserAdapter, mode: str, decay: float) -> None:
        self.mode, self.decay = mode, decay
        self.network = copy.deepcopy(student).requires_grad_(False) if mode == "ema" else None

    def __call__(self, student: DenoiserAdapter) -> DenoiserAdapter:
        return self.network if self.network is not None else student

    @torch.no_grad()
    def update(self, student: DenoiserAdapter) -> None:
        if self.network is None:
            return
        for target, online in zip(self.network.parameters(), student.parameters()):
            target.lerp_(online.detach().to(target.dtype), 1 - self.decay)

    def state_dict(self) -> dict:
        return self.network.state_dict() if self.network is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.network is not None:
            self.network.load_state_dict(state)


class LCMTask:
    """Consistency distillation loss of one teacher into a student initialised from it."""

    def __init__(self, config: LCMConfig, device: torch.device | str | None = None) -> None:
        device = torch.device(device or ("cuda" if torch.cuda.is_available() and not config.cpu else "cpu"))
        self.config = config
        teacher = load_teacher(config, device)
        check_config(config, teacher.info)
        self.teacher_info = teacher.info
        self.teacher = teacher.denoiser.eval().requires_grad_(False)
        self.vae, self.schedule = teacher.vae, teacher.schedule
        self.grid = skipping_grid(self.schedule, config.grid_points)
        self.guidance = float(teacher.default_guidance if config.guidance is None else config.guidance)
        if self.teacher.embeds_guidance:  # HunyuanVideo: the scale goes into the network, no second forward
            if config.guidance_range:
                raise VideoCMError("this teacher embeds guidance in its network; --guidance-range is not supported")
            self.teacher.embedded_guidance = self.guidance
        torch.manual_seed(config.seed)
        # the segment of the grid this student learns to map to its low end (LCM: all of it, to the clean end)
        self.segment = self.student_segment()
        self.model = self.build_student(device)
        self.teacher_dtype = resolve_teacher_dtype(config.teacher_dtype, device)
        if self.teacher_dtype != torch.float32:  # after the student copied the teacher in full precision
            cast_for_storage(self.teacher, self.teacher_dtype)
        self.target = TargetNetwork(self.model, config.target, config.target_decay)
        self.text = teacher_text(teacher, config.prompt_cache)
        self.batches = training_batches(config, teacher, self.text, device)
        self.negative = {k: v.to(device) for k, v in self.text.encode([config.negative_prompt]).items()}
        self.shard = (0, 1)
        self.micro_batch = config.batch_size

    def student_segment(self) -> tuple[int, int]:
        return (0, self.config.grid_points)

    def build_student(self, device) -> DenoiserAdapter:
        """The teacher's network, fully trainable or with LoRA, optionally with a guidance embedding."""
        config = self.config
        student = copy.deepcopy(self.teacher).requires_grad_(True).train()
        if config.guidance_range:
            attach_guidance_embedding(student, new_guidance_embedding(student).to(device))
        if config.gradient_checkpointing:
            student.network.enable_gradient_checkpointing()
        if config.student == "lora":
            add_lora(student.family, student.network, config.lora_rank, config.lora_alpha, config.lora_targets)
            if student.guidance_embedding is not None:
                student.guidance_embedding.requires_grad_(True)
        return student

    def checkpoint_objects(self) -> list:
        return [self.target] if self.target.network is not None else []

    def after_step(self, model) -> None:
        self.target.update(model)

    def _guidance(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """The classifier-free guidance scale of each clip (1 where the teacher embeds guidance itself)."""
        if self.config.guidance_range:
            low, high = self.config.guidance_range
            return torch.from_numpy(rng.uniform(low, high, size=n)).float()
        return torch.full((n,), 1.0 if self.teacher.embeds_guidance else self.guidance)

    def _consistency(self, output, x, t):
        """The student's map of ``(x, t)`` to its segment's low end (LCM: ``f(x, t)``, to the clean end)."""
        end = self.grid[self.segment[0]].to(x.device)
        return phased_function(self.schedule, output, x, t, end, self.config.sigma_data, self.config.timestep_scaling)

    def extra_losses(self, prediction, target, latents, text, rows, rng, generator, device):
        """Terms a method adds to the consistency loss (none for LCM): ``(loss, logs)``."""
        return prediction.new_zeros(()), {}

    def loss(self, model, step, rng, generator, device):
        config = self.config
        n = self.micro_batch
        rows = shard_rows(n, self.shard)
        latents, text, _ = self.batches.draw(n, rng, self.shard, device)
        low, high = self.segment
        skip = min(config.skip, high - low)
        index = torch.from_numpy(rng.integers(low, high - skip + 1, size=n))[rows]
        w = self._guidance(n, rng)[rows].to(device)
        noise = torch.randn((n, *latents.shape[1:]), generator=generator)[rows].to(device)
        t_high, t_low = self.grid[index + skip].to(device), self.grid[index].to(device)
        x_high = self.schedule.add_noise(latents, noise, t_high)
        extra = {"guidance": w} if config.guidance_range else {}
        student_output = model(x_high, self.schedule.model_timestep(t_high).to(device), **text, **extra)
        prediction = self._consistency(student_output, x_high, t_high)
        with torch.inference_mode():  # the frozen teacher: no autograd bookkeeping at all
            uncond = {k: v.expand(len(w), *v.shape[1:]) for k, v in self.negative.items()}
            teacher_output = guided_teacher_output(self.teacher, x_high, self.schedule.model_timestep(t_high).to(device),
                                                   text, uncond, w)
            x_low = ode_step(self.schedule, teacher_output, x_high, t_high, t_low)
        x_low = x_low.clone()  # an ordinary tensor again, for the target network below
        with torch.no_grad():
            target_network = self.target(model)
            target_output = target_network(x_low, self.schedule.model_timestep(t_low).to(device), **text, **extra)
            target = self._consistency(target_output, x_low, t_low)
        difference = prediction.float() - target.float()
        if config.loss == "huber":
            loss = (torch.sqrt(difference**2 + config.huber_c**2) - config.huber_c).mean()
        else:
            loss = (difference**2).mean()
        extra, logs = self.extra_losses(prediction, target, latents, text, rows, rng, generator, device)
        if logs:
            logs = {"consistency": float(loss.detach()), **logs}
        return loss + extra, logs

    # ---- folders and monitoring -------------------------------------------------------------------------------

    def info(self) -> dict:
        c = self.config
        info = {k: v for k, v in self.teacher_info.items() if k not in ("format", "version", "family", "subfolder")}
        guidance = ({"mode": "embedded", "range": list(c.guidance_range),
                     "default": float(min(max(self.guidance, c.guidance_range[0]), c.guidance_range[1]))}
                    if c.guidance_range else {"mode": "fixed", "scale": self.guidance})
        info.update({
            "kind": "student", "method": c.method, "default_steps": c.default_steps,
            "default_guidance": guidance.get("default", guidance.get("scale")),
            "guidance": guidance, "negative_prompt": c.negative_prompt,
            "consistency": {"grid_points": c.grid_points, "skip": c.skip, "sigma_data": c.sigma_data,
                            "timestep_scaling": c.timestep_scaling, "target": c.target},
            "student": c.student, "teacher": str(c.teacher),
        })
        if "embedded_guidance" in info:  # the scale the network itself was given while distilling
            info["embedded_guidance"] = self.guidance
        return info

    def _student_for_saving(self, model: DenoiserAdapter) -> DenoiserAdapter:
        """The weights a student folder holds: the EMA target (LCM's choice) or the online student."""
        source = self.target.network if self.target.network is not None else model
        network = copy.deepcopy(self.teacher.network)
        network.load_state_dict(merged_network_state(source.network) if has_lora(source.network)
                                else source.network.state_dict())
        saved = DenoiserAdapter(model.family, network)
        if source.guidance_embedding is not None:
            attach_guidance_embedding(saved, copy.deepcopy(source.guidance_embedding))
        return saved

    def sample(self, model, step, out):
        from ..models.folder import VideoModel
        from ..pipeline import VideoPipeline

        device = next(model.parameters()).device
        student = self._student_for_saving(model).to(device).eval()
        pipeline = VideoPipeline(VideoModel(student, self.vae, self.schedule, self.info(), Path(self.config.out)),
                                 device, text=self.text)
        return sample_and_score(pipeline, self.config.sample_clips, self.config.sample_steps, None, out, step,
                                self.batches.sample_prompts())

    def save(self, model, out):
        out = Path(out)
        student = self._student_for_saving(model)
        cast_for_storage(student.network, STORE_DTYPES[self.config.store_dtype])
        save_model(out, student, self.vae.cpu(), self.info())
        if student.guidance_embedding is not None:
            save_guidance_embedding(student.guidance_embedding, out / GUIDANCE_FOLDER)
        source = self.target.network if self.target.network is not None else model
        if has_lora(source.network):
            save_lora(source.network, out / LORA_FOLDER)


def guided_teacher_output(teacher, x, timestep, cond, uncond, w: torch.Tensor) -> torch.Tensor:
    """``u + w (c - u)`` with a per-clip ``w`` ``(B,)``, in one batched forward (``w == 1`` everywhere: one pass)."""
    if torch.all(w == 1):
        return teacher(x, timestep, **cond)
    both = teacher(torch.cat([x, x]), torch.cat([timestep, timestep]), **concat_conditioning(uncond, cond))
    unconditional, conditional = both.chunk(2)
    scale = w.to(x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
    return unconditional + scale * (conditional - unconditional)


def distill(config: LCMConfig, progress: bool = True) -> dict:
    """Run (or resume) a distillation; writes the resolved config, the student folder and a summary."""
    if config.method not in METHODS:
        raise VideoCMError(f"--method {config.method!r} is not known: use one of {', '.join(METHODS)}")
    return run_and_summarise(config, LCMTask, progress)
