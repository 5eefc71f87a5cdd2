"""A run's checkpoints, one owner: what each holds (named state), writing, verifying, resuming, keeping and rolling
back.

``OUT/checkpoints/step-N`` holds the run's state by name, not by the order in which objects were registered:
``model`` (the student, or the network a task trains), ``optimizer``, ``scheduler`` (the learning-rate schedule),
``ema`` (the sampling EMA, when on), the task's own (:meth:`TrainTask.checkpoint_state`: ``target``, the
consistency target network) and what it prepared beside the model (``discriminator``, ``fake_score`` and their
optimisers), and each process's random number generators (``rng-R.pt``); the data position is the step itself
(every step draws its batch from ``(seed, step)``). ``named_state.json`` lists the names. Under ``--parallel ddp``
the model is ``model.safetensors``, a module or flat tensor state ``NAME.safetensors`` (a module with frozen parts: its
trainable weights alone) and structured state (optimisers, schedules) ``NAME.pt``; under ``--parallel fsdp`` they are one
``torch.distributed.checkpoint`` folder (``model``, ``optimizer``, ``state/NAME``). A tool that reads a checkpoint
(:mod:`videocm.training.gather`) asks for a name.

A checkpoint is written under a temporary name, its ``complete.json`` (step, learning-rate scale, the collapse
guard's last check and a manifest: size and SHA-256 of every file) written last, then renamed; the newest ``keep``
are kept. ``--resume`` continues from the newest intact one (files matching the manifest), skipping a damaged one
and saying why. Checkpoints written before named state (accelerate's ``custom_checkpoint_N.pkl`` and DCP's
positional ``objects``) still resume: their positions are read in the order the trainer registered objects then.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import VideoCMError

CHECKPOINTS = "checkpoints"
COMPLETE = "complete.json"
NAMED_STATE = "named_state.json"


def complete_checkpoints(out: Path) -> list[Path]:
    """Checkpoint folders marked complete, newest first."""
    complete = [p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()]
    return sorted(complete, key=lambda p: int(p.name.split("-")[1]), reverse=True)


def latest_checkpoint(out: Path) -> Path | None:
    """The newest checkpoint marked complete (not verified; :func:`intact_checkpoint` checks its files)."""
    return next(iter(complete_checkpoints(out)), None)


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
    for folder in complete_checkpoints(out):
        damage = checkpoint_damage(folder)
        if damage is None:
            return folder
        report(f"skipping checkpoint {folder.name}: {damage}")
    return None


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


def resume_point(out: Path, resume: bool, accelerator) -> Path | None:
    """:func:`check_resume` once, in the main process (it reads every checkpoint file for its checksum), with
    its answer, or its error, handed to every process."""
    if accelerator.num_processes == 1:
        return check_resume(out, resume, accelerator.print)
    from accelerate.utils import broadcast_object_list

    answer: list = [None]
    if accelerator.is_main_process:
        try:
            found = check_resume(out, resume, accelerator.print)
            answer = [("checkpoint", None if found is None else str(found))]
        except VideoCMError as error:
            answer = [("error", str(error))]
    broadcast_object_list(answer)
    kind, value = answer[0]
    if kind == "error":
        raise VideoCMError(value)
    return None if value is None else Path(value)


def checkpoint_step(folder: Path) -> int:
    return int(json.loads((folder / COMPLETE).read_text())["step"])


@dataclass
class RunState:
    """What a run changes about itself as it goes (kept in each checkpoint's ``complete.json``)."""

    lr_scale: float = 1.0  # halved by each collapse rollback
    rollbacks: int = 0


def checkpoint_lr_scale(folder: Path) -> float:
    return float(json.loads((folder / COMPLETE).read_text()).get("lr_scale", 1.0))



class RunCheckpoints:
    """The named state of one run (the engine's model, optimiser and prepared modules, then what the trainer and
    the task register) and its checkpoint folders under ``OUT/checkpoints``."""

    def __init__(self, out: Path, engine, keep: int) -> None:
        self.out, self.engine, self.keep = out, engine, keep
        self.registered: dict[str, object] = {}  # in registration order: the positions of older checkpoints

    def register(self, name: str, obj) -> None:
        """``obj`` (with ``state_dict``/``load_state_dict``) is saved and loaded as ``name``."""
        if name in self.registered:
            raise ValueError(f"checkpoint state {name!r} registered twice")
        self.registered[name] = obj

    def states(self) -> dict[str, object]:
        return {**self.engine.named_state(), **self.registered}

    def load(self, folder: Path) -> None:
        """Every named state from ``folder`` (an older checkpoint's by position)."""
        self.engine.load_state(folder, self.states(), list(self.registered))

    def save(self, step: int, run: "RunState | None" = None, guard: "CollapseGuard | None" = None) -> None:
        """Write ``step-N`` under a temporary name, mark it complete, then rename: a killed save leaves no
        checkpoint. Of the older ones the newest ``keep`` are kept, and the collapse guard's last good one."""
        accelerator, out = self.engine.accelerator, self.out
        folder = out / CHECKPOINTS / f"step-{step}"
        temporary = out / CHECKPOINTS / f".tmp-step-{step}"
        if accelerator.is_main_process and temporary.exists():
            shutil.rmtree(temporary)
        accelerator.wait_for_everyone()
        states = self.states()
        self.engine.save_state(temporary, states)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:  # the manifest is written last: a checkpoint without it is not complete
            (temporary / NAMED_STATE).write_text(json.dumps({"names": list(states)}))
            record = {"step": step, "lr_scale": run.lr_scale if run else 1.0,
                      "collapse_check": guard.previous if guard is not None else None,  # the last check that passed
                      "files": checkpoint_manifest(temporary)}
            (temporary / COMPLETE).write_text(json.dumps(record))
            if folder.exists():
                shutil.rmtree(folder)
            temporary.rename(folder)
            complete = sorted((p for p in (out / CHECKPOINTS).glob("step-*") if (p / COMPLETE).is_file()),
                              key=lambda p: int(p.name.split("-")[1]))
            good = guard.good_checkpoint() if guard is not None else None
            for old in complete[:-self.keep] if self.keep > 0 else []:
                if old != good:
                    shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()


def is_named(folder: Path) -> bool:
    """Whether ``folder`` holds named state (else it is an older checkpoint, read by position)."""
    return (Path(folder) / NAMED_STATE).is_file()


class CollapseGuard:
    """Acts on the periodic sample checks of a distillation run by ``--on-collapse`` (see :mod:`.collapse`):
    every process reaches the same verdict (the main one samples and decides)."""

    MAX_ROLLBACKS = 3

    def __init__(self, policy: str, out: Path, accelerator, start: int) -> None:
        self.policy, self.out, self.accelerator = policy, out, accelerator
        self.good_step = start  # every check up to here passed (a fresh run starts from its initialisation)
        self.previous: dict | None = None  # the figures of the last check that passed

    def good_checkpoint(self) -> Path | None:
        """The newest checkpoint taken at or before the last check that passed."""
        kept = [p for p in complete_checkpoints(self.out) if checkpoint_step(p) <= self.good_step]
        return kept[0] if kept else None

    def check(self, scores: dict, step: int) -> str | None:
        from accelerate.utils import broadcast_object_list

        from .collapse import collapse_evidence

        verdict = [collapse_evidence(scores, self.previous) if self.accelerator.is_main_process else None]
        if self.accelerator.num_processes > 1:
            broadcast_object_list(verdict)
        evidence = verdict[0]
        if evidence is None:
            self.good_step, self.previous = step, {**scores, "step": step}
        elif self.policy == "warn":
            self.accelerator.print(f"videocm: warning: the student looks collapsed at step {step}: {evidence} "
                                   f"(--on-collapse warn: training on)")
        return evidence

    def _set_aside_newer(self, good: Path | None) -> None:
        """Checkpoints after the good one are renamed ``collapsed-step-N`` (kept, but never resumed from)."""
        if self.accelerator.is_main_process:
            limit = checkpoint_step(good) if good is not None else -1
            for folder in complete_checkpoints(self.out):
                if checkpoint_step(folder) > limit:
                    aside = folder.with_name(f"collapsed-{folder.name}")
                    if aside.exists():
                        shutil.rmtree(aside)
                    folder.rename(aside)
        self.accelerator.wait_for_everyone()

    def stop(self, step: int, evidence: str, why: str = "--on-collapse stop") -> None:
        good = self.good_checkpoint()
        self._set_aside_newer(good)
        kept = (f"the last good checkpoint is {good}, which --resume continues from" if good is not None else
                "no checkpoint was taken before it")
        hint = ", or pass --on-collapse rollback" if self.policy == "stop" else ""
        raise VideoCMError(f"the student collapsed at step {step}: {evidence}. Stopped ({why}); {kept}. Lower --lr "
                           f"or raise --warmup-steps{hint}")

    def roll_back(self, checkpoints: "RunCheckpoints", run: RunState, step: int, evidence: str) -> int:
        """Load the last good checkpoint with the learning rate halved; returns its step."""
        good = self.good_checkpoint()
        if good is None or run.rollbacks >= self.MAX_ROLLBACKS:
            self.stop(step, evidence, f"{run.rollbacks} rollbacks done" if good is not None else
                      "--on-collapse rollback, with no checkpoint before it to roll back to")
        self._set_aside_newer(good)
        checkpoints.load(good)
        self.previous = json.loads((good / COMPLETE).read_text()).get("collapse_check")
        run.lr_scale, run.rollbacks = run.lr_scale * 0.5, run.rollbacks + 1
        start = checkpoint_step(good)
        self.accelerator.print(f"videocm: the student collapsed at step {step}: {evidence}; rolled back to "
                               f"{good.name} with the learning rate halved (x{run.lr_scale:g}; rollback "
                               f"{run.rollbacks} of {self.MAX_ROLLBACKS})")
        return start
