"""Scoring a training run's periodic samples with the judge: the :class:`distill.trainer.Monitor` that the CLI
hands to every training command (the trainer itself never imports evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..data.video_io import labelled_grid, write_video
from ..distill.collapse import clip_health
from ..errors import VideoCMError
from .control import control_eval_set, control_scores
from .evaluate import eval_prompts, score_clips, shown_indices
from .judge import Judge
from .metrics import clip_psnr, temporal_coherence


class JudgeMonitor:
    """Samples scored by the MovingDigits judge (fidelity, coherence), control IoU, reconstruction quality."""

    def __init__(self, judge_folder: str | Path | None = None) -> None:
        self.judge_folder = judge_folder
        self._loaded: Judge | None = None
        self.last_grid: np.ndarray | None = None  # the newest sample check's grid (frames), for the dashboards

    def _judge(self) -> Judge:
        """The judge, loaded once (its reference features are cached on it)."""
        if self._loaded is None:
            self._loaded = Judge.load(self.judge_folder)
        return self._loaded

    def samples(self, pipeline, n: int, steps: int, guidance: float | None, out: Path, step: int,
                prompts: list[str] | None = None, images: list[np.ndarray] | None = None) -> dict[str, float]:
        """Generate ``n`` clips for evenly spread test captions (or ``prompts``, e.g. the user's own captions),
        write ``OUT/samples/step-N.gif`` (8 of them, labelled) and append the coherence and, for MovingDigits clips, the
        judge's fidelity, Fréchet distance (with the real-vs-real value) and flicker, with 95% intervals over the
        clips for fidelity and Fréchet, to ``OUT/samples/scores.jsonl``."""
        if prompts:  # (``images``: an image-to-video model's first frame of each of ``prompts``)
            images = None if images is None else [images[i % len(prompts)] for i in range(n)]
            prompts = [prompts[i % len(prompts)] for i in range(n)]
            seeds = list(range(1, n + 1))
        else:
            prompts, seeds = eval_prompts(n, seed=1)
        clips = pipeline.generate(prompts, seeds, steps, guidance, images=images)
        samples = Path(out) / "samples"
        shown = shown_indices(prompts, 8)
        sampled_as = getattr(pipeline, "sampled_as", None)  # a hand-off (DCM's semantic stage) says what ran
        grid = labelled_grid([[clips[i] for i in shown]], [f"update {step}, {steps} step{'s' if steps != 1 else ''}"
                                                           + (f" ({sampled_as})" if sampled_as else "")],
                             [prompts[i] for i in shown], scale=2)
        write_video(samples / f"step-{step:06d}.gif", grid)
        self.last_grid = grid  # the trainer's dashboards show it (--report-to)
        scores = {"coherence": temporal_coherence(clips), **clip_health(clips)}  # the collapse guard reads these
        if sampled_as:
            scores["sampled_as"] = sampled_as
        try:
            judged = score_clips(self._judge(), clips, prompts)
            scores.update({k: judged[k] for k in ("fidelity_digit", "fidelity_colour", "fidelity_direction",
                                                  "fidelity_all", "frechet_distance", "frechet_real_reference",
                                                  "flicker", "fidelity_all_ci", "frechet_distance_ci")})
        except VideoCMError:
            pass  # the judge only takes the benchmark's clip shape
        with open(samples / "scores.jsonl", "a") as handle:
            handle.write(json.dumps({"step": step, **scores}) + "\n")
        return scores

    def control_samples(self, pipeline, n: int, steps: int, guidance: float | None, geometry) -> dict[str, float]:
        """Control fidelity (per-frame IoU with the silhouette) on ``n`` held-out clips."""
        prompts, controls, seeds, _ = control_eval_set(n, 0, geometry)
        clips = []
        for start in range(0, len(prompts), 16):
            part = slice(start, start + 16)
            clips += pipeline.generate(prompts[part], seeds[part], steps, guidance, controls=controls[part])
        scores = control_scores(clips, controls, prompts)
        return {"sample_iou": scores["iou"], "sample_iou_mismatched": scores["iou_mismatched"]}

    def reconstructions(self, reconstructed: list[np.ndarray], originals: list[np.ndarray], captions: list[str]
                        ) -> dict:
        """Mean PSNR of the reconstructions and the judge's scores of them."""
        quality = {"psnr": float(np.mean([clip_psnr(r, c) for r, c in zip(reconstructed, originals)]))}
        try:
            scores = score_clips(self._judge(), reconstructed, captions)
            quality.update({k: scores[k] for k in ("fidelity_all", "fidelity_digit", "fidelity_colour",
                                                   "fidelity_direction", "frechet_distance",
                                                   "frechet_real_reference", "coherence")})
        except Exception as error:  # noqa: BLE001 - the judge only takes the benchmark's shape; report, don't fail
            quality["judge"] = f"not scored: {error}"
        return quality
