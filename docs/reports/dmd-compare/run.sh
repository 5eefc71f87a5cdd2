#!/usr/bin/env bash
# Issue 22's comparison on the flow teacher: every arm gets the same wall-time budget of training on this machine
# (BUDGET minutes, default 5; data preparation and the prompt arms' teacher generation are outside it and timed in
# the logs), batch 16, each method's default learning rate, a schedule long enough (20000 steps) that the time cap
# stops every run, no periodic samples (they would eat the budget). The arms:
#   dmd          --method dmd (DMD2, prompts only, 4-time generator list, 5 fake-score updates per step)
#   lcm          --method lcm on MovingDigits clips
#   lcm-dmd      the same + --dmd-weight 0.5 (the plug-in term, untuned weight)
#   dcm          --method dcm on clips, semantic stage 40% and detail stage 60% of the budget
#   dcm-dmd      the same + --dmd-weight 0.5 on the detail stage
#   lcm-prompts  lcm from the 240 captions alone (teacher clips: 4 per prompt, 50 guided steps)
#   dcm-prompts  dcm from the same teacher clips (one generated cache shared with lcm-prompts)
# Usage: run.sh SEED. Run alone on the machine. An arm that did not finish is started again from scratch, so that
# no arm gets more than its budget; ARMS overrides the list. eval.sh scores the arms.
set -e
cd "$(dirname "$0")/../../.."
source docs/reports/arms.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SEED=${1:?usage: run.sh SEED}
BUDGET=${BUDGET:-5}
V=.venv/bin/videocm
O=outputs/dmd-compare/s$SEED
mkdir -p $O
CAPTIONS=outputs/dmd-compare/captions.safetensors
PROMPTS=outputs/dmd-compare/captions.txt
[ -f $CAPTIONS ] || $V encode-captions --out $CAPTIONS
[ -f $PROMPTS ] || .venv/bin/python -c "
from videocm.data.moving_digits import all_captions, caption_for
print('\n'.join(caption_for(*c) for c in all_captions()))" > $PROMPTS
semantic=$(.venv/bin/python -c "print($BUDGET * 0.4)")
detail=$(.venv/bin/python -c "print($BUDGET * 0.6)")
common="--teacher models/teacher-flow --batch-size 16 --prompt-cache $CAPTIONS --checkpoint-every 100
  --sample-every 0 --seed $SEED --on-collapse warn --overwrite true"
lcm="--method lcm --steps 20000 --max-minutes $BUDGET"
dcm="--method dcm --semantic-steps 20000 --detail-steps 20000 --semantic-minutes $semantic
  --detail-minutes $detail"
prompts="--data prompts:$PROMPTS --cache $O/prompt-cache --prompt-samples 4 --prompt-teacher-steps 50"
for arm in ${ARMS:-dmd lcm lcm-dmd dcm dcm-dmd lcm-prompts dcm-prompts}; do
  case $arm in
    dmd) flags="--method dmd --steps 20000 --max-minutes $BUDGET" ;;
    lcm) flags="$lcm" ;;
    lcm-dmd) flags="$lcm --dmd-weight 0.5" ;;
    dcm) flags="$dcm" ;;
    dcm-dmd) flags="$dcm --dmd-weight 0.5" ;;
    lcm-prompts) flags="$lcm $prompts" ;;
    dcm-prompts) flags="$dcm $prompts" ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  distill_arm $O $arm $common $flags
done
