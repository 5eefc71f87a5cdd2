#!/usr/bin/env bash
# The first DMD2 student of the flow teacher (models/dmd-flow) at 1, 2 and 4 steps beside the 50-step teacher:
# 240 test captions, seed 0 (the captions and noise of docs/reports/lcm-flow), PSNR against the teacher's 50-step
# clips, and each row's diversity over 30 captions x 4 seeds. Run alone on the machine.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/dmd-flow
.venv/bin/videocm eval --model models/dmd-flow@1,2,4 --model models/teacher-flow@50 \
  --steps 1,2,4 --n 240 --teacher-model models/teacher-flow --teacher-steps 50 --diversity 30 \
  --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report --overwrite
