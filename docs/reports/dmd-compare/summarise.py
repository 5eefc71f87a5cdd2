"""Issue 22's paired comparisons from eval.sh's per-clip scores: on each seed and at 1, 2 and 4 steps, the DMD
plug-in term against the same method without it, DMD against LCM and DCM, prompts-only against clip-trained, and
every row against the 50-step teacher (first minus second, 95% paired bootstrap over clips; diversity over its 30
captions). Writes comparisons.json and summary.md beside this file."""

from __future__ import annotations

import json
from pathlib import Path

from videocm.evaluation.evaluate import read_clip_scores, reference_frechet
from videocm.evaluation.judge import Judge
from videocm.evaluation.statistics import paired_comparison

HERE = Path(__file__).resolve().parent
SCORES = HERE / "clip-scores.npz"
PAIRS = [("lcm-dmd", "lcm"), ("dcm-dmd", "dcm"), ("dmd", "lcm"), ("dmd", "dcm"), ("lcm-prompts", "lcm"),
         ("dcm-prompts", "dcm")]
TEACHER = "teacher-flow@50"
FIGURES = [("fidelity_all", 3), ("frechet_distance", 2), ("coherence", 4), ("flicker", 2), ("diversity", 2)]


def cell(comparison: dict, key: str, digits: int) -> str:
    if key not in comparison:
        return "—"
    value = comparison[key]
    low, high = value["ci"]
    return f"{value['difference']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}] {value['verdict']}"


def main() -> None:
    frechet = reference_frechet(Judge.load())
    rows = json.loads((HERE / "eval.json").read_text())["rows"]
    arms = sorted({row["model"].rsplit("-s", 1)[0] for row in rows if row["model"] != "teacher-flow"})
    rows_read, cache = {}, {}  # each row read and bootstrapped once

    def scores_of(label: str):
        if label not in rows_read:
            rows_read[label] = read_clip_scores(SCORES, label)
        return rows_read[label]
    found, lines = [], ["| first | second | seed | steps | " + " | ".join(k for k, _ in FIGURES) + " |",
                        "|---|---|---|---|" + "---|" * len(FIGURES)]
    for first, second in PAIRS + [(arm, "teacher") for arm in arms]:
        if first not in arms or (second != "teacher" and second not in arms):
            continue
        for seed in (0, 1):
            for steps in (1, 2, 4):
                a = scores_of(f"{first}-s{seed}@{steps}")
                b = scores_of(TEACHER) if second == "teacher" else scores_of(f"{second}-s{seed}@{steps}")
                comparison = {"first": first, "second": second if second != "teacher" else TEACHER, "seed": seed,
                              "steps": steps, **paired_comparison(a, b, frechet, cache=cache)}
                found.append(comparison)
                lines.append(f"| {first} | {comparison['second']} | {seed} | {steps} | "
                             + " | ".join(cell(comparison, k, d) for k, d in FIGURES) + " |")
    (HERE / "comparisons.json").write_text(json.dumps(found, indent=2))
    (HERE / "summary.md").write_text("Paired comparisons, first minus second (95% interval over the 240 clips; "
                                     "diversity over its 30 captions); the verdict is the first row's.\n\n"
                                     + "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
