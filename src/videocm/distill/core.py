"""The distillation core: what every method on a teacher shares, and the method base the trainer drives.

* :class:`DistillConfig`: the settings every ``videocm distill`` method shares (a method's config adds its own).
* :class:`TeacherContext`: the frozen teacher and what comes with it (VAE, schedule, skipping grid, guidance
  weight, text encoder, training batches, the negative prompt's states), and a step's draws from them: the clips
  (:meth:`TeacherContext.draw`) and the consistency step's indices, guidance weights and noise
  (:meth:`TeacherContext.consistency_batch`).
* :class:`DistillationMethod`: a :class:`~.trainer.TrainTask` on a teacher context, with a consistency target
  network, an optional distribution-matching term (``--dmd-weight``), and the student's folder, samples and
  description. A method (``lcm.py``, ``dcm.py``, ``dmd.py``, ``control.py``) subclasses it and writes its loss;
  it imports this module, :mod:`.consistency`, :mod:`.matching` and :mod:`.discriminator`, never another method.
* The students: :func:`new_student`, :func:`merged_student`, :class:`TargetNetwork`, :func:`student_info`.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import (Count, Decay, Fraction, Natural, NonNegative, Positive, ReusedFolder, RunFolder, VideoShape,
                      check_values)
from ..data.moving_digits import Geometry
from ..diffusion import guidance_at, skipping_grid
from ..errors import VideoCMError
from ..models.denoisers import DenoiserAdapter, GuidanceEmbeddedDenoiser, unwrapped
from ..models.folder import STORE_DTYPES, cast_for_storage, load_model, save_model
from ..models.image_condition import INPUT_KEYS, clip_first_frame_inputs, image_inputs
from ..models.info import ConsistencyInfo, GuidanceInfo, ModelInfo
from ..models.student import (LORA_FOLDER, add_lora, has_lora, merged_network_state, new_guidance_embedding, save_lora,
                              without_dropout)
from ..models.text_encoder import PromptCache, TextEncoder
from ..models.video_model import VideoModel
from ..pipeline import VideoPipeline
from .batches import (CachedLatentBatches, LatentBatches, PromptBatches, ensure_latent_cache, generate_prompt_cache,
                      prompt_cache_fingerprint, read_prompts)
from .consistency import ConsistencyTerms, draw_consistency_batch, expanded
from .matching import NO_REAL_CLIPS, DistributionMatching
from .trainer import Monitor, Step, TrainConfig, TrainTask

PROMPTS_PREFIX = "prompts:"


@dataclass
class TeacherSettings:
    """The frozen teacher: which, its ODE grid, and where and in what precision its weights live."""

    SECTION = "teacher"

    teacher: str = "models/teacher-vp"  # teacher: a videocm teacher folder or a diffusers pipeline folder
    grid_points: Count = 50  # N: points of the teacher's ODE grid the student learns to jump along
    teacher_dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # the frozen teacher's weights: auto = bfloat16 on a GPU, float32 on the CPU
    offload_encoders: bool = True  # after a latent cache is read: text encoders and VAE to the CPU (frees GPU memory)
    teacher_offload: bool = False  # keep the frozen teacher in CPU memory, each block copied in for its forward


@dataclass
class DataSettings:
    """The training clips and captions: MovingDigits (default), your videos (a folder, encoded once into a latent
    cache, or a `videocm encode` cache) or a prompt list; the clip shape of a diffusers pipeline teacher."""

    SECTION = "data"

    data: str | None = None  # your videos: a video folder or a `videocm encode` cache (default: MovingDigits)
    cache: ReusedFolder | None = None  # latent cache folder for --data videos (default: OUT/latent-cache)
    frame_stride: Natural = 0  # frames picked from your videos: 0 = spread over the clip, s = every s-th from the start
    latent_pool: Count = 4096  # MovingDigits clips encoded once and drawn from
    prompt_cache: str | None = None  # MiniLM states from `videocm encode-captions` instead of running MiniLM
    caption_dropout: Fraction = 0.0  # share of captions replaced by "" in training
    frames: Count | None = None  # diffusers pipeline teachers: frames to distil at (default: the pipeline's)
    height: Count | None = None  # diffusers pipeline teachers: height in pixels
    width: Count | None = None  # diffusers pipeline teachers: width in pixels
    max_sequence_length: Count | None = None  # diffusers pipeline teachers: text tokens
    prompt_samples: Count = 4  # --data prompts:FILE for lcm and dcm: teacher clips generated per prompt
    prompt_teacher_steps: Count = 50  # --data prompts:FILE for lcm and dcm: the teacher's sampling steps


@dataclass
class StudentSettings:
    """The student: how it starts from the teacher, its boundary scalings (every method's student maps to the clean
    end with them), and how it is saved."""

    SECTION = "student"

    sigma_data: Positive = 0.5  # sigma_data of the boundary scalings c_skip, c_out
    timestep_scaling: Positive = 10.0  # timestep scaling of c_skip, c_out (as LCMScheduler)
    gradient_checkpointing: bool = False  # recompute the student's block activations in the backward (less memory)
    student_dropout: bool = False  # keep the network's dropout layers in the student (off: deterministic steps)
    student_init: Literal["auto", "high", "low"] = "auto"  # a two-expert teacher (Wan 2.2): the expert the student starts from: high, low, auto
    lora_targets: list[str] = field(default_factory=list)  # LoRA targets of a LoRA student or fake score (empty: attention and feed-forward projections)
    default_steps: Count = 4  # the student's default sampling steps (written to its folder)
    store_dtype: Literal["float16", "bfloat16", "float32"] = "float16"  # dtype the student is saved in (float16, bfloat16 or float32)


@dataclass
class GuidanceSettings:
    """Classifier-free guidance folded into the targets (diffusers' scale: 1 = none)."""

    SECTION = "guidance"

    guidance: NonNegative | None = None  # teacher guidance in the target (diffusers' scale, 1: none; None: the teacher's)
    guidance_2: NonNegative | None = None  # Wan 2.2 two-expert teachers: the guidance where the low-noise transformer runs (WanPipeline's guidance_scale_2; None: --guidance)
    negative_prompt: str = ""  # the teacher's unconditional input for guidance


@dataclass
class MatchingSettings:
    """Distribution matching (DMD2): the term's weight (added to LCM and DCM's detail stage, rCM-style; DMD's
    whole loss), its fake score and GAN head."""

    SECTION = "matching"

    dmd_weight: NonNegative = 0.0  # weight of the distribution-matching term added to the loss (0: off; --method dmd: the term alone)
    dmd_timestep_range: list[Fraction] = field(default_factory=lambda: [0.02, 0.98])  # grid fractions the term re-noises to
    fake_updates: Natural = 5  # fake score optimiser steps per generator step (DMD2's two time-scale rule)
    fake_lr: Positive = 1e-4  # the fake score's learning rate
    fake_score: Literal["full", "lora"] = "full"  # the fake score: a full copy of the teacher's network or LoRA on one (lora)
    fake_lora_rank: Count = 16  # --fake-score lora: LoRA rank
    fake_lora_alpha: Positive = 16.0  # --fake-score lora: LoRA alpha
    dmd_gan_weight: NonNegative = 0.0  # DMD2's GAN term: the generator's weight on a head reading the fake score's bottleneck, real clips against generated (0: off; DMD2 used 3e-3 to 5e-3; needs clips, not a prompt list)
    dmd_gan_classifier_weight: NonNegative = 0.01  # the head's classifier loss in each fake-score update (DMD2's 1e-2)


@dataclass
class DistillConfig(MatchingSettings, GuidanceSettings, StudentSettings, DataSettings, TeacherSettings, TrainConfig):
    """What every ``videocm distill`` method shares: the run (the trainer's settings), teacher, data, student,
    guidance and matching groups; a method's config adds its own section (and the consistency or student-kind
    groups it takes). Every field is a ``--key value`` flag."""

    SECTION = "run"

    method: Literal["lcm", "dcm", "dmd", "scm", "rcm"] = "lcm"  # lcm (VideoLCM), dcm (dual-expert consistency model), dmd (DMD2), scm (continuous-time consistency, TrigFlow) or rcm (sCM with score distillation): picks the config
    recipe: str = "auto"  # the recipe the run starts from: auto (picked from the teacher folder), a name (videocm recipes) or none (the built-in defaults)
    preflight: Literal["auto", "true", "false"] = "auto"  # videocm check before training: auto = a new one-process run of a teacher a real layout's recipe matched
    out: RunFolder = "outputs/lcm"
    steps: Count = 2000
    batch_size: Count = 16
    lr: Positive = 1e-4
    warmup_steps: Natural = 50
    min_lr_ratio: Fraction = 0.1
    ema_decay: Decay = 0.0  # the trainer's sampling EMA (off: the consistency target, --target, plays that part)
    sample_every: Natural = 500
    sample_clips: Count = 48  # clips of each monitoring sample
    sample_steps: Count = 4  # steps of the monitoring samples


@dataclass
class ConsistencySettings:
    """The consistency step's skip, target network and distance (the methods that take it: LCM, DCM)."""

    SECTION = "consistency"

    skip: Count = 1  # k, in grid steps
    target: Literal["ema", "online"] = "ema"  # the consistency target network: an EMA of the student (VideoLCM) or the online student (DCM)
    target_decay: Decay = 0.95  # EMA decay of the "ema" target network
    loss: Literal["huber", "l2"] = "huber"  # pseudo-Huber or L2
    huber_c: Positive = 0.001  # the pseudo-Huber loss's c


@dataclass
class StudentKindSettings:
    """A student that is the teacher's network fully fine-tuned or with LoRA (LCM, DMD; DCM's experts have their
    own settings)."""

    SECTION = "student"

    student: Literal["full", "lora"] = "full"  # full fine-tune or LoRA
    lora_rank: Count = 16  # --student lora: LoRA rank
    lora_alpha: Positive = 16.0  # --student lora: LoRA alpha



def check_config(config: DistillConfig, teacher_info: ModelInfo) -> None:
    """One-line errors for shared settings that cannot work, before anything is trained."""
    if not 1 <= config.default_steps <= config.grid_points:
        raise VideoCMError(f"--default-steps must be between 1 and --grid-points, got {config.default_steps}")
    if teacher_info.kind != "teacher":
        raise VideoCMError(f"{config.teacher} is a {teacher_info.kind} folder; --teacher needs a teacher")


def refuse_two_stage(folder, what: str) -> None:
    """A one-line error, before anything loads, for a two-expert teacher where ``what`` does not take one yet."""
    from ..models.pipelines import is_pipeline_folder, read_model_index

    if is_pipeline_folder(folder) and (read_model_index(folder)[0].get("transformer_2") or [None])[0]:
        raise VideoCMError(f"{folder} is a Wan 2.2 two-expert pipeline: {what} does not take one yet (distillation "
                           f"and `videocm sample` do)")


def load_teacher(config, device):
    """The teacher of a distillation config: a videocm folder or a diffusers pipeline folder."""
    dtype = resolve_teacher_dtype(config.teacher_dtype, device)
    shape = VideoShape(config.frames, config.height, config.width).override()
    return load_model(config.teacher, device, shape, config.max_sequence_length, dtype)


def teacher_text(teacher, prompt_cache: str | None = None, device="cpu"):
    """The teacher's text encoder: its diffusers pipeline's, else a MiniLM prompt cache or MiniLM itself."""
    if teacher.text is not None:
        return teacher.text
    if prompt_cache:
        return PromptCache(prompt_cache)
    return TextEncoder(max_length=teacher.info.text_length, device=device)


def training_batches(config, teacher, text, device, denoiser=None, guidance: float | None = None,
                     prompts_only: bool = False):
    """Latent batches of the run: MovingDigits clips, the user's videos through a latent cache, or a prompt list
    (``prompts:FILE``: the prompts alone with ``prompts_only``, else clips the teacher generates for them once, with
    ``denoiser`` at ``guidance``, into the latent cache)."""
    if config.data is not None and str(config.data).startswith(PROMPTS_PREFIX):
        return prompt_batches(config, teacher, text, device, denoiser, guidance, prompts_only)
    if config.data is None:
        if teacher.info.from_pipeline:
            raise VideoCMError(f"{config.teacher} is a diffusers pipeline: give your videos with --data DIR "
                               f"(a folder of videos with captions, or a cache from `videocm encode`)")
        video = teacher.info.video_shape or [8, 32, 32]
        return LatentBatches(teacher.vae, Geometry(int(video[0]), int(video[1])), text, config.seed,
                             config.caption_dropout, config.latent_pool, device)
    from accelerate import PartialState

    with PartialState(cpu=config.cpu).main_process_first():  # one process encodes, the others then read the cache
        cache = ensure_latent_cache(teacher, text, Path(config.data),
                                    config.cache or str(Path(config.out) / "latent-cache"), config.frame_stride, device)
    return CachedLatentBatches(cache, text, config.caption_dropout)


def prompt_batches(config, teacher, text, device, denoiser, guidance: float, prompts_only: bool = False):
    """``--data prompts:FILE``: text states of the prompts (``prompts_only``), or a latent cache of the teacher's
    own clips for them (``OUT/latent-cache`` or ``--cache``; resumed if a killed run left it half-written)."""
    from accelerate import PartialState

    from ..data.latent_cache import LatentCache, cache_status

    file = Path(str(config.data)[len(PROMPTS_PREFIX):])
    if teacher.info.image_condition:
        raise VideoCMError(f"{config.teacher} is an image-to-video teacher, which needs each clip's first frame: "
                           f"give your videos with --data DIR instead of a prompt list")
    prompts = read_prompts(file)
    if prompts_only:
        return PromptBatches(prompts, text, config.caption_dropout)
    cache = Path(config.cache or Path(config.out) / "latent-cache")
    fingerprint = prompt_cache_fingerprint(teacher, file, config.prompt_samples, config.prompt_teacher_steps,
                                           guidance, config.guidance_2, config.negative_prompt, config.seed)
    with PartialState(cpu=config.cpu).main_process_first():  # one process generates, the others then read
        if cache_status(cache, fingerprint) != "complete":
            generate_prompt_cache(teacher, denoiser, text, file, cache, config.prompt_samples,
                                  config.prompt_teacher_steps, guidance, config.guidance_2, config.negative_prompt,
                                  config.seed, device)
    return CachedLatentBatches(LatentCache(cache), text, config.caption_dropout)


def offload_encoders(teacher) -> None:
    """Move a pipeline teacher's text encoders and its VAE to the CPU (a later encode or decode runs there)."""
    pipeline = getattr(teacher.text, "pipeline", None)
    for name in ("text_encoder", "text_encoder_2"):
        module = getattr(pipeline, name, None)
        if module is not None:
            module.to("cpu")
    teacher.vae.to("cpu")


TEACHER_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_teacher_dtype(name: str, device) -> torch.dtype:
    """``auto``: bfloat16 on a GPU (half the memory and bandwidth of the frozen teacher), float32 on the CPU."""
    if name == "auto":
        return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32
    return TEACHER_DTYPES[name]


def teacher_guidance(config: DistillConfig, teacher: VideoModel) -> float:
    """The guidance weight distilled into the student: ``--guidance``, else the teacher's default."""
    return float(teacher.default_guidance if config.guidance is None else config.guidance)


def student_info(config: DistillConfig, teacher: ModelInfo, guidance: float, consistency: ConsistencyInfo,
                 student: str = "full", guidance_range: list[float] | tuple = (), phased=None) -> ModelInfo:
    """The description of a student of ``teacher`` distilled with ``config`` at ``guidance``: its consistency
    parameterisation and target, its kind (full or LoRA), a guidance embedding's range (``guidance_range``) and a
    DCM student's experts (``phased``)."""
    c = config
    if guidance_range:
        default = float(min(max(guidance, guidance_range[0]), guidance_range[1]))
        section = GuidanceInfo("embedded", range=list(guidance_range), default=default)
    else:
        section = GuidanceInfo("fixed", scale=guidance,
                               scale_2=None if c.guidance_2 is None else float(c.guidance_2))
        default = guidance
    return teacher.replace(
        kind="student", method=c.method, default_steps=c.default_steps, default_guidance=default,
        guidance=section, negative_prompt=c.negative_prompt, consistency=consistency, student=student,
        teacher=str(c.teacher), phased=phased,
        # the scale the network itself was given while distilling
        embedded_guidance=guidance if teacher.embedded_guidance is not None else None)


class TargetNetwork:
    """The consistency target: an EMA of the student's weights (checkpointed with the run) or the student itself.

    The EMA of a student with frozen parts (a LoRA student, DCM's detail expert) holds only the trainable weights
    and runs the student's own modules with them swapped in, so the frozen base is shared, not copied; a fully
    trainable student's EMA, and any under ``share_frozen=False`` (``--parallel fsdp``, which shards it), is a whole
    copy of the network."""

    def __init__(self, student: DenoiserAdapter, mode: str, decay: float, share_frozen: bool = True) -> None:
        self.mode, self.decay = mode, decay
        self.network: DenoiserAdapter | None = None
        self.student: DenoiserAdapter | None = None  # the student whose trainable weights the EMA swaps
        self.names: list[str] = []
        self.parameters: list[torch.nn.Parameter] = []
        self.weights: list[torch.Tensor] = []
        if mode != "ema":
            return
        trainable = [(name, p) for name, p in student.named_parameters() if p.requires_grad]
        if share_frozen and len(trainable) < len(list(student.parameters())):
            self.student = student
            self.names = [name for name, _ in trainable]
            self.parameters = [p for _, p in trainable]
            self.weights = [p.detach().clone() for p in self.parameters]
        else:
            # the target is a fixed function of its input: no dropout, whatever the student does
            self.network = copy.deepcopy(student).requires_grad_(False).eval()

    @property
    def active(self) -> bool:
        """An EMA target (checkpointed), not the online student."""
        return self.network is not None or self.student is not None

    def __call__(self, student: DenoiserAdapter):
        if self.network is not None:
            return self.network
        if self.student is not None:
            return _SwappedIn(self)
        return student

    @contextlib.contextmanager
    def swapped(self):
        """The student with the EMA weights in place of its trainable ones (in eval mode), restored on exit. The
        swap rebinds each parameter's data, so a graph the student built before stays valid for its backward."""
        live = [p.data for p in self.parameters]
        training = self.student.training
        for parameter, weight in zip(self.parameters, self.weights):
            parameter.data = weight
        self.student.eval()
        try:
            yield self.student
        finally:
            for parameter, value in zip(self.parameters, live):
                parameter.data = value
            self.student.train(training)

    @torch.no_grad()
    def update(self, student: DenoiserAdapter) -> None:
        if self.network is not None:
            for target, online in zip(self.network.parameters(), student.parameters()):
                target.lerp_(online.detach().to(target.dtype), 1 - self.decay)
        for weight, online in zip(self.weights, self.parameters):
            weight.lerp_(online.detach().to(weight.dtype), 1 - self.decay)

    def state_dict(self) -> dict:
        if self.network is not None:
            return self.network.state_dict()
        return dict(zip(self.names, self.weights))

    def load_state_dict(self, state: dict) -> None:
        if self.network is not None:
            self.network.load_state_dict(state)
            return
        missing = [name for name in self.names if name not in state]
        if missing:
            raise VideoCMError(f"the checkpoint's target network lacks {len(missing)} of the student's trainable "
                               f"weights (e.g. {missing[0]}); it was written for another student")
        for name, weight in zip(self.names, self.weights):  # a whole network's state (older runs): its trainable part
            weight.copy_(state[name].to(weight.dtype))


class _SwappedIn:
    """Calls the student with a :class:`TargetNetwork`'s EMA weights swapped in."""

    def __init__(self, target: TargetNetwork) -> None:
        self.target = target

    def __call__(self, *args, **kwargs):
        with self.target.swapped() as student:
            return student(*args, **kwargs)


def new_student(teacher: DenoiserAdapter, config: DistillConfig, device, kind: str = "full",
                guidance_range: list[float] | tuple = (), lora: tuple[int, float] = (16, 16.0)):
    """The teacher's network, fully trainable or with LoRA (``kind``; ``lora``: its rank and alpha), with a
    guidance embedding when the student takes a ``guidance_range``. A LoRA student shares the teacher's frozen
    weights (:func:`shares_frozen`)."""
    share_base = shares_frozen(config)
    if kind == "lora" and share_base:
        # the frozen base is the teacher's own weights (shared, not copied; in --teacher-dtype once the teacher is
        # cast, as diffusers' LoRA scripts keep it), the LoRA weights float32
        student = copy.deepcopy(teacher, {id(p): p for p in teacher.parameters()}).train()
    else:
        # float32 master weights, also when the teacher was loaded in bfloat16 (on a GPU)
        student = copy.deepcopy(teacher).float().requires_grad_(True).train()
    if not config.student_dropout:
        without_dropout(student)
    if guidance_range:
        student = GuidanceEmbeddedDenoiser(student, new_guidance_embedding(student).to(device))
    if config.gradient_checkpointing:
        student.network.enable_gradient_checkpointing()
    if kind == "lora":
        add_lora(student.spec, student.network, lora[0], lora[1], config.lora_targets)
        if isinstance(student, GuidanceEmbeddedDenoiser):
            student.guidance_embedding.requires_grad_(True)
    return student


def shares_frozen(config: DistillConfig) -> bool:
    """Whether frozen weights are shared between the networks of a run (a LoRA student's base and the teacher's; an
    EMA target's frozen part and the student's): not when the teacher is offloaded block by block (its weights
    move) or sharded (each network is sharded on its own)."""
    return not config.teacher_offload and config.parallel != "fsdp"


def merged_student(teacher_network, trained, dtype: torch.dtype | None = None):
    """A student as its folder holds it: a network of the teacher's layout holding ``trained``'s weights (LoRA
    merged in float32), and its guidance embedding when it has one. Weights that do not change are the same
    tensors (nothing is copied: cast or move the result's weights, which rebinds them, rather than change them in
    place). ``dtype``: the network's weights in it (a LoRA student's merged layer by layer)."""
    base = unwrapped(trained)
    state = merged_network_state(base.network, dtype) if has_lora(base.network) else base.network.state_dict()
    # the teacher's modules without copies of its weights, then every weight rebound to ``state``'s
    network = copy.deepcopy(teacher_network, {id(p): p for p in teacher_network.parameters()})
    network.load_state_dict(state, assign=True)
    saved = base.of(network)
    if isinstance(trained, GuidanceEmbeddedDenoiser):
        return GuidanceEmbeddedDenoiser(saved, copy.deepcopy(trained.guidance_embedding))
    return saved


class TeacherContext:
    """What every consistency method of one teacher shares: the frozen teacher (guidance embedded where the
    network takes it), its VAE, schedule and skipping grid, the guidance weight, the text encoder, the training
    batches and the negative prompt's states, and the draws of a step from them."""

    def __init__(self, config: DistillConfig, device, prompts_only: bool = False,
                 guidance_range: list[float] | tuple = ()) -> None:
        self.config, self.guidance_range = config, list(guidance_range)
        teacher = load_teacher(config, device)
        check_config(config, teacher.info)
        self.teacher_model = teacher
        self.teacher_info = teacher.info
        self.vae, self.schedule = teacher.vae, teacher.schedule
        self.grid = skipping_grid(self.schedule, config.grid_points)
        self.guidance = teacher_guidance(config, teacher)
        denoiser = teacher.denoiser.eval().requires_grad_(False)
        if denoiser.embeds_guidance:  # HunyuanVideo: the scale goes into the network, no second forward
            if self.guidance_range:
                raise VideoCMError("this teacher embeds guidance in its network; --guidance-range is not supported")
            denoiser = denoiser.with_embedded_guidance(self.guidance)
        self.teacher = denoiser
        self.guidance_2 = config.guidance_2
        if self.guidance_2 is not None:
            if getattr(denoiser, "boundary", None) is None:
                raise VideoCMError(f"--guidance-2 is the low-noise expert's guidance of a Wan 2.2 two-expert teacher; "
                                   f"{config.teacher} is not one: leave it out")
            if self.guidance_range:
                raise VideoCMError("give --guidance-2 or --guidance-range, not both (a guidance embedding takes one "
                                   "scale for every timestep)")
        self.text = teacher_text(teacher, config.prompt_cache)
        self.batches = training_batches(config, teacher, self.text, device, self.teacher, self.guidance,
                                        prompts_only)
        self.negative = {k: v.to(device) for k, v in self.text.encode([config.negative_prompt]).items()}
        self.teacher_dtype = resolve_teacher_dtype(config.teacher_dtype, device)
        if config.offload_encoders and isinstance(self.batches, CachedLatentBatches):
            offload_encoders(teacher)  # the cache holds latents and text states: neither is needed on the GPU

    def cast_teacher(self) -> None:
        """The frozen teacher in ``teacher_dtype`` (after students copied it in full precision)."""
        if self.teacher_dtype != torch.float32:
            for expert in getattr(self.teacher, "experts", lambda: [self.teacher])():
                cast_for_storage(expert.network, self.teacher_dtype)

    def student_base(self) -> DenoiserAdapter:
        """What the student is copied from: the teacher, or of a two-expert teacher the expert ``--student-init``
        names (``auto``: the one that owns more of the student's grid points)."""
        experts = getattr(self.teacher, "experts", None)
        if experts is None:
            return self.teacher
        choice = self.config.student_init
        if choice == "auto":
            high = int((self.schedule.model_timestep(self.grid) >= self.teacher.boundary).sum())
            choice = "high" if 2 * high > len(self.grid) else "low"
        return experts()[0 if choice == "high" else 1]

    def unconditional(self, text: dict, batch: int) -> dict:
        """The teacher's unconditional inputs for ``batch`` clips of conditioning ``text``: the negative prompt's
        states, with each clip's own first-frame inputs where an image-to-video teacher takes them."""
        negative = expanded(self.negative, batch)
        negative.update({k: text[k] for k in INPUT_KEYS if k in text})
        return negative

    def guidance_weights(self, n: int, rng: np.random.Generator) -> torch.Tensor:
        """The classifier-free guidance scale of each clip (1 where the teacher embeds guidance itself)."""
        if self.guidance_range:
            low, high = self.guidance_range
            return torch.from_numpy(rng.uniform(low, high, size=n)).float()
        return torch.full((n,), 1.0 if self.teacher.embeds_guidance else self.guidance)

    def draw(self, step: Step) -> tuple[torch.Tensor, dict]:
        """This micro-step's rows of the step's global batch: clip latents ``(B, C, T, h, w)`` and the teacher's
        conditional inputs (text states; each clip's own first-frame inputs for an image-to-video teacher)."""
        latents, text, _ = self.batches.draw(step.batch_size, step.rng, step.shard, step.device)
        if self.teacher_info.image_condition:  # image to video: each clip's own first frame conditions it
            if not any(key in text for key in INPUT_KEYS):  # a cache without them: CogVideoX's from the latents
                if self.teacher_info.image_condition != "channels":
                    raise VideoCMError("this latent cache holds no first-frame conditions, which an image-to-video "
                                       "teacher needs: encode the videos again (videocm encode)")
                text = {**text, **clip_first_frame_inputs(latents)}
        return latents, text

    def consistency_batch(self, step: Step, segment: tuple[int, int], skip: int, latents: torch.Tensor
                          ) -> tuple[torch.Tensor, int, torch.Tensor, torch.Tensor]:
        """Grid indices ``n`` over ``segment``, the skip ``k`` (``skip`` clamped to the segment), each clip's guidance weight at ``t_{n+k}`` (the
        guidance rule of :func:`diffusion.guidance_at`) and the noise: :func:`draw_consistency_batch` on the
        step's streams."""
        index, skip, w, noise = draw_consistency_batch(step.rng, step.generator, step.batch_size, step.rows, segment,
                                                       skip, latents.shape[1:], step.device, self.guidance_weights)
        return index, skip, self.guidance_at(self.grid[index + skip], w), noise

    def guidance_at(self, t: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        """Each clip's guidance weight at grid time ``t`` ``(B,)``: ``weights``, or ``--guidance-2`` where a Wan
        2.2 two-expert teacher's low-noise network runs."""
        if self.guidance_2 is None:
            return weights
        return guidance_at(self.schedule.model_timestep(t), weights, self.guidance_2, self.teacher.boundary)

    def feature_channels(self, denoiser, tap) -> list[int]:
        """The channels of each feature map ``tap`` collects from ``denoiser`` (a probe forward on zeros; an
        image-to-video network gets a black first frame in place of a clip's)."""
        device = next(denoiser.parameters()).device
        shape = (1, *self.teacher_info.latent_shape)
        probe = dict(self.negative)
        if self.teacher_info.image_condition:
            _, height, width = self.teacher_info.video_shape
            probe.update(image_inputs(self.teacher_model, [np.zeros((height, width, 3), np.uint8)], device=device))
        with torch.no_grad(), tap(shape) as tapped:
            denoiser(torch.zeros(shape, device=device), self.schedule.model_timestep(self.grid[1:2]).to(device),
                     **probe)
        return [f.shape[1] for f in tapped.features]

    def sample_images(self) -> list[np.ndarray] | None:
        """An image-to-video student's monitoring samples start from the first frames of the training videos of
        the sample prompts; None for a text-to-video one."""
        if not self.teacher_info.image_condition:
            return None
        return self.batches.sample_first_frames()

    def monitoring_pipeline(self, denoiser, info: ModelInfo, experts=None) -> VideoPipeline:
        model = VideoModel(denoiser, self.vae, self.schedule, info, Path(self.config.out), experts=experts)
        return VideoPipeline(model, next(denoiser.parameters()).device, text=self.text)


def training_device(config: TrainConfig, device=None) -> torch.device:
    """``device``, else the GPU when there is one and ``--cpu`` is off, else the CPU."""
    if config.cpu:
        return torch.device("cpu")
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


class DistillationMethod(TrainTask):
    """A method on a teacher: the teacher context, the student (``model``, set by the method), its consistency
    target network (``target_network``; None for a method without one) and the distribution-matching term
    (``matching``; None without ``--dmd-weight``). The trainer's hooks for these live here; a method writes
    :meth:`loss`, and the folders it saves and samples."""

    guards_collapse = True  # a student starts from its teacher, so its first sample check is already a good one
    prompts_only = False  # True: the method reads prompts alone, so a prompt list is used as it is (no teacher clips)

    def __init__(self, config: DistillConfig, device: torch.device) -> None:
        check_values(config)  # a config built in Python, not parsed from flags
        self.config = config
        self.teacher_context = TeacherContext(config, device, self.prompts_only, self.guidance_range())
        self.latent_shape = tuple(self.teacher_context.teacher_info.latent_shape)  # a clip's latents (C, T, H, W)
        self.target_network: TargetNetwork | None = None
        self.matching: DistributionMatching | None = None

    def guidance_range(self) -> list[float]:
        """``[w_min, w_max]`` of a student that takes its guidance as an input (an embedding); empty: one weight
        folded in."""
        return []

    def student_kind(self) -> str:
        """``full`` or ``lora``: what the student folder records."""
        return "full"

    def consistency_info(self) -> ConsistencyInfo:
        """The consistency parameterisation and target a student folder records."""
        c = self.config
        return ConsistencyInfo(c.grid_points, c.skip, c.sigma_data, c.timestep_scaling, c.target)

    def student_info(self, phased=None) -> ModelInfo:
        """The description of this method's student (``phased``: a DCM student's experts)."""
        context = self.teacher_context
        return student_info(self.config, context.teacher_info, context.guidance, self.consistency_info(),
                            self.student_kind(), self.guidance_range(), phased)

    def new_matching(self, device) -> DistributionMatching | None:
        """The distribution-matching term of a run with ``--dmd-weight`` above 0 (None without); it copies the
        teacher, so make it before :meth:`TeacherContext.cast_teacher`."""
        config, context = self.config, self.teacher_context
        if config.dmd_weight <= 0:
            return None
        if config.dmd_gan_weight > 0 and isinstance(context.batches, PromptBatches):
            raise VideoCMError(NO_REAL_CLIPS)
        return DistributionMatching(context.teacher, context.schedule, context.grid, config, device,
                                    context.guidance_2, context.feature_channels, shares_frozen(config))

    def with_matching(self, terms: ConsistencyTerms, guidance: torch.Tensor, text: dict, step: Step,
                      real: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
        """The consistency loss of ``terms`` plus ``--dmd-weight`` times the distribution-matching term of its
        clean estimate (``terms.prediction``), the fake score updated on it first (and the GAN term on ``real``,
        the batch's clip latents, with ``--dmd-gan-weight``); the figures to log. ``guidance``: each clip's
        teacher guidance weight."""
        if self.matching is None:
            return terms.loss, {}
        uncond = self.teacher_context.unconditional(text, len(terms.prediction))
        term, logs = self.matching.step(terms.prediction, text, uncond, guidance, step.rng, step.generator,
                                        step.batch_size, step.rows, real)
        return terms.loss + term, {"consistency": float(terms.loss.detach()), **logs}

    # ---- the trainer's hooks ----------------------------------------------------------------------------------

    def prepare(self, engine) -> None:
        """A fake score network (``--dmd-weight``) joins the run."""
        if self.matching is not None:
            self.matching.prepare(engine)

    def frozen_modules(self) -> dict:
        """The networks the trainer may shard beside the student."""
        target = self.target_network.network if self.target_network is not None else None
        return {"teacher": self.teacher_context.teacher, "target": target}

    def checkpoint_state(self) -> dict:
        if self.target_network is None or not self.target_network.active:
            return {}
        return {"target": self.target_network}

    def after_step(self, model) -> None:
        if self.target_network is not None:
            self.target_network.update(model)

    @contextlib.contextmanager
    def trained(self, model):
        """The weights a student folder holds, for the ``with`` block: the EMA target when there is one (its own
        network, or the student with the EMA weights swapped in), else the online student."""
        target = self.target_network
        if target is not None and target.network is not None:
            yield target.network
        elif target is not None and target.student is not None:
            with target.swapped():
                yield model
        else:
            yield model

    # ---- a single-network student's samples and folder (DCM's stages write their own) ---------------------

    def sample(self, model, step, out, monitor: Monitor):
        context = self.teacher_context
        device = next(model.parameters()).device
        with self.trained(model) as trained:
            student = merged_student(context.teacher.network, trained).to(device).eval()
        pipeline = context.monitoring_pipeline(student, self.student_info())
        return monitor.samples(pipeline, self.config.sample_clips, self.config.sample_steps, None, out, step,
                               context.batches.sample_prompts(), context.sample_images())

    def save(self, model, out):
        """The student folder: the trained network (LoRA merged) in diffusers format, its VAE and description, and
        the LoRA alone beside it."""
        out, context = Path(out), self.teacher_context
        dtype = STORE_DTYPES[self.config.store_dtype]
        with self.trained(model) as trained:
            student = merged_student(context.teacher.network, trained, dtype)
            cast_for_storage(student.network, dtype)  # rebinds the weights not yet in it: nothing changes in place
            source = unwrapped(trained)
            if has_lora(source.network):
                save_lora(source.network, out / LORA_FOLDER)
        save_model(out, student, context.vae.cpu(), self.student_info())
