# Stage 1 on a GPU: train the VAE, then time a few teacher steps of each family.
source scripts/gpu_setup.sh
set -e
mkdir -p /tmp/models
start=$(date +%s)
python3 -m videocm.cli train-vae --config configs/vae.yaml --out /tmp/models/vae --max-minutes 4 2>&1 | grep -v "it/s" | tail -30
echo "vae wall seconds: $(( $(date +%s) - start ))"
for fam in flow vp; do
  s=$(date +%s)
  python3 -m videocm.cli train-teacher --config configs/teacher-$fam.yaml --out /tmp/probe-$fam --vae /tmp/models/vae \
    --prompt-cache .gpu/captions.safetensors --steps 100 --sample-every 0 --checkpoint-every 1000 2>&1 | grep -v "it/s" | tail -3
  echo "probe $fam 100 steps wall seconds: $(( $(date +%s) - s ))"
done
tar -cf $OUT/vae.tar -C /tmp/models vae
