#!/usr/bin/env bash
# Scores the VP comparison's arms (run-vp.sh, both seeds: lcm, dcm, dmd, scm, rcm and the updates arms) on the 240
# test captions and noise of every VP report, at 1, 2 and 4 steps, beside the 50-step teacher, with each row's
# diversity over 30 captions x 4 seeds; then `summarise.py vp` pairs them (vp/summary.md, vp/comparisons.json).
# ARMS=... scores those arms alone, into vp/eval-ARMS.json and vp/clip-scores-ARMS.npz (summarise.py reads those
# too), without the teacher's rows (its 50-step clips take 15 minutes here; PSNR is not among the compared scores) or
# a report: an arm added later.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/scm-rcm/vp
L=outputs/scm-rcm-vp/rows  # one link per arm and seed, so that each row has its own name (arm-sSEED)
if [ -n "$ARMS" ]; then
  tag=-$(echo $ARMS | tr ' ' '-'); extra=()
else
  ARMS="lcm dcm dmd scm rcm scm-updates rcm-updates"; tag=; extra=(--model models/teacher-vp@50 --report $R/report
    --teacher-model models/teacher-vp --teacher-steps 50)
fi
mkdir -p $L $R
models=()
for seed in 0 1; do
  for arm in $ARMS; do
    [ -f outputs/scm-rcm-vp/s$seed/$arm/videocm.json ] || continue
    ln -sfn ../s$seed/$arm $L/$arm-s$seed
    models+=(--model $L/$arm-s$seed@1,2,4)
  done
done
.venv/bin/videocm eval "${models[@]}" "${extra[@]}" --steps 1,2,4 --n 240 --diversity 30 \
  --json $R/eval$tag.json --clip-scores $R/clip-scores$tag.npz \
  --overwrite
.venv/bin/python docs/reports/scm-rcm/summarise.py vp > /dev/null
