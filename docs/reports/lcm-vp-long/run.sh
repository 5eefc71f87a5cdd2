#!/usr/bin/env bash
# VP LCM long run (issue 17, item 4) and its evaluation. Run alone on the machine.
# Training: outputs/vp-lcm/run.sh (schedule of 4000 steps, stopped by --max-minutes 110, resumable with --resume).
set -e
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
$V eval --model outputs/vp-lcm/run --model models/lcm-vp@4 --model models/teacher-vp@4,50 --steps 1,2,4,8 --n 240 \
  --teacher-model models/teacher-vp --teacher-steps 50 --json docs/reports/lcm-vp-long/eval.json \
  --clip-scores docs/reports/lcm-vp-long/clip-scores.npz --report docs/reports/lcm-vp-long/report
$V curves --run "long run (skip 5, lr 2e-4)=outputs/vp-lcm/run" --run "shipped before (550 updates)=models/lcm-vp" \
  --reference "teacher, 4 steps=docs/reports/lcm-vp-long/eval.json#teacher-vp@4" \
  --reference "teacher, 50 steps=docs/reports/lcm-vp-long/eval.json#teacher-vp@50" \
  --out docs/reports/lcm-vp-long/learning-curve.png
