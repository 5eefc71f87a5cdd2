#!/usr/bin/env bash
# Issue 39's comparison on the flow teacher, beside issue 22's arms (docs/reports/dmd-compare: LCM, DCM, DMD and
# their variants, trained 5 minutes each on this machine with seeds 0 and 1, scored on the same 240 captions and
# noise, so `videocm compare` pairs every row). The arms, each with the MovingDigits recipe's values:
#   scm          --method scm, the same wall-time budget (BUDGET minutes, default 5) and batch 16
#   rcm          --method rcm, the same budget (the term starts after the tangent warm-up)
#   scm-updates  --method scm for as many updates as that seed's LCM arm made in its budget (873 / 855)
#   rcm-updates  --method rcm for the same number of updates
#   scm-lr, rcm-lr  the updates arms at lr 1e-5 (rCM's fake score at 2e-6, the recipe's ratio): lr.sh's arms
# The updates arms check 48 clips at 2 steps every 200 updates (their learning curves; outside any budget). Every arm
# but the -lr ones ran at lr 1e-4 (the recipe's value then; pinned here, since lr.sh moved the recipe's sCM rate to
# 1e-5; a flag given twice takes its last value).
# Usage: run.sh SEED. Run alone on the machine. A budget arm that did not finish starts again from scratch (no arm
# gets more than its budget); an updates arm resumes. ARMS overrides the list. eval.sh scores the arms.
set -e
cd "$(dirname "$0")/../../.."
source docs/reports/arms.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SEED=${1:?usage: run.sh SEED}
BUDGET=${BUDGET:-5}
V=.venv/bin/videocm
O=outputs/scm-rcm/s$SEED
mkdir -p $O
CAPTIONS=outputs/scm-rcm/captions.safetensors
[ -f $CAPTIONS ] || $V encode-captions --out $CAPTIONS
UPDATES=$([ "$SEED" = 0 ] && echo 873 || echo 855)  # docs/reports/dmd-compare/README.md: the lcm arm's steps
common="--teacher models/teacher-flow --batch-size 16 --prompt-cache $CAPTIONS --checkpoint-every 100
  --seed $SEED --on-collapse warn --lr 1e-4"
curve="--sample-every 200 --sample-clips 48 --sample-steps 2"  # the updates arms' learning curves (samples/scores.jsonl)
for arm in ${ARMS:-scm rcm scm-updates rcm-updates}; do
  case $arm in
    scm) flags="--method scm --steps 20000 --max-minutes $BUDGET --overwrite true --sample-every 0" ;;
    rcm) flags="--method rcm --steps 20000 --max-minutes $BUDGET --overwrite true --sample-every 0" ;;
    scm-updates) flags="--method scm --steps $UPDATES --resume $(started $O/$arm) $curve" ;;
    rcm-updates) flags="--method rcm --steps $UPDATES --resume $(started $O/$arm) $curve" ;;
    scm-lr) flags="--method scm --lr 1e-5 --steps $UPDATES --resume $(started $O/$arm) $curve" ;;
    rcm-lr) flags="--method rcm --lr 1e-5 --fake-lr 2e-6 --steps $UPDATES --resume $(started $O/$arm) $curve" ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  distill_arm $O $arm $common $flags
done
