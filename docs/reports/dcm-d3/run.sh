#!/usr/bin/env bash
# Issue 37, items 4 and 5, on the flow teacher: does DCM's discriminator do anything (claim D3), and does the detail
# stage with DCM's own settings beat the shipped one. Every arm trains the detail stage alone on the shipped
# semantic expert (--semantic-from models/dcm-flow, split at the top 30% of the grid, where it was trained), all
# 1200 steps of its schedule at batch 16, the same captions and data; seed 0 unless the arm says so.
#   frozen       the MovingDigits recipe's detail stage with the heads frozen at their start (--disc-lr 0)
#   nogan        the same with the GAN term off (--gan-weight 0; feature matching kept): against frozen, a tie
#                says the adversarial term is a random push
#   token        DCM's per-token heads, the GAN's "real" the consistency target (DCM's)
#   token-data   DCM's per-token heads, the clips' latents as "real" (--gan-real data)
#   dcm, dcm-s1  DCM's detail stage as its authors set it (--recipe none: token heads, hinge generator loss,
#                feature matching x1 through the output layer, discriminator AdamW lr 1e-5 / decay 1e-3 / clip 1
#                stepping after the generator, online target, detail lr 5e-6), seeds 0 and 1
#   dcm-lr, dcm-lr-s1  the same at the MovingDigits recipe's rate and target (lr 1e-4, EMA 0.95), seeds 0 and 1
# Then the students at 1, 2 and 4 steps on 240 captions beside the shipped dcm-flow and lcm-flow (paired
# intervals). Run alone on the machine (about 22 minutes an arm); a killed arm resumes when this runs again.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/dcm-d3
R=docs/reports/dcm-d3
mkdir -p $O
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
common="--method dcm --teacher models/teacher-flow --semantic-from models/dcm-flow --split share
  --semantic-share 0.3 --batch-size 16 --detail-steps 1200 --detail-minutes 0 --prompt-cache $O/captions.safetensors
  --checkpoint-every 100 --keep-checkpoints 2 --sample-every 300 --sample-clips 96 --sample-steps 4
  --on-collapse warn"
ARMS=${ARMS:-frozen nogan token token-data dcm dcm-s1 dcm-lr dcm-lr-s1}
for arm in $ARMS; do
  case $arm in
    frozen) flags="--recipe moving-digits --disc-lr 0" ;;
    nogan) flags="--recipe moving-digits --gan-weight 0" ;;
    token) flags="--recipe moving-digits --disc-head token" ;;
    token-data) flags="--recipe moving-digits --disc-head token --gan-real data" ;;
    dcm) flags="--recipe none" ;;
    dcm-s1) flags="--recipe none --seed 1" ;;
    dcm-lr) flags="--recipe none --detail-lr 1e-4 --target ema --target-decay 0.95" ;;
    dcm-lr-s1) flags="--recipe none --detail-lr 1e-4 --target ema --target-decay 0.95 --seed 1" ;;
    *) echo "unknown arm $arm"; exit 2 ;;
  esac
  [ -f $O/$arm/videocm.json ] || $V distill $common --out $O/$arm $flags --resume $(started $O/$arm) \
    >> $O/$arm.log 2>&1
done
[ "${EVAL:-true}" = true ] || exit 0
models=""
for arm in $ARMS; do models="$models --model $O/$arm@1,2,4"; done
$V eval $models --model models/dcm-flow@1,2,4 --model models/lcm-flow@1,2,4 --steps 1,2,4 --n 240 \
  --teacher-model models/teacher-flow --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
