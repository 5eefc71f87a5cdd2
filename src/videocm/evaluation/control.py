"""Control fidelity: does a clip generated from a control video follow it?

* Shape and motion: the intersection over union, per frame, of the generated clip's foreground (brightest channel
  at least :data:`FOREGROUND` of 255) with the control's foreground (silhouette at least the same value). A
  clip that follows the silhouette in every frame scores 1; the same clip scored against another clip's control
  gives the chance level (``iou_mismatched``).
* Colour (and digit and direction): the judge's heads against the caption, as ``videocm eval`` scores them.

The evaluation set is held-out (test-split) MovingDigits clips: their captions are the prompts and their
silhouettes the controls, one fixed seed per clip.
"""

from __future__ import annotations

import numpy as np

from ..data.moving_digits import Geometry, make_clip
from .metrics import fidelity

FOREGROUND = 64  # of 255: a quarter of full brightness
CONTROL_EVAL_SEED = 60_000


def control_eval_set(n: int, seed: int = 0, geometry: Geometry = Geometry()
                     ) -> tuple[list[str], list[np.ndarray], list[int], list[np.ndarray]]:
    """``n`` test clips covering the 240 captions in turn: (prompts, controls ``(T, H, W, 1)``, seeds, real
    clips)."""
    clips = [make_clip(i, CONTROL_EVAL_SEED + seed, "test", geometry, cover_captions=True) for i in range(n)]
    return ([c.caption for c in clips], [c.control for c in clips], [seed * 1_000_003 + i for i in range(n)],
            [c.video for c in clips])


def frame_iou(clip: np.ndarray, control: np.ndarray, threshold: int = FOREGROUND) -> np.ndarray:
    """IoU ``(T,)`` of each frame's foreground: ``clip`` uint8 ``(T, H, W, 3)``, ``control`` uint8
    ``(T, H, W, 1)``. A frame where both are empty scores 1."""
    generated = clip.max(axis=-1) >= threshold
    wanted = control[..., 0] >= threshold
    intersection = (generated & wanted).sum(axis=(1, 2))
    union = (generated | wanted).sum(axis=(1, 2))
    return np.where(union > 0, intersection / np.maximum(union, 1), 1.0)


def control_scores(clips: list[np.ndarray], controls: list[np.ndarray], prompts: list[str], judge=None) -> dict:
    """IoU (mean, per frame, worst frame, against mismatched controls) and, with a judge, caption fidelity."""
    if not len(clips) == len(controls) == len(prompts):
        raise ValueError(f"{len(clips)} clips, {len(controls)} controls, {len(prompts)} prompts")
    ious = np.stack([frame_iou(c, k) for c, k in zip(clips, controls)])  # (N, T)
    shifted = controls[1:] + controls[:1]  # each clip against the next clip's control
    mismatched = np.stack([frame_iou(c, k) for c, k in zip(clips, shifted)])
    scores = {"n": len(clips), "iou": float(ious.mean()), "iou_worst_frame": float(ious.min(axis=1).mean()),
              "iou_per_frame": [float(v) for v in ious.mean(axis=0)], "iou_mismatched": float(mismatched.mean())}
    if judge is not None:
        judged = fidelity(judge.run(clips), prompts)
        scores.update({"colour": judged["colour"], "digit": judged["digit"], "direction": judged["direction"],
                       "fidelity_all": judged["all"]})
    return scores
