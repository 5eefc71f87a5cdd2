"""Issue 39's paired comparisons from the per-clip scores, at 1, 2 and 4 steps on each seed: each sCM and rCM arm
against LCM, DCM and DMD of the same seed, rCM against sCM (the regulariser's effect) and every arm against the
50-step teacher (first minus second, 95% paired bootstrap over clips; diversity over its 30 captions). Writes
comparisons.json and summary.md and prints the updates arms' learning curves.

`python docs/reports/scm-rcm/summarise.py` reads the flow comparison (eval.sh: the sCM/rCM arms here, LCM, DCM and
DMD from issue 22's docs/reports/dmd-compare, the same 240 captions and noise, 5 minutes each);
`python docs/reports/scm-rcm/summarise.py vp` the VP one (eval-vp.sh: every arm in vp/)."""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from videocm.evaluation.evaluate import read_clip_scores, reference_frechet
from videocm.evaluation.judge import Judge
from videocm.evaluation.statistics import paired_comparison

HERE = Path(__file__).resolve().parent
ARMS = ["scm", "rcm", "scm-updates", "rcm-updates", "scm-lr-1e-4"]  # the last: VP only (run-vp.sh)
BASELINES = ["lcm", "dcm", "dmd"]
PAIRS = [(arm, other) for arm in ARMS for other in (*BASELINES, "teacher")] + [
    ("rcm", "scm"), ("rcm-updates", "scm-updates"), ("rcm-updates", "scm-lr-1e-4"), ("scm-lr-1e-4", "scm-updates")]
# issue 22's table format (its figures and cells), so the reports read alike
_spec = importlib.util.spec_from_file_location("dmd_compare_summarise", HERE.parent / "dmd-compare" / "summarise.py")
_dmd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_dmd)
FIGURES, cell = _dmd.FIGURES, _dmd.cell


@dataclass(frozen=True)
class Setting:
    """Where one teacher's comparison reads its rows and writes its summary."""

    out: Path  # comparisons.json and summary.md
    ours: Path  # the sCM/rCM arms' eval folder (eval.json, clip-scores.npz)
    theirs: Path  # the LCM/DCM/DMD arms' and the teacher row's eval folder
    teacher: str  # the 50-step teacher's row
    runs: Path  # the training runs (learning curves)
    added: bool = False  # also read arms scored later (eval-vp.sh with ARMS: eval-ARMS.json, clip-scores-ARMS.npz)


SETTINGS = {
    "flow": Setting(HERE, HERE, HERE.parent / "dmd-compare", "teacher-flow@50",
                    HERE.parents[2] / "outputs" / "scm-rcm"),
    "vp": Setting(HERE / "vp", HERE / "vp", HERE / "vp", "teacher-vp@50", HERE.parents[2] / "outputs" / "scm-rcm-vp",
                  added=True),
}


def main(setting: Setting) -> None:
    frechet = reference_frechet(Judge.load())
    sources = [folder / "eval.json" for folder in dict.fromkeys((setting.ours, setting.theirs))]
    if setting.added:
        sources += sorted(setting.ours.glob("eval-*.json"))
    rows, npz = {}, {}  # each row's figures, and the per-clip scores file it is in
    for source in sources:
        for row in json.loads(source.read_text())["rows"]:
            label = f"{row['model']}@{row['steps']}"
            rows[label] = row
            npz[label] = source.with_name("clip-scores" + source.stem[len("eval"):] + ".npz")
    ours = {label.split("@")[0] for label in rows}
    read, cache = {}, {}  # each row read and bootstrapped once

    def scores_of(name: str, seed: int, steps: int):
        label = setting.teacher if name == "teacher" else f"{name}-s{seed}@{steps}"
        key = (npz[label], label)
        if key not in read:
            read[key] = read_clip_scores(*key)
        return read[key]

    found, lines = [], ["| first | second | seed | steps | " + " | ".join(k for k, _ in FIGURES) + " |",
                        "|---|---|---|---|" + "---|" * len(FIGURES)]
    for first, second in PAIRS:
        for seed in (0, 1):
            if f"{first}-s{seed}" not in ours or (second != "teacher" and f"{second}-s{seed}" not in ours):
                continue
            for steps in (1, 2, 4):
                comparison = {"first": f"{first}-s{seed}@{steps}",
                              "second": setting.teacher if second == "teacher" else f"{second}-s{seed}@{steps}",
                              "seed": seed, "steps": steps,
                              **paired_comparison(scores_of(first, seed, steps), scores_of(second, seed, steps),
                                                  frechet, cache=cache)}
                found.append(comparison)
                lines.append(f"| {first} | {setting.teacher if second == 'teacher' else second} | {seed} | {steps} | "
                             + " | ".join(cell(comparison, k, d) for k, d in FIGURES) + " |")
    (setting.out / "comparisons.json").write_text(json.dumps(found, indent=2))
    table, curves = rows_table(rows, setting.teacher), learning_curves(setting.runs)
    (setting.out / "summary.md").write_text("Paired comparisons, first minus second (95% interval over the 240 clips; "
                                            "diversity over its 30 captions); the verdict is the first row's.\n\n"
                                            + "\n".join(lines) + "\n\nRows (seed 0 / seed 1):\n\n" + table
                                            + "\n\nLearning curves:\n\n" + curves + "\n")
    print("\n".join(lines), table, curves, sep="\n\n")


def rows_table(rows: dict[str, dict], teacher: str) -> str:
    """Every arm's figures at 1, 2 and 4 steps beside the lcm, dcm and dmd rows, seed 0 / seed 1."""
    lines = ["| arm | steps | fidelity | Fréchet | coherence | flicker | diversity |", "|---|---|---|---|---|---|---|"]

    def figure(row: dict | None, key: str, digits: int) -> str:
        return "—" if row is None or row.get(key) is None else f"{row[key]:.{digits}f}"

    for arm in [*ARMS, *BASELINES]:
        for steps in (1, 2, 4):
            pair = [rows.get(f"{arm}-s{seed}@{steps}") for seed in (0, 1)]
            if pair == [None, None]:
                continue
            lines.append(f"| `{arm}` | {steps} | " + " | ".join(
                " / ".join(figure(row, key, digits) for row in pair) for key, digits in FIGURES) + " |")
    lines.append("| teacher@50 | 50 | " + " | ".join(figure(rows.get(teacher), key, digits) for key, digits in FIGURES)
                 + " |")
    return "\n".join(lines)


def learning_curves(runs: Path) -> str:
    """The updates arms' sample checks (48 clips at 2 steps; run.sh, run-vp.sh), both seeds."""
    lines = ["| arm | seed | update | fidelity (48 clips, 2 steps) | Fréchet | coherence | flicker |",
             "|---|---|---|---|---|---|---|"]
    for arm in ("scm-updates", "rcm-updates", "scm-lr-1e-4"):
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
    names = sys.argv[1:] or ["flow"]
    unknown = [name for name in names if name not in SETTINGS]
    if unknown:
        sys.exit(f"summarise.py: unknown teacher {unknown[0]!r}; give one of {', '.join(SETTINGS)} (or none: flow)")
    for name in names:
        main(SETTINGS[name])
