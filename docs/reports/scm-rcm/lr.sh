#!/usr/bin/env bash
# The learning-rate departure, measured: the MovingDigits recipe gave sCM and rCM lr 1e-4 (the other MovingDigits
# students' rate; rCM's own is 2e-6 for Wan 2.1 1.3B). Each arm here is an updates arm of run.sh (seed 0, 873
# updates, the same checks every 200) at a 10x lower rate, trained by `ARMS=ARM run.sh 0`:
#   scm-lr   --method scm --lr 1e-5
#   rcm-lr   --method rcm --lr 1e-5 --fake-lr 2e-6 (the recipe's ratio of fake-score to student rate)
# then each scored as eval.sh scores the arms (240 captions, 1, 2 and 4 steps, diversity 30 x 4) into eval-ARM.json
# and clip-scores-ARM.npz, and paired with the same method at 1e-4 and with issue 22's lcm and dmd (seed 0) and
# the 50-step teacher (compare-lr/). Usage: lr.sh (ARMS overrides the
# list: default scm-lr rcm-lr). Run alone on the machine, after run.sh 0 and eval.sh; an arm resumes where it
# stopped, and one already scored is not scored again.
set -e
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm
R=docs/reports/scm-rcm
L=outputs/scm-rcm/rows
for arm in ${ARMS:-scm-lr rcm-lr}; do
  case $arm in
    scm-lr|rcm-lr) ARMS=$arm $R/run.sh 0 ;;
    *) echo "unknown arm $arm" >&2; exit 2 ;;
  esac
  [ -f $R/clip-scores-$arm.npz ] && continue
  mkdir -p $L $R/compare-lr && ln -sfn ../s0/$arm $L/$arm-s0
  $V eval --model $L/$arm-s0@1,2,4 --steps 1,2,4 --n 240 --diversity 30 --json $R/eval-$arm.json \
    --clip-scores $R/clip-scores-$arm.npz --overwrite
  base=${arm%-lr}-updates
  T=docs/reports/dmd-compare/clip-scores.npz  # issue 22's lcm, dmd (seed 0) and teacher@50 rows
  run() { $V compare --first $R/clip-scores-$arm.npz#$arm-s0@$1 --second $2 --json $R/compare-lr/$arm-vs-$3.json \
    --overwrite > /dev/null; }
  for k in 1 2 4; do
    run $k $R/clip-scores.npz#$base-s0@$k $base@$k
    run $k $T#lcm-s0@$k lcm@$k
    run $k $T#dmd-s0@$k dmd@$k
    run $k $T#teacher-flow@50 teacher-flow@50-$k
  done
done
