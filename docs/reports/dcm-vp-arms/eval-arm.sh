#!/usr/bin/env bash
# Scores one finished arm (eval-arm.sh ARM) on both caption sets (240 captions at 1, 2 and 4 steps; the 120 other
# captions of seed 1 at 4 steps) and pairs it with lcm-vp, the nogan, sigma and low arms and the 50-step teacher
# (compare-ARM/); for sigma-w0, also sigma-t against it. Run alone on the machine (about 2 minutes).
cd "$(dirname "$0")/../../.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
V=.venv/bin/videocm; A=docs/reports/dcm-vp-arms; L=docs/reports/dcm-vp-long/clip-scores.npz; arm=$1
$V eval --model outputs/dcm-vp-arms/$arm@1,2,4 --steps 1,2,4 --n 240 --json $A/eval-$arm.json \
  --clip-scores $A/clip-scores-$arm.npz --report $A/report-$arm --overwrite > outputs/eval-$arm.log 2>&1 || exit 1
$V eval --model outputs/dcm-vp-arms/$arm@4 --steps 4 --n 120 --seed 1 --json $A/eval-$arm-seed1.json \
  --clip-scores $A/clip-scores-$arm-seed1.npz --overwrite > outputs/eval-$arm-seed1.log 2>&1 || exit 1
mkdir -p $A/compare-$arm
run() { $V compare --first $1 --second $2 --json $A/compare-$arm/$3.json --overwrite > /dev/null; }
for k in 1 2 4; do
  run $A/clip-scores-$arm.npz#$arm@$k $L#lcm-vp@$k lcm-vp@$k
  run $A/clip-scores-$arm.npz#$arm@$k $A/clip-scores.npz#nogan@$k nogan@$k
  run $A/clip-scores-$arm.npz#$arm@$k $A/clip-scores.npz#sigma@$k sigma@$k
  run $A/clip-scores-$arm.npz#$arm@$k $A/clip-scores-2.npz#low@$k low@$k
done
run $A/clip-scores-$arm.npz#$arm@4 $L#teacher-vp@50 teacher-vp@50
run $A/clip-scores-$arm-seed1.npz#$arm@4 $A/clip-scores-seed1.npz#lcm-vp@4 seed1-lcm-vp@4
run $A/clip-scores-$arm-seed1.npz#$arm@4 $A/clip-scores-seed1.npz#teacher-vp@50 seed1-teacher-vp@50
[ -f $A/clip-scores-sigma-t.npz ] && [ $arm = sigma-w0 ] && for k in 1 2 4; do
  run $A/clip-scores-sigma-t.npz#sigma-t@$k $A/clip-scores-sigma-w0.npz#sigma-w0@$k sigma-t-vs-w0@$k; done
echo done
