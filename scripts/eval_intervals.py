"""Recompute the bootstrap intervals and same-steps comparisons of a `videocm eval --json` file from the per-clip
scores it saved with `--clip-scores` (no clip is generated again), and write them back into the JSON.

    python scripts/eval_intervals.py EVAL.json EVAL.npz
"""

import json
import sys

import numpy as np

from videocm.evaluation.evaluate import (ModelRun, read_clip_scores, reference_frechet, row_label,
                                        same_steps_comparisons)
from videocm.evaluation.judge import Judge
from videocm.evaluation.statistics import bootstrap_intervals


def main(json_path: str, npz_path: str) -> None:
    result = json.loads(open(json_path).read())
    judge = Judge.load()
    runs = [ModelRun(row, per_clip=read_clip_scores(npz_path, row_label(row))) for row in result["rows"]]
    for run in runs:
        run.row.update(bootstrap_intervals(run.per_clip, reference_frechet(judge)))
    result["comparisons"] = same_steps_comparisons(judge, runs)
    with open(json_path, "w") as handle:
        json.dump(result, handle, indent=2)
    for run in runs:
        print(row_label(run.row), {k: np.round(v, 3).tolist() for k, v in run.row.items() if k.endswith("_ci")})

if __name__ == "__main__":
    main(*sys.argv[1:3])
