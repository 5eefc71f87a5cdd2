#!/usr/bin/env bash
# The temporal coherence study (claim D6): the flow semantic expert trained with and without DCM's temporal
# coherence loss and at three frame strides, every arm step-matched to the shipped semantic stage (1153 steps of
# models/dcm-flow), the same seed, data and schedule; then each semantic expert scored alone (it serves the whole
# trajectory: --detail-steps 0, as in docs/reports/dcm-ablation) at 1, 2 and 4 steps on 240 captions. Run alone on
# the machine (about 10 min an arm with both cores, then the evaluation). ARMS overrides the list.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/dcm-temporal
R=docs/reports/dcm-temporal
mkdir -p $O
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
common="--method dcm --teacher models/teacher-flow --batch-size 16 --prompt-cache $O/captions.safetensors
  --checkpoint-every 100 --sample-every 0 --semantic-minutes 0 --detail-steps 0 --semantic-steps 2000
  --semantic-stop-step 1153 --resume ${RESUME:-false}"
for arm in ${ARMS:-w0 w1-s3 w1-s1 w1-s5}; do
  case $arm in
    w0) flags="--temporal-weight 0" ;;
    w1-s1) flags="--temporal-weight 1 --temporal-stride 1" ;;
    w1-s3) flags="--temporal-weight 1 --temporal-stride 3" ;;
    w1-s5) flags="--temporal-weight 1 --temporal-stride 5" ;;
  esac
  [ -f $O/$arm/videocm.json ] || $V distill $common --out $O/$arm $flags > $O/$arm.log 2>&1
done
models=""
for arm in ${ARMS:-w0 w1-s3 w1-s1 w1-s5}; do models="$models --model $O/$arm@1,2,4"; done
$V eval $models --steps 1,2,4 --n 240 --json $R/eval.json --clip-scores $R/clip-scores.npz --report $R/report
