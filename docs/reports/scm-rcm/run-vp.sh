#!/usr/bin/env bash
# Issue 39's comparison on the VP teacher (models/teacher-vp, a UNet3D epsilon teacher), after the flow one (run.sh):
# every method trained from the same teacher on this machine, each with the MovingDigits recipe's values, batch 16,
# a 20000-step schedule that the time cap stops, no periodic samples in the budget arms. The arms:
#   lcm          --method lcm, BUDGET minutes (default 5)
#   dcm          --method dcm, semantic stage 40% and detail stage 60% of the budget
#   dmd          --method dmd (prompts only), the same budget
#   scm, rcm     --method scm / rcm, the same budget
#   scm-updates  --method scm for as many updates as that seed's lcm arm made in its budget
#   rcm-updates  --method rcm for the same number (both check 48 clips at 2 steps every 50 updates: learning curves)
#   scm-lr-1e-4  scm-updates at rCM's rate, 1e-4 (the recipe's sCM rate is 1e-5): rcm-updates against it is the
#                regulariser alone
# A VP update costs 1.3-6.2 s here (the flow teacher's 0.3-1.5 s), so a 5-minute arm makes 50-225 updates. Two
# warm-ups are shortened for every arm alike so that they do not fill such a run: the learning-rate warm-up is 10
# updates (the methods' 50 and 100), and sCM/rCM's tangent warm-up is 10 (the recipe's 200, a tenth of a 2000-step
# run; rCM's regulariser starts after it, so at 200 a 5-minute rCM arm would never reach it).
# Usage: run-vp.sh SEED. Run alone on the machine. A budget arm that did not finish starts again from scratch; an
# updates arm resumes. ARMS overrides the list. eval-vp.sh scores the arms.
set -e
cd "$(dirname "$0")/../../.."
source docs/reports/arms.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SEED=${1:?usage: run-vp.sh SEED}
BUDGET=${BUDGET:-5}
V=.venv/bin/videocm
O=outputs/scm-rcm-vp/s$SEED
mkdir -p $O
CAPTIONS=outputs/scm-rcm-vp/captions.safetensors
[ -f $CAPTIONS ] || $V encode-captions --out $CAPTIONS
semantic=$(.venv/bin/python -c "print($BUDGET * 0.4)")
detail=$(.venv/bin/python -c "print($BUDGET * 0.6)")
common="--teacher models/teacher-vp --batch-size 16 --prompt-cache $CAPTIONS --checkpoint-every 50
  --seed $SEED --on-collapse warn --warmup-steps 10"
budget="--steps 20000 --max-minutes $BUDGET --overwrite true --sample-every 0"
curve="--sample-every 50 --sample-clips 48 --sample-steps 2"
updates() {  # the lcm arm's update count in its budget
  .venv/bin/python -c "import json; print(json.load(open('$O/lcm/train_summary.json'))['steps_done'])"
}
for arm in ${ARMS:-lcm dcm dmd scm rcm scm-updates rcm-updates}; do
  case $arm in
    lcm) flags="--method lcm $budget" ;;
    dcm) flags="--method dcm --semantic-steps 20000 --detail-steps 20000 --semantic-minutes $semantic
           --detail-minutes $detail --overwrite true --sample-every 0" ;;
    dmd) flags="--method dmd $budget" ;;
    scm) flags="--method scm --tangent-warmup 10 $budget" ;;
    rcm) flags="--method rcm --tangent-warmup 10 $budget" ;;
    scm-updates) flags="--method scm --tangent-warmup 10 --steps $(updates) --resume $(started $O/$arm) $curve" ;;
    rcm-updates) flags="--method rcm --tangent-warmup 10 --steps $(updates) --resume $(started $O/$arm) $curve" ;;
    scm-lr-1e-4) flags="--method scm --lr 1e-4 --tangent-warmup 10 --steps $(updates) --resume $(started $O/$arm)
                   $curve" ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  distill_arm $O $arm $common $flags
done
