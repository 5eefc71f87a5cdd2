#!/usr/bin/env bash
# VP DCM with the whole machine (issue 17 item 4): the settings the long VP LCM run found (skip 5, lr 2e-4,
# warm-up 100), the semantic stage capped at 70 minutes and the detail stage at 75; resumable (RESUME=true).
# Run alone on the machine; GAN_REAL (target or data) is set from the flow detail-stage arms.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/vp-dcm
mkdir -p $O
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
/usr/bin/time -v $V distill --method dcm --teacher models/teacher-vp --out $O/run --resume "${RESUME:-false}" \
  --batch-size 16 --skip 5 --semantic-lr 2e-4 --detail-lr 2e-4 --warmup-steps 100 \
  --semantic-steps 2000 --detail-steps 1600 --semantic-minutes 70 --detail-minutes 75 \
  --gan-real "${GAN_REAL:-target}" --checkpoint-every 100 --keep-checkpoints 2 \
  --sample-every 250 --sample-clips 96 --sample-steps 4 --prompt-cache $O/captions.safetensors "$@" \
  > $O/run.log 2>&1
