#!/usr/bin/env bash
# Issue 37 item 3: the best VP DCM configuration of the step-matched arms (docs/reports/dcm-vp-arms/) at its whole
# schedule. The `full` arm won there (a full detail expert on the teacher network as the frozen base, the detail
# stage's other settings the arms' common ones, GAN and feature matching on): at 600 of its 1600 updates it ties
# lcm-vp on fidelity and beats it on Fréchet and coherence, and it is shipped as models/dcm-vp. This run trains the
# same configuration for all 1600 updates (same seed, so its first 600 are the arm's), to see whether the rest of
# the schedule helps. Run alone on the machine; resumable (run it again). EVAL=false skips the evaluations: 240
# test captions at 1, 2 and 4 steps (seed 0, the captions and noise of docs/reports/dcm-vp-long and dcm-vp-arms, so
# `videocm compare` pairs it with lcm-vp and the 50-step teacher there), and the quality bar's second set: 120
# captions with seed 1, compared with lcm-vp and the 50-step teacher scored on them in docs/reports/dcm-vp-arms/.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
A=outputs/dcm-vp-arms
O=outputs/dcm-vp-final/dcm-vp
R=docs/reports/dcm-vp-final
mkdir -p "$(dirname $O)"
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
[ -f $O/videocm.json ] || /usr/bin/time -v $V distill --method dcm --teacher models/teacher-vp --out $O \
  --semantic-from models/teacher-vp --detail-expert full --batch-size 16 --prompt-cache $A/captions.safetensors \
  --skip 5 --detail-lr 2e-4 --warmup-steps 100 --detail-steps 1600 --detail-minutes 0 \
  --target ema --target-decay 0.95 --semantic-share 0.3 --gan-real target --recipe moving-digits \
  --checkpoint-every 100 --keep-checkpoints 2 --sample-every 400 --sample-clips 96 --sample-steps 4 \
  --on-collapse warn --resume $(started $O) >> $O.log 2>&1
[ "${EVAL:-true}" = true ] || exit 0
$V eval --model $O@1,2,4 --steps 1,2,4 --n 240 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
for pair in "4 lcm-vp@4" "4 teacher-vp@50" "2 lcm-vp@2" "1 lcm-vp@1"; do
  set -- $pair
  $V compare --first $R/clip-scores.npz#dcm-vp@$1 --second docs/reports/dcm-vp-long/clip-scores.npz#$2 \
    --json $R/compare-$1-$2.json --overwrite
done
# the second set: only this student is scored; lcm-vp@4 and teacher-vp@50 on the same 120 captions and seed are the
# rows of docs/reports/dcm-vp-arms/clip-scores-seed1.npz (scored there with the same --n and --seed)
$V eval --model $O@4 --steps 4 --n 120 --seed 1 --json $R/eval-seed1.json --clip-scores $R/clip-scores-seed1.npz \
  --overwrite
for pair in "lcm-vp@4" "teacher-vp@50"; do
  $V compare --first $R/clip-scores-seed1.npz#dcm-vp@4 --second docs/reports/dcm-vp-arms/clip-scores-seed1.npz#$pair \
    --json $R/compare-seed1-$pair.json --overwrite
done
