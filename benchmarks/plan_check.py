"""`videocm plan`'s memory figure against a measured peak: one LCM step of real networks on this CPU.

    MALLOC_MMAP_THRESHOLD_=65536 python benchmarks/plan_check.py [--json OUT.json]

For three small denoiser configs (a Wan transformer, a UNet3D, the same Wan with a LoRA student), one LCM step as
the trainer runs it, without the data pipeline: the student's forward and backward, the teacher's guided forward
on a doubled batch and the EMA target's forward (both without autograd), AdamW's step, float32 on the CPU.
A LoRA student shares the teacher's frozen weights and its target holds the LoRA weights alone, as the
trainer builds them (``distill/core.py``). Measured: the bytes of every tensor held before the step (student,
target, teacher, AdamW's moments; each once, summed exactly) plus the growth of resident memory over the step (Linux VmHWM after resetting it, less VmRSS before;
with the environment variable above glibc returns freed blocks at once, so resident memory follows the live
tensors; each config runs in a process of its own, since memory an earlier one freed would hide the next one's
growth). Planned: `videocm plan --device cpu --gpus 1` for the same config, clip and batch (DDP, no
checkpointing). Prints one JSON line per config with both and their ratio.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import tempfile
from pathlib import Path

import torch

CONFIGS = {
    "wan": ({"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": 4,
             "attention_head_dim": 32, "in_channels": 16, "out_channels": 16, "text_dim": 256, "freq_dim": 64,
             "ffn_dim": 512, "num_layers": 3, "rope_max_seq_len": 256}, "full", [9, 128, 128], 2),
    "unet3d": ({"_class_name": "UNet3DConditionModel", "sample_size": 16, "in_channels": 4, "out_channels": 4,
                "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
                "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"], "block_out_channels": [32, 64],
                "layers_per_block": 1, "cross_attention_dim": 64, "attention_head_dim": 8,
                "norm_num_groups": 16}, "full", [8, 128, 128], 2),
    "wan-lora": (None, "lora", [9, 128, 128], 2),
}
CONFIGS["wan-lora"] = (CONFIGS["wan"][0], "lora", [9, 128, 128], 2)


def _status(key: str) -> int:
    return int(re.search(rf"{key}:\s+(\d+)", Path("/proc/self/status").read_text()).group(1)) * 1024


def _tensor_bytes(tensors) -> int:
    seen, total = set(), 0
    for tensor in tensors:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in seen:
            seen.add(pointer)
            total += tensor.untyped_storage().nbytes()
    return total


def measured_peak(spec, config: dict, student_kind: str, latent, tokens: int, batch: int) -> dict:
    from videocm.models.student import add_lora

    torch.manual_seed(0)
    teacher = spec.diffusers_class().from_config(config).eval().requires_grad_(False)
    from videocm.distill.core import TargetNetwork

    if student_kind == "lora":  # as the trainer builds it: the frozen base is the teacher's, the target the LoRA
        student = copy.deepcopy(teacher, {id(p): p for p in teacher.parameters()}).train()
        add_lora(spec, student, 16, 16.0)
    else:
        student = copy.deepcopy(teacher).train().requires_grad_(True)
    ema = TargetNetwork(student, "ema", 0.95)  # the trainable weights alone for LoRA, else a whole copy
    target_tensors = ema.weights or list(ema.network.parameters())

    def target(**inputs):
        if ema.network is not None:
            return spec.run(ema.network, **inputs)
        with ema.swapped():
            return spec.run(student, **inputs)

    optimizer = torch.optim.AdamW([p for p in student.parameters() if p.requires_grad], lr=1e-4)

    def step() -> None:
        inputs = spec.example_inputs(student, batch, latent, tokens, "cpu", torch.float32)
        out = spec.run(student, **inputs)
        with torch.no_grad():
            doubled = spec.example_inputs(teacher, 2 * batch, latent, tokens, "cpu", torch.float32)
            spec.run(teacher, **doubled)
            target(**inputs)
        out.float().pow(2).mean().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()  # AdamW's moments exist from here on
    held = list({id(p): p for p in [*student.parameters(), *teacher.parameters(), *target_tensors]}.values())
    held += [v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v) and v.dim() > 0]
    static = _tensor_bytes(held)
    before = _status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    step()
    return {"static_bytes": static, "step_growth_bytes": _status("VmHWM") - before}


def check(name: str) -> dict:
    from videocm.training.plan import PlanConfig, build_on_meta, describe_teacher, measure_network, plan_rows

    config, student, video, batch = CONFIGS[name]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "config.json"
        path.write_text(json.dumps(config))
        spec, network_config, _, _, _ = describe_teacher(path)
    tokens = 16
    latent = (config["in_channels"], spec.latent_frames(video[0]), video[1] // spec.latent_factors[1],
              video[2] // spec.latent_factors[1])
    plan = PlanConfig(teacher=str(path), student=student, gpus=1, gpu_memory=1e6, batch_size=batch, device="cpu")
    cost = measure_network(spec, build_on_meta(spec, network_config, torch.float32), latent, tokens)
    row = next(r for r in plan_rows(cost, plan) if r["mode"] == "ddp" and not r["gradient_checkpointing"])
    stage = row["stages"][0]  # the tensors of a step; not the process itself or the encoders, measured apart
    planned = (stage["gib_at_batch"] - stage.get("runtime", 0.0) - stage.get("encoders", 0.0)) * 2**30
    measured = measured_peak(spec, config, student, latent, tokens, batch)
    total = measured["static_bytes"] + measured["step_growth_bytes"]
    return {"config": name, "student": student, "latent": list(latent), "batch": batch, "planned_bytes": planned,
            **measured, "measured_bytes": total, "planned_over_measured": planned / total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", action="append", choices=list(CONFIGS), help="default: all three")
    parser.add_argument("--json", help="write the rows here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.config or list(CONFIGS)
    if len(names) == 1:
        rows = [check(names[0])]
    else:  # each config in a fresh process: memory a config freed would hide the next one's growth
        import subprocess
        import sys

        rows = []
        for name in names:
            run = subprocess.run([sys.executable, __file__, "--config", name], capture_output=True, text=True,
                                 check=True)
            rows += [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print(json.dumps(row))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
