"""``videocm eval``: turns its config into one scoring run and prints its results."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..config import AtLeastTwo, Count, Natural, NonNegative, OutputPath, ReportFolder
from ..data.clip_folder import read_clip_folder
from ..errors import VideoCMError
from ..models.info import read_json_object
from .evaluate import (evaluate_models, read_clip_scores, reference_frechet, row_label, score_clips,
                       write_clip_scores, write_json)
from .judge import Judge
from .report import markdown_table, plot_learning_curves, read_monitor_scores, write_report
from .statistics import paired_comparison


@dataclass
class EvalConfig:
    """``videocm eval``: score a clip folder (--clips) or generate and score with one or more --model."""

    clips: str | None = None  # clip folder to score: 0000.npy ... + prompts.txt (as `videocm data export` writes)
    model: list[str] = field(default_factory=list, metadata={"repeat": True})  # model folder or stand-in (real, real-blurred); DIR@4,50: its own step counts
    steps: list[Count] = field(default_factory=lambda: [1, 2, 4, 8])  # comma-separated step counts
    guidance: NonNegative | None = None  # guidance scale (default: the model's)
    n: AtLeastTwo = 240  # clips per (model, steps): 2 or more (a Fréchet distance needs 2)
    seed: Natural = 0  # picks the test captions and each clip's noise seed
    teacher_model: str | None = None  # model whose many-step clips PSNR/SSIM are measured against
    teacher_steps: Count = 50  # steps of --teacher-model's reference clips
    batch_size: Count = 16  # clips generated together
    diversity: Natural = 0  # with --model: also each row's diversity over this many captions, 4 seeds each (mean pairwise judge-feature distance; 0: off)
    json: OutputPath | None = None  # write the scores as JSON here
    clip_scores: OutputPath | None = None  # write every row's per-clip scores and judge features here (.npz, for `videocm compare`)
    report: ReportFolder | None = None  # write report.md, report.html, plot.png, samples.gif into this folder (with --model)
    judge: str | None = None  # judge folder (default: the one packaged with videocm, or $VIDEOCM_JUDGE)
    decoder: str = "full"  # what the models decode with: full (their VAE), tiny (a distilled tiny decoder) or a decoder folder; DIR+tiny / DIR+full picks it for one --model
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)

    def __post_init__(self) -> None:
        if self.clips is None and not self.model:
            raise VideoCMError("give --clips DIR (score clips on disk) or --model DIR (generate and score)")
        if self.clips is not None and self.model:
            raise VideoCMError("give --clips DIR or --model DIR, not both")


def parse_steps(text: str, where: str = "--steps") -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]``; ``where`` names the input in the error (``--steps``, or a --model's ``@...``)."""
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as error:
        raise VideoCMError(f"{where}: give comma-separated whole numbers, e.g. 1,2,4,8") from error
    if not steps or min(steps) < 1:
        raise VideoCMError(f"{where}: every step count must be at least 1")
    return steps


def parse_model_spec(spec: str) -> tuple[str, list[int] | None]:
    """``DIR@1,2,4`` -> (``DIR``, [1, 2, 4]); ``DIR`` alone -> (``DIR``, None)."""
    path, _, steps = spec.rpartition("@") if "@" in spec else (spec, "", "")
    return path, parse_steps(steps, f"--model {spec!r} (its own step counts after @)") if steps else None


def model_specs(models) -> tuple[list[str], dict[str, list[int]]]:
    """``--model`` values -> (the folders or stand-ins, each one's own step counts where ``@...`` gives them)."""
    specs, steps_for = [], {}
    for spec in models:
        path, own = parse_model_spec(str(spec))
        specs.append(path)
        if own:
            steps_for[path] = own
    return specs, steps_for


def print_and_save(table: str, result: dict, json_path: str | None, report=None) -> int:
    """What every evaluation command ends with: the table, then the JSON and the report folder when asked."""
    print(table)
    if json_path:
        write_json(result, json_path)
    if report is not None:
        print(f"report: {report()}")
    return 0


def run_eval(config: EvalConfig) -> int:
    if not config.steps or min(config.steps) < 1:
        raise VideoCMError(f"--steps {config.steps}: every step count must be at least 1")
    judge = Judge.load(config.judge)
    if config.clips is not None:
        if config.report:
            raise VideoCMError("--report goes with --model; for --clips use --json")
        videos, prompts = read_clip_folder(Path(config.clips))
        if not videos:
            raise VideoCMError(f"{config.clips} holds no clips (prompts.txt is empty)")
        scores = score_clips(judge, videos, prompts)
        for key, value in scores.items():
            if isinstance(value, list):
                value = f"[{value[0]:.4f}, {value[1]:.4f}]"
            print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
        if config.json:
            write_json(scores, config.json)
        return 0
    if config.n < 2:
        raise VideoCMError(f"--n must be at least 2 for a Fréchet distance, got {config.n}")
    specs, steps_for = model_specs(config.model)
    result, runs, real = evaluate_models(
        specs, list(config.steps), judge, config.guidance, config.n, config.seed, config.teacher_model,
        config.teacher_steps, config.batch_size, steps_for=steps_for, decoder=config.decoder,
        diversity=config.diversity,
    )
    if config.clip_scores:
        write_clip_scores(runs, config.clip_scores)
    if result["comparisons"]:
        print(comparison_table(result["comparisons"]) + "\n")
    return print_and_save(markdown_table(result["rows"]), result, config.json,
                          (lambda: write_report(result, runs, real, config.report)) if config.report else None)


def comparison_table(comparisons: list[dict]) -> str:
    """Markdown table of paired comparisons: each score's difference (first minus second), its 95% interval and
    the verdict for the first row."""
    lines = ["| first | second | score | difference | 95% interval | first is |", "|---|---|---|---|---|---|"]
    for comparison in comparisons:
        for score, figures in comparison.items():
            if isinstance(figures, dict):
                low, high = figures["ci"]
                lines.append(f"| {comparison['first']} | {comparison['second']} | {score} | "
                             f"{figures['difference']:+.4f} | [{low:+.4f}, {high:+.4f}] | {figures['verdict']} |")
    return "\n".join(lines)


@dataclass
class CompareConfig:
    """``videocm compare``: paired bootstrap comparison of two rows saved by ``videocm eval --clip-scores``."""

    first: str = ""  # FILE.npz#model@steps (a row of `videocm eval --clip-scores FILE.npz`)
    second: str = ""  # FILE.npz#model@steps, scored with the same --n and --seed as --first
    resamples: Count = 1000  # bootstrap resamples
    json: OutputPath | None = None  # write the comparison as JSON here
    judge: str | None = None  # judge folder whose reference features the Fréchet distance uses
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)

    def __post_init__(self) -> None:
        for name in ("first", "second"):
            if "#" not in getattr(self, name):
                raise VideoCMError(f"--{name} {getattr(self, name)!r}: give FILE.npz#model@steps, e.g. "
                                   f"eval.npz#lcm-vp@4 (row labels are printed by `videocm eval`)")
        if self.resamples < 100:
            raise VideoCMError(f"--resamples {self.resamples}: use at least 100 for a 95% interval")


def read_row(spec: str):
    path, _, label = spec.partition("#")
    if not Path(path).is_file():
        raise VideoCMError(f"{path}: no such file; write it with `videocm eval ... --clip-scores {path}`")
    return read_clip_scores(path, label)


def run_compare(config: CompareConfig) -> int:
    first, second = read_row(config.first), read_row(config.second)
    if len(first) != len(second):
        raise VideoCMError(f"{config.first} has {len(first)} clips and {config.second} {len(second)}: compare rows "
                           f"scored with the same --n and --seed")
    result = {"first": config.first, "second": config.second,
              **paired_comparison(first, second, reference_frechet(Judge.load(config.judge)), config.resamples)}
    print(comparison_table([result]))
    if config.json:
        write_json(result, config.json)
    return 0


@dataclass
class CurvesConfig:
    """``videocm curves``: plot training runs' periodic sample scores against updates."""

    run: list[str] = field(default_factory=list, metadata={"repeat": True})  # training output folder (holds samples/scores.jsonl); LABEL=DIR names its line
    reference: list[str] = field(default_factory=list, metadata={"repeat": True})  # LABEL=EVAL.json#model@steps: a row of `videocm eval --json` drawn as a dashed line
    out: OutputPath = "learning-curves.png"  # the plot
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)

    def __post_init__(self) -> None:
        if not self.run:
            raise VideoCMError("give at least one --run DIR (a training run with samples/scores.jsonl)")


def labelled(spec: str) -> tuple[str, str]:
    label, _, value = spec.rpartition("=") if "=" in spec else ("", "", spec)
    return label or Path(value).name, value


def reference_row(spec: str) -> tuple[str, dict]:
    label, value = labelled(spec)
    path, _, row = value.partition("#")
    if not row or not Path(path).is_file():
        raise VideoCMError(f"--reference {spec!r}: give LABEL=EVAL.json#model@steps (a `videocm eval --json` file)")
    rows = {row_label(r): r for r in read_json_object(Path(path)).get("rows", [])}
    if row not in rows:
        raise VideoCMError(f"{path} has no row {row!r}; it has: {', '.join(rows)}")
    return label, rows[row]


def run_curves(config: CurvesConfig) -> int:
    runs = {label: read_monitor_scores(folder) for label, folder in map(labelled, config.run)}
    references = dict(reference_row(spec) for spec in config.reference)
    plot_learning_curves(runs, config.out, references)
    for label, rows in runs.items():
        last = rows[-1]
        print(f"{label}: {len(rows)} points, last at step {last['step']}: "
              + ", ".join(f"{k} {last[k]:.3f}" for k in ("fidelity_all", "frechet_distance") if k in last))
    print(f"plot: {config.out}")
    return 0
