#!/usr/bin/env bash
# Behaviour-unchanged check for refactors: short LCM, LCM (guidance range + LoRA), LCM + DMD term, DMD (with GAN),
# DCM (both stages), each from the shipped flow teacher on MovingDigits, and an LCM run of a tiny Wan pipeline on a
# video folder; prints the SHA-256 of every weight file and model description (videocm.json) each student folder
# holds. Run it on the commit before and after a refactor (PYTHONPATH=OTHER/src picks the other tree), into the
# same WORKDIR (the pipeline run's description names its teacher's path), and compare the two outputs: they must be
# identical. Usage: scripts/refactor_check.sh WORKDIR   (about 70 s on the 2-core CPU)
set -euo pipefail
work=${1:?give a work folder}
mkdir -p "$work"
export OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
py=${PYTHON:-python}
vc() { $py -m videocm.cli "$@" >"$work/$(basename "${out}").log" 2>&1 || { cat "$work/$(basename "${out}").log"; exit 1; }; }
common=(--teacher models/teacher-flow --batch-size 4 --sample-every 0 --latent-pool 16 --warmup-steps 2 --overwrite)
out=$work/lcm; vc distill --method lcm "${common[@]}" --steps 6 --checkpoint-every 3 --out "$out"
out=$work/lcm-range-lora; vc distill --method lcm "${common[@]}" --steps 4 --guidance-range 2,6 --student lora --out "$out"
out=$work/lcm-dmd; vc distill --method lcm "${common[@]}" --steps 3 --dmd-weight 0.5 --fake-updates 2 --out "$out"
out=$work/dmd; vc distill --method dmd "${common[@]}" --steps 3 --fake-updates 2 --dmd-gan-weight 0.005 --out "$out"
out=$work/dcm; vc distill --method dcm "${common[@]}" --semantic-steps 4 --detail-steps 4 --out "$out"
if [ ! -d "$work/tiny-wan" ]; then
  $py - "$work" <<'PY'
import json, sys
from pathlib import Path
sys.path.insert(0, "tests")
from tiny_pipelines import build_tiny_pipeline
from videocm.data.moving_digits import Geometry, make_clip
from videocm.data.video_io import write_video
work = Path(sys.argv[1])
build_tiny_pipeline("wan", work / "tiny-wan")
videos = work / "videos"; videos.mkdir(exist_ok=True)
lines = []
for i in range(6):
    clip = make_clip(i, 0, "train", Geometry(12, 32))
    write_video(videos / f"clip{i}.mp4", clip.video, fps=8)
    lines.append({"file": f"clip{i}.mp4", "caption": clip.caption})
(videos / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
PY
fi
out=$work/wan-lcm; vc distill --method lcm --teacher "$work/tiny-wan" --data "$work/videos" --frames 9 --height 32 \
  --width 32 --max-sequence-length 16 --steps 3 --batch-size 2 --sample-every 0 --warmup-steps 1 --overwrite \
  --cache "$work/wan-cache" --out "$out"
cd "$work"
for run in lcm lcm-range-lora lcm-dmd dmd dcm wan-lcm; do
  find "$run" \( -name '*.safetensors' -o -name videocm.json \) -not -path '*/checkpoints/*' -not -path '*/stages/*' -not -path '*cache*' \
    -not -path '*/vae/*' -not -path '*/text_encoder/*' | sort | xargs sha256sum
done
