"""The one shared training loop (teachers, VAE, and the distillation methods).

Read it top to bottom: batch and loss come from the task, then backward, gradient clipping, optimiser and
learning-rate steps, the task's own per-step update (a consistency target network), EMA update, logging, periodic
samples and checkpoints. ``accelerate`` decides the device, the number of processes, mixed precision and gradient
accumulation: the same command runs on one CPU, one GPU or several processes.

Determinism: each optimiser step's randomness comes from ``numpy.random.default_rng([seed, step])``, the same on
every process and micro-step; a task draws the *global* batch from it and keeps its own rows (:class:`Step`), so
two processes of batch B/2, or G accumulation micro-steps of B/G, compute what one process of batch B computes, and a resumed run draws exactly the batches
the uninterrupted run would have drawn. Checkpoints (``out/checkpoints/step-N``) hold model, optimiser, learning
rate schedule, EMA, the task's extra state and the step; they are written under a temporary name and renamed when
complete, the last ``keep_checkpoints`` are kept, and ``resume`` continues from the newest intact one: the
checkpoint's ``complete.json``, written last, holds a manifest (size and SHA-256 of every file), which ``resume``
checks, skipping a damaged checkpoint (a truncated or missing file) for the one before it and saying why.
"""

from __future__ import annotations

import contextvars
import csv
import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Count, Decay, Fraction, Natural, NonNegative, Positive, RunFolder
from ..errors import VideoCMError
from .checkpoints import (COMPLETE, CollapseGuard, RunCheckpoints, RunState, checkpoint_damage, checkpoint_lr_scale,
                          checkpoint_step, latest_checkpoint, resume_point)
from .ema import EMAState
from .parallel import make_engine



@dataclass
class TrainConfig:
    """The run: its folder, length, optimiser, checkpoints, monitoring and processes (every training command's)."""

    SECTION = "run"

    out: RunFolder = "outputs/run"  # output folder (model, checkpoints, logs, config.yaml)
    steps: Count = 1000  # optimiser steps (the learning-rate schedule spans them)
    batch_size: Count = 32  # global batch per optimiser step (split over processes and accumulation micro-steps)
    gradient_accumulation_steps: Count = 1  # micro-steps per optimiser step (the batch is split over them)
    lr: Positive = 3e-4  # peak AdamW learning rate
    weight_decay: NonNegative = 0.01  # AdamW weight decay
    adam_betas: list[Fraction] = field(default_factory=lambda: [0.9, 0.999])  # AdamW betas (beta1, beta2)
    warmup_steps: Natural = 100  # linear learning-rate warm-up steps, then cosine decay
    min_lr_ratio: Fraction = 0.1  # the cosine decay ends at lr times this
    grad_clip: NonNegative = 1.0  # gradient-norm clipping (0: off)
    ema_decay: Decay = 0.999  # EMA of the weights used for samples and the saved model (0: no EMA)
    checkpoint_every: Count = 500  # steps between checkpoints (resumable with --resume)
    keep_checkpoints: Count = 2  # newest checkpoints kept
    sample_every: Natural = 1000  # steps between monitoring samples and scores (0: none)
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"  # accelerate's mixed precision
    seed: Natural = 0  # seed of the weights, the data and the noise
    max_minutes: NonNegative = 0.0  # stop early (checkpoint and save) after this much wall time; 0 = no limit
    stop_at_step: Natural = 0  # stop early (checkpoint and save) at this step, keeping the schedule of ``steps``; 0 = off
    resume: bool = False  # continue from the newest checkpoint in ``out``
    overwrite: bool = False  # delete what ``out`` holds and start again (without it a used --out is refused)
    on_collapse: Literal["stop", "rollback", "warn"] = "stop"  # distillation: a periodic sample check that finds a collapsed student stops the run (keeping the last good checkpoint), rolls back to it with the learning rate halved, or warns
    cpu: bool = False  # force the CPU even when a GPU is there
    parallel: Literal["ddp", "fsdp"] = "ddp"  # ddp (every process holds every weight) or fsdp (FSDP2: weights sharded per block)
    report_to: Literal["none", "tensorboard", "wandb"] = "none"  # dashboards: also log losses, learning rate, gradient norm, sample scores and sample grids to TensorBoard (OUT/logs) or Weights & Biases (accelerate's trackers)
    fsdp_shard_teacher: bool = True  # --parallel fsdp: shard the frozen teacher too (false: a whole copy each)
    fsdp_reshard_after_forward: bool = True  # --parallel fsdp: free gathered weights after each block's forward
    context_parallel: Count = 1  # --parallel fsdp: split each clip's tokens over this many processes (Wan networks)
    context_parallel_kind: Literal["ulysses", "ring"] = "ulysses"  # ulysses (all-to-all over heads) or ring (GPU attention backends only)


def on_cpu(config: TrainConfig) -> bool:
    """Whether the run's processes use the CPU: ``--cpu``, or several processes launched (``torchrun``) on a machine
    without a CUDA GPU. accelerate treats the latter as one process each unless told to use the CPU, so every
    process would train the whole batch alone and write the same run folder."""
    launched = int(os.environ.get("WORLD_SIZE", "1")) > 1
    return bool(config.cpu) or (launched and not torch.cuda.is_available())


class Monitor(Protocol):
    """Scores a run's periodic samples; given to the trainer by its caller (the CLI passes the judge's,
    :class:`evaluation.monitor.JudgeMonitor`), so training never imports evaluation."""

    def samples(self, pipeline, n: int, steps: int, guidance: float | None, out: Path, step: int,
                prompts: list[str] | None = None, images: list | None = None) -> dict[str, float]:
        """Generate ``n`` clips with ``pipeline``, write ``OUT/samples/step-N.gif``, return their scores."""

    def control_samples(self, pipeline, n: int, steps: int, guidance: float | None, geometry
                        ) -> dict[str, float]:
        """How well ``pipeline`` (with a control branch) follows held-out silhouettes."""

    def reconstructions(self, reconstructed: list, originals: list, captions: list[str]) -> dict:
        """Quality of VAE reconstructions (uint8 clips) of ``originals``."""


@dataclass(frozen=True)
class Step:
    """What the trainer hands a task's :meth:`TrainTask.loss` for one optimiser (micro-)step: the step's random
    streams (the same on every process and micro-step, so the global batch drawn from them is too), the device,
    the global batch and this micro-step's share of it."""

    number: int  # the optimiser step, from 0
    rng: np.random.Generator  # numpy stream of the step: which clips, grid indices, guidance weights
    generator: torch.Generator  # torch stream of the step (on the CPU): noise
    device: torch.device
    batch_size: int  # the global batch (every process and accumulation micro-step together)
    shard: tuple[int, int] = (0, 1)  # (index, count) of this micro-step's share of the global batch

    @property
    def rows(self) -> slice:
        """This micro-step's rows of the global batch."""
        return shard_rows(self.batch_size, self.shard)


class TrainTask:
    """What a training task (a distillation method, a teacher, the VAE ...) gives the trainer: every hook it calls,
    with its default. A task sets ``model`` (the trainable network) in its constructor and defines :meth:`loss` and
    :meth:`save`; the rest is optional."""

    model: torch.nn.Module
    guards_collapse: bool = False  # the periodic sample check may stop or roll back the run (--on-collapse)
    latent_shape: tuple[int, ...] | None = None  # a clip's latents (C, T, H, W), for context parallelism

    def loss(self, model: torch.nn.Module, step: Step) -> tuple[torch.Tensor, dict[str, float]]:
        """The loss of ``step`` (this micro-step's rows) and the figures to log."""
        raise NotImplementedError

    def sample(self, model: torch.nn.Module, step: int, out: Path, monitor: Monitor) -> dict[str, float]:
        """Monitoring samples at optimiser step ``step`` and their scores (none by default)."""
        return {}

    def save(self, model: torch.nn.Module, out: Path) -> None:
        """Write the trained folder."""
        raise NotImplementedError

    def prepare(self, engine) -> None:
        """After the trainer prepared the model: the task's own modules and optimisers join the run."""

    def after_step(self, model: torch.nn.Module) -> None:
        """After each optimiser step (e.g. a consistency target's EMA update)."""

    def frozen_modules(self) -> dict[str, torch.nn.Module | None]:
        """Frozen networks by role (``teacher``; ``target``, a copy of the model) that the engine may shard."""
        return {}

    def checkpoint_state(self) -> dict[str, object]:
        """The task's own checkpointed objects by name (each with ``state_dict``/``load_state_dict``)."""
        return {}


def shard_rows(total: int, shard: tuple[int, int]) -> slice:
    """This process's contiguous share of a global batch of ``total`` rows."""
    index, count = shard
    if total % count:
        raise VideoCMError(f"batch size {total} does not split over {count} processes; use a multiple of {count}")
    size = total // count
    return slice(index * size, (index + 1) * size)


def adam_betas(config: TrainConfig) -> tuple[float, float]:
    """``--adam-betas`` as AdamW takes them; a one-line error unless they are two values in [0, 1)."""
    betas = [float(b) for b in config.adam_betas]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise VideoCMError(f"--adam-betas {config.adam_betas}: give two values in [0, 1), e.g. --adam-betas 0.9,0.999")
    return betas[0], betas[1]


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def check_run_folder(config: TrainConfig) -> None:
    """The trainer's own checks of a run before anything is written (:func:`runs.run_folder` checks ``--out``
    first): the batch splits into the accumulation steps, and a run that has finished its steps has nothing to
    resume."""
    if config.batch_size % config.gradient_accumulation_steps:
        raise VideoCMError(f"--batch-size {config.batch_size} does not split into --gradient-accumulation-steps "
                           f"{config.gradient_accumulation_steps}; use a multiple of it")
    newest = latest_checkpoint(Path(config.out)) if config.resume else None
    # finished, unless that last checkpoint is damaged (then train() falls back to an earlier one)
    if newest is not None and checkpoint_step(newest) >= config.steps and checkpoint_damage(newest) is None:
        done = checkpoint_step(newest)
        raise VideoCMError(f"{config.out} has finished its {done} steps, so there is nothing to resume; pass --steps "
                           f"above {done} to train it further, or choose another --out")


def resumed_step(out: Path) -> int:
    """The step a resumed run continues from: its newest complete checkpoint's (0 without one)."""
    newest = latest_checkpoint(out)
    return checkpoint_step(newest) if newest is not None else 0


def has_trained(out: Path) -> bool:
    """Whether a run folder holds anything training made (a checkpoint, a log)."""
    return latest_checkpoint(out) is not None or (out / "train_log.csv").exists()


def step_bound(config: TrainConfig) -> int:
    """The step at which the run will stop counting steps: ``--stop-at-step`` when it comes first."""
    return config.stop_at_step if 0 < config.stop_at_step < config.steps else config.steps


def progress_bar(config: TrainConfig, start: int, name: str, disable: bool, file=None) -> tqdm:
    """The training bar, showing the bound that will actually stop the run: the step bound, and under a time
    cap (``max_minutes``) the cap in place of a step-rate estimate, since the cap may stop the run first."""
    if config.max_minutes > 0:
        cap = f"{int(config.max_minutes)}:{round(config.max_minutes % 1 * 60):02d}"
        form = "{desc}: {n_fmt}/{total_fmt} steps [{elapsed} of a " + cap + " time cap, {rate_fmt}{postfix}]"
        return tqdm(total=step_bound(config), initial=start, desc=name, disable=disable, bar_format=form, file=file)
    return tqdm(total=step_bound(config), initial=start, desc=name, disable=disable, file=file)


class _Training:
    """One run's state around the task: the accelerator and parallel engine, the prepared model and optimiser, the
    schedule, the sampling EMA, the checkpoints and the collapse guard. :func:`train` drives it."""

    def __init__(self, task: TrainTask, config: TrainConfig, progress: bool, monitor: Monitor | None,
                 make_plain_task) -> None:
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration

        self.task, self.config, self.monitor = task, config, monitor
        self.out = out = Path(config.out)
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        tracker = dashboard(config.report_to)
        self.accelerator = accelerator = Accelerator(
            mixed_precision=config.mixed_precision, cpu=on_cpu(config),
            gradient_accumulation_steps=config.gradient_accumulation_steps, log_with=tracker,
            project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")))
        resume_from = resume_point(out, config.resume, accelerator)
        self.engine = engine = make_engine(config, accelerator, make_plain_task)
        self.shard_index, self.shard_count = engine.data_shard()  # ranks of one context-parallel group share rows
        micro_steps = config.gradient_accumulation_steps
        if config.batch_size % (micro_steps * self.shard_count):
            raise VideoCMError(f"batch size {config.batch_size} does not split into {micro_steps} accumulation "
                               f"steps on {self.shard_count} data-parallel ranks; use a multiple of "
                               f"{micro_steps * self.shard_count}")
        if not any(p.requires_grad for p in task.model.parameters()):
            raise VideoCMError("the task has no trainable parameters")
        frozen = task.frozen_modules()
        engine.split_sequences([task.model, *frozen.values()], task.latent_shape)
        engine.shard_frozen(frozen)  # before the student: a detail expert shares frozen weights
        optimizers = []

        def make_optimizer(parameters):
            optimizers.append(torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay,
                                                betas=adam_betas(config)))
            return optimizers[-1]

        self.model, self.optimizer = engine.prepare_student(task.model, make_optimizer)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]  # sharded ones under fsdp
        # stepped by hand once per optimiser step (accelerate would step it once per process)
        self.run = run = RunState()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizers[0], lambda s: learning_rate_factor(s, config) * run.lr_scale)
        task.prepare(engine)  # the task's own modules and optimisers (e.g. DCM's discriminator)
        self.checkpoints = RunCheckpoints(out, engine, config.keep_checkpoints)
        self.checkpoints.register("scheduler", self.scheduler)
        self.ema = EMAState(engine.unwrap_model(self.model), config.ema_decay) if config.ema_decay > 0 else None
        if self.ema is not None:
            self.checkpoints.register("ema", self.ema)
        for name, state in task.checkpoint_state().items():
            self.checkpoints.register(name, state)
        self.start = self._resume(resume_from)
        self.guard = CollapseGuard(config.on_collapse, out, accelerator, self.start) if (
            task.guards_collapse and monitor is not None and config.sample_every > 0) else None
        if self.guard is not None and resume_from is not None:
            self.guard.previous = json.loads((resume_from / COMPLETE).read_text()).get("collapse_check")
        self.bar = progress_bar(config, self.start, out.name,
                                disable=not (progress and accelerator.is_main_process))
        if tracker is not None:
            accelerator.init_trackers("videocm", config=hyperparameters(config),
                                      init_kwargs={"wandb": {"name": out.name, "dir": str(out)}})

    @property
    def tracking(self) -> bool:
        return bool(self.accelerator.trackers)

    def track(self, logs: dict, step: int) -> None:
        """This step's figures to the dashboards, and after a sample check its grid (the clips' frames)."""
        figures = {k: float(v) for k, v in logs.items()
                   if isinstance(v, (int, float, np.integer, np.floating)) and k != "step"}
        for key, value in logs.items():  # a 95% interval as two curves beside its figure
            if key.endswith("_ci") and isinstance(value, (list, tuple)) and len(value) == 2:
                figures[f"{key[:-3]}_low"], figures[f"{key[:-3]}_high"] = value
        self.accelerator.log(figures, step=step)
        grid = getattr(self.monitor, "last_grid", None) if self.monitor is not None else None
        if grid is not None and self.accelerator.is_main_process:
            frames = np.ascontiguousarray(grid)
            for tracker in self.accelerator.trackers:
                extra = {"dataformats": "NHWC"} if tracker.name == "tensorboard" else {}
                tracker.log_images({"samples": frames}, step=step, **extra)
            self.monitor.last_grid = None

    def _resume(self, resume_from: Path | None) -> int:
        """Load ``resume_from`` (a new ``--lr`` replacing the run's from there), or start fresh; the first step."""
        config, accelerator = self.config, self.accelerator
        if resume_from is None:
            if accelerator.is_main_process:
                if config.resume:
                    accelerator.print(f"{self.out} has no checkpoint yet (the run stopped before its first); "
                                      f"starting at step 0")
                for log in ("train_log.jsonl", "train_log.csv"):
                    (self.out / log).unlink(missing_ok=True)
            return 0
        self.checkpoints.load(resume_from)
        start = checkpoint_step(resume_from)
        self.run.lr_scale = checkpoint_lr_scale(resume_from)
        accelerator.print(f"resuming from {resume_from} (step {start})")
        if self.scheduler.base_lrs and not math.isclose(self.scheduler.base_lrs[0], config.lr):  # --lr given anew
            accelerator.print(f"--lr {config.lr:g} replaces the run's {self.scheduler.base_lrs[0]:g} from step "
                              f"{start}")
            _set_lr(self.scheduler, config.lr, start)
        return start

    def optimiser_step(self, step: int) -> tuple[torch.Tensor, float, dict]:
        """One optimiser step over its accumulation micro-steps: ``(the last loss, the step's mean loss, logs)``;
        stops at a loss that is not finite (the caller decides)."""
        config, accelerator, model = self.config, self.accelerator, self.model
        micro_steps = config.gradient_accumulation_steps
        self.model.train()
        total, logs = 0.0, {}
        for micro in range(micro_steps):
            # every micro-step redraws the step's global batch and keeps its own share of it, so G micro-steps
            # of B/G rows add up to exactly one step of B rows
            rng = np.random.default_rng([config.seed, step])
            generator = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63 - 1)))
            inputs = Step(step, rng, generator, accelerator.device, config.batch_size,
                          (micro * self.shard_count + self.shard_index, micro_steps * self.shard_count))
            with accelerator.accumulate(model), accelerator.autocast():
                loss, logs = self.task.loss(model, inputs)
                if not torch.isfinite(loss):
                    break
                self.engine.backward(loss)
                if accelerator.sync_gradients:  # the norm before clipping (inf: measured, not clipped)
                    norm = self.engine.clip_grad_norm_(self.trainable, config.grad_clip or float("inf"))
                    logs = {**logs, "grad_norm": float(norm)}
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            total += float(loss.item()) / micro_steps
        return loss, total, logs

    def after_step(self) -> None:
        """The schedule, the task's own update (a consistency target), the sampling EMA."""
        self.scheduler.step()
        unwrapped = self.engine.unwrap_model(self.model)
        self.task.after_step(unwrapped)
        if self.ema is not None:
            self.ema.ema.step([p for p in unwrapped.parameters() if p.requires_grad])

    def sample(self, done: int) -> dict[str, float]:
        """The monitor's scores of samples with the (EMA) weights at step ``done`` (every process gathers; the
        main one samples)."""
        scores = {}
        with self.engine.plain(self.task, self.model, self.ema) as plain:
            if plain is not None:
                plain_task, plain_model, plain_ema = plain
                with _ema_weights(plain_model, plain_ema):
                    scores = plain_task.sample(plain_model, done, self.out, self.monitor)
        return scores

    def roll_back(self, at: int, evidence: str) -> int:
        """The collapse guard's rollback: the last good checkpoint, its schedule at the halved rate, the bar."""
        back = self.guard.roll_back(self.checkpoints, self.run, at, evidence)
        _set_lr(self.scheduler, self.config.lr, back)
        self.bar.reset(total=self.bar.total)
        self.bar.update(back)
        return back

    def save(self) -> None:
        """The task's folder from the final (EMA) weights."""
        self.accelerator.wait_for_everyone()
        with self.engine.plain(self.task, self.model, self.ema) as plain:
            if plain is not None:
                plain_task, final, plain_ema = plain
                with _ema_weights(final, plain_ema):
                    plain_task.save(final, self.out)
        self.accelerator.wait_for_everyone()


def train(task: TrainTask, config: TrainConfig, progress: bool = True, on_step=None,
          monitor: Monitor | None = None, make_plain_task=None) -> dict:
    """Run (or, with ``config.resume``, continue) training; returns a summary with the final loss and wall time.
    ``on_step(done)`` is called after every optimiser step (the benchmark times steps with it); ``monitor`` scores
    the samples taken every ``sample_every`` steps (None: no samples); ``make_plain_task()`` builds an unsharded
    copy of the task on the CPU, into which ``--parallel fsdp`` gathers the weights to sample and save."""
    if config.gradient_accumulation_steps < 1:
        raise VideoCMError(f"gradient_accumulation_steps must be at least 1, got {config.gradient_accumulation_steps}")
    run = _Training(task, config, progress, monitor, make_plain_task)
    out, guard, checkpoints, accelerator = run.out, run.guard, run.checkpoints, run.accelerator
    began, logs, stopped_at, step = time.time(), {}, None, run.start
    while step < config.steps:
        timed_out = config.max_minutes > 0 and time.time() - began > config.max_minutes * 60
        if timed_out or 0 < config.stop_at_step <= step:
            stopped_at = step
            checkpoints.save(step, run.run, guard)
            reason = f"time limit of {config.max_minutes} min" if timed_out else "--stop-at-step"
            accelerator.print(f"{reason} reached at step {step}; saved and stopping")
            break
        loss, total, logs = run.optimiser_step(step)
        if not torch.isfinite(loss):
            evidence = f"the loss became {loss.item()}"
            if guard is None or guard.policy != "rollback":
                last = latest_checkpoint(out)
                raise VideoCMError(f"{evidence} at step {step}; stopped without saving. Last good checkpoint: "
                                   f"{last or 'none'}. Lower --lr or raise --warmup-steps, then rerun with --resume")
            step = run.roll_back(step, evidence)
            continue
        run.after_step()
        logs = {"step": step + 1, "loss": total, "lr": run.scheduler.get_last_lr()[0], **logs}
        run.bar.set_postfix(loss=f"{logs['loss']:.4f}")
        run.bar.update(1)
        done = step + 1
        if on_step is not None:
            on_step(done)
        if monitor is not None and config.sample_every > 0 and done % config.sample_every == 0:
            scores = run.sample(done)
            logs.update(scores)
            evidence = guard.check(scores, done) if guard is not None else None  # the same on every process
            if evidence is not None and guard.policy == "rollback":
                step = run.roll_back(done, evidence)
                continue
            if evidence is not None and guard.policy == "stop":
                guard.stop(done, evidence)
        if accelerator.is_main_process and (done % 10 == 0 or done == config.steps):
            _write_logs(out, logs, time.time() - began)
        if run.tracking:
            run.track(logs, done)
        callback = STEP_CALLBACK.get()
        if callback is not None and accelerator.is_main_process:
            callback(done, dict(logs))
        if done % config.checkpoint_every == 0 or done == config.steps:
            checkpoints.save(done, run.run, guard)
        step = done
    run.bar.close()
    if run.tracking:
        accelerator.end_training()
    run.save()
    return {"final_loss": logs.get("loss"), "seconds_this_run": round(time.time() - began, 1),
            "resumed_from_step": run.start, "steps_done": stopped_at if stopped_at is not None else config.steps,
            "stopped_by_time_limit": stopped_at is not None, "processes": accelerator.num_processes,
            "parallel": run.engine.mode, "context_parallel": getattr(run.engine, "context", 1)}


def dashboard(report_to: str) -> str | None:
    """accelerate's tracker name for ``--report-to`` (None: none), or a one-line error when its package is
    missing."""
    if report_to == "none":
        return None
    import importlib.util

    package = {"tensorboard": "tensorboard", "wandb": "wandb"}[report_to]
    if importlib.util.find_spec(package) is None:
        hint = " (WANDB_MODE=offline logs without an account or network)" if report_to == "wandb" else ""
        raise VideoCMError(f"--report-to {report_to} needs the {package} package: pip install {package}{hint}, "
                           f"or pass --report-to none")
    return report_to


def hyperparameters(config) -> dict:
    """The run's settings as a dashboard's hyperparameters (numbers, text and booleans; anything else as text)."""
    import dataclasses

    return {k: v if isinstance(v, (bool, int, float, str)) else str(v) for k, v in dataclasses.asdict(config).items()}


def _write_logs(out: Path, logs: dict, seconds: float) -> None:
    """One line per logged step, as JSON lines and as CSV. A column that first appears later (rCM's matching term
    after the tangent warm-up, the sample checks' scores) widens the CSV's header; earlier rows leave it empty."""
    row = {**logs, "seconds": round(seconds, 1)}
    with open(out / "train_log.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    path = out / "train_log.csv"
    fields = []
    if path.exists():
        with path.open() as handle:
            fields = [name for name in handle.readline().strip().split(",") if name]
    added = [name for name in row if name not in fields]
    if fields and added:
        with path.open(newline="") as handle:
            earlier = list(csv.DictReader(handle))
        fields += added
        widened = path.with_suffix(".csv.tmp")
        with widened.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fields)
            writer.writeheader()
            writer.writerows(earlier)
        widened.replace(path)
    fields = fields or list(row)
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(row)


_WAITING: list[str] = []  # lines to say once a run's task has been built (say_when_ready)
# ``callback(step, logs)`` after every optimiser step of the runs started inside ``STEP_CALLBACK.set`` (the Python
# API's ``videocm.distill(..., callback=...)``; each DCM stage counts its own steps)
STEP_CALLBACK: contextvars.ContextVar = contextvars.ContextVar("videocm_step_callback", default=None)


def say_when_ready(lines: list[str], after: bool = False) -> None:
    """Say ``lines`` (on stderr) once the next run's task is built: its teacher, data and settings loaded, so
    that an error in them is the only thing said. ``after``: after what is already waiting, not instead."""
    _WAITING[:] = [*_WAITING, *lines] if after else lines


def say_ready() -> None:
    """Say what :func:`say_when_ready` left waiting, once."""
    import sys

    for line in _WAITING:
        print(line, file=sys.stderr)
    _WAITING.clear()


def run_and_summarise(config: TrainConfig, make_task, progress: bool = True, monitor: Monitor | None = None
                      ) -> dict:
    """Write the resolved config, build the task, train, and write ``OUT/train_summary.json`` (with wall time and
    the parameter counts) — what every training command does around :func:`train`."""
    from accelerate import PartialState

    from ..config import check_values
    from ..runs import run_folder

    check_values(config)
    state = PartialState(cpu=on_cpu(config))
    began = time.time()
    with run_folder(config, state.is_main_process, state.wait_for_everyone, has_trained, resumed_step,
                    check_run_folder, report=state.print):
        task = make_task(config)
        say_ready()
        plain = lambda: make_task(dataclasses.replace(config, parallel="ddp", cpu=True))  # noqa: E731
        summary = train(task, config, progress, monitor=monitor, make_plain_task=plain)
    summary["seconds_total"] = round(time.time() - began, 1)
    summary["parameters"] = sum(p.numel() for p in task.model.parameters())
    summary["trainable_parameters"] = sum(p.numel() for p in task.model.parameters() if p.requires_grad)
    (Path(config.out) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary


class _ema_weights:
    """Swap EMA weights in for the duration of a block (no-op without EMA)."""

    def __init__(self, model: torch.nn.Module, ema: EMAState | None) -> None:
        self.model, self.ema = model, ema

    def trainable(self) -> list[torch.nn.Parameter]:
        """The parameters the EMA follows (frozen ones, e.g. an unused encoder, have no EMA copy)."""
        return [p for p in self.model.parameters() if p.requires_grad]

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.ema.store(self.trainable())
            self.ema.ema.copy_to(self.trainable())

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.ema.restore(self.trainable())


def _set_lr(scheduler, lr: float, step: int) -> None:
    """Make ``lr`` the schedule's peak from ``step`` on (a checkpoint restores the peak it was saved with)."""
    scheduler.base_lrs = [lr] * len(scheduler.base_lrs)
    for group in scheduler.optimizer.param_groups:
        group["initial_lr"] = lr
        group["lr"] = lr * scheduler.lr_lambdas[0](step)
