#!/usr/bin/env bash
# Why the VP DCM semantic stage degrades (claim D1; docs/reports/dcm-vp-long/): its semantic expert trained as the
# long run trained it (DCM's formulation: temporal coherence weight 1, stride 3; skip 5, lr 2e-4, warm-up 100)
# against one change at a time, every arm step-matched to the long run's 1001 semantic steps of a 2000-step
# schedule, the same seed, data and batch 16:
#   dcm    the long run's semantic stage again (the arm the others are measured against)
#   w0     --temporal-weight 0 (the coherence loss off)
#   skip1  --skip 1 at --semantic-lr 1e-4 (the flow students' skip and rate)
# then each semantic expert scored alone (--detail-steps 0) at 1, 2 and 4 steps on 240 captions beside the shipped
# lcm-vp. Run alone on the machine: about 65 min an arm with both cores. A killed arm is continued by running this
# again (each arm resumes from its newest checkpoint). ARMS overrides the list. The collapse guard only warns: the
# degradation is what is measured.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/dcm-vp-causes
R=docs/reports/dcm-vp-causes
mkdir -p $O
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
common="--method dcm --teacher models/teacher-vp --batch-size 16 --prompt-cache $O/captions.safetensors
  --checkpoint-every 100 --sample-every 250 --sample-clips 96 --sample-steps 4 --semantic-minutes 0
  --detail-steps 0 --semantic-steps 2000 --semantic-stop-step 1001 --warmup-steps 100 --on-collapse warn"
for arm in ${ARMS:-dcm w0 skip1}; do
  case $arm in
    dcm) flags="--skip 5 --semantic-lr 2e-4" ;;
    w0) flags="--skip 5 --semantic-lr 2e-4 --temporal-weight 0" ;;
    skip1) flags="--skip 1 --semantic-lr 1e-4" ;;
  esac
  [ -f $O/$arm/videocm.json ] || $V distill $common --out $O/$arm $flags --resume $(started $O/$arm) \
    >> $O/$arm.log 2>&1
done
models=""
for arm in ${ARMS:-dcm w0 skip1}; do models="$models --model $O/$arm@1,2,4"; done
$V eval $models --model models/lcm-vp@1,2,4 --model models/teacher-vp@4,50 --steps 1,2,4 --n 240 \
  --teacher-model models/teacher-vp --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
