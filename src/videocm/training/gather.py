"""A checkpoint of an LCM run gathered into the usual student folder, on one process, no GPU.

``RUN/checkpoints/step-N`` holds the student's, the EMA's and the target network's state, each by name
(:mod:`videocm.distill.checkpoints`): one ``torch.distributed.checkpoint`` folder of shards under ``--parallel fsdp``,
safetensors files otherwise. :func:`gather_checkpoint` rebuilds the run's task from ``RUN/config.yaml`` on the CPU,
loads the checkpoint into it whole (DCP reshards to one process) and saves the folder the finished run would have
saved at that step. ``videocm export --model RUN/checkpoints/step-N`` goes through it, so a run still training (or
stopped early) can be exported from any complete checkpoint.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


from ..config import CONFIG_FILE, config_from_dict
from ..runs import run_values
from ..distill.ema import EMAState
from ..distill.lcm import LCMConfig, LCMTask
from ..distill.checkpoints import COMPLETE, is_named
from ..errors import VideoCMError


def is_sharded_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` is a complete DCP checkpoint of a videocm run."""
    folder = Path(folder)
    return (folder / ".metadata").is_file() and (folder / COMPLETE).is_file()


def is_checkpoint(folder: str | Path) -> bool:
    """Whether ``folder`` is a complete checkpoint of a videocm run (sharded or not)."""
    return (Path(folder) / COMPLETE).is_file()


def gather_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """Write the student of checkpoint ``checkpoint`` (``RUN/checkpoints/step-N``, sharded or not) to ``out``."""
    checkpoint, out = Path(checkpoint), Path(out)
    if not is_checkpoint(checkpoint):
        raise VideoCMError(f"{checkpoint} is not a complete checkpoint (RUN/checkpoints/step-N with {COMPLETE})")
    run = checkpoint.parent.parent
    if not (run / CONFIG_FILE).is_file():
        raise VideoCMError(f"{run / CONFIG_FILE} is missing: the checkpoint must stay inside its run folder")
    values = run_values(run)  # sections as written, or flat
    if values.get("method") != "lcm":
        raise VideoCMError(f"{checkpoint}: gathering checkpoints of --method {values.get('method')} runs is not "
                           f"supported; a finished DCM run's folder is already gathered")
    config = config_from_dict(LCMConfig, values, str(run / CONFIG_FILE))
    task = LCMTask(dataclasses.replace(config, cpu=True, parallel="ddp", resume=False))
    ema = EMAState(task.model, config.ema_decay) if config.ema_decay > 0 else None
    wanted = {**({"ema": ema} if ema is not None else {}), **task.checkpoint_state()}  # by name
    if is_sharded_checkpoint(checkpoint):
        _load_sharded(checkpoint, task.model, wanted)
    else:
        _load_plain(checkpoint, {"model": task.model, **wanted})
    if ema is not None:
        ema.ema.copy_to(task.model.parameters())
    task.save(task.model, out)
    return out


def _load_sharded(checkpoint: Path, model, wanted: dict) -> None:
    """The student and the named states of a DCP checkpoint (an older one's by position: the schedule at 0, then
    EMA and the task's), resharded onto this one process."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint import DefaultLoadPlanner

    if is_named(checkpoint):
        state = {"model": model.state_dict(), "state": {name: obj.state_dict() for name, obj in wanted.items()}}
        stored = lambda state, name: state["state"][name]  # noqa: E731
    else:
        state = {"model": model.state_dict(),
                 "objects": {str(i + 1): obj.state_dict() for i, obj in enumerate(wanted.values())}}
        positions = {name: str(i + 1) for i, name in enumerate(wanted)}
        stored = lambda state, name: state["objects"][positions[name]]  # noqa: E731
    dcp.load(state, checkpoint_id=str(checkpoint), planner=DefaultLoadPlanner(allow_partial_load=True))
    model.load_state_dict(state["model"])
    for name, obj in wanted.items():
        obj.load_state_dict(stored(state, name))


def _load_plain(checkpoint: Path, states: dict) -> None:
    """The named states of a checkpoint written without sharding (``model.safetensors``, ``NAME.safetensors`` or
    ``NAME.pt``), as the trainer's resume reads them."""
    import torch

    from ..distill.parallel import load_checkpoint_tensors

    if not is_named(checkpoint):
        raise VideoCMError(f"{checkpoint} was written by an older videocm (state by position): export the finished "
                           f"run's folder instead, or resume the run to write a newer checkpoint")
    for name, obj in states.items():
        path = checkpoint / ("model.safetensors" if name == "model" else f"{name}.safetensors")
        if path.is_file():
            load_checkpoint_tensors(obj, path)
        else:
            obj.load_state_dict(torch.load(checkpoint / f"{name}.pt", map_location="cpu", weights_only=False))
