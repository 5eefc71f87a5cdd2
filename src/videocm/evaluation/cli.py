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
        path, _, own = spec.rpartition("@") if "@" in spec else (spec, "", "")
        specs.append(path)
        if own:
            steps_for[path] = parse_steps(own)
    result, runs, real = evaluate_models(
        specs, parse_steps(args.steps), judge, args.guidance, args.n, args.seed, args.teacher_model,
        args.teacher_steps, args.batch_size, steps_for=steps_for,
    )
    print(markdown_table(result["rows"]))
    if args.json:
        write_json(result, args.json)
    if args.report:
        print(f"report: {write_report(result, runs, real, args.report)}")
    return 0
