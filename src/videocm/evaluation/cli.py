"""``videocm eval``: turns parsed arguments into one scoring run and prints its results."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..data.clip_folder import read_clip_folder
from ..errors import VideoCMError
from .evaluate import evaluate_models, score_clips, write_json
from .judge import Judge
from .report import markdown_table, write_report


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",") if s.strip()]
    except ValueError as error:
        raise VideoCMError(f"--steps {text!r}: give comma-separated whole numbers, e.g. 1,2,4,8") from error
    if not steps or min(steps) < 1:
        raise VideoCMError(f"--steps {text!r}: every step count must be at least 1")
    return steps


def parse_model_spec(spec: str) -> tuple[str, list[int] | None]:
    """``DIR@1,2,4`` -> (``DIR``, [1, 2, 4]); ``DIR`` alone -> (``DIR``, None)."""
    path, _, steps = spec.rpartition("@") if "@" in spec else (spec, "", "")
    return path, parse_steps(steps) if steps else None


def print_and_save(table: str, result: dict, json_path: str | None, report=None) -> int:
    """What every evaluation command ends with: the table, then the JSON and the report folder when asked."""
    print(table)
    if json_path:
        write_json(result, json_path)
    if report is not None:
        print(f"report: {report()}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    judge = Judge.load(args.judge)
    if args.clips:
        if args.report:
            raise VideoCMError("--report goes with --model; for --clips use --json")
        videos, prompts = read_clip_folder(Path(args.clips))
        if not videos:
            raise VideoCMError(f"{args.clips} holds no clips (prompts.txt is empty)")
        scores = score_clips(judge, videos, prompts)
        for key, value in scores.items():
            print(f"{key:24s} {value:.4f}" if isinstance(value, float) else f"{key:24s} {value}")
        if args.json:
            write_json(scores, args.json)
        return 0
    if args.n < 2:
        raise VideoCMError(f"--n must be at least 2 for a Fréchet distance, got {args.n}")
    specs, steps_for = [], {}
    for spec in args.model:
        path, own = parse_model_spec(spec)
        specs.append(path)
        if own:
            steps_for[path] = own
    result, runs, real = evaluate_models(
        specs, parse_steps(args.steps), judge, args.guidance, args.n, args.seed, args.teacher_model,
        args.teacher_steps, args.batch_size, steps_for=steps_for,
    )
    return print_and_save(markdown_table(result["rows"]), result, args.json,
                          (lambda: write_report(result, runs, real, args.report)) if args.report else None)
