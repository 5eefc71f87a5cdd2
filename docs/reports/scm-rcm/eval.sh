#!/usr/bin/env bash
# Scores issue 39's arms (run.sh, both seeds) on the 240 test captions and noise of every flow report, at 1, 2 and
# 4 steps, with each row's diversity over 30 captions x 4 seeds, as docs/reports/dmd-compare/eval.sh scores
# LCM, DCM and DMD; then summarise.py pairs each arm with those rows (clip-scores.npz there), rCM with sCM, and
# each arm with the 50-step teacher (summary.md, comparisons.json).
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/scm-rcm
L=outputs/scm-rcm/rows  # one link per arm and seed, so that each row has its own name (arm-sSEED)
ARMS=${ARMS:-scm rcm scm-updates rcm-updates}
mkdir -p $L
models=()
for seed in 0 1; do
  for arm in $ARMS; do
    [ -f outputs/scm-rcm/s$seed/$arm/videocm.json ] || continue
    ln -sfn ../s$seed/$arm $L/$arm-s$seed
    models+=(--model $L/$arm-s$seed@1,2,4)
  done
done
.venv/bin/videocm eval "${models[@]}" --steps 1,2,4 --n 240 --diversity 30 --teacher-model models/teacher-flow \
  --teacher-steps 50 \
  --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report --overwrite
.venv/bin/python $R/summarise.py > /dev/null
