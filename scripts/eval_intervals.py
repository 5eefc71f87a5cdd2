"""Recompute the bootstrap intervals and same-steps comparisons of a `videocm eval --json` file from the per-clip
scores it saved with `--clip-scores` (no clip is generated again), and write them back into the JSON.

    python scripts/eval_intervals.py EVAL.json EVAL.npz
"""

import json
import sys

import numpy as np

from videocm.evaluation.evaluate import read_clip_scores, reference_frechet, row_label
from videocm.evaluation.judge import Judge
from videocm.evaluation.statistics import bootstrap_intervals, paired_comparison


def main(json_path: str, npz_path: str) -> None:
    result = json.loads(open(json_path).read())
    frechet = reference_frechet(Judge.load())
    per_clip = {}
    for row in result["rows"]:
        label = row_label(row)
        per_clip[label] = scores = read_clip_scores(npz_path, label)
        row.update(bootstrap_intervals(scores, frechet))
    comparisons = []
    rows = result["rows"]
    for i, first in enumerate(rows):
        for second in rows[i + 1:]:
            if first["steps"] == second["steps"]:
                a, b = row_label(first), row_label(second)
                comparisons.append({"first": a, "second": b, **paired_comparison(per_clip[a], per_clip[b], frechet)})
    result["comparisons"] = comparisons
    with open(json_path, "w") as handle:
        json.dump(result, handle, indent=2)
    for row in rows:
        print(row_label(row), {k: np.round(v, 3).tolist() for k, v in row.items() if k.endswith("_ci")})


if __name__ == "__main__":
    main(*sys.argv[1:3])
