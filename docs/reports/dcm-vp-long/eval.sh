#!/usr/bin/env bash
# Evaluation of the VP DCM full-budget run (run.sh here); same captions, noise and rows as lcm-vp-long.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
R=docs/reports/dcm-vp-long
$V eval --model outputs/vp-dcm/run --model models/lcm-vp@1,2,4 --model models/teacher-vp@4,50 --steps 1,2,4 \
  --n 240 --teacher-model models/teacher-vp --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report
$V curves --run "DCM semantic stage (semantic expert alone)=outputs/vp-dcm/run/stages/expert-0-semantic" \
  --run "DCM detail stage (both experts)=outputs/vp-dcm/run/stages/expert-1-detail" \
  --run "LCM long run=outputs/vp-lcm/run" \
  --reference "teacher, 4 steps=$R/eval.json#teacher-vp@4" --reference "teacher, 50 steps=$R/eval.json#teacher-vp@50" \
  --out $R/learning-curve.png
