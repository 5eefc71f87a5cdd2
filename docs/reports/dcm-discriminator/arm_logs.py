"""The detail-stage arms' adversarial logs: min and mean of the last 20 logged steps of each loss term.

    python docs/reports/dcm-discriminator/arm_logs.py outputs/gan-arms > arm-logs.md
"""

import csv
import sys
from pathlib import Path

TERMS = ("gan_discriminator", "feature_matching", "gan_generator", "consistency")


def summary(log: Path) -> dict:
    rows = list(csv.DictReader(log.open()))[-20:]
    result = {}
    for term in TERMS:
        values = [float(r[term]) for r in rows if r.get(term) not in (None, "")]
        result[term] = (min(values), sum(values) / len(values)) if values else None
    return result


def main() -> None:
    root = Path(sys.argv[1])
    print("| arm | " + " | ".join(f"{t} (min / mean)" for t in TERMS) + " |")
    print("|---|" + "---|" * len(TERMS))
    for arm in sorted(p for p in root.iterdir() if p.is_dir() and p.name[-3:-1] == "-s"):
        log = arm / "stages" / "expert-1-detail" / "train_log.csv"
        if not (arm / "videocm.json").is_file() or not log.is_file():
            continue
        cells = [("-" if v is None else f"{v[0]:.4g} / {v[1]:.4g}") for v in summary(log).values()]
        print(f"| {arm.name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
