"""DCM: dual-expert consistency distillation (Lv et al. 2025), generalised to K phases.

The skipping grid is split at inner boundaries (:mod:`videocm.diffusion.phased`); by default at DCM's noise level
(``--split sigma``: flow sigma 0.975, placed on any teacher's schedule by log-SNR; ``--split share`` splits at a
share of the grid instead). Each expert learns the phased consistency map of its segment, from any point of it to
the segment's low end. Training runs one stage per expert, each a full run of the shared trainer
(``OUT/stages/expert-J-NAME``, own checkpoints, ``--resume`` continues the first unfinished stage):

1. *Semantic expert* (highest-noise segment): the teacher's network, fully fine-tuned, with the consistency loss
   plus the **temporal coherence loss** (MSE between the student's and the target's latent frame differences at
   stride ``d``).
2. *Detail expert(s)* (the lower segments): the semantic expert frozen and shared, a peft LoRA and the expert's own
   copies of the timestep/condition embedding and output norm/projection (:func:`models.experts.tied_expert`),
   with the consistency loss plus a **GAN loss** (the consistency target, "real", and the student's prediction,
   "fake", re-noised with shared noise to a random time of the expert's segment; the frozen teacher reads both;
   heads on every s-th block's features give a logit per token (DCM's) or per frame; hinge loss; the
   discriminator has its own AdamW and steps after the generator has read it, as DCM's) and a
   **feature-matching loss** (MSE between the teacher's features on fake and on real, read through the
   teacher's output layer where the family has one, as DCM's; from the same teacher forward).

Target: the online expert by default, as DCM's authors (``--target online``); the MovingDigits recipe uses an EMA
of the expert (``--target ema``, decay ``--target-decay``), because the online target collapsed our VP LCM run
(docs/dcm.md). The defaults are DCM's; docs/dcm.md lists them beside the MovingDigits recipe's. The student folder
is the semantic network (loads like a teacher) plus ``experts/expert-J`` per LoRA expert; ``videocm sample --steps
N`` splits N between experts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import torch
from torch import nn

from ..config import Count, Decay, Fraction, Natural, NonNegative, Positive, Range, RunFolder, is_run_folder
from ..diffusion import skipping_grid
from ..diffusion.phased import segment_bounds
from ..diffusion.sampling import concat_conditioning
from ..errors import VideoCMError
from ..models.denoisers import DenoiserAdapter
from ..models.experts import EXPERTS_FOLDER, FeatureTap, feature_blocks, load_expert, save_expert, tied_expert
from ..models.folder import STORE_DTYPES, cast_for_storage, load_model, save_model
from ..models.info import ConsistencyInfo, ModelInfo, PhasedInfo, is_model_folder
from ..models.student import without_dropout
from .consistency import consistency_step
from .core import (ConsistencySettings, DistillationMethod, DistillConfig, TargetNetwork, load_teacher, new_student,
                   shares_frozen, student_info, teacher_guidance, training_device)
from .discriminator import (FeatureDiscriminator, feature_matching_loss, hinge_discriminator_loss, hinge_generator_loss,
                            real_gradient_penalty, with_frozen_weights)
from ..runs import run_folder
from .checkpoints import check_resume
from .trainer import Monitor, Step, on_cpu, run_and_summarise, say_when_ready

DONE = "stage_done.json"
LogSNR = Annotated[float, Range(-30, 30)]  # log(alpha^2 / sigma^2): float32 schedules end well inside this
# what DCM run folders of earlier versions recorded as --steps and --lr (unused there too): resumable as they are
LEGACY_STEPS, LEGACY_LR = 2000, 1e-4


@dataclass
class DCMConfig(ConsistencySettings, DistillConfig):
    """``videocm distill --method dcm``: DCM's own settings: the split, the two stages, temporal coherence, the detail
    expert and its discriminator. Every field is a ``--key value`` flag. The defaults are the DCM authors' (github
    Vchitect/DCM, the Wan scripts; ``docs/dcm.md`` names each); the ``moving-digits`` recipe holds the values our
    MovingDigits runs use where they differ, each with the reason beside DCM's value."""

    SECTION = "dcm"
    # what a run folder written before a setting existed used (its config.yaml lacks the key): a resume keeps it
    OLDER_RUNS = {"split": "share", "disc_head": "frame", "gan_generator": "linear", "feature_matching_on": "blocks",
                  "disc_weight_decay": 0.0, "disc_update": "before", "disc_max_grad_norm": 0.0}

    method: Literal["lcm", "dcm", "dmd", "scm", "rcm"] = "dcm"  # dcm: this config (lcm, dmd, scm, rcm: theirs)
    out: RunFolder = "outputs/dcm"
    target: Literal["ema", "online"] = "online"  # DCM's: the online expert (--use_ema not passed); the MovingDigits recipe uses ema (the online target collapsed our VP LCM run)
    phases: Count = 2  # K segments, one expert each (1 = LCM with phased bookkeeping, 2 = DCM)
    boundaries: list[int] = field(default_factory=list)  # K-1 inner grid indices; empty: the default split
    boundary_timesteps: list[float] = field(default_factory=list)  # or in the schedule's time (VP step, flow sigma)
    split: Literal["sigma", "share"] = "sigma"  # the default split (2 phases): at noise level --boundary-sigma (DCM's), or the top --semantic-share of the grid
    boundary_sigma: Fraction = 0.975  # DCM's split: flow noise level 0.975 (grid index 35 of 50 at shift 17), placed on the teacher's schedule at the same log-SNR
    boundary_logsnr: LogSNR | None = None  # or the split's log-SNR, log(alpha^2 / sigma^2) (given: replaces --boundary-sigma)
    semantic_share: Fraction = 0.3  # --split share: the semantic expert owns this top fraction of the grid
    # stages: steps, learning rate and wall-time cap of each (minutes 0 = no cap)
    steps: Natural = 0  # not used by DCM (each stage has its own schedule): --semantic-steps, --detail-steps
    lr: NonNegative = 0.0  # not used by DCM: --semantic-lr, --detail-lr
    semantic_steps: Count = 2000  # the semantic expert's steps (its schedule)
    detail_steps: Natural = 1200  # 0: no detail expert (the semantic network serves every segment)
    semantic_lr: Positive = 1e-6  # the semantic expert's learning rate (DCM's Wan script: 1e-6, a full fine-tune)
    detail_lr: Positive = 5e-6  # the detail expert's learning rate (DCM's Wan script: 5e-6)
    semantic_minutes: NonNegative = 15.0  # wall-time cap of the semantic stage (0: no cap)
    detail_minutes: NonNegative = 25.0  # wall-time cap of the detail stage (0: no cap)
    semantic_stop_step: Natural = 0  # stop the stage at this step while keeping its schedule (step-matched ablations)
    detail_stop_step: Natural = 0  # stop the detail stage at this step while keeping its schedule
    semantic_samples_below: str = "teacher"  # the semantic stage's sample checks: the semantic expert to the boundary, then the teacher (its guided solver) or this LCM student folder
    semantic_from: str | None = None  # reuse the semantic expert of a finished DCM run or student folder (or a teacher: its own network)
    # semantic expert: temporal coherence
    temporal_weight: NonNegative = 1.0  # weight of the semantic expert's temporal coherence loss
    temporal_stride: Count = 3  # frame distance of the temporal coherence loss
    # detail expert(s): LoRA and own modules, GAN and feature matching
    detail_expert: Literal["auto", "lora", "full"] = "auto"  # lora (DCM) or full; auto: full from a two-expert teacher's low-noise network
    detail_lora_rank: Count = 16  # the detail expert's LoRA rank
    detail_lora_alpha: Positive = 32.0  # the detail expert's LoRA alpha
    detail_lora_targets: list[str] = field(default_factory=list)  # empty: to_q, to_k, to_v, to_out.0
    gan_weight: NonNegative = 0.5  # DCM: 0.1 x 5 on the generator's GAN loss
    gan_generator: Literal["hinge", "linear"] = "hinge"  # the generator's GAN loss: relu(1 - fake) (DCM's) or -fake
    feature_matching_weight: NonNegative = 1.0  # DCM's Wan: 0.1 x 10 (Hunyuan: 0.1 x 1)
    feature_matching_on: Literal["projection", "blocks"] = "projection"  # the teacher's output layer applied to each read block (DCM's; a family without one: blocks), or the blocks' raw features
    disc_every: Count = 2  # heads on every s-th teacher block
    disc_head: Literal["token", "frame"] = "token"  # logits per token (DCM's heads) or per frame (averaged over space)
    disc_channels: Count = 1024  # the token heads' inner width (DCM's: 1024)
    disc_lr: NonNegative = 1e-5  # the discriminator heads' learning rate (DCM's); 0: heads frozen at their initialisation
    disc_betas: list[Decay] = field(default_factory=lambda: [0.0, 0.999])  # the discriminator heads' Adam betas
    disc_weight_decay: NonNegative = 1e-3  # the heads' AdamW weight decay (DCM's --weight_decay)
    disc_max_grad_norm: NonNegative = 1.0  # clip the heads' gradient norm (DCM's; 0: off)
    disc_update: Literal["after", "before"] = "after"  # the discriminator's step after the generator's (DCM's: the generator reads this step's heads before they update) or before
    gan_real: Literal["target", "data"] = "target"  # the GAN's "real": the consistency target (DCM) or the clip's clean latents (LADD, DMD2)
    disc_gradient_penalty: NonNegative = 0.0  # gamma of a zero-centred gradient penalty on the real side (R1, Mescheder et al. 2018); 0: off (DCM)


def log_snr(schedule, t: torch.Tensor) -> torch.Tensor:
    """log(alpha^2 / sigma^2) of the schedule at times ``t`` (VP steps or flow sigmas)."""
    alpha, sigma = schedule.alpha_sigma(t.float())
    return 2 * (torch.log(alpha.double()) - torch.log(sigma.double()))


def split_log_snr(config: DCMConfig) -> float:
    """The split's log-SNR: ``--boundary-logsnr``, else that of flow noise level ``--boundary-sigma``."""
    if config.boundary_logsnr is not None:
        return float(config.boundary_logsnr)
    sigma = float(config.boundary_sigma)
    if not 0 < sigma < 1:
        raise VideoCMError(f"--boundary-sigma must be between 0 and 1 (a flow noise level), got {sigma}")
    return 2 * math.log((1 - sigma) / sigma)


def resolve_boundaries(config: DCMConfig, grid: torch.Tensor, schedule) -> list[int]:
    """The K-1 inner grid indices (ascending) from ``boundaries``, ``boundary_timesteps`` or the default split:
    ``--split sigma``, the grid point nearest the split's log-SNR (each expert keeping at least one grid interval;
    with more phases the others evenly below it), or ``--split share``, the top ``--semantic-share`` of the grid."""
    n, k = config.grid_points, config.phases
    if k < 1:
        raise VideoCMError(f"--phases must be at least 1, got {k}")
    if config.boundaries and config.boundary_timesteps:
        raise VideoCMError("give --boundaries (grid indices) or --boundary-timesteps, not both")
    if config.boundary_timesteps:
        indices = [int(torch.argmin((grid.float() - float(t)).abs())) for t in config.boundary_timesteps]
    elif config.boundaries:
        indices = [int(b) for b in config.boundaries]
    elif k == 1:
        indices = []
    else:
        if config.split == "share":
            if not 0 < config.semantic_share < 1:
                raise VideoCMError(f"--semantic-share must be between 0 and 1, got {config.semantic_share}")
            top = round(n * (1 - config.semantic_share))
        else:
            levels = log_snr(schedule, grid)
            distance = (levels - split_log_snr(config)).abs().nan_to_num(float("inf"))
            top = k - 1 + int(torch.argmin(distance[k - 1: n]))  # room for the experts below, one interval above
        indices = [round(top * j / (k - 1)) for j in range(1, k)]
    if len(indices) != k - 1:
        raise VideoCMError(f"--phases {k} needs {k - 1} boundaries, got {len(indices)}: {indices}")
    try:
        segment_bounds(indices, n)
    except ValueError as error:
        raise VideoCMError(f"boundaries: {error}") from error
    return sorted(indices)


def describe_split(config: DCMConfig, grid: torch.Tensor, schedule, indices: list[int]) -> str:
    """Where the semantic expert's segment begins, in grid index, the schedule's time and log-SNR (said at the
    start of a run), beside what ``--split`` asked for."""
    if not indices:
        return "one phase: no split"
    top = indices[-1]
    where = (f"grid index {top} of {config.grid_points} (time {float(grid[top]):.4g}, log-SNR "
             f"{float(log_snr(schedule, grid[top:top + 1])[0]):.2f})")
    if config.boundaries or config.boundary_timesteps:
        return f"the semantic expert owns the grid above {where}, as given"
    if config.split == "share":
        return f"the semantic expert owns the top {config.semantic_share:g} of the grid: above {where}"
    asked = (f"log-SNR {config.boundary_logsnr:g}" if config.boundary_logsnr is not None else
             f"sigma {config.boundary_sigma:g} (log-SNR {split_log_snr(config):.2f})")
    return f"the semantic expert owns the grid above {where}, the grid point nearest {asked}"


def temporal_coherence_loss(prediction: torch.Tensor, target: torch.Tensor, stride: int) -> torch.Tensor:
    """MSE between the latent frame differences ``x[:, :, d:] - x[:, :, :-d]`` of prediction and target
    ``(B, C, T, H, W)``; the stride is clamped to ``T - 1`` (zero for single-frame latents)."""
    stride = min(int(stride), prediction.shape[2] - 1)
    if stride < 1:
        return prediction.new_zeros(())
    difference = prediction[:, :, stride:] - prediction[:, :, :-stride]
    wanted = target[:, :, stride:] - target[:, :, :-stride]
    return nn.functional.mse_loss(difference.float(), wanted.float())


def expert_names(phases: int) -> list[str]:
    if phases == 1:
        return ["semantic"]
    return ["semantic", *[f"middle-{j}" for j in range(1, phases - 1)], "detail"]


def phased_info(config: DCMConfig, grid: torch.Tensor, boundaries: list[int]) -> PhasedInfo:
    return PhasedInfo(phases=config.phases, boundaries=list(boundaries),
                      boundary_times=[float(grid[b]) for b in boundaries],
                      experts=expert_names(config.phases)[: config.phases])


class DCMStageTask(DistillationMethod):
    """One stage: expert ``expert`` (0 = semantic, full network; >0 = LoRA expert on the frozen semantic one),
    trained with the consistency step on its segment plus the stage's own terms: temporal coherence (semantic),
    GAN and feature matching on the teacher's features (detail)."""

    def __init__(self, config: DCMConfig, expert: int, semantic: DenoiserAdapter | None = None,
                 trained: list[DenoiserAdapter] | None = None, device=None) -> None:
        device = training_device(config, device)
        if not 1 <= config.skip <= config.grid_points:
            raise VideoCMError(f"--skip {config.skip} must be between 1 and --grid-points {config.grid_points}")
        self.expert = expert
        self.semantic_network, self.trained_experts = semantic, list(trained or [])
        super().__init__(config, device)
        context = self.teacher_context
        self.boundary_indices = resolve_boundaries(config, context.grid, context.schedule)
        if os.environ.get("RANK", "0") == "0":
            name = expert_names(config.phases)[expert]
            say_when_ready([f"videocm: {name} stage: "
                            f"{describe_split(config, context.grid, context.schedule, self.boundary_indices)}"],
                           after=True)
        self.segment = segment_bounds(self.boundary_indices, config.grid_points)[expert]
        torch.manual_seed(config.seed)
        self.model = self._build_expert(device)
        # the distribution-matching term regularises the detail expert(s) only (rCM-style)
        self.matching = self.new_matching(device) if expert > 0 else None
        context.cast_teacher()
        self.target_network = TargetNetwork(self.model, config.target, config.target_decay, shares_frozen(config))
        self.heads, self._below = None, None
        if expert > 0 and (config.gan_weight > 0 or config.feature_matching_weight > 0):
            teacher = context.teacher
            # a two-expert teacher's detail segment runs its low-noise network: its blocks are the ones to read
            owner = teacher.experts()[-1] if hasattr(teacher, "experts") else teacher
            projected = config.feature_matching_on == "projection"
            self.tap = FeatureTap(owner, feature_blocks(owner, config.disc_every), project=projected)
            if projected and not self.tap.projects and os.environ.get("RANK", "0") == "0":
                print(f"videocm: feature matching reads the teacher blocks' raw features: the {owner.spec.name} "
                      f"family's blocks do not share its output layer's width", file=sys.stderr)
            channels = context.feature_channels(owner, self.tap)
            self.heads = FeatureDiscriminator(channels, config.disc_head, config.disc_channels).to(
                next(self.model.parameters()).device)
            # where the heads started (D3: how far they move); the same on a resume, which builds them the same way
            self.heads_at_start = [p.detach().clone() for p in self.heads.parameters()]
            betas = tuple(float(b) for b in config.disc_betas)
            self.disc_optimizer = torch.optim.AdamW(self.heads.parameters(), lr=config.disc_lr, betas=betas,
                                                    weight_decay=config.disc_weight_decay)
        self.engine = None

    def _build_expert(self, device):
        config = self.config
        teacher = self.teacher_context.teacher
        experts = getattr(teacher, "experts", lambda: None)()  # a two-expert teacher's high- and low-noise networks
        if self.expert == 0:
            return new_student(experts[0] if experts else teacher, config, device)
        if self.semantic_network is None:
            raise VideoCMError("a detail stage needs the trained semantic expert")
        kind = config.detail_expert if config.detail_expert != "auto" else ("full" if experts else "lora")
        if kind == "full":  # the teacher's own low-noise network, or a copy of the semantic one
            return new_student(experts[-1] if experts else self.semantic_network, config, device)
        base = self.semantic_network.to(device)
        expert = tied_expert(base, config.detail_lora_rank, config.detail_lora_alpha, config.detail_lora_targets)
        if config.gradient_checkpointing:
            expert.network.enable_gradient_checkpointing()
        if not config.student_dropout:
            without_dropout(expert)
        return expert.to(device).train()

    # ---- trainer hooks -------------------------------------------------------------------------------------------

    def prepare(self, engine) -> None:
        """The discriminator and its optimiser join the run (several processes, checkpoints), and the fake score
        with ``--dmd-weight``."""
        self.engine = engine
        if self.heads is not None:
            self.heads, self.disc_optimizer = engine.prepare(discriminator=self.heads,
                                                             discriminator_optimizer=self.disc_optimizer)
        super().prepare(engine)

    def loss(self, model, step: Step):
        c, context = self.config, self.teacher_context
        # 1. this micro-step's clips (latents) and their text
        latents, text = context.draw(step)
        # 2. grid indices n and skip k inside this expert's segment, each clip's guidance weight, the noise
        index, skip, w, noise = context.consistency_batch(step, self.segment, c.skip, latents)
        # 3. the phased consistency step: both estimates map to the segment's low end
        terms = consistency_step(model, self.target_network(model), context.teacher, context.schedule, context.grid,
                                 self.segment[0], latents, noise, index, skip, text,
                                 context.unconditional(text, len(latents)), w, text, c.sigma_data,
                                 c.timestep_scaling, c.loss, c.huber_c)
        # 4. the stage's own terms: temporal coherence (semantic); GAN and feature matching (detail)
        extra, logs = terms.prediction.new_zeros(()), {}
        if self.expert == 0 and c.temporal_weight > 0:
            coherence = temporal_coherence_loss(terms.prediction, terms.target_estimate, c.temporal_stride)
            extra = extra + c.temporal_weight * coherence
            logs["temporal"] = float(coherence.detach())
        if self.heads is not None:
            real = terms.target_estimate if c.gan_real == "target" else latents
            adversarial, matching, disc_logs = self._adversarial(terms.prediction, real, text, step)
            extra = extra + c.gan_weight * adversarial + c.feature_matching_weight * matching
            logs.update({"gan_generator": float(adversarial.detach()), "feature_matching": float(matching.detach()),
                         **disc_logs})
        # 5. with --dmd-weight: the distribution-matching term on the expert's estimate
        base, matching_logs = self.with_matching(terms, w, text, step, latents)
        logs.update(matching_logs)
        if logs:
            logs = {"consistency": float(terms.loss.detach()), **logs}
        return base + extra, logs

    def _adversarial(self, fake, real, text, step: Step):
        """The generator's GAN and feature-matching terms and the discriminator's step, from one teacher forward
        on "real" and "fake" re-noised alike; the generator reads the heads as they were before this step's
        discriminator update (``--disc-update after``, DCM's order) or after it (``before``)."""
        c = self.config
        n, rows, device = step.batch_size, step.rows, step.device
        low, high = self.segment
        context = self.teacher_context
        schedule, grid, teacher = context.schedule, context.grid, context.teacher
        index = torch.from_numpy(step.rng.integers(low + 1, high + 1, size=n))[rows]
        noise = torch.randn((n, *fake.shape[1:]), generator=step.generator)[rows].to(device)
        t = grid[index].to(device)
        both = torch.cat([schedule.add_noise(real.detach(), noise, t), schedule.add_noise(fake, noise, t)])
        timestep = schedule.model_timestep(t).to(device)
        with self.tap(tuple(both.shape)) as tap:
            teacher(both, torch.cat([timestep, timestep]), **concat_conditioning(text, text))
        count = len(fake)
        real_features = [f[:count].detach() for f in tap.features]
        fake_features = [f[count:] for f in tap.features]
        matched = tap.projections if tap.projects else tap.features  # what feature matching compares
        matching = feature_matching_loss([f[count:] for f in matched], [f[:count].detach() for f in matched])
        heads = self.engine.unwrap_model(self.heads) if self.engine is not None else self.heads
        generator = None
        if c.disc_update == "after":  # the generator's logits from the heads before they step (copies: they will)
            generator = hinge_generator_loss(with_frozen_weights(heads, fake_features, copied=True), c.gan_generator)
        disc, penalty, logits = self._discriminator_step(real_features, fake_features)
        if generator is None:
            generator = hinge_generator_loss(with_frozen_weights(heads, fake_features), c.gan_generator)
        real_logit, fake_logit = (float(torch.cat([x.flatten() for x in part]).mean()) for part in logits)
        moved = sum(float((p.detach() - p0).pow(2).sum()) for p, p0 in zip(heads.parameters(), self.heads_at_start))
        scale = sum(float(p0.pow(2).sum()) for p0 in self.heads_at_start)
        logs = {"gan_discriminator": disc, "gan_real_logit": real_logit, "gan_fake_logit": fake_logit,
                "disc_weight_change": math.sqrt(moved / max(scale, 1e-12))}
        if c.disc_gradient_penalty > 0:
            logs["gan_penalty"] = penalty
        return generator, matching, logs

    def _discriminator_step(self, real_features, fake_features):
        """One step of the heads (hinge loss on real and detached fake, optional R1 penalty, clipped, own AdamW;
        none with ``--disc-lr 0``, the heads frozen at their start): (loss, penalty, (real logits, fake logits))."""
        c, count = self.config, len(real_features[0])
        gamma = c.disc_gradient_penalty
        if gamma > 0:
            real_features = [r.clone().requires_grad_(True) for r in real_features]
        logits = self.heads([torch.cat([r, f.detach()]) for r, f in zip(real_features, fake_features)])
        real_logits, fake_logits = [x[:count] for x in logits], [x[count:] for x in logits]
        disc_loss = hinge_discriminator_loss(real_logits, fake_logits)
        penalty = real_gradient_penalty(real_features, real_logits) if gamma > 0 else disc_loss.new_zeros(())
        if not torch.isfinite(disc_loss + penalty):
            raise VideoCMError(f"the discriminator loss became {disc_loss.item()}; lower --disc-lr and rerun with "
                               f"--resume")
        said = (float(disc_loss.detach()), float(penalty.detach()),
                ([x.detach() for x in real_logits], [x.detach() for x in fake_logits]))
        if c.disc_lr == 0:
            return said
        total = disc_loss + gamma / 2 * penalty
        if self.engine is not None:
            self.engine.backward(total)
            if c.disc_max_grad_norm > 0:
                self.engine.clip_grad_norm_(self.heads.parameters(), c.disc_max_grad_norm)
        else:
            total.backward()
            if c.disc_max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(self.heads.parameters(), c.disc_max_grad_norm)
        self.disc_optimizer.step()
        self.disc_optimizer.zero_grad(set_to_none=True)
        return said

    # ---- folders and monitoring ----------------------------------------------------------------------------------

    def experts_for_sampling(self, model) -> list[DenoiserAdapter]:
        """Every segment's network as far as trained: semantic, finished experts, this one; a segment not yet
        trained falls back to the lowest network available."""
        networks = ([model] if self.expert == 0 else [self.semantic_network, *self.trained_experts, model])
        return networks + [networks[-1]] * (self.config.phases - len(networks))

    def info(self) -> ModelInfo:
        return self.student_info(phased_info(self.config, self.teacher_context.grid,
                                                          self.boundary_indices))

    def sample(self, model, step, out, monitor: Monitor):
        """The stage's sample check. The semantic stage's samples run the semantic expert to its boundary and,
        below it, the teacher's guided solver (or ``--semantic-samples-below STUDENT``): what this stage trains,
        not the semantic network standing in for experts it was never trained to be."""
        context = self.teacher_context
        with self.trained(model) as trained:
            experts = [e.eval() for e in self.experts_for_sampling(trained)]
            pipeline = context.monitoring_pipeline(experts[0], self.info(), experts)
            if self.expert == 0 and self.config.phases > 1:
                self._hand_off(pipeline)
            try:
                return monitor.samples(pipeline, self.config.sample_clips, self.config.sample_steps, None, out, step,
                                       context.batches.sample_prompts(), context.sample_images())
            finally:
                model.train()

    def _hand_off(self, pipeline) -> None:
        c, context = self.config, self.teacher_context
        boundary = self.boundary_indices[-1]
        name = f"{expert_names(c.phases)[0]} expert"
        if c.semantic_samples_below == "teacher":
            steps = max(1, round(context.teacher_model.default_steps * boundary / c.grid_points))
            pipeline.finish_with(context.teacher, context.guidance, steps,
                                 f"{name} to the boundary, then the teacher ({steps} steps, guidance "
                                 f"{context.guidance:g})")
            return
        if self._below is None:
            from ..models.folder import load_model

            student = load_model(c.semantic_samples_below, next(self.model.parameters()).device)
            if not student.is_student or student.experts:
                raise VideoCMError(f"--semantic-samples-below {c.semantic_samples_below}: give 'teacher' or a "
                                   f"one-network consistency student (an LCM student folder)")
            self._below = student.denoiser.eval().requires_grad_(False)
        pipeline.finish_with(self._below, None, 0, f"{name} to the boundary, then {Path(c.semantic_samples_below).name}")

    def save(self, model, out):
        """The stage's expert: the full network (semantic) or the LoRA and own modules (detail)."""
        folder = Path(out) / "expert"
        if folder.exists():
            shutil.rmtree(folder)
        with self.trained(model) as trained:
            if self.expert == 0:
                save_model(folder, trained, self.teacher_context.vae.cpu(), self.info())
            else:
                save_expert(trained, folder, STORE_DTYPES[self.config.store_dtype])


def stage_config(config: DCMConfig, expert: int) -> DCMConfig:
    """The trainer settings of one stage: its steps, learning rate, time cap and folder."""
    semantic = expert == 0
    steps = config.semantic_steps if semantic else config.detail_steps
    minutes = config.semantic_minutes if semantic else config.detail_minutes
    if minutes <= 0 and config.max_minutes > 0:
        total = config.semantic_steps + config.detail_steps * (config.phases - 1)
        minutes = config.max_minutes * steps / total
    name = expert_names(config.phases)[expert]
    return dataclasses.replace(config, steps=steps, lr=config.semantic_lr if semantic else config.detail_lr,
                               max_minutes=minutes, ema_decay=0.0,
                               stop_at_step=config.semantic_stop_step if semantic else config.detail_stop_step,
                               out=str(Path(config.out) / "stages" / f"expert-{expert}-{name}"),
                               cache=config.cache or str(Path(config.out) / "latent-cache"),  # one for all stages
                               warmup_steps=min(config.warmup_steps, max(1, steps // 10)))


def _semantic_from(path: Path, device) -> DenoiserAdapter:
    """The semantic network of a finished DCM run folder or DCM student folder."""
    candidates = [path / "stages" / "expert-0-semantic" / "expert", path]
    for candidate in candidates:
        if is_model_folder(candidate):
            return load_model(candidate, device).denoiser
    raise VideoCMError(f"--semantic-from {path}: no DCM run or student folder there (no model description)")


def two_stage_defaults(config: DCMConfig) -> DCMConfig:
    """For a Wan 2.2 two-expert teacher: two phases split at the teacher's own boundary (the grid point nearest
    it, unless --boundaries or --boundary-timesteps say otherwise) and full experts, the semantic one from the
    high-noise network and the detail one from the low-noise network. Other teachers: ``config`` as it is."""
    from ..models.folder import schedule_from_config
    from ..models.pipelines import schedule_config_from_scheduler, two_stage_boundary

    found = two_stage_boundary(config.teacher)
    if found is None:
        if config.detail_expert == "auto":
            return dataclasses.replace(config, detail_expert="lora")
        return config
    boundary, scheduler = found
    if config.phases != 2:
        raise VideoCMError(f"--phases {config.phases}: a two-expert teacher gives two phases, one per expert")
    changes = {"detail_expert": "full" if config.detail_expert == "auto" else config.detail_expert}
    if not (config.boundaries or config.boundary_timesteps):
        schedule = schedule_from_config(schedule_config_from_scheduler(scheduler))
        grid = skipping_grid(schedule, config.grid_points)
        changes["boundaries"] = [int(torch.argmin((schedule.model_timestep(grid) - boundary).abs()))]
    return dataclasses.replace(config, **changes)


def distill_dcm(config: DCMConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    """Run (or resume) every stage, then assemble the student folder ``OUT`` (semantic network + experts);
    ``monitor`` scores each stage's periodic samples (None: no samples)."""
    from accelerate import PartialState

    out = Path(config.out)
    config = two_stage_defaults(config)
    stages_root = out / "stages"

    def check(config: DCMConfig) -> None:
        if config.steps not in (0, LEGACY_STEPS) or config.lr not in (0.0, LEGACY_LR):
            raise VideoCMError("DCM trains in stages, each with its own schedule: give --semantic-steps and "
                               "--detail-steps (and --semantic-lr, --detail-lr) instead of --steps and --lr")
        if config.resume and (out / "train_summary.json").is_file():
            raise VideoCMError(f"{out} is a finished DCM run (its student is assembled), so there is nothing to "
                               f"resume; choose another --out to train a new one")
        started = [p for p in stages_root.glob("expert-*") if (p / DONE).is_file() or (p / "checkpoints").is_dir()]
        if started and not config.resume and not config.overwrite:
            raise VideoCMError(f"{out} already holds a DCM run; pass --resume to continue it or choose another --out")

    def trained(out: Path) -> bool:
        return any(stages_root.glob("expert-*/checkpoints/step-*")) or any(stages_root.glob(f"expert-*/{DONE}"))

    def resume_step(out: Path) -> int:  # a DCM run's changes are recorded at the step of the stages done so far
        return sum(json.loads(p.read_text()).get("steps_done", 0) for p in stages_root.glob(f"expert-*/{DONE}"))

    state = PartialState(cpu=on_cpu(config))
    with run_folder(config, state.is_main_process, state.wait_for_everyone, trained, resume_step, check,
                    report=state.print):
        return _run_stages(config, state, monitor, progress)


def _run_stages(config: DCMConfig, state, monitor, progress: bool) -> dict:
    out = Path(config.out)
    device = state.device
    summaries, experts, semantic = {}, [], None
    for expert in range(config.phases if config.detail_steps > 0 else 1):
        stage = stage_config(config, expert)
        folder = Path(stage.out)
        # the whole folder was cleared above; a stage not begun yet starts fresh under --resume
        stage = dataclasses.replace(stage, overwrite=False, resume=stage.resume and is_run_folder(folder))
        if expert == 0 and config.semantic_from:
            semantic = _semantic_from(Path(config.semantic_from), device).requires_grad_(False)
            summaries["semantic"] = {"from": str(config.semantic_from)}
            continue
        if (folder / DONE).is_file():
            summaries[expert_names(config.phases)[expert]] = json.loads((folder / DONE).read_text())
        else:
            check_resume(folder, stage.resume, verify=False)  # refused before the stage loads; train() verifies
            summary = run_and_summarise(
                stage, lambda c, e=expert: DCMStageTask(c, e, semantic, experts, device), progress, monitor)
            state.wait_for_everyone()  # the stage's expert is written by the main process
            if state.is_main_process:
                (folder / DONE).write_text(json.dumps(summary, indent=2))
            summaries[expert_names(config.phases)[expert]] = summary
        if expert == 0:
            semantic = load_model(folder / "expert", device).denoiser.requires_grad_(False)
        else:
            experts.append(load_expert(semantic, folder / "expert"))
    summary = {"stages": summaries, "student": str(out)}
    if state.is_main_process:
        summary["phased"] = dataclasses.asdict(_assemble(config, semantic, experts).phased)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=2))
    state.wait_for_everyone()
    return summary


def _assemble(config: DCMConfig, semantic: DenoiserAdapter, experts: list[DenoiserAdapter]) -> ModelInfo:
    """Write ``OUT``: the semantic network in diffusers format, ``experts/expert-J`` and ``videocm.json``."""
    out = Path(config.out)
    teacher = load_teacher(config, "cpu")
    grid = skipping_grid(teacher.schedule, config.grid_points)
    phased = phased_info(config, grid, resolve_boundaries(config, grid, teacher.schedule))
    consistency = ConsistencyInfo(config.grid_points, config.skip, config.sigma_data, config.timestep_scaling,
                                  config.target)
    info = student_info(config, teacher.info, teacher_guidance(config, teacher), consistency, phased=phased)
    network = cast_for_storage(semantic.cpu(), STORE_DTYPES[config.store_dtype])
    save_model(out, network, teacher.vae, info)
    if (out / EXPERTS_FOLDER).exists():
        shutil.rmtree(out / EXPERTS_FOLDER)
    for j, expert in enumerate(experts, start=1):
        save_expert(expert.cpu(), out / EXPERTS_FOLDER / f"expert-{j}", STORE_DTYPES[config.store_dtype])
    semantic.float()
    return info
