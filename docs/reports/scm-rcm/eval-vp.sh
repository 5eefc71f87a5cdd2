#!/usr/bin/env bash
# Scores the VP comparison's arms (run-vp.sh, both seeds: lcm, dcm, dmd, scm, rcm and the updates arms) on the 240
# test captions and noise of every VP report, at 1, 2 and 4 steps, beside the 50-step teacher, with each row's
# diversity over 30 captions x 4 seeds; then `summarise.py vp` pairs them (vp/summary.md, vp/comparisons.json).
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/scm-rcm/vp
L=outputs/scm-rcm-vp/rows  # one link per arm and seed, so that each row has its own name (arm-sSEED)
ARMS=${ARMS:-lcm dcm dmd scm rcm scm-updates rcm-updates}
mkdir -p $L $R
models=()
for seed in 0 1; do
  for arm in $ARMS; do
    [ -f outputs/scm-rcm-vp/s$seed/$arm/videocm.json ] || continue
    ln -sfn ../s$seed/$arm $L/$arm-s$seed
    models+=(--model $L/$arm-s$seed@1,2,4)
  done
done
.venv/bin/videocm eval "${models[@]}" --model models/teacher-vp@50 --steps 1,2,4 --n 240 --diversity 30 --teacher-model models/teacher-vp \
  --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report --overwrite
.venv/bin/python docs/reports/scm-rcm/summarise.py vp > /dev/null
