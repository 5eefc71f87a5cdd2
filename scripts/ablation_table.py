"""Print the DCM ablation table (markdown) from `videocm eval --json` files of the same --n and --seed.

    python scripts/ablation_table.py docs/reports/dcm-ablation/eval-*.json

Rows are matched to ablation labels by model folder name; the files may come from separate eval runs because
`videocm eval` draws the same captions and seeds for the same --n and --seed.
"""

from __future__ import annotations

import json
import sys

LABELS = [
    ("lcm-flow", "LCM (shipped lcm-flow)"),
    ("abl-sem-notc", "semantic expert alone"),
    ("abl-sem-tc", "+ temporal coherence loss"),
    ("abl-detail", "+ detail expert (LoRA, consistency only)"),
    ("abl-gan", "+ GAN"),
    ("dcm-flow", "+ feature matching (full DCM, shipped dcm-flow)"),
    ("abl-k3", "full DCM with 3 phases (K = 3)"),
    ("teacher-flow", "teacher"),
]


def main(paths: list[str]) -> None:
    rows, settings = {}, set()
    for path in paths:
        result = json.loads(open(path).read())
        settings.add((result["n"], result["seed"]))
        for row in result["rows"]:
            rows[(row["model"], row["steps"])] = row
    if len(settings) != 1:
        raise SystemExit(f"the files were made with different --n/--seed: {sorted(settings)}")
    print(f"n = {settings.pop()[0]} clips per row. Cells: fidelity / Fréchet / coherence / PSNR vs teacher-50.\n")
    print("| variant | steps | NFE | fidelity | Fréchet | coherence | PSNR vs teacher-50 |")
    print("|---|---|---|---|---|---|---|")
    for name, label in LABELS:
        for (model, steps), row in sorted(rows.items(), key=lambda item: item[0][1]):
            if model != name:
                continue
            psnr = row.get("psnr_vs_teacher")
            psnr = None if psnr is not None and psnr >= 99 else psnr  # the reference itself
            print(f"| {label} | {steps} | {row['nfe']:g} | {row['fidelity_all']:.3f} | {row['frechet_distance']:.2f} | "
                  f"{row['coherence']:.3f} | {'—' if psnr is None else f'{psnr:.2f}'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
