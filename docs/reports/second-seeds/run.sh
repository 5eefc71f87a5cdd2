#!/usr/bin/env bash
# Second training seeds for the headline flow rows (claims V3, D2, D4): lcm-flow with --seed 1, the same command
# and all 2800 steps of models/lcm-flow; the flow DCM semantic stage with --seed 1, step-matched (1153 steps) to the
# shipped one, and its detail stage as the shipped one (GAN off and --gan-real data arms exist for seed 1 in
# outputs/gan-arms). Then both scored beside the seed-0 rows on the same 240 captions. Run alone on the machine.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/second-seeds
R=docs/reports/second-seeds
mkdir -p $O
started() { [ -f "$1/config.yaml" ] && echo true || echo false; }  # a killed run is continued
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
[ -f $O/lcm-flow-s1/videocm.json ] || $V distill --method lcm --teacher models/teacher-flow --out $O/lcm-flow-s1 \
  --seed 1 --steps 2800 --batch-size 16 --sample-every 700 --checkpoint-every 200 --warmup-steps 50 --lr 1e-4 \
  --prompt-cache $O/captions.safetensors --resume $(started $O/lcm-flow-s1) >> $O/lcm-flow-s1.log 2>&1
[ -f $O/dcm-flow-s1/videocm.json ] || $V distill --method dcm --teacher models/teacher-flow --out $O/dcm-flow-s1 \
  --seed 1 --batch-size 16 --semantic-stop-step 1153 --semantic-minutes 0 --detail-minutes 0 \
  --checkpoint-every 100 --sample-every 0 --prompt-cache $O/captions.safetensors --resume $(started $O/dcm-flow-s1) \
  >> $O/dcm-flow-s1.log 2>&1
$V eval --model models/lcm-flow@1,2,4 --model $O/lcm-flow-s1@1,2,4 --model models/dcm-flow@1,2,4 \
  --model $O/dcm-flow-s1@1,2,4 --model models/teacher-flow@4,50 --steps 1,2,4 --n 240 \
  --teacher-model models/teacher-flow --teacher-steps 50 --json $R/eval.json --clip-scores $R/clip-scores.npz \
  --report $R/report --overwrite
# paired comparisons on the same captions and noise (each row against another; see the README)
N=$R/clip-scores.npz
compare() { $V compare --first "$N#$1" --second "$N#$2" --json "$R/compare-$3.json" --overwrite; }
compare lcm-flow-s1@4 teacher-flow@4 lcm-s1-vs-teacher4
compare lcm-flow-s1@4 teacher-flow@50 lcm-s1-vs-teacher50
compare lcm-flow-s1@4 lcm-flow@4 lcm-s1-vs-lcm-s0
compare dcm-flow-s1@4 lcm-flow-s1@4 dcm-s1-vs-lcm-s1
compare dcm-flow-s1@4 dcm-flow@4 dcm-s1-vs-dcm-s0
compare dcm-flow@4 lcm-flow@4 dcm-s0-vs-lcm-s0
