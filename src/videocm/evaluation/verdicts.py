"""The judge's verdict on real test clips and on corrupted versions of them (``videocm judge-check``).

A trustworthy judge gives real clips full marks and does not reward what weak generators produce: blur,
stills, jumbled frames, wrong colours, noise. Each row scores the same real test clips after one corruption.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Count, OutputPath
from ..data.moving_digits import Geometry, make_clip
from . import corruptions
from .evaluate import score_clips, write_json
from .judge import Judge

@dataclass
class JudgeCheckConfig:
    """``videocm judge-check``: the judge's verdict on real and corrupted test clips."""

    n: Count = 480  # real test clips (all 240 captions covered), each scored under every corruption
    judge: str | None = None  # judge folder (default: the one packaged with videocm, or $VIDEOCM_JUDGE)
    json: OutputPath | None = None  # write the rows as JSON here
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


CORRUPTIONS = {
    "real": lambda clip, rng: clip.video,
    "blurred (sigma 1)": lambda clip, rng: corruptions.blurred(clip.video, 1.0),
    "blurred (sigma 2)": lambda clip, rng: corruptions.blurred(clip.video, 2.0),
    "frozen (one frame repeated)": lambda clip, rng: corruptions.frozen(clip.video),
    "shuffled frames": lambda clip, rng: corruptions.shuffled(clip.video, rng),
    "colour-swapped": lambda clip, rng: corruptions.colour_swapped(clip.video, clip.colour),
    "pure noise": lambda clip, rng: corruptions.pure_noise(clip.video.shape, rng),
    "smooth noise": lambda clip, rng: corruptions.smooth_noise(clip.video.shape, rng),
}


def corruption_verdicts(judge: Judge, n: int = 480, seed: int = 50_000) -> list[dict]:
    """Score ``n`` real test clips (all 240 captions covered) under each corruption, with the clips' own
    captions as prompts."""
    geometry = Geometry(judge.frames, judge.size)
    clips = [make_clip(i, seed, "test", geometry, cover_captions=True) for i in range(n)]
    prompts = [clip.caption for clip in clips]
    rows = []
    for name, corrupt in CORRUPTIONS.items():
        rng = np.random.default_rng([seed, len(rows)])
        videos = [corrupt(clip, rng) for clip in clips]
        rows.append({"corruption": name, **score_clips(judge, videos, prompts)})
    return rows


def verdict_table(rows: list[dict]) -> str:
    keys = ["fidelity_all", "fidelity_digit", "fidelity_colour", "fidelity_direction", "frechet_distance",
            "frechet_real_reference", "coherence"]
    lines = ["| clips | " + " | ".join(keys) + " |", "|---|" + "---|" * len(keys)]
    for row in rows:
        lines.append(f"| {row['corruption']} | " + " | ".join(f"{row[k]:.3f}" for k in keys) + " |")
    return "\n".join(lines)


def run_judge_check(config: JudgeCheckConfig) -> int:
    rows = corruption_verdicts(Judge.load(config.judge), config.n)
    print(verdict_table(rows))
    if config.json:
        write_json(rows, config.json)
    return 0
