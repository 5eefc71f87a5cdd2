#!/usr/bin/env bash
# Issue 37 item 3: the best VP DCM configuration of the step-matched arms (docs/reports/dcm-vp-arms/) at its full
# budget, the candidate for models/dcm-vp. The semantic expert is the `low` arm's (lr 2e-5, 600 updates of a
# 2000-step schedule, temporal coherence loss weight 1, the split at the top 30% of the grid); the detail expert a
# LoRA with DCM's GAN and feature matching off (the `nogan` arm's settings), trained for its whole 1600-step
# schedule. Run alone on the machine; resumable (run it again). EVAL=false skips the evaluations: 240 test
# captions at 1, 2 and 4 steps (seed 0, the captions and noise of docs/reports/dcm-vp-long and dcm-vp-arms, so
# `videocm compare` pairs it with lcm-vp and the 50-step teacher there), and the quality bar's second set: 120
# captions with seed 1 beside lcm-vp and the 50-step teacher.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
A=outputs/dcm-vp-arms
O=outputs/dcm-vp-final/dcm-vp
R=docs/reports/dcm-vp-final
mkdir -p "$(dirname $O)"
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
[ -f $A/low/stages/expert-0-semantic/stage_done.json ] || {
  echo "run ARMS=low docs/reports/dcm-vp-arms/run.sh first (its semantic stage is this student's semantic expert)"; exit 2; }
[ -f $O/videocm.json ] || /usr/bin/time -v $V distill --method dcm --teacher models/teacher-vp --out $O \
  --semantic-from $A/low --batch-size 16 --prompt-cache $A/captions.safetensors \
  --skip 5 --detail-lr 2e-4 --warmup-steps 100 --detail-steps 1600 --detail-minutes 0 \
  --target ema --target-decay 0.95 --semantic-share 0.3 --gan-weight 0 --feature-matching-weight 0 \
  --recipe moving-digits --checkpoint-every 100 --keep-checkpoints 2 --sample-every 400 --sample-clips 96 \
  --sample-steps 4 --on-collapse warn --resume $(started $O) >> $O.log 2>&1
[ "${EVAL:-true}" = true ] || exit 0
$V eval --model $O@1,2,4 --steps 1,2,4 --n 240 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
for pair in "lcm-vp@4" "teacher-vp@50"; do
  $V compare --first $R/clip-scores.npz#dcm-vp@4 --second docs/reports/dcm-vp-long/clip-scores.npz#$pair \
    --json $R/compare-$pair.json --overwrite
done
$V eval --model $O@4 --model models/lcm-vp@4 --model models/teacher-vp@50 --steps 4 --n 120 --seed 1 \
  --json $R/eval-seed1.json --clip-scores $R/clip-scores-seed1.npz --overwrite
