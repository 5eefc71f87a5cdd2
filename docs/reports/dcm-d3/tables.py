"""Markdown tables for the D3 arms (run.sh here): each arm's discriminator over its last 20 logs (hinge or logistic
loss, mean real and fake logits, how far the heads' weights moved), then eval.json's rows and each arm against
the shipped dcm-flow and lcm-flow at the same step count (paired differences). `python docs/reports/dcm-d3/tables.py`."""

import csv
import json
from pathlib import Path

here = Path(__file__).resolve().parent
runs = here.parents[2] / "outputs" / "dcm-d3"
result = json.loads((here / "eval.json").read_text())
arms = [row["model"] for row in result["rows"] if row["model"] not in ("dcm-flow", "lcm-flow")]

print("| arm | discriminator loss | real logit | fake logit | heads moved | consistency |")
print("|---|---|---|---|---|---|")
for arm in dict.fromkeys(arms):
    logs = runs / arm / "stages" / "expert-1-detail" / "train_log.csv"
    if not logs.exists():
        logs = runs / arm / "train_log_detail.csv"
    rows = list(csv.DictReader(logs.open()))[-20:]

    def mean(key):
        values = [float(r[key]) for r in rows if r.get(key) not in (None, "")]
        return sum(values) / len(values) if values else float("nan")

    print(f"| {arm} | {mean('gan_discriminator'):.4f} | {mean('gan_real_logit'):+.4f} | {mean('gan_fake_logit'):+.4f} "
          f"| {mean('disc_weight_change'):.4f} | {mean('consistency'):.5f} |")
print()
print("| model | steps | fidelity (all) | Fréchet | coherence | flicker |")
print("|---|---|---|---|---|---|")
for row in result["rows"]:
    low, high = row.get("fidelity_all_ci") or (float("nan"), float("nan"))
    print(f"| {row['model']} | {row['steps']} | {row['fidelity_all']:.3f} [{low:.3f}, {high:.3f}] | "
          f"{row['frechet_distance']:.2f} | {row['coherence']:.3f} | {row['flicker']:.2f} |")
print()
print("| first | second | steps | fidelity | Fréchet | coherence | flicker |")
print("|---|---|---|---|---|---|---|")
for pair in result["comparisons"]:
    first, second = pair["first"], pair["second"]
    if first.split("@")[0] not in arms or first.split("@")[1] != second.split("@")[1]:
        continue
    cells = []
    for key, digits in (("fidelity_all", 3), ("frechet_distance", 2), ("coherence", 4), ("flicker", 2)):
        c = pair[key]
        cells.append(f"{c['difference']:+.{digits}f} [{c['ci'][0]:+.{digits}f}, {c['ci'][1]:+.{digits}f}] "
                     f"{c['verdict']}")
    print(f"| {first.split('@')[0]} | {second.split('@')[0]} | {first.split('@')[1]} | " + " | ".join(cells) + " |")
