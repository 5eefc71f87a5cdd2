# The DCM ablation on the flow teacher (docs/reports/dcm-ablation): every variant step-matched to the full run
# outputs/dcm/flow (made by `videocm distill --method dcm --teacher models/teacher-flow --out outputs/dcm/flow
# --batch-size 16 --prompt-cache .gpu/captions.safetensors --checkpoint-every 100 --sample-every 1000`).
# Two jobs at a time, one thread each (a 2-core machine). Usage: bash scripts/dcm_ablation.sh
set -e
full=outputs/dcm/flow
steps() { python3 -c "import json;print(json.load(open('$full/stages/$1/stage_done.json'))['steps_done'])"; }
semantic=$(steps expert-0-semantic)
detail=$(steps expert-1-detail)
echo "full run: semantic $semantic steps, detail $detail steps"
common="--method dcm --teacher models/teacher-flow --batch-size 16 --prompt-cache .gpu/captions.safetensors
  --checkpoint-every 100 --sample-every 0 --semantic-minutes 0 --detail-minutes 0"
run() { OMP_NUM_THREADS=1 videocm distill $common "$@"; }
# semantic expert alone, with and without the temporal coherence loss (the low segment served by the same network)
videocm distill --method dcm --teacher models/teacher-flow --out outputs/dcm/abl-sem-tc --semantic-from $full \
  --detail-steps 0
( run --out outputs/dcm/abl-sem-notc --temporal-weight 0 --detail-steps 0 --semantic-stop-step $semantic
  run --out outputs/dcm/abl-k3 --phases 3 --semantic-from $full --detail-stop-step $(( detail / 2 )) ) \
  > outputs/dcm/ablation-a.log 2>&1 &
# + detail expert (LoRA, consistency only), + GAN (no feature matching)
( run --out outputs/dcm/abl-detail --semantic-from $full --gan-weight 0 --feature-matching-weight 0 \
    --detail-stop-step $detail
  run --out outputs/dcm/abl-gan --semantic-from $full --feature-matching-weight 0 --detail-stop-step $detail ) \
  > outputs/dcm/ablation-b.log 2>&1 &
wait
