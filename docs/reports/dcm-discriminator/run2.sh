#!/usr/bin/env bash
# Detail-stage arms on one semantic expert (the shipped dcm-flow's), step-matched (1200 steps, batch 16), two seeds:
# DCM's formulation (real = target), real = data, data + a faster discriminator, data + R1 penalty, and GAN off.
# Run alone on the machine (about 22 minutes an arm on 2 cores); a finished arm is skipped, an interrupted one resumed.
set -e
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
O=outputs/gan-arms
mkdir -p $O
[ -f $O/captions.safetensors ] || $V encode-captions --out $O/captions.safetensors
arm() {  # name seed flags...
  local name=$1 seed=$2; shift 2
  [ -f $O/$name-s$seed/videocm.json ] && return 0
  local resume=false
  [ -d $O/$name-s$seed/stages ] && resume=true  # an interrupted arm continues from its newest checkpoint
  /usr/bin/time -v $V distill --resume $resume --method dcm --teacher models/teacher-flow --semantic-from models/dcm-flow \
    --out $O/$name-s$seed --batch-size 16 --prompt-cache $O/captions.safetensors --detail-minutes 0 \
    --checkpoint-every 200 --sample-every 0 --seed $seed "$@" > $O/$name-s$seed.log 2>&1
}
flags() {  # the arm's own flags
  case $1 in
    off) echo --gan-weight 0 --feature-matching-weight 0 ;;
    data) echo --gan-real data ;;
    target) echo --gan-real target ;;
    data-r1) echo --gan-real data --disc-gradient-penalty 1.0 ;;
    data-fastdisc) echo --gan-real data --disc-lr 1e-3 ;;
  esac
}
# Priority order: the GAN's contribution on two seeds first, then the discriminator variants.
for run in ${RUNS:-off:0 data:0 target:0 off:1 data:1 data-fastdisc:0 data-r1:0 target:1 data-fastdisc:1 data-r1:1}; do
  arm ${run%%:*} ${run##*:} $(flags ${run%%:*})
done
