#!/usr/bin/env bash
# Scores the detail-stage arms of run2.sh with intervals and per-clip scores (2 and 4 steps: at 1 step every arm
# is the shared semantic expert alone), next to the shipped LCM student and the teacher at 4 and 50 steps.
set -e
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
O=outputs/gan-arms
models=()
for arm in "$@"; do models+=(--model $O/$arm); done
.venv/bin/videocm eval "${models[@]}" --model models/lcm-flow --model models/teacher-flow@4,50 \
  --steps 2,4 --n 240 --teacher-model models/teacher-flow --teacher-steps 50 \
  --json $O/eval.json --clip-scores $O/clip-scores.npz > $O/eval.txt 2>&1
