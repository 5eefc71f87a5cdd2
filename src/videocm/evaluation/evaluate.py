"""Scoring clips and comparing sources: what ``videocm eval`` runs."""

from __future__ import annotations

import time

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..data.moving_digits import Geometry, all_captions, draw_clip, make_clip, parse_caption
from ..errors import VideoCMError
from .cost import CostMeter, PeakMemory
from .clip_sources import load_clip_source
from .judge import Judge
from .metrics import caption_labels, clip_coherence, clip_flicker, teacher_agreement
from .statistics import (ClipScores, FrechetToReference, bootstrap_intervals, paired_comparison, percentile_interval,
                         resampled_indices)

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


def shown_indices(prompts: list[str], keep: int) -> list[int]:
    """Which ``keep`` of the clips a report's GIF shows: spread evenly over ``prompts``, each the nearest clip
    (onwards, cyclically) whose digit no earlier column has, so the first columns cover different digits while
    any are left (prompts outside the benchmark count as their own "digit")."""
    def digit(prompt: str):
        try:
            return parse_caption(prompt)[0]
        except VideoCMError:
            return prompt

    n, chosen, used = len(prompts), [], set()
    for k in range(min(keep, n)):
        start = k * n // min(keep, n)
        order = [(start + offset) % n for offset in range(n)]
        free = [i for i in order if i not in chosen]
        pick = next((i for i in free if digit(prompts[i]) not in used), free[0])
        chosen.append(pick)
        used.add(digit(prompts[pick]))
    return chosen


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


def clip_scores(judge: Judge, videos: list[np.ndarray], prompts: list[str]) -> tuple[ClipScores, dict]:
    """Per-clip scores of ``videos`` (see :class:`statistics.ClipScores`) and the fidelity of each head."""
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} clips but {len(prompts)} prompts")
    judged = judge.run(videos)
    wanted = caption_labels(prompts)
    heads = {head: judged[head] == wanted[head] for head in wanted}
    per_clip = ClipScores(
        correct=np.logical_and.reduce(list(heads.values())).astype(np.float64),
        coherence=np.array([clip_coherence(v) for v in videos]),
        flicker=np.array([clip_flicker(v) for v in videos]),
        features=judged["features"],
    )
    return per_clip, {head: float(c.mean()) for head, c in heads.items()}


def reference_frechet(judge: Judge) -> FrechetToReference:
    """The Fréchet distance to the real test clips, prepared for bootstrapping (cached on the judge)."""
    cached = getattr(judge, "_reference_frechet", None)
    if cached is None:
        cached = judge._reference_frechet = FrechetToReference(reference_features(judge))  # type: ignore
    return cached


def real_reference(judge: Judge, prompts: list[str]) -> float:
    """The real-vs-real Fréchet distance for these captions: real test clips with them (:func:`real_clips_for`)
    against the reference set. Cached on the judge, since every row of an evaluation shares its captions."""
    cache = getattr(judge, "_real_reference", None)
    if cache is None:
        cache = judge._real_reference = {}  # type: ignore[attr-defined]
    key = tuple(prompts)
    if key not in cache:
        real = judge.run(real_clips_for(prompts, Geometry(judge.frames, judge.size)))["features"]
        cache[key] = reference_frechet(judge)(real)
    return cache[key]


def summarise(judge: Judge, per_clip: ClipScores, heads: dict[str, float], prompts: list[str]) -> dict:
    """A row's scores: fidelity (all and per head), Fréchet distance to real test clips with the real-vs-real
    value for the same captions and count beside it, coherence, flicker (and PSNR against the teacher when
    ``per_clip`` has it), each with a 95% bootstrap interval over clips (``<score>_ci``)."""
    frechet = reference_frechet(judge)
    everything = np.arange(len(per_clip))
    whole = per_clip.scores(everything, frechet)
    row = {
        "n": len(per_clip),
        "fidelity_all": whole["fidelity_all"],
        "fidelity_digit": heads["digit"],
        "fidelity_colour": heads["colour"],
        "fidelity_direction": heads["direction"],
        "frechet_distance": whole["frechet_distance"],
        "frechet_real_reference": real_reference(judge, prompts),
        "coherence": whole["coherence"],
        "flicker": whole["flicker"],
    }
    if per_clip.psnr_vs_teacher is not None:
        row["psnr_vs_teacher"] = whole["psnr_vs_teacher"]
    row.update(bootstrap_intervals(per_clip, frechet))
    return row


def score_clips(judge: Judge, videos: list[np.ndarray], prompts: list[str]) -> dict:
    """:func:`summarise` of the clips' per-clip scores."""
    per_clip, heads = clip_scores(judge, videos, prompts)
    return summarise(judge, per_clip, heads, prompts)


@dataclass
class ModelRun:
    """One (model, steps) evaluation: its scores row and the clips its report's GIF shows."""

    row: dict
    samples: list[np.ndarray] = field(default_factory=list)
    per_clip: ClipScores | None = None


def first_frames_for(source, prompts: list[str]) -> list[np.ndarray] | None:
    """An image-to-video source's first frames: clip ``i`` starts from the first frame of the real test clip
    :func:`real_clips_for` draws for prompt ``i`` (the report's real row), at the source's clip shape; None
    for a text-to-video source."""
    model = getattr(source, "model", None)
    if model is None or not model.info.image_condition:
        return None
    frames, height, width = model.info.video_shape
    if height != width:
        raise VideoCMError(f"{source.name} makes {height}x{width} clips; MovingDigits first frames are square")
    return [clip[0] for clip in real_clips_for(prompts, Geometry(frames, height))]


def generate_with_cost(source, prompts, seeds, steps, guidance, batch_size, desc, controls=None
                       ) -> tuple[list, dict]:
    """Clips in batches with their cost per clip; ``controls`` (one per prompt) go to a pipeline with a control
    branch; an image-to-video source starts clip ``i`` from a real clip's first frame (:func:`first_frames_for`).
    One clip is generated first, untimed, at the same step count (first calls pay one-off set-up: lazy
    initialisation, allocator growth, kernel selection), so the cost columns cover the row's clips alone; its
    wall time is reported apart as ``seconds_warmup``."""
    meter = CostMeter()
    clips: list[np.ndarray] = []
    images = first_frames_for(source, prompts)

    def extra(part: slice) -> dict:
        found = {} if controls is None else {"controls": controls[part]}
        if images is not None:
            found["images"] = images[part]
        return found

    with PeakMemory() as memory:
        started = time.perf_counter()
        source.generate(prompts[:1], seeds[:1], steps, guidance, CostMeter(), **extra(slice(0, 1)))
        warmup = time.perf_counter() - started
        for start in tqdm(range(0, len(prompts), batch_size), desc=desc, leave=False):
            part = slice(start, start + batch_size)
            clips += source.generate(prompts[part], seeds[part], steps, guidance, meter, **extra(part))
    cost = meter.summary()
    cost["peak_memory_mb"] = memory.peak_mb
    cost["seconds_warmup"] = warmup
    return clips, cost


DIVERSITY_SEEDS = 4  # clips per caption of the diversity figure
DIVERSITY_SEED_OFFSET = 500_000  # its noise seeds lie apart from the main clips' (seed * 1_000_003 + i, i < n)


def pairwise_spread(features: np.ndarray) -> np.ndarray:
    """Per caption, the mean Euclidean distance between every two of its clips' features ``(C, S, D)`` -> ``(C,)``."""
    count = features.shape[1]
    distances = np.linalg.norm(features[:, :, None, :] - features[:, None, :, :], axis=-1)
    return distances.sum(axis=(1, 2)) / (count * (count - 1))


def caption_diversity(judge: Judge, source, steps: int, guidance: float | None, captions: int, seed: int = 0,
                      batch_size: int = 16) -> dict:
    """``diversity``: for ``captions`` test captions spread over all 240, the mean pairwise distance between the
    judge's features of :data:`DIVERSITY_SEEDS` clips of the caption made from different seeds, averaged over the
    captions, with a 95% bootstrap interval over captions (``diversity_ci``), and each caption's figure
    (``per_caption``, for paired comparisons of rows on the same captions). Compare it with the teacher's: a
    student that loses diversity (mode collapse, known of distribution matching) scores lower."""
    chosen, _ = eval_prompts(captions, seed)
    prompts = [p for p in chosen for _ in range(DIVERSITY_SEEDS)]
    seeds = [seed * 1_000_003 + DIVERSITY_SEED_OFFSET + i for i in range(len(prompts))]
    clips, _ = generate_with_cost(source, prompts, seeds, steps, guidance, batch_size,
                                  f"{source.name} {steps} steps, diversity")
    features = judge.run(clips)["features"].reshape(captions, DIVERSITY_SEEDS, -1)
    spread = pairwise_spread(features.astype(np.float64))
    resampled = spread[resampled_indices(len(spread))].mean(axis=1)
    return {"diversity": float(spread.mean()), "diversity_ci": percentile_interval(resampled), "per_caption": spread}


def evaluate_models(
    specs: list[str], steps_list: list[int], judge: Judge, guidance: float | None = None, n: int = 240,
    seed: int = 0, teacher: str | None = None, teacher_steps: int = 50, batch_size: int = 16, keep: int = 8,
    steps_for: dict[str, list[int]] | None = None, decoder: str = "full", diversity: int = 0,
) -> tuple[dict, list[ModelRun], list[np.ndarray]]:
    """Generate ``n`` clips per (model, steps) for evenly spread test captions, score them, and (with
    ``teacher``) measure agreement with the teacher's ``teacher_steps``-step clips from the same seeds.
    ``steps_for`` gives some models their own step counts instead of ``steps_list``; ``decoder`` is what the
    models decode with (the teacher's reference clips always use its VAE); ``diversity``: captions of each row's
    diversity figure (:func:`caption_diversity`; 0: none)."""
    steps_for = steps_for or {}
    prompts, seeds = eval_prompts(n, seed)
    shown = shown_indices(prompts, keep)
    sources = [load_clip_source(spec, decoder) for spec in specs]
    teacher_clips = teacher_cost = None
    if teacher is not None:
        teacher_clips, teacher_cost = generate_with_cost(load_clip_source(teacher), prompts, seeds, teacher_steps,
                                                         guidance, batch_size, f"teacher {teacher_steps} steps")
    runs, reference_run = [], None
    for spec, source in zip(specs, sources):
        decoder_name = getattr(source, "decoder_name", "full")
        for steps in steps_for.get(spec, steps_list):
            reference = spec == teacher and steps == teacher_steps and decoder_name == "full"
            if reference:  # the reference clips already are this row's
                clips, cost = teacher_clips, teacher_cost
            else:
                clips, cost = generate_with_cost(source, prompts, seeds, steps, guidance, batch_size,
                                                 f"{source.name} {steps} steps")
            row = {"model": source.name, "path": spec, "steps": steps, "guidance": guidance,
                   "decoder": decoder_name}
            per_clip, heads = clip_scores(judge, clips, prompts)
            # the reference row against itself has no agreement to report (its PSNR would be a placeholder)
            agreement = teacher_agreement(clips, teacher_clips) if teacher_clips is not None and not reference \
                else None
            if agreement is not None:
                per_clip.psnr_vs_teacher = agreement["psnr_per_clip"]
            row.update(summarise(judge, per_clip, heads, prompts))
            if agreement is not None:
                row["ssim_vs_teacher"] = agreement["ssim"]
            if diversity:
                figures = caption_diversity(judge, source, steps, guidance, diversity, seed, batch_size)
                per_clip.diversity = figures.pop("per_caption")
                row.update(figures)
            row.update(cost)
            runs.append(ModelRun(row, [clips[i] for i in shown], per_clip))
            if reference:
                reference_run = runs[-1]
    real = real_clips_for([prompts[i] for i in shown], Geometry(judge.frames, judge.size))
    comparisons = same_steps_comparisons(judge, runs)
    result = {"n": n, "seed": seed, "batch_size": batch_size, "prompts_shown": [prompts[i] for i in shown],
              "teacher": teacher,
              "teacher_steps": teacher_steps if teacher else None, "rows": [run.row for run in runs],
              "comparisons": comparisons}
    if teacher_clips is not None:
        teacher_scores = reference_run.per_clip if reference_run else clip_scores(judge, teacher_clips, prompts)[0]
        result["teacher_comparisons"] = best_against_teacher(judge, runs, comparisons, teacher_scores,
                                                             reference_run)
    result["verdict"] = verdict_lines(result)
    return result, runs, real


def turned_round(comparison: dict) -> dict:
    """A paired comparison of ``first`` against ``second`` as ``second`` against ``first``: every difference and
    interval negated, better and worse swapped."""
    turned = {key: {"difference": -value["difference"], "ci": [-value["ci"][1], -value["ci"][0]],
                    "verdict": {"better": "worse", "worse": "better"}.get(value["verdict"], "tie")}
              for key, value in comparison.items() if isinstance(value, dict)}
    return {**comparison, "first": comparison["second"], "second": comparison["first"], **turned}


def best_per_steps(runs: list[ModelRun], comparisons: list[dict]) -> dict[int, tuple[ModelRun, list[dict]]]:
    """For each step count, the row with the highest fidelity (the lower Fréchet distance breaking equal
    fidelities) and its paired comparisons with the other rows at that count, the best row first."""
    best = {}
    for steps in sorted({run.row["steps"] for run in runs}):
        mine = sorted((run for run in runs if run.row["steps"] == steps),
                      key=lambda run: (-run.row["fidelity_all"], run.row["frechet_distance"]))
        label = row_label(mine[0].row)
        against = []
        for comparison in comparisons:
            if comparison["first"] == label:
                against.append(comparison)
            elif comparison["second"] == label:
                against.append(turned_round(comparison))
        best[steps] = (mine[0], against)
    return best


def best_against_teacher(judge: Judge, runs: list[ModelRun], comparisons: list[dict], teacher: ClipScores,
                         reference_run: ModelRun | None) -> list[dict]:
    """Paired comparisons of each step count's best row (:func:`best_per_steps`) with the teacher's reference
    clips (same prompts and seeds)."""
    frechet = reference_frechet(judge)
    found = []
    for steps, (run, _) in best_per_steps(runs, comparisons).items():
        if run is reference_run or run.per_clip is None:
            continue
        found.append({"first": row_label(run.row), "second": "teacher",
                      **paired_comparison(run.per_clip, teacher, frechet)})
    return found


def verdict_lines(result: dict) -> list[str]:
    """The evaluation's verdict in sentences, read before the tables: at each step count the best row and how
    it compares with the others there, then each of those against the teacher's reference clips. A difference
    whose 95% paired interval contains 0 is called a tie."""
    def phrase(comparison: dict, key: str, name: str, digits: int) -> str:
        value = comparison.get(key)
        if value is None:
            return ""
        low, high = value["ci"]
        return f"{name} {value['verdict']} ({value['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}])"

    runs = [ModelRun(row, per_clip=None) for row in result["rows"]]
    lines = []
    for steps, (run, against) in best_per_steps(runs, result.get("comparisons", [])).items():
        row = run.row
        line = (f"{steps} step{'s' if steps != 1 else ''}: best {row['model']} (fidelity {row['fidelity_all']:.3f}, "
                f"Fréchet {row['frechet_distance']:.2f})")
        others = [f"against {c['second']}: " + ", ".join(p for p in (phrase(c, "fidelity_all", "fidelity", 3),
                                                                  phrase(c, "frechet_distance", "Fréchet", 2)) if p)
                  for c in against]
        lines.append(line + ("; " + "; ".join(others) if others else "") + ".")
    teacher = result.get("teacher")
    for comparison in result.get("teacher_comparisons", []):
        lines.append(f"{comparison['first']} against the teacher ({Path(teacher).name}, "
                     f"{result['teacher_steps']} steps): " + ", ".join(
                         p for p in (phrase(comparison, "fidelity_all", "fidelity", 3),
                                     phrase(comparison, "frechet_distance", "Fréchet", 2)) if p) + ".")
    return lines


def row_label(row: dict) -> str:
    """How a row is named in comparisons: ``model@steps``."""
    return f"{row['model']}@{row['steps']}"


def same_steps_comparisons(judge: Judge, runs: list[ModelRun]) -> list[dict]:
    """Paired comparisons (:func:`statistics.paired_comparison`) of every two rows with the same step count,
    the earlier row first."""
    frechet = reference_frechet(judge)
    comparisons, cache = [], {}  # each row bootstrapped once, however many rows it is compared with
    for i, first in enumerate(runs):
        for second in runs[i + 1:]:
            if first.row["steps"] == second.row["steps"] and first.per_clip is not None and second.per_clip is not None:
                comparisons.append({"first": row_label(first.row), "second": row_label(second.row),
                                    **paired_comparison(first.per_clip, second.per_clip, frechet, cache=cache)})
    return comparisons


CLIP_SCORE_NAMES = ("correct", "coherence", "flicker", "features", "psnr_vs_teacher", "diversity")


def write_clip_scores(runs: list[ModelRun], path: str | Path) -> None:
    """Every row's per-clip scores and judge features (and per-caption diversity, with ``--diversity``) as one
    ``.npz`` (keys ``<row label>/<score>``), so rows of different evaluations with the same ``--n`` and ``--seed``
    can be compared later (``videocm compare``)."""
    arrays = {}
    for run in runs:
        if run.per_clip is None:
            continue
        label = row_label(run.row)
        for name in CLIP_SCORE_NAMES:
            value = getattr(run.per_clip, name)
            if value is not None:
                arrays[f"{label}/{name}"] = np.asarray(value, dtype=np.float32)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **arrays)


def read_clip_scores(path: str | Path, label: str) -> ClipScores:
    """The per-clip scores of row ``label`` (``model@steps``) from a file :func:`write_clip_scores` wrote."""
    with np.load(path) as arrays:
        found = sorted({key.split("/")[0] for key in arrays.files})
        if f"{label}/correct" not in arrays.files:
            raise VideoCMError(f"{path} has no row {label!r}; it has: {', '.join(found)}")
        values = {name: arrays[f"{label}/{name}"].astype(np.float64) for name in CLIP_SCORE_NAMES
                  if f"{label}/{name}" in arrays.files}
    return ClipScores(**values)


def write_json(result: dict, path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
