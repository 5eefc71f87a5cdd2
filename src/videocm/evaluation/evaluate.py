"""Scoring clips and comparing generators: what ``videocm eval`` runs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.moving_digits import Geometry, all_captions, draw_clip, make_clip, parse_caption
from .cost import CostMeter, PeakMemory
from .generators import load_generator
from .judge import Judge
from .metrics import fidelity, frechet_distance, teacher_agreement, temporal_coherence

REFERENCE_SEED = 30_000  # the real test clips that every Fréchet distance is measured against
REFERENCE_CLIPS = 960  # 4 per caption
REAL_BASELINE_SEED = 40_000  # independent real clips for the real-vs-real reference value


def eval_prompts(n: int, seed: int = 0) -> tuple[list[str], list[int]]:
    """``n`` test captions spread evenly over all 240 (each caption ``n // 240`` or ``n // 240 + 1`` times, in
    caption order) and one fixed seed per clip (``seed * 1_000_003 + i``)."""
    captions = all_captions()
    chosen = [captions[(i * len(captions)) // n] if n <= len(captions) else captions[i % len(captions)]
              for i in range(n)]
    prompts = [f"a {c} {d} moving {m}" for d, c, m in chosen]
    return prompts, [seed * 1_000_003 + i for i in range(n)]


def reference_features(judge: Judge) -> np.ndarray:
    """Judge features of the fixed set of real test clips (cached on the judge)."""
    cached = getattr(judge, "_reference_features", None)
    if cached is None:
        geometry = Geometry(judge.frames, judge.size)
        clips = [make_clip(i, REFERENCE_SEED, "test", geometry, cover_captions=True).video
                 for i in range(REFERENCE_CLIPS)]
        cached = judge.run(clips)["features"]
        judge._reference_features = cached  # type: ignore[attr-defined]
    return cached


def real_clips_for(prompts: list[str], geometry: Geometry, seed: int = REAL_BASELINE_SEED) -> list[np.ndarray]:
    """Real test-split clips with the given captions, independent of the reference set."""
    return [draw_clip(np.random.default_rng([seed, i]), "test", geometry, *parse_caption(p)).video
            for i, p in enumerate(prompts)]


def score_clips(judge: Judge, videos: list[np.ndarray], prompts: list[str]) -> dict:
    """Fidelity (all and per head), Fréchet distance to real test clips with the real-vs-real value for the
    same captions and count beside it, and temporal coherence."""
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} clips but {len(prompts)} prompts")
    judged = judge.run(videos)
    scores = fidelity(judged, prompts)
    reference = reference_features(judge)
    real = judge.run(real_clips_for(prompts, Geometry(judge.frames, judge.size)))["features"]
    return {
        "n": len(videos),
        "fidelity_all": scores["all"],
        "fidelity_digit": scores["digit"],
        "fidelity_colour": scores["colour"],
        "fidelity_direction": scores["direction"],
        "frechet_distance": frechet_distance(judged["features"], reference),
        "frechet_real_reference": frechet_distance(real, reference),
        "coherence": temporal_coherence(videos),
    }


@dataclass
class ModelRun:
    """One (model, steps) evaluation: its scores row and the first clips, kept for the report's GIF."""

    row: dict
    samples: list[np.ndarray] = field(default_factory=list)


def generate_with_cost(generator, prompts, seeds, steps, guidance, batch_size, desc, controls=None
                       ) -> tuple[list, dict]:
    """Clips in batches with their cost per clip; ``controls`` (one per prompt) go to a pipeline with a control
    branch."""
    meter = CostMeter()
    clips: list[np.ndarray] = []
    with PeakMemory() as memory:
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            part = slice(start, start + batch_size)
            extra = {} if controls is None else {"controls": controls[part]}
            clips += generator.generate(prompts[part], seeds[part], steps, guidance, meter, **extra)
    cost = meter.summary()
    cost["peak_memory_mb"] = memory.peak_mb
    return clips, cost


def evaluate_models(
    specs: list[str], steps_list: list[int], judge: Judge, guidance: float | None = None, n: int = 240,
    seed: int = 0, teacher: str | None = None, teacher_steps: int = 50, batch_size: int = 16, keep: int = 8,
    steps_for: dict[str, list[int]] | None = None,
) -> tuple[dict, list[ModelRun], list[np.ndarray]]:
    """Generate ``n`` clips per (model, steps) for evenly spread test captions, score them, and (with
    ``teacher``) measure agreement with the teacher's ``teacher_steps``-step clips from the same seeds.
    ``steps_for`` gives some models their own step counts instead of ``steps_list``."""
    steps_for = steps_for or {}
    prompts, seeds = eval_prompts(n, seed)
    generators = [load_generator(spec) for spec in specs]
    teacher_clips = None
    if teacher is not None:
        teacher_clips, _ = generate_with_cost(load_generator(teacher), prompts, seeds, teacher_steps, guidance,
                                              batch_size, f"teacher {teacher_steps} steps")
    runs = []
    for spec, generator in zip(specs, generators):
        for steps in steps_for.get(spec, steps_list):
            clips, cost = generate_with_cost(generator, prompts, seeds, steps, guidance, batch_size,
                                             f"{generator.name} {steps} steps")
            row = {"model": generator.name, "path": spec, "steps": steps, "guidance": guidance}
            row.update(score_clips(judge, clips, prompts))
            if teacher_clips is not None:
                agreement = teacher_agreement(clips, teacher_clips)
                row.update({"psnr_vs_teacher": agreement["psnr"], "ssim_vs_teacher": agreement["ssim"]})
            row.update(cost)
            runs.append(ModelRun(row, clips[:keep]))
    real = real_clips_for(prompts[:keep], Geometry(judge.frames, judge.size))
    result = {"n": n, "seed": seed, "prompts_shown": prompts[:keep], "teacher": teacher,
              "teacher_steps": teacher_steps if teacher else None, "rows": [run.row for run in runs]}
    return result, runs, real


def write_json(result: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
