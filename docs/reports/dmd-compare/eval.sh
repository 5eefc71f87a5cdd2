#!/usr/bin/env bash
# Scores issue 22's comparison (run.sh, both seeds) on the same 240 test captions and noise as every flow report:
# each arm of each seed at 1, 2 and 4 steps beside the 50-step teacher, PSNR against the teacher's clips, and each
# row's diversity over 30 captions x 4 seeds (kept per caption, so it is compared paired). summarise.py then
# writes the paired comparisons the issue asks for (summary.md, comparisons.json). Run alone on the machine.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/dmd-compare
L=outputs/dmd-compare/rows  # one link per arm and seed, so that each row has its own name (arm-sSEED)
ARMS=${ARMS:-dmd lcm lcm-dmd dcm dcm-dmd lcm-prompts dcm-prompts}
mkdir -p $L
models=()
for seed in 0 1; do
  for arm in $ARMS; do
    ln -sfn ../s$seed/$arm $L/$arm-s$seed
    models+=(--model $L/$arm-s$seed@1,2,4)
  done
done
.venv/bin/videocm eval "${models[@]}" --model models/teacher-flow@50 --steps 1,2,4 --n 240 \
  --teacher-model models/teacher-flow --teacher-steps 50 --diversity 30 \
  --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report --overwrite
.venv/bin/python $R/summarise.py
