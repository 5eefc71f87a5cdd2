#!/usr/bin/env bash
# Step-matched detail-stage ablation: DCM's "real" (consistency target) against the clips' latents, same semantic expert.
set -e
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
$V encode-captions --out outputs/gan-real/captions.safetensors
for real in data target; do
  /usr/bin/time -v $V distill --method dcm --teacher models/teacher-flow --semantic-from models/dcm-flow \
    --out outputs/gan-real/$real --batch-size 16 --prompt-cache outputs/gan-real/captions.safetensors \
    --detail-minutes 0 --checkpoint-every 200 --sample-every 0 --gan-real $real > outputs/gan-real/$real.log 2>&1
done
$V eval --model outputs/gan-real/data --model outputs/gan-real/target --model models/dcm-flow --model models/lcm-flow \
  --steps 1,2,4 --n 240 --json outputs/gan-real/eval.json > outputs/gan-real/eval.txt 2>&1
echo finished > outputs/gan-real/done
