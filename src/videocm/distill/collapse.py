"""The collapse guard: signs in a run's periodic samples that the student has collapsed, and what the trainer
does about them (``--on-collapse stop|rollback|warn``).

The monitor measures its sample clips with :func:`clip_health`; :func:`collapse_evidence` reads those figures
(and, for MovingDigits, the judge's fidelity against the previous check) and names what it found, or None. A
non-finite loss is a collapse too; the trainer handles it by the same policy.
"""

from __future__ import annotations

import numpy as np

STATIC_LEVEL = 0.5  # grey levels: mean change between consecutive frames below this is a still picture
FLAT_LEVEL = 2.0  # grey levels: spatial standard deviation below this is one flat colour
FLAT_SHARE = 0.9  # share of the clips that must be flat (one dark clip is not a collapse)
SATURATED_SHARE = 0.25  # share of the values at 255 (blown out) in the mean clip
FIDELITY_DROP = 0.25  # MovingDigits: fidelity falling this much since the previous check, beyond both intervals
HEALTH_KEYS = ("motion", "flat_share", "saturated_share")


def clip_health(clips: list[np.ndarray]) -> dict[str, float]:
    """Figures of uint8 clips ``(T, H, W, C)`` that a collapse moves: mean absolute change between consecutive
    frames (grey levels; 0 for still pictures), the share of clips that are one flat colour, and the share of
    values blown out to 255."""
    stack = np.stack([np.asarray(c, dtype=np.float32) for c in clips])  # (N, T, H, W, C)
    motion = float(np.abs(np.diff(stack, axis=1)).mean()) if stack.shape[1] > 1 else float("nan")
    spread = stack.reshape(stack.shape[0], stack.shape[1], -1, stack.shape[-1]).std(axis=2).mean(axis=(1, 2))
    return {"motion": motion, "flat_share": float((spread < FLAT_LEVEL).mean()),
            "saturated_share": float((stack >= 255).mean())}


def collapse_evidence(scores: dict, previous: dict | None) -> str | None:
    """What in ``scores`` (a monitor's figures of one check) says the student has collapsed, or None;
    ``previous``: the figures of the check before (for a fidelity drop)."""
    found = []
    if any(k in scores and not np.isfinite(scores[k]) for k in ("fidelity_all", "frechet_distance")):
        found.append("non-finite sample scores")
    if scores.get("flat_share", 0.0) >= FLAT_SHARE:
        found.append(f"{scores['flat_share']:.0%} of the sample clips are one flat colour")
    elif scores.get("motion", STATIC_LEVEL) < STATIC_LEVEL:
        found.append(f"the sample clips are still pictures (mean frame change {scores['motion']:.2f} grey levels)")
    if scores.get("saturated_share", 0.0) >= SATURATED_SHARE:
        found.append(f"{scores['saturated_share']:.0%} of the sample values are blown out to 255")
    if previous and "fidelity_all" in scores and "fidelity_all" in previous:
        now, before = scores["fidelity_all"], previous["fidelity_all"]
        now_high = scores.get("fidelity_all_ci", [now, now])[1]
        before_low = previous.get("fidelity_all_ci", [before, before])[0]
        if before - now >= FIDELITY_DROP and now_high < before_low:
            found.append(f"fidelity fell from {before:.3f} to {now:.3f} since step {previous.get('step', '?')}")
    return "; ".join(found) or None
