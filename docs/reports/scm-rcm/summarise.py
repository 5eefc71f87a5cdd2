"""Issue 39's paired comparisons from eval.sh's per-clip scores: on each seed and at 1, 2 and 4 steps, each sCM
and rCM arm against issue 22's LCM, DCM and DMD arms of the same seed (docs/reports/dmd-compare, the same 240
captions and noise, 5 minutes each), rCM against sCM (the regulariser's effect) and every arm against the 50-step
teacher (first minus second, 95% paired bootstrap over clips; diversity over its 30 captions). Writes
comparisons.json and summary.md beside this file, and prints the updates arms' learning curves; `python docs/reports/scm-rcm/summarise.py`."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from videocm.evaluation.evaluate import read_clip_scores, reference_frechet
from videocm.evaluation.judge import Judge
from videocm.evaluation.statistics import paired_comparison

HERE = Path(__file__).resolve().parent
OURS = HERE / "clip-scores.npz"
THEIRS = HERE.parent / "dmd-compare" / "clip-scores.npz"  # lcm-sN, dcm-sN, dmd-sN and teacher-flow@50
ARMS = ["scm", "rcm", "scm-updates", "rcm-updates"]
PAIRS = [(arm, other) for arm in ARMS for other in ("lcm", "dcm", "dmd", "teacher")] + [
    ("rcm", "scm"), ("rcm-updates", "scm-updates")]
# issue 22's table format (its figures, cells and teacher row), so the two reports read alike
_spec = importlib.util.spec_from_file_location("dmd_compare_summarise", HERE.parent / "dmd-compare" / "summarise.py")
_dmd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dmd)
TEACHER, FIGURES, cell = _dmd.TEACHER, _dmd.FIGURES, _dmd.cell


def main() -> None:
    frechet = reference_frechet(Judge.load())
    ours = {row["model"] for row in json.loads((HERE / "eval.json").read_text())["rows"]}
    read, cache = {}, {}  # each row read and bootstrapped once

    def scores_of(name: str, seed: int, steps: int):
        if name == "teacher":
            key = (THEIRS, TEACHER)
        else:
            label = f"{name}-s{seed}@{steps}"
            key = (OURS, label) if name in ARMS else (THEIRS, label)
        if key not in read:
            read[key] = read_clip_scores(*key)
        return read[key]

    found, lines = [], ["| first | second | seed | steps | " + " | ".join(k for k, _ in FIGURES) + " |",
                        "|---|---|---|---|" + "---|" * len(FIGURES)]
    for first, second in PAIRS:
        for seed in (0, 1):
            if f"{first}-s{seed}" not in ours or (second in ARMS and f"{second}-s{seed}" not in ours):
                continue
            for steps in (1, 2, 4):
                comparison = {"first": f"{first}-s{seed}@{steps}",
                              "second": TEACHER if second == "teacher" else f"{second}-s{seed}@{steps}",
                              "seed": seed, "steps": steps,
                              **paired_comparison(scores_of(first, seed, steps), scores_of(second, seed, steps),
                                                  frechet, cache=cache)}
                found.append(comparison)
                lines.append(f"| {first} | {second if second != 'teacher' else TEACHER} | {seed} | {steps} | "
                             + " | ".join(cell(comparison, k, d) for k, d in FIGURES) + " |")
    (HERE / "comparisons.json").write_text(json.dumps(found, indent=2))
    (HERE / "summary.md").write_text("Paired comparisons, first minus second (95% interval over the 240 clips; "
                                     "diversity over its 30 captions); the verdict is the first row's.\n\n"
                                     + "\n".join(lines) + "\n\nRows (seed 0 / seed 1):\n\n" + rows_table()
                                     + "\n\nLearning curves:\n\n" + learning_curves() + "\n")
    print("\n".join(lines))
    print()
    print(rows_table())
    print()
    print(learning_curves())


def rows_table() -> str:
    """Every arm's figures at 1, 2 and 4 steps beside issue 22's lcm, dcm and dmd rows, seed 0 / seed 1."""
    rows = {f"{row['model']}@{row['steps']}": row for source in (HERE / "eval.json", THEIRS.parent / "eval.json")
            for row in json.loads(source.read_text())["rows"]}
    lines = ["| arm | steps | fidelity | Fréchet | coherence | flicker | diversity |", "|---|---|---|---|---|---|---|"]

    def figure(row: dict | None, key: str, digits: int) -> str:
        return "—" if row is None or row.get(key) is None else f"{row[key]:.{digits}f}"

    for arm in [*ARMS, "lcm", "dcm", "dmd"]:
        for steps in (1, 2, 4):
            pair = [rows.get(f"{arm}-s{seed}@{steps}") for seed in (0, 1)]
            if pair == [None, None]:
                continue
            lines.append(f"| `{arm}` | {steps} | " + " | ".join(
                " / ".join(figure(row, key, digits) for row in pair) for key, digits in FIGURES) + " |")
    lines.append("| teacher@50 | 50 | " + " | ".join(figure(rows.get(TEACHER), key, digits) for key, digits in FIGURES)
                 + " |")
    return "\n".join(lines)


def learning_curves() -> str:
    """The updates arms' sample checks (48 clips at 2 steps every 200 updates; run.sh), both seeds."""
    runs = HERE.parents[2] / "outputs" / "scm-rcm"
    lines = ["| arm | seed | update | fidelity (48 clips, 2 steps) | Fréchet | coherence | flicker |",
             "|---|---|---|---|---|---|---|"]
    for arm in ("scm-updates", "rcm-updates"):
        for seed in (0, 1):
            scores = runs / f"s{seed}" / arm / "samples" / "scores.jsonl"
            if not scores.exists():
                continue
            for line in scores.read_text().splitlines():
                row = json.loads(line)
                low, high = row["fidelity_all_ci"]
                lines.append(f"| {arm} | {seed} | {row['step']} | {row['fidelity_all']:.3f} [{low:.3f}, {high:.3f}] | "
                             f"{row['frechet_distance']:.2f} | {row['coherence']:.3f} | {row['flicker']:.2f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
