"""videocm from Python: the same operations as the command line, on the same code paths.

``load`` a teacher or student folder and call it with a prompt; ``distill`` a teacher (keyword arguments are the
command's flags, so the recipe, checks and defaults are the command's); ``evaluate`` and ``export``. Errors are
:class:`videocm.VideoCMError` with the command line's one-line messages.

    >>> import videocm
    >>> student = videocm.load("models/lcm-flow")
    >>> clip = student("a red 3 moving left", steps=4, seed=0)   # uint8 (frames, height, width, 3)
    >>> videocm.save_video(clip, "clip.gif")
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np


class Generator:
    """A loaded teacher or student: call it with a prompt (or a list of prompts) to get clips.

    ``kind`` ("teacher" or "student"), ``default_steps``, ``default_guidance`` and ``info`` (the folder's
    ``videocm.json``) describe it; ``pipeline`` is the :class:`videocm.pipeline.VideoPipeline` underneath."""

    def __init__(self, folder: str | Path, device: str = "cpu", decoder: str = "full") -> None:
        from .pipeline import VideoPipeline

        self.folder, self.device, self.decoder = Path(folder), str(device), decoder
        self.pipeline = VideoPipeline.from_folder(self.folder, self.device, decoder)

    @property
    def info(self):
        return self.pipeline.model.info

    @property
    def kind(self) -> str:
        return self.info.kind

    @property
    def default_steps(self) -> int:
        return self.pipeline.model.default_steps

    @property
    def default_guidance(self) -> float:
        return self.pipeline.model.default_guidance

    def __repr__(self) -> str:
        return (f"videocm.Generator({str(self.folder)!r}, kind={self.kind!r}, default_steps={self.default_steps}, "
                f"device={self.device!r})")

    def __call__(self, prompt: str | Sequence[str], steps: int | None = None, seed: int = 0,
                 guidance: float | None = None, negative_prompt: str = "", progress: bool = False
                 ) -> np.ndarray | list[np.ndarray]:
        """Clips for ``prompt``: one uint8 array ``(frames, height, width, 3)`` for a string, a list for a list
        (clip ``i`` from seed ``seed + i``). ``steps``: the model's own by default (a student's few, a teacher's
        50); ``guidance``: the model's default."""
        from .errors import VideoCMError

        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts or not all(isinstance(p, str) for p in prompts):
            raise VideoCMError("give a prompt (a string) or a non-empty list of prompts")
        if steps is not None and steps < 1:
            raise VideoCMError(f"steps must be at least 1, got {steps}")
        clips = self.pipeline.generate(prompts, [seed + i for i in range(len(prompts))], steps, guidance,
                                       negative_prompt=negative_prompt, progress=progress)
        return clips[0] if isinstance(prompt, str) else clips

    def to(self, device: str) -> "Generator":
        """The same model on ``device`` ("cpu", "cuda", "cuda:1"); returns itself."""
        if str(device) != self.device:
            from .pipeline import VideoPipeline

            self.pipeline = VideoPipeline.from_folder(self.folder, str(device), self.decoder)
            self.device = str(device)
        return self

    def export(self, out: str | Path, format: str | None = None, dtype: str = "float32") -> Path:
        """This student for diffusers (:func:`export`)."""
        return export(self.folder, out, format, dtype)


def load(folder: str | Path, device: str = "cpu", decoder: str = "full") -> Generator:
    """A teacher or student folder (a videocm model folder, or a diffusers pipeline teacher) ready to generate.
    ``decoder``: ``full`` (its VAE), ``tiny`` or a tiny-decoder folder."""
    return Generator(folder, device, decoder)


def save_video(clip: np.ndarray, path: str | Path, fps: float = 8.0, scale: int = 1) -> Path:
    """Write a uint8 clip ``(frames, height, width, 3)`` as ``.gif``, ``.mp4`` or ``.webm`` (by the suffix)."""
    from .data import write_video

    return write_video(Path(path), clip, fps=fps, scale=scale)


def _flags(settings: dict[str, Any]) -> list[str]:
    """Keyword arguments as the command's ``--key value`` flags."""
    tokens = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        tokens += [f"--{key.replace('_', '-')}", str(value)]
    return tokens


def distill(teacher: str | Path | None = None, out: str | Path | None = None, method: str = "lcm", *,
            config=None, callback: Callable[[int, dict], Any] | None = None, progress: bool = True,
            sample_checks: bool = True, **settings) -> dict:
    """Distil ``teacher`` into a few-step student written to ``out``, as ``videocm distill`` does: every keyword
    is one of its flags (``steps=2000``, ``batch_size=16``, ``student="lora"``, ``resume=True``; ``videocm
    distill --method M --help`` lists them), the run starts from the recipe for the teacher's layout, and it returns
    the command's summary. Or pass ``config``: an ``LCMConfig``, ``DCMConfig`` or ``DMDConfig`` built in Python
    (no recipe is applied to it). ``callback(step, logs)`` is called after every optimiser step (``logs``: loss,
    learning rate, gradient norm, and the sample checks' scores at theirs; each DCM stage counts its own steps).
    ``sample_checks``: score the periodic samples with the judge (MovingDigits clips)."""
    from .cli import clear_outputs, parse_command
    from .distill.methods import run_distill
    from .distill.trainer import STEP_CALLBACK
    from .errors import VideoCMError

    if config is None:
        if teacher is None or out is None:
            raise VideoCMError("give teacher= and out= (or a config=)")
        _, _, config = parse_command(["distill", "--teacher", str(teacher), "--out", str(out), "--method", method,
                                      *_flags(settings)])
    elif teacher is not None or out is not None or settings:
        raise VideoCMError("give either config= or the settings as keywords, not both")
    for cleared in clear_outputs(config):
        print(f"videocm: overwrite: deleted {cleared}")
    monitor = None
    if sample_checks:
        from .evaluation.monitor import JudgeMonitor

        monitor = JudgeMonitor()
    token = STEP_CALLBACK.set(callback)
    try:
        return run_distill(config, progress=progress, monitor=monitor)
    finally:
        STEP_CALLBACK.reset(token)


def evaluate(models: Sequence[str | Path], steps: Sequence[int] = (1, 2, 4), n: int = 240, seed: int = 0,
             teacher: str | Path | None = None, teacher_steps: int = 50, guidance: float | None = None,
             report: str | Path | None = None) -> dict:
    """Score models on ``n`` MovingDigits test captions as ``videocm eval`` does: a row per (model, steps) with
    95% bootstrap intervals over clips, paired comparisons at each step count, and (with ``teacher``) agreement
    with its ``teacher_steps``-step clips. A model given as ``"DIR@1,4"`` uses its own step counts. ``report``:
    a folder to write ``report.md``/``report.html``/``plot.png``/``samples.gif`` into. Returns the result (the
    JSON ``videocm eval --json`` writes)."""
    from .evaluation.cli import model_specs
    from .evaluation.evaluate import evaluate_models
    from .evaluation.judge import Judge
    from .errors import VideoCMError

    if n < 2:
        raise VideoCMError(f"n must be at least 2 for a Fréchet distance, got {n}")
    specs, steps_for = model_specs(models)
    result, runs, real = evaluate_models(specs, list(steps), Judge.load(), guidance, n, seed,
                                         str(teacher) if teacher is not None else None, teacher_steps,
                                         steps_for=steps_for)
    if report is not None:
        from .evaluation.report import write_report

        write_report(result, runs, real, Path(report))
    return result


def export(student: str | Path, out: str | Path, format: str | None = None, dtype: str = "float32") -> Path:
    """Write ``student`` (a student folder, or an LCM run's ``checkpoints/step-N``) for diffusers, as ``videocm
    export`` does: ``format`` "pipeline" (a student of a diffusers pipeline teacher), "model" (the denoiser and
    scheduler) or "lora"; returns ``out`` (its ``HOW_TO_USE.md`` says how to load it)."""
    from .cli import export_model

    return export_model(Path(student), Path(out), format, dtype=dtype)
