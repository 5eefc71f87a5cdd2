#!/usr/bin/env bash
# Checkpoints written before named state still resume: runs stopped midway by the commit before it (OLD_SRC, e.g. a
# worktree of 988186c) are resumed by this tree, and their students compared (SHA-256) with the same runs made
# uninterrupted by this tree. LCM + the DMD term (a prepared fake score), DCM (a prepared discriminator), and LCM
# sharded over 2 processes (--parallel fsdp, DCP). Usage: scripts/legacy_resume_check.sh OLD_SRC WORKDIR
set -euo pipefail
old=${1:?give the old tree src folder}; work=${2:?a work folder}
mkdir -p "$work"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
common=(--teacher models/teacher-flow --batch-size 4 --sample-every 0 --latent-pool 16 --warmup-steps 2 --overwrite)
run() { "$@" >"$work/last.log" 2>&1 || { cat "$work/last.log"; exit 1; }; }
lcm=(distill --method lcm "${common[@]}" --steps 6 --checkpoint-every 3 --dmd-weight 0.5 --fake-updates 2)
run env PYTHONPATH="$old" python -m videocm.cli "${lcm[@]}" --stop-at-step 3 --out "$work/lcm-legacy"
run python -m videocm.cli distill --out "$work/lcm-legacy" --resume
run python -m videocm.cli "${lcm[@]}" --out "$work/lcm-new"
dcm=(distill --method dcm "${common[@]}" --semantic-steps 4 --detail-steps 4 --checkpoint-every 2)
run env PYTHONPATH="$old" python -m videocm.cli "${dcm[@]}" --detail-stop-step 2 --out "$work/dcm-legacy"
# as if killed after the detail stage's step-2 checkpoint: a stopped stage is otherwise assembled as finished
rm "$work/dcm-legacy/train_summary.json" "$work/dcm-legacy/stages/expert-1-detail/stage_done.json"
run python -m videocm.cli distill --out "$work/dcm-legacy" --resume --detail-stop-step 0
run python -m videocm.cli "${dcm[@]}" --out "$work/dcm-new"
# sharded (--cpu: without it, rank 1 of a CPU-only machine fails in DeviceMesh.get_group; see issue 36)
fsdp=(distill --method lcm "${common[@]}" --steps 6 --checkpoint-every 3 --parallel fsdp --cpu)
torchrun=(python -m torch.distributed.run --nproc_per_node 2 --master_port 29533 -m videocm.cli)
run env PYTHONPATH="$old" "${torchrun[@]}" "${fsdp[@]}" --stop-at-step 3 --out "$work/fsdp-legacy"
run "${torchrun[@]}" distill --out "$work/fsdp-legacy" --resume
run "${torchrun[@]}" "${fsdp[@]}" --out "$work/fsdp-new"
cd "$work"
for pair in lcm dcm fsdp; do
  for file in $(cd "$pair-new" && find . -name '*.safetensors' -not -path '*/checkpoints/*' -not -path '*/stages/*' \
      -not -path '*/vae/*' -not -path '*cache*' | sort); do
    a=$(sha256sum "$pair-legacy/$file" | cut -c1-16); b=$(sha256sum "$pair-new/$file" | cut -c1-16)
    echo "$pair $file legacy-resumed $a uninterrupted $b $([ "$a" = "$b" ] && echo same || echo DIFFERENT)"
  done
done
