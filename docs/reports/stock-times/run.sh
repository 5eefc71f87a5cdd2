#!/usr/bin/env bash
# Issue 38 item 4: can a flow LCM student export with diffusers' stock FlowMatchLCMScheduler (no videocm needed)?
# That scheduler spaces N steps from sigma 1 to 0.001 (its last step lands where a consistency step changes almost
# nothing); the student's own times end at its grid's 1/N. The shipped flow students at their own times and at
# the stock times (`DIR+stock-times`, as `videocm sample --times stock` and the stock export sample), 1, 2, 4 and
# 8 steps, 240 test captions, the same noise: paired 95% intervals decide. Run alone on the machine (~5 min).
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
R=docs/reports/stock-times
.venv/bin/videocm eval --model models/lcm-flow@1,2,4,8 --model models/lcm-flow+stock-times@1,2,4,8 --n 240 \
  --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report --overwrite
