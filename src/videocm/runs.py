"""Run folders, in one place: checking ``--out`` before a run, clearing it (``--overwrite``), resuming it from its
own resolved config, recording what a resume changed, and removing a folder a refused run made.

:mod:`videocm.config` only parses and validates (it reports what an output path holds, and deletes nothing); this
module is the one that writes and deletes run folders. The trainer (:func:`videocm.distill.trainer.
run_and_summarise`), DCM's stages and the CLI's ``--overwrite`` all go through it.

*Resuming.* ``--resume`` continues the run with the settings in its ``OUT/config.yaml``: the CLI starts from them
(:func:`run_values`), and a flag given anew is compared with them (:func:`resume_changes`). What may change
between two legs of a run (:data:`CHANGEABLE_ON_RESUME`: steps, learning rates, cadences, time caps, where it
runs) is applied, said in one line each, and recorded in ``OUT/resume_changes.jsonl`` with the step it took effect
at; anything else (teacher, method, batch, grid, student kind, data ...) is refused in one line. Nothing in the run
folder is rewritten before every check has passed.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable

import yaml

from .config import (CONFIG_FILE, OVERWRITE_FLAG, _written, existing_output_problem, flat_mapping, holds_something,
                     output_settings, settings, write_config)
from .errors import VideoCMError

CHANGES_FILE = "resume_changes.jsonl"
# settings of one leg of a run, given again (or not) on each command: never carried over to the next leg
PER_LEG = frozenset({"resume", "overwrite", "stop_at_step"})

# settings a resumed run may take anew: the schedule's length and rates, cadences, time caps, and where and how it
# runs (none of which changes what the run's steps compute)
CHANGEABLE_ON_RESUME = frozenset({
    "steps", "lr", "warmup_steps", "min_lr_ratio", "checkpoint_every", "keep_checkpoints", "sample_every",
    "sample_clips", "sample_steps", "max_minutes", "on_collapse", "cpu",
    "teacher_offload", "offload_encoders", "gradient_checkpointing", "fsdp_shard_teacher", "fsdp_reshard_after_forward",
    "semantic_steps", "detail_steps", "semantic_lr", "detail_lr", "semantic_minutes", "detail_minutes",
    "semantic_stop_step", "detail_stop_step", "fake_lr", "disc_lr", "preflight", "report_to"})


def run_values(out: str | Path) -> dict[str, Any] | None:
    """The resolved settings a run folder was started with (its ``config.yaml``, sections flattened; the
    :data:`PER_LEG` ones left out), or None."""
    path = Path(out).expanduser() / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise VideoCMError(f"{path} is not valid YAML ({str(error).splitlines()[0]}); the run cannot be resumed "
                           f"from it") from error
    return {key: value for key, value in flat_mapping(values).items() if key not in PER_LEG}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def resume_changes(config: Any) -> list[tuple[str, Any, Any]]:
    """``(setting, the run's value, the new value)`` of each setting ``config`` changes in the run it resumes; a
    one-line error for the first change a resumed run may not take."""
    before = run_values(config.out)
    if before is None:
        return []
    changes = []
    for setting in settings(type(config)):
        if setting.name not in before or setting.name == "out":  # a run folder may have been moved
            continue
        old, new = before[setting.name], setting.get(config)
        if old == new or (isinstance(old, (int, float)) and isinstance(new, (int, float)) and float(old) == float(new)):
            continue
        if setting.name not in CHANGEABLE_ON_RESUME:
            raise VideoCMError(
                f"{setting.flag} {new}: the run in {config.out} was started with {setting.flag} {old}, and a resumed "
                f"run keeps it (what may change on --resume: steps, learning rates, cadences, time caps); drop "
                f"{setting.flag}, or start a new run with another --out")
        changes.append((setting.name, old, new))
    return changes


def record_changes(out: Path, changes: list[tuple[str, Any, Any]], step: int, report=print) -> None:
    """Say each change in one line and append it to ``OUT/resume_changes.jsonl`` with the step it takes effect at."""
    if not changes:
        return
    with open(out / CHANGES_FILE, "a") as handle:
        for name, old, new in changes:
            report(f"videocm: resuming {out} at step {step} with {_flag(name)} {new} (the run had {old})")
            handle.write(json.dumps({"step": step, "setting": name, "from": old, "to": new}) + "\n")


def _refuse_to_delete(path: Path, flag: str) -> None:
    here = Path.cwd().resolve()
    resolved = path.resolve()
    if resolved in (here, *here.parents, Path.home().resolve()) or (resolved / ".git").exists():
        raise VideoCMError(f"{OVERWRITE_FLAG} would delete {path} (the current folder, one above it, your home or "
                           f"a git checkout); give {flag} a folder of its own")


def clear_outputs(config: Any) -> list[str]:
    """With ``overwrite`` on: delete what each output path of ``config`` holds (a file, or a folder and everything
    in it), so that nothing stale is left beside the new outputs; returns what was deleted. Run it once, in the
    main process, before the command writes anything."""
    if not getattr(config, "overwrite", False):
        return []
    cleared = []
    for setting, value, marker in output_settings(config):
        path = Path(value).expanduser()
        if marker.kind == "reused":
            continue
        if marker.names:
            for written in _written(path, marker.names):
                written.unlink()
                cleared.append(str(written))
            continue
        if not holds_something(path):
            continue
        if path.is_dir():
            _refuse_to_delete(path, setting.flag)
            shutil.rmtree(path)
        else:
            path.unlink()
        cleared.append(value)
    return cleared


@contextlib.contextmanager
def run_folder(config: Any, main: bool, wait: Callable[[], None], trained: Callable[[Path], bool],
               resume_step: Callable[[Path], int], check: Callable[[Any], None] | None = None, report=print):
    """The run folder ``config.out`` around a run: every check first (``--out`` may be written, a resume changes
    only what it may, then ``check(config)``), and only then, in the main process, ``--overwrite``'s clearing, the
    resolved ``config.yaml`` and the record of a resume's changes (at step ``resume_step(out)``). A run refused
    inside the block (``VideoCMError``) removes the folder when it made it and ``trained(out)`` is false."""
    out = Path(config.out)
    problem = existing_output_problem(config.out, "--out", "run", config.overwrite, config.resume)
    if problem:
        raise VideoCMError(problem)
    changes = resume_changes(config) if config.resume else []
    if check is not None:
        check(config)
    if main:
        clear_outputs(config)
    fresh = not holds_something(out)
    wait()
    if main:
        write_config(config, out)
        record_changes(out, changes, resume_step(out), report)
    try:
        yield fresh
    except VideoCMError:
        if main and fresh and not trained(out):  # refused before it trained: nothing there is worth keeping
            shutil.rmtree(out, ignore_errors=True)
        raise

