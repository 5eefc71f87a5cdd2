"""Uncertainty of evaluation figures: percentile bootstrap over clips, and paired comparisons of two models
scored on the same captions and noise seeds.

A figure's interval says how much it would move if the evaluation drew other clips of the same kind; it
does not cover training noise (train a second seed for that). Every score here is a function of a set of
clip indices, so one set of resampled index sets serves all of them, and a paired comparison resamples the
same indices on both sides (the clips of two rows share caption and initial noise clip by clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

RESAMPLES = 1000  # bootstrap resamples per interval
LEVEL = 0.95  # the intervals' coverage
SCORES = ("fidelity_all", "frechet_distance", "coherence", "flicker", "psnr_vs_teacher")
HIGHER_IS_BETTER = {"fidelity_all": True, "frechet_distance": False, "coherence": True, "flicker": False,
                    "psnr_vs_teacher": True, "diversity": True}  # less diversity than the teacher: mode collapse


def resampled_indices(n: int, resamples: int = RESAMPLES, seed: int = 0) -> np.ndarray:
    """``(resamples, n)`` clip indices drawn with replacement (fixed by ``seed``, so reruns agree)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(values: np.ndarray, level: float = LEVEL, estimate: float | None = None) -> list[float]:
    """The central ``level`` percentile interval of bootstrap ``values``; with ``estimate`` (the figure on all
    clips), shifted by the bootstrap's bias ``mean(values) - estimate``. A mean needs no shift, but a Fréchet
    distance does: a resample repeats clips, which inflates the distance (by 1-2 at 240 clips on our features),
    so the raw percentiles can lie wholly above the figure they are meant to bracket."""
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    shift = 0.0 if estimate is None else float(np.mean(values)) - estimate
    return [float(low) - shift, float(high) - shift]


class FrechetToReference:
    """Fréchet distance of many feature subsets to one fixed reference set, fast enough to bootstrap.

    With the reference covariance's square root ``R`` computed once, ``Tr((S_a S_r)^(1/2))`` is the sum of the
    square roots of the eigenvalues of the symmetric ``R S_a R`` (the same value the FID formula's ``sqrtm``
    gives), one symmetric eigen-decomposition per subset.
    """

    def __init__(self, reference: np.ndarray) -> None:
        self.mean = reference.mean(0)
        covariance = np.cov(reference, rowvar=False)
        self.trace = float(np.trace(covariance))
        root = np.real(linalg.sqrtm(covariance))
        self.root = (root + root.T) / 2  # symmetric, as the identity below needs

    def __call__(self, features: np.ndarray) -> float:
        return float(self.many(features, np.arange(len(features))[None])[0])

    def many(self, features: np.ndarray, index_sets: np.ndarray, chunk: int = 100) -> np.ndarray:
        """The distance of ``features[indices]`` for each row of ``index_sets`` ``(B, n)``, vectorised: with
        ``Y`` the centred subset times ``R``, ``R S_a R = Y^T Y / (n - 1)`` shares its nonzero eigenvalues with
        the smaller ``Y Y^T / (n - 1)``, so a subset of fewer clips than feature dimensions costs an ``n x n``
        decomposition (a bootstrap of a sample check's few clips takes milliseconds, not seconds)."""
        out = []
        for start in range(0, len(index_sets), chunk):
            subsets = features[index_sets[start:start + chunk]]  # (b, n, D)
            n = subsets.shape[1]
            mean = subsets.mean(1)
            centred = subsets - mean[:, None]
            y = centred @ self.root
            gram = y @ y.transpose(0, 2, 1) if n <= y.shape[2] else y.transpose(0, 2, 1) @ y
            eigenvalues = np.linalg.eigvalsh(gram / (n - 1))
            cross = np.sqrt(np.clip(eigenvalues, 0, None)).sum(-1)
            trace = (centred ** 2).sum((1, 2)) / (n - 1)
            out.append(((mean - self.mean) ** 2).sum(-1) + trace + self.trace - 2 * cross)
        return np.concatenate(out)


@dataclass
class ClipScores:
    """Per-clip ingredients of one row's scores, in caption order: whether the judge found everything the
    caption asked for, coherence, flicker, judge features ``(N, D)`` and (optionally) PSNR against the
    teacher's clip from the same noise."""

    correct: np.ndarray
    coherence: np.ndarray
    flicker: np.ndarray
    features: np.ndarray
    psnr_vs_teacher: np.ndarray | None = None
    diversity: np.ndarray | None = None  # per caption of the diversity figure (its own captions, not per clip)

    def __len__(self) -> int:
        return len(self.correct)

    def scores(self, indices: np.ndarray, frechet: FrechetToReference) -> dict[str, float]:
        """Every score of the clips at ``indices`` (repeats allowed)."""
        return {key: float(values[0]) for key, values in self.many_scores(np.asarray(indices)[None], frechet).items()}

    def many_scores(self, index_sets: np.ndarray, frechet: FrechetToReference) -> dict[str, np.ndarray]:
        """Every score for each row of ``index_sets`` ``(B, n)`` at once: ``{score: (B,)}``."""
        result = {
            "fidelity_all": self.correct[index_sets].mean(1),
            "frechet_distance": frechet.many(self.features, index_sets),
            "coherence": self.coherence[index_sets].mean(1),
            "flicker": self.flicker[index_sets].mean(1),
        }
        if self.psnr_vs_teacher is not None:
            result["psnr_vs_teacher"] = self.psnr_vs_teacher[index_sets].mean(1)
        return result


def resampled_scores(clips: ClipScores, frechet: FrechetToReference, resamples: int = RESAMPLES, seed: int = 0,
                     cache: dict | None = None) -> tuple[dict[str, float], list[dict[str, float]]]:
    """Every score on all clips and on each of the ``resamples`` index sets of ``seed``; with ``cache`` (a dict
    kept by the caller) computed once per row, so comparing many rows pairwise costs one bootstrap per row, not
    one per pair (every paired comparison resamples the same index sets)."""
    key = (id(clips), len(clips), resamples, seed)
    if cache is not None and key in cache:
        return cache[key][1]
    draws = clips.many_scores(resampled_indices(len(clips), resamples, seed), frechet)
    found = (clips.scores(np.arange(len(clips)), frechet),
             [{key: float(values[i]) for key, values in draws.items()} for i in range(resamples)])
    if cache is not None:
        cache[key] = (clips, found)  # the row is kept with its figures, so its id is not reused meanwhile
    return found


def bootstrap_intervals(clips: ClipScores, frechet: FrechetToReference, resamples: int = RESAMPLES,
                        seed: int = 0, level: float = LEVEL) -> dict[str, list[float]]:
    """95% (``level``) bias-corrected percentile intervals of each score over clips, keyed ``<score>_ci``."""
    whole, draws = resampled_scores(clips, frechet, resamples, seed)
    return {f"{key}_ci": percentile_interval(np.array([d[key] for d in draws]), level, whole[key]) for key in whole}


def paired_comparison(first: ClipScores, second: ClipScores, frechet: FrechetToReference,
                      resamples: int = RESAMPLES, seed: int = 0, level: float = LEVEL,
                      cache: dict | None = None) -> dict[str, dict]:
    """``first`` minus ``second`` for each score, with a paired bootstrap interval and a verdict: "better" or
    "worse" (for ``first``, by the score's direction) when the interval excludes 0, else "tie". ``cache``: see
    :func:`resampled_scores` (the same figures with or without it)."""
    if len(first) != len(second):
        raise ValueError(f"a paired comparison needs the same clips on both sides, got {len(first)} and "
                         f"{len(second)}")
    whole_first, draws_first = resampled_scores(first, frechet, resamples, seed, cache)
    whole_second, draws_second = resampled_scores(second, frechet, resamples, seed, cache)
    draws = list(zip(draws_first, draws_second))
    result = {}
    for key in whole_first.keys() & whole_second.keys():
        low, high = percentile_interval(np.array([a[key] - b[key] for a, b in draws]), level,
                                        whole_first[key] - whole_second[key])
        if low <= 0 <= high:
            verdict = "tie"
        else:
            verdict = "better" if (low > 0) == HIGHER_IS_BETTER[key] else "worse"
        result[key] = {"difference": whole_first[key] - whole_second[key], "ci": [low, high], "verdict": verdict}
    if first.diversity is not None and second.diversity is not None and len(first.diversity) == len(second.diversity):
        result["diversity"] = paired_mean_comparison(first.diversity, second.diversity, "diversity", resamples, seed,
                                                     level)
    return result


def paired_mean_comparison(first: np.ndarray, second: np.ndarray, key: str, resamples: int = RESAMPLES,
                           seed: int = 0, level: float = LEVEL) -> dict:
    """``mean(first) - mean(second)`` of paired per-item values (the same items on both sides, e.g. one diversity
    figure per caption), with a paired bootstrap interval over items and the verdict by ``key``'s direction."""
    indices = resampled_indices(len(first), resamples, seed)
    difference = np.asarray(first, np.float64) - np.asarray(second, np.float64)
    estimate = float(difference.mean())
    low, high = percentile_interval(difference[indices].mean(axis=1), level)
    verdict = "tie" if low <= 0 <= high else ("better" if (low > 0) == HIGHER_IS_BETTER[key] else "worse")
    return {"difference": estimate, "ci": [low, high], "verdict": verdict}
