"""The one shared training loop (teachers, VAE, and the distillation methods).

Read it top to bottom: batch and loss come from the task, then backward, gradient clipping, optimiser and
learning-rate steps, the task's own per-step update (a consistency target network), EMA update, logging, periodic
samples and checkpoints. ``accelerate`` decides the device, the number of processes, mixed precision and gradient
accumulation: the same command runs on one CPU, one GPU or several processes.

Determinism: each optimiser step's randomness comes from ``numpy.random.default_rng([seed, step])``, the same on
every process and micro-step; a task draws the *global* batch from it and keeps its own shard (``task.shard``), so
two processes of batch B/2, or G accumulation micro-steps of B/G, compute what one process of batch B computes, and a resumed run draws exactly the batches
the uninterrupted run would have drawn. Checkpoints (``out/checkpoints/step-N``) hold model, optimiser, learning
rate schedule, EMA, the task's extra state and the step; they are written under a temporary name and renamed when
complete, the last ``keep_checkpoints`` are kept, and ``resume`` continues from the newest intact one: the
checkpoint's ``complete.json``, written last, holds a manifest (size and SHA-256 of every file), which ``resume``
checks, skipping a damaged checkpoint (a truncated or missing file) for the one before it and saying why.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from ..config import Count, Decay, Fraction, Natural, NonNegative, OutputPath, Positive
from ..errors import VideoCMError
from .ema import EMAState
from .parallel import make_engine

CHECKPOINTS = "checkpoints"
COMPLETE = "complete.json"


@dataclass
class TrainConfig:
    """Settings every training run shares (task configs extend it)."""

    out: OutputPath = "outputs/run"  # output folder (model, checkpoints, logs, config.yaml)
    steps: Count = 1000  # optimiser steps (the learning-rate schedule spans them)
    batch_size: Count = 32  # global batch per optimiser step (split over processes and accumulation micro-steps)
    gradient_accumulation_steps: Count = 1  # micro-steps per optimiser step (the batch is split over them)
    lr: Positive = 3e-4  # peak AdamW learning rate
    weight_decay: NonNegative = 0.01  # AdamW weight decay
    warmup_steps: Natural = 100  # linear learning-rate warm-up steps, then cosine decay
    min_lr_ratio: Fraction = 0.1  # the cosine decay ends at lr times this
    grad_clip: NonNegative = 1.0  # gradient-norm clipping (0: off)
    ema_decay: Decay = 0.999  # EMA of the weights used for samples and the saved model (0: no EMA)
    checkpoint_every: Count = 500  # steps between checkpoints (resumable with --resume)
    keep_checkpoints: Count = 2  # newest checkpoints kept
    sample_every: Natural = 1000  # steps between monitoring samples and scores (0: none)
    mixed_precision: str = "no"  # "no", "bf16" or "fp16" (accelerate)
    seed: Natural = 0  # seed of the weights, the data and the noise
    max_minutes: NonNegative = 0.0  # stop early (checkpoint and save) after this much wall time; 0 = no limit
    stop_at_step: Natural = 0  # stop early (checkpoint and save) at this step, keeping the schedule of ``steps``; 0 = off
    resume: bool = False  # continue from the newest checkpoint in ``out``
    cpu: bool = False  # force the CPU even when a GPU is there
    parallel: str = "ddp"  # ddp (every process holds every weight) or fsdp (FSDP2: weights sharded per block)
    fsdp_shard_teacher: bool = True  # --parallel fsdp: shard the frozen teacher too (false: a whole copy each)
    fsdp_reshard_after_forward: bool = True  # --parallel fsdp: free gathered weights after each block's forward
    context_parallel: Count = 1  # --parallel fsdp: split each clip's tokens over this many processes (Wan networks)
    context_parallel_kind: str = "ulysses"  # ulysses (all-to-all over heads) or ring (GPU attention backends only)


class Monitor(Protocol):
    """Scores a run's periodic samples; given to the trainer by its caller (the CLI passes the judge's,
    :class:`evaluation.monitor.JudgeMonitor`), so training never imports evaluation."""

    def samples(self, pipeline, n: int, steps: int, guidance: float | None, out: Path, step: int,
                prompts: list[str] | None = None) -> dict[str, float]:
        """Generate ``n`` clips with ``pipeline``, write ``OUT/samples/step-N.gif``, return their scores."""

    def control_samples(self, pipeline, n: int, steps: int, guidance: float | None, geometry
                        ) -> dict[str, float]:
        """How well ``pipeline`` (with a control branch) follows held-out silhouettes."""

    def reconstructions(self, reconstructed: list, originals: list, captions: list[str]) -> dict:
        """Quality of VAE reconstructions (uint8 clips) of ``originals``."""


class TrainTask(Protocol):
    """What a method gives the trainer. ``shard`` is set by the trainer: ``(process_index, num_processes)``."""

    model: torch.nn.Module
    shard: tuple[int, int]

    def loss(self, model: torch.nn.Module, step: int, rng: np.random.Generator, generator: torch.Generator,
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]: ...

    def sample(self, model: torch.nn.Module, step: int, out: Path, monitor: Monitor) -> dict[str, float]: ...

    def save(self, model: torch.nn.Module, out: Path) -> None: ...


def shard_rows(total: int, shard: tuple[int, int]) -> slice:
    """This process's contiguous share of a global batch of ``total`` rows."""
    index, count = shard
    if total % count:
        raise VideoCMError(f"batch size {total} does not split over {count} processes; use a multiple of {count}")
    size = total // count
    return slice(index * size, (index + 1) * size)


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def _complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders marked complete, newest first."""
    complete = [p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()]
    return sorted(complete, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint marked complete (not verified; :func:`intact_checkpoint` checks its files)."""
    return next(iter(_complete_checkpoints(out)), None)


def checkpoint_manifest(folder: Path) -> dict[str, list]:
    """``{relative path: [size, sha256]}`` of every file of a checkpoint folder but ``complete.json``."""
    files = {}
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and p.name != COMPLETE):
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 24), b""):
                digest.update(chunk)
        files[path.relative_to(folder).as_posix()] = [path.stat().st_size, digest.hexdigest()]
    return files


def checkpoint_damage(folder: Path) -> str | None:
    """Why the checkpoint in ``folder`` cannot be resumed from, or None when its files match its manifest
    (checkpoints written before manifests are taken as they are)."""
    try:
        record = json.loads((folder / COMPLETE).read_text())
        int(record["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"its {COMPLETE} is unreadable"
    files = record.get("files")
    if files is None:
        return None
    for name, (size, _) in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes where {size} were written (truncated?)"
    actual = checkpoint_manifest(folder)
    for name, (_, digest) in files.items():
        if actual[name][1] != digest:
            return f"{name} does not match its checksum (changed after it was written)"
    return None


def intact_checkpoint(out: Path, report=print) -> Path | None:
    """The newest checkpoint whose files match its manifest; each damaged one skipped is reported (one line)."""
    for folder in _complete_checkpoints(out):
        damage = checkpoint_damage(folder)
        if damage is None:
            return folder
        report(f"skipping checkpoint {folder.name}: {damage}")
    return None


class _Checkpointable:
    """A torch object (e.g. the LR scheduler) registered with accelerate's checkpointing as it is."""

    def __init__(self, obj) -> None:
        self.obj = obj

    def state_dict(self) -> dict:
        return self.obj.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.obj.load_state_dict(state)


def check_resume(out: Path, resume: bool, report=print, verify: bool = True) -> Path | None:
    """The checkpoint to resume from (the newest intact one), or a one-line error when ``out`` has one and
    ``resume`` is off, or when every checkpoint it has is damaged. ``verify=False``: only the refusal, no
    checksums (an early check before the run that verifies)."""
    newest = latest_checkpoint(out)
    if newest is not None and not resume:
        raise VideoCMError(f"{out} already holds a run (newest checkpoint {newest.name}); pass --resume to continue "
                           f"it or choose another --out")
    if newest is None or not verify:
        return newest
    intact = intact_checkpoint(out, report)
    if intact is None:
        raise VideoCMError(f"every checkpoint in {out / CHECKPOINTS} is damaged (see above), so the run cannot be "
                           f"resumed; start it again with another --out")
    return intact


def train(task: TrainTask, config: TrainConfig, progress: bool = True, on_step=None,
          monitor: Monitor | None = None, make_plain_task=None) -> dict:
    """Run (or, with ``config.resume``, continue) training; returns a summary with the final loss and wall time.
    ``on_step(done)`` is called after every optimiser step (the benchmark times steps with it); ``monitor`` scores
    the samples taken every ``sample_every`` steps (None: no samples); ``make_plain_task()`` builds an unsharded
    copy of the task on the CPU, into which ``--parallel fsdp`` gathers the weights to sample and save."""
    from accelerate import Accelerator

    out = Path(config.out)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if config.gradient_accumulation_steps < 1:
        raise VideoCMError(f"gradient_accumulation_steps must be at least 1, got {config.gradient_accumulation_steps}")
    accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=config.cpu,
                              gradient_accumulation_steps=config.gradient_accumulation_steps)
    resume_from = check_resume(out, config.resume, accelerator.print)
    micro_steps = config.gradient_accumulation_steps
    engine = make_engine(config, accelerator, make_plain_task)
    shard_index, shard_count = engine.data_shard()  # ranks of one context-parallel group share their rows
    if config.batch_size % (micro_steps * shard_count):
        raise VideoCMError(f"batch size {config.batch_size} does not split into {micro_steps} accumulation steps "
                           f"on {shard_count} data-parallel ranks; use a multiple of {micro_steps * shard_count}")
    task.shard = (shard_index, shard_count)
    if not any(p.requires_grad for p in task.model.parameters()):
        raise VideoCMError("the task has no trainable parameters")
    frozen = getattr(task, "frozen_modules", dict)()
    engine.split_sequences([task.model, *frozen.values()], getattr(task, "latent_shape", None))
    engine.shard_frozen(frozen)  # before the student: a detail expert shares frozen weights
    optimizers = []

    def make_optimizer(parameters):
        optimizers.append(torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay))
        return optimizers[-1]

    model, optimizer = engine.prepare_student(task.model, make_optimizer)
    trainable = [p for p in model.parameters() if p.requires_grad]  # sharded ones under fsdp
    # stepped by hand once per optimiser step (accelerate would step it once per process)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizers[0], lambda s: learning_rate_factor(s, config))
    if hasattr(task, "prepare"):
        task.prepare(engine)  # the task's own modules and optimisers (e.g. DCM's discriminator)
    engine.register(_Checkpointable(scheduler))
    ema = EMAState(engine.unwrap_model(model), config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None:
        engine.register(ema)
    engine.register(*getattr(task, "checkpoint_objects", lambda: [])())

    start = 0
    if resume_from is not None:
        engine.load_state(resume_from)
        start = json.loads((resume_from / COMPLETE).read_text())["step"]
        accelerator.print(f"resuming from {resume_from} (step {start})")
    elif accelerator.is_main_process:
        for log in ("train_log.jsonl", "train_log.csv"):
            (out / log).unlink(missing_ok=True)
    began = time.time()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=out.name,
               disable=not (progress and accelerator.is_main_process))
    logs: dict[str, float] = {}
    stopped_at = None
    for step in bar:
        timed_out = config.max_minutes > 0 and time.time() - began > config.max_minutes * 60
        if timed_out or 0 < config.stop_at_step <= step:
            stopped_at = step
            _save_checkpoint(engine, out, step, config.keep_checkpoints)
            reason = f"time limit of {config.max_minutes} min" if timed_out else "--stop-at-step"
            accelerator.print(f"{reason} reached at step {step}; saved and stopping")
            break
        model.train()
        total = 0.0
        for micro in range(micro_steps):
            # every micro-step redraws the step's global batch and keeps its own share of it, so G micro-steps
            # of B/G rows add up to exactly one step of B rows
            rng = np.random.default_rng([config.seed, step])
            generator = torch.Generator(device="cpu").manual_seed(int(rng.integers(2**63 - 1)))
            task.shard = (micro * shard_count + shard_index, micro_steps * shard_count)
            task.micro_batch = config.batch_size
            with accelerator.accumulate(model), accelerator.autocast():
                loss, logs = task.loss(model, step, rng, generator, accelerator.device)
                if not torch.isfinite(loss):
                    last = latest_checkpoint(out)
                    raise VideoCMError(
                        f"loss became {loss.item()} at step {step}; stopped without saving. Last good checkpoint: "
                        f"{last or 'none'}. Lower --lr or raise --warmup-steps, then rerun with --resume"
                    )
                engine.backward(loss)
                if accelerator.sync_gradients and config.grad_clip > 0:
                    engine.clip_grad_norm_(trainable, config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += float(loss.item()) / micro_steps
        scheduler.step()
        if hasattr(task, "after_step"):
            task.after_step(engine.unwrap_model(model))
        if ema is not None:
            ema.ema.step([p for p in engine.unwrap_model(model).parameters() if p.requires_grad])
        logs = {"step": step + 1, "loss": total, "lr": scheduler.get_last_lr()[0], **logs}
        bar.set_postfix(loss=f"{logs['loss']:.4f}")
        done = step + 1
        if on_step is not None:
            on_step(done)
        if monitor is not None and config.sample_every > 0 and done % config.sample_every == 0:
            with engine.plain(task, model, ema) as plain:  # every process gathers; the main one samples
                if plain is not None:
                    plain_task, plain_model, plain_ema = plain
                    with _ema_weights(plain_model, plain_ema):
                        logs.update(plain_task.sample(plain_model, done, out, monitor))
        if accelerator.is_main_process and (done % 10 == 0 or done == config.steps):
            _write_logs(out, logs, time.time() - began)
        if done % config.checkpoint_every == 0 or done == config.steps:
            _save_checkpoint(engine, out, done, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    with engine.plain(task, model, ema) as plain:
        if plain is not None:
            plain_task, final, plain_ema = plain
            with _ema_weights(final, plain_ema):
                plain_task.save(final, out)
    accelerator.wait_for_everyone()
    return {"final_loss": logs.get("loss"), "seconds_this_run": round(time.time() - began, 1),
            "resumed_from_step": start, "steps_done": stopped_at if stopped_at is not None else config.steps,
            "stopped_by_time_limit": stopped_at is not None, "processes": accelerator.num_processes,
            "parallel": engine.mode, "context_parallel": getattr(engine, "context", 1)}


def _write_logs(out: Path, logs: dict, seconds: float) -> None:
    """One line per logged step, as JSON lines and as CSV (columns fixed by the first row written)."""
    row = {**logs, "seconds": round(seconds, 1)}
    with open(out / "train_log.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    path = out / "train_log.csv"
    fields = list(row) if not path.exists() else path.open().readline().strip().split(",")
    with open(path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if handle.tell() == 0:
            writer.writeheader()
        writer.writerow(row)


def run_and_summarise(config: TrainConfig, make_task, progress: bool = True, monitor: Monitor | None = None
                      ) -> dict:
    """Write the resolved config, build the task, train, and write ``OUT/train_summary.json`` (with wall time and
    the parameter counts) — what every training command does around :func:`train`."""
    from ..config import write_config

    write_config(config, config.out)
    began = time.time()
    task = make_task(config)
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

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.ema.store(self.model.parameters())
            self.ema.ema.copy_to(self.model.parameters())

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.ema.restore(self.model.parameters())


def _save_checkpoint(engine, out: Path, step: int, keep: int) -> None:
    """Write ``step-N`` under a temporary name, mark it complete, then rename: a killed save leaves no checkpoint."""
    accelerator = engine.accelerator
    folder = out / CHECKPOINTS / f"step-{step}"
    temporary = out / CHECKPOINTS / f".tmp-step-{step}"
    if accelerator.is_main_process and temporary.exists():
        shutil.rmtree(temporary)
    accelerator.wait_for_everyone()
    engine.save_state(temporary)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:  # the manifest is written last: a checkpoint without it is not complete
        (temporary / COMPLETE).write_text(json.dumps({"step": step, "files": checkpoint_manifest(temporary)}))
        if folder.exists():
            shutil.rmtree(folder)
        temporary.rename(folder)
        complete = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()),
                          key=lambda p: int(p.name.split("-")[1]))
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
