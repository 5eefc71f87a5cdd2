"""Issue 18's GPU check: distil a real-size Wan2.1-1.3B for a few steps and set the figures against `videocm plan`.

    python scripts/gpu_check.py --out /tmp/gpu-check [--json RESULT.json]      # on one GPU
    python scripts/gpu_check.py --tiny --out /tmp/gpu-check-tiny                 # the same path on a CPU, small

What it builds (random weights: nothing is downloaded): a diffusers ``WanPipeline`` folder whose transformer has
Wan2.1-T2V-1.3B's exact config (``benchmarks/configs/wan2.1-t2v-1.3b.json``), whose VAE is ``AutoencoderKLWan``
at its default (Wan 2.1) config, and whose text encoder is a one-layer UMT5 of the real width (4096: the
transformer reads its states; its depth does not matter once the latent cache holds them) with the tests' small
T5 tokenizer; and a folder of 4 captioned mp4 clips at the clip shape (default 33x480x832). Then one LCM run
through the same code a user's run takes (pipeline teacher loaded in bf16, latent cache, ``--parallel fsdp`` on
one rank, ``--mixed-precision bf16``, ``--gradient-checkpointing true``, batch 1): the median seconds per step
after two warm-up steps and the CUDA allocator's peak, against `videocm plan`'s row for FSDP + checkpointing at
the same clip, batch and GPU memory. Prints and writes one JSON object.

Not covered here: context parallelism needs two GPUs (NCCL puts one rank on each); ring attention in particular
runs only on a GPU backend that returns the log-sum-exp. With two GPUs, the 2-process test of
``tests/test_fsdp.py`` can be rerun with ``--context-parallel-kind ring`` by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_CONFIG = REPO / "benchmarks" / "configs" / "wan2.1-t2v-1.3b.json"
TINY_CONFIG = {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": 2,
               "attention_head_dim": 32, "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 64,
               "ffn_dim": 128, "num_layers": 2, "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads",
               "eps": 1e-06, "rope_max_seq_len": 256}


def build_pipeline(folder: Path, transformer_config: dict, tiny: bool) -> Path:
    """A WanPipeline folder with random weights (written once; reused when it is complete)."""
    if (folder / "model_index.json").is_file():
        return folder
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    sys.path.insert(0, str(REPO / "tests"))
    from tiny_pipelines import make_t5_tokenizer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = make_t5_tokenizer(32)
    torch.manual_seed(0)
    config = {k: v for k, v in transformer_config.items() if not k.startswith("_")}
    with torch.device(device):
        transformer = WanTransformer3DModel(**config).to(torch.bfloat16)
        text_encoder = UMT5EncoderModel(UMT5Config(
            vocab_size=len(tokenizer), d_model=int(config["text_dim"]), d_kv=64, d_ff=256, num_layers=1,
            num_heads=8, relative_attention_num_buckets=32, feed_forward_proj="gated-gelu",
            pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            decoder_start_token_id=tokenizer.pad_token_id))
        vae = (AutoencoderKLWan(base_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1) if tiny
               else AutoencoderKLWan())
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
                                        num_train_timesteps=1000)
    pipeline = WanPipeline(tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, scheduler=scheduler,
                           transformer=transformer, transformer_2=None, boundary_ratio=None)
    pipeline.save_pretrained(str(folder))
    return folder


def write_videos(folder: Path, frames: int, height: int, width: int, clips: int = 4) -> Path:
    """``clips`` mp4 files with ``NAME.txt`` captions: a bright square moving over a dark gradient."""
    import imageio.v3 as iio

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(clips):
        if (folder / f"clip{i}.txt").is_file():
            continue
        video = np.zeros((frames, height, width, 3), np.uint8)
        video[..., 2] = np.linspace(20, 90, width, dtype=np.uint8)[None, None, :]
        size = height // 4
        x0, y0 = rng.integers(0, width - size), rng.integers(0, height - size)
        for t in range(frames):
            x = int(x0 + t * (width - size - x0) / max(1, frames - 1))
            video[t, y0:y0 + size, x:x + size] = (230, 200, 40)
        iio.imwrite(folder / f"clip{i}.mp4", video, fps=16, codec="libx264")
        (folder / f"clip{i}.txt").write_text("a yellow square moving right")
    return folder


def planned_row(pipeline: Path, frames: int, height: int, width: int, gpu_memory: float) -> dict:
    from videocm.training.plan import PlanConfig, run_plan

    result = Path(pipeline).parent / "plan.json"
    run_plan(PlanConfig(teacher=str(pipeline), frames=frames, height=height, width=width, gpus=1,
                        gpu_memory=gpu_memory, batch_size=1, device="cuda" if torch.cuda.is_available() else "cpu",
                        json=str(result)))
    rows = json.loads(result.read_text())["rows"]
    return next(r for r in rows if r["mode"] == "fsdp" and r["gradient_checkpointing"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/gpu-check")
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--steps", type=int, default=6, help="optimiser steps (the first two are warm-up)")
    parser.add_argument("--tiny", action="store_true", help="a 2-block transformer at 9x64x64 (checks the path)")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    if args.tiny:
        args.frames, args.height, args.width = 9, 64, 64
    out = Path(args.out)
    transformer_config = TINY_CONFIG if args.tiny else json.loads(REAL_CONFIG.read_text())
    began = time.time()
    pipeline = build_pipeline(out / "pipeline", transformer_config, args.tiny)
    videos = write_videos(out / "videos", args.frames, args.height, args.width)
    built = time.time() - began

    from videocm.distill.lcm import LCMConfig, LCMTask
    from videocm.evaluation.bench import time_training

    run = out / "run"
    if run.exists():
        import shutil

        shutil.rmtree(run)
    config = LCMConfig(teacher=str(pipeline), data=str(videos), out=str(run), cache=str(out / "latent-cache"),
                       frames=args.frames, height=args.height, width=args.width, steps=args.steps, batch_size=1,
                       warmup_steps=1, sample_every=0, checkpoint_every=10**6, ema_decay=0.0, parallel="fsdp",
                       mixed_precision="bf16" if torch.cuda.is_available() else "no",
                       gradient_checkpointing=True, cpu=not torch.cuda.is_available())
    task = LCMTask(config)
    # the plain copy the main process saves from (on the CPU, as the trainer's own command builds it)
    plain = lambda: LCMTask(dataclasses.replace(config, parallel="ddp", cpu=True))  # noqa: E731
    timed = time_training(task, config, warmup=2, timed=args.steps - 2, make_plain_task=plain)
    gpu_memory = (torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 64.0)
    plan = planned_row(pipeline, args.frames, args.height, args.width, gpu_memory)
    stage = plan["stages"][0]
    measured_gib = timed["peak_memory_mb"] / 1024
    result = {
        "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__, "transformer": "tiny" if args.tiny else "Wan2.1-T2V-1.3B config (random)",
        "clip": [args.frames, args.height, args.width], "batch": 1, "mode": "fsdp (1 rank) + checkpointing" + (", bf16" if torch.cuda.is_available() else ", float32"),
        "steps_timed": args.steps - 2, "seconds_per_step": timed["seconds_per_step"],
        "peak_memory_gib": measured_gib, "planned_gib_at_batch_1": stage.get("gib_at_batch"),
        "planned_seconds_per_step": plan.get("seconds_per_step"),
        "planned_over_measured_memory": (stage.get("gib_at_batch") or 0) / measured_gib if measured_gib else None,
        "seconds_to_build": round(built, 1),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
