#!/usr/bin/env bash
# Issue 37, item 3: which part of VP DCM fails (claim D1), decided by step-matched arms of the detail stage.
# Every arm trains a detail expert with the same settings (the long VP run's: skip 5, lr 2e-4, warm-up 100,
# batch 16, EMA target 0.95, the split at the top 30% of the grid, hinge GAN with per-frame heads on the
# consistency target and feature matching x0.1), for 600 updates of a 1600-step schedule (--detail-stop-step), the
# same seed, data and captions; they differ in one thing each:
#   teacher   the frozen base is the teacher network itself (--semantic-from models/teacher-vp)
#   shipped   the frozen base is the shipped dcm-vp semantic expert (today's; --semantic-from models/dcm-vp)
#   nogan     as teacher, with the GAN and feature matching off
#   full      as teacher, a full detail expert (the whole network trained) instead of LoRA
#   full-s1   the same, training seed 1 (the deciding arm's second seed)
#   sigma     as teacher, the split at DCM's noise level (--split sigma: VP grid index 47, timestep 939)
#   low       the frozen base is a semantic expert trained here at a 10x lower rate than the long run's (2e-5 for
#             600 updates of a 2000-step schedule, temporal loss weight 1), then the same detail stage
#   sigma-t / sigma-w0   the noise-level split end to end: a semantic expert at 2e-5 (600 of 2000 updates) with the
#             temporal loss (weight 1) or without it (weight 0), then the detail stage with GAN and feature
#             matching off (the nogan arm's)
# Then each DCM student scored at 1, 2 and 4 steps on 240 captions beside the shipped lcm-vp (paired intervals).
# Run alone on the machine. A killed arm is continued by running this again (each arm resumes from its newest
# checkpoint). ARMS overrides the list; EVAL=false skips the evaluation; EVAL_ARMS (default: ARMS) the arms it scores,
# beside lcm-vp and the 50-step teacher (its row is the reference clips, so it costs nothing more).
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/dcm-vp-arms
R=docs/reports/dcm-vp-arms
mkdir -p $O
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
common="--method dcm --teacher models/teacher-vp --batch-size 16 --prompt-cache $O/captions.safetensors
  --checkpoint-every 100 --keep-checkpoints 2 --sample-every 200 --sample-clips 96 --sample-steps 4
  --skip 5 --detail-lr 2e-4 --warmup-steps 100 --detail-steps 1600 --detail-stop-step 600 --detail-minutes 0
  --target ema --target-decay 0.95 --semantic-share 0.3 --gan-real target --on-collapse warn --recipe moving-digits"
semantic="--semantic-lr 2e-5 --semantic-steps 2000 --semantic-stop-step 600 --semantic-minutes 0 --temporal-weight 1"
ARMS=${ARMS:-teacher shipped nogan}
for arm in $ARMS; do
  case $arm in
    teacher) flags="--semantic-from models/teacher-vp" ;;
    shipped) flags="--semantic-from models/dcm-vp" ;;
    nogan) flags="--semantic-from models/teacher-vp --gan-weight 0 --feature-matching-weight 0" ;;
    full) flags="--semantic-from models/teacher-vp --detail-expert full" ;;
    full-s1) flags="--semantic-from models/teacher-vp --detail-expert full --seed 1" ;;
    sigma) flags="--semantic-from models/teacher-vp --split sigma" ;;
    low) flags="$semantic" ;;
    sigma-t) flags="$semantic --split sigma --gan-weight 0 --feature-matching-weight 0" ;;
    sigma-w0) flags="$semantic --split sigma --temporal-weight 0 --gan-weight 0 --feature-matching-weight 0" ;;
    *) echo "unknown arm $arm"; exit 2 ;;
  esac
  [ -f $O/$arm/videocm.json ] || $V distill $common --out $O/$arm $flags --resume $(started $O/$arm) \
    >> $O/$arm.log 2>&1
done
[ "${EVAL:-true}" = true ] || exit 0
models=""
for arm in ${EVAL_ARMS:-$ARMS}; do models="$models --model $O/$arm@1,2,4"; done
$V eval $models --model models/lcm-vp@1,2,4 --model models/teacher-vp@50 --steps 1,2,4 --n 240 \
  --teacher-model models/teacher-vp --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
