"""The one shared training loop (teachers, VAE, and the distillation methods of later issues).

Read it top to bottom: batch and loss come from the task, then backward, gradient clipping, optimiser and
learning-rate steps, EMA update, logging, periodic samples and checkpoints. ``accelerate`` decides the device,
the number of processes and mixed precision; checkpoints are accelerate states plus the EMA and the step, and a
run restarted with the same ``out`` resumes from the newest complete checkpoint, drawing the same batches it
would have drawn (each step's randomness is seeded by ``(seed, step, process)``).
"""

from __future__ import annotations

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

from ..errors import VideoCMError

CHECKPOINTS = "checkpoints"
COMPLETE = "complete.json"


@dataclass
class TrainConfig:
    """Settings every training run shares (task configs extend it)."""

    out: str = "outputs/run"
    steps: int = 1000
    batch_size: int = 32
    lr: float = 3e-4
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    sample_every: int = 1000
    mixed_precision: str = "no"
    seed: int = 0
    max_minutes: float = 0.0  # stop early (checkpoint and save) after this much wall time; 0 = no limit


class TrainTask(Protocol):
    """What a method gives the trainer."""

    model: torch.nn.Module

    def loss(self, model: torch.nn.Module, step: int, rng: np.random.Generator, generator: torch.Generator,
             device: torch.device) -> tuple[torch.Tensor, dict[str, float]]: ...

    def sample(self, model: torch.nn.Module, step: int, out: Path) -> dict[str, float]: ...

    def save(self, model: torch.nn.Module, out: Path) -> None: ...


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then cosine decay to ``min_lr_ratio``."""
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))


def latest_checkpoint(out: Path) -> Path | None:
    complete = [p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()]
    return max(complete, key=lambda p: int(p.name.split("-")[1]), default=None)


class _EMAState:
    """EMA weights as a checkpointable object (diffusers' EMAModel)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel(model.parameters(), decay=decay, use_ema_warmup=True, power=0.75)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)


def train(task: TrainTask, config: TrainConfig, progress: bool = True) -> dict:
    """Run (or resume) training; returns a summary with the final loss and wall time."""
    from accelerate import Accelerator

    out = Path(config.out)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    accelerator = Accelerator(mixed_precision=config.mixed_precision)
    model = task.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise VideoCMError("the task has no trainable parameters")
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    ema = _EMAState(accelerator.unwrap_model(model), config.ema_decay) if config.ema_decay > 0 else None
    if ema is not None:
        accelerator.register_for_checkpointing(ema)

    start = 0
    resume_from = latest_checkpoint(out)
    if resume_from is not None:
        accelerator.load_state(str(resume_from))
        start = json.loads((resume_from / COMPLETE).read_text())["step"]
        accelerator.print(f"resuming from {resume_from} (step {start})")
    log_path = out / "train_log.jsonl"
    began = time.time()
    bar = tqdm(range(start, config.steps), initial=start, total=config.steps, desc=out.name,
               disable=not (progress and accelerator.is_main_process))
    logs: dict[str, float] = {}
    stopped_at = None
    for step in bar:
        if config.max_minutes > 0 and time.time() - began > config.max_minutes * 60:
            stopped_at = step
            _save_checkpoint(accelerator, out, step, config.keep_checkpoints)
            accelerator.print(f"time limit of {config.max_minutes} min reached at step {step}; saved and stopping")
            break
        rng = np.random.default_rng([config.seed, step, accelerator.process_index])
        generator = torch.Generator(device="cpu").manual_seed(
            int(rng.integers(2**63 - 1)))
        model.train()
        with accelerator.autocast():
            loss, logs = task.loss(model, step, rng, generator, accelerator.device)
        if not torch.isfinite(loss):
            last = latest_checkpoint(out)
            raise VideoCMError(
                f"loss became {loss.item()} at step {step}; stopped without saving. Last good checkpoint: "
                f"{last or 'none'}. Lower --lr or raise --warmup-steps, then rerun to resume"
            )
        accelerator.backward(loss)
        if config.grad_clip > 0 and accelerator.sync_gradients:
            accelerator.clip_grad_norm_(trainable, config.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.ema.step(accelerator.unwrap_model(model).parameters())
        logs = {"step": step + 1, "loss": float(loss.item()), "lr": scheduler.get_last_lr()[0], **logs}
        bar.set_postfix(loss=f"{logs['loss']:.4f}")
        done = step + 1
        if accelerator.is_main_process and config.sample_every > 0 and done % config.sample_every == 0:
            with _ema_weights(accelerator.unwrap_model(model), ema):
                logs.update(task.sample(accelerator.unwrap_model(model), done, out))
        if accelerator.is_main_process and (done % 50 == 0 or done == config.steps):
            with open(log_path, "a") as handle:
                handle.write(json.dumps(logs) + "\n")
        if done % config.checkpoint_every == 0 or done == config.steps:
            _save_checkpoint(accelerator, out, done, config.keep_checkpoints)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        final = accelerator.unwrap_model(model)
        with _ema_weights(final, ema):
            task.save(final, out)
    return {"final_loss": logs.get("loss"), "seconds_this_run": round(time.time() - began, 1),
            "resumed_from_step": start, "steps_done": stopped_at if stopped_at is not None else config.steps,
            "stopped_by_time_limit": stopped_at is not None}


class _ema_weights:
    """Swap EMA weights in for the duration of a block (no-op without EMA)."""

    def __init__(self, model: torch.nn.Module, ema: _EMAState | None) -> None:
        self.model, self.ema = model, ema

    def __enter__(self) -> None:
        if self.ema is not None:
            self.ema.ema.store(self.model.parameters())
            self.ema.ema.copy_to(self.model.parameters())

    def __exit__(self, *exc) -> None:
        if self.ema is not None:
            self.ema.ema.restore(self.model.parameters())


def _save_checkpoint(accelerator, out: Path, step: int, keep: int) -> None:
    folder = out / CHECKPOINTS / f"step-{step}"
    if folder.exists():
        shutil.rmtree(folder)
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        # The marker is written last: a checkpoint without it (a run killed mid-save) is never resumed from.
        (folder / COMPLETE).write_text(json.dumps({"step": step}))
        complete = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()),
                          key=lambda p: int(p.name.split("-")[1]))
        for old in complete[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
