#!/usr/bin/env bash
# Pairs the DCM-settings arms (run.sh's dcm, dcm-s1, scored into eval-dcm.json / clip-scores-dcm.npz by
#   videocm eval --model outputs/dcm-d3/dcm@1,2,4 --model outputs/dcm-d3/dcm-s1@1,2,4 --steps 1,2,4 --n 240
#     --json eval-dcm.json --clip-scores clip-scores-dcm.npz --report report-dcm
# on the same 240 captions and noise as eval.json) with the shipped dcm-flow, lcm-flow and the GAN-off arm at 2 and 4
# steps (1 step is the shared semantic expert alone): compare-dcm/FIRST-SECOND@STEPS.json.
set -e
cd "$(dirname "$0")"
V=../../../.venv/bin/videocm
mkdir -p compare-dcm
for arm in ${ARMS:-dcm dcm-s1}; do
  for steps in 2 4; do
    for other in dcm-flow lcm-flow nogan; do
      $V compare --first clip-scores-dcm.npz#$arm@$steps --second clip-scores.npz#$other@$steps \
        --json compare-dcm/$arm-$other@$steps.json --overwrite > /dev/null
    done
  done
done
