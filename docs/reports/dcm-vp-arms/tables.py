"""Markdown tables of eval.json here: every row with its 95% intervals, then each arm against lcm-vp at the same
step count (paired differences). `python docs/reports/dcm-vp-arms/tables.py`."""

import json
from pathlib import Path

here = Path(__file__).resolve().parent
result = json.loads((here / "eval.json").read_text())


def interval(row, key, digits):
    low, high = row.get(f"{key}_ci") or (None, None)
    value = f"{row[key]:.{digits}f}"
    return value if low is None else f"{value} [{low:.{digits}f}, {high:.{digits}f}]"


print("| model | steps | fidelity (all) | Fréchet | coherence | flicker |")
print("|---|---|---|---|---|---|")
for row in result["rows"]:
    print(f"| {row['model']} | {row['steps']} | {interval(row, 'fidelity_all', 3)} | "
          f"{interval(row, 'frechet_distance', 2)} | {row['coherence']:.3f} | {row['flicker']:.2f} |")
print()
print("| arm against lcm-vp | steps | fidelity | Fréchet | coherence |")
print("|---|---|---|---|---|")
for pair in result["comparisons"]:
    first, second = pair["first"], pair["second"]
    if not second.startswith("lcm-vp") or first.split("@")[1] != second.split("@")[1]:
        continue
    cells = []
    for key, digits in (("fidelity_all", 3), ("frechet_distance", 2), ("coherence", 3)):
        c = pair[key]
        cells.append(f"{c['difference']:+.{digits}f} [{c['ci'][0]:+.{digits}f}, {c['ci'][1]:+.{digits}f}] "
                     f"{c['verdict']}")
    print(f"| {first.split('@')[0]} | {first.split('@')[1]} | " + " | ".join(cells) + " |")
