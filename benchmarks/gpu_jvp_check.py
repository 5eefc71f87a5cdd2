"""The GPU check of sCM's forward-mode JVP (issue 39): which attention kernels take it, and what it costs.

    python benchmarks/gpu_jvp_check.py [--json OUT.json] [--frames 33]

Prepared on a CPU-only machine, for the first session with a GPU (one short script, minutes). It prints one JSON
object:

* ``backends``: for each of PyTorch's attention kernels (flash, memory-efficient, cuDNN, math), whether
  ``torch.func.jvp`` through ``scaled_dot_product_attention`` runs under ``sdpa_kernel([kernel])`` on bf16
  inputs, the error's first line where it does not, and its time and peak memory where it does. ``docs/scm.md``
  says (from PyTorch's derivative table, not run) that only the math kernel has a forward-mode rule;
* ``agreement``: ``velocity_jvp`` against a central finite difference through a 2-layer Wan 2.1 1.3B-shaped
  transformer in float32 on the GPU (the CPU test's check, here on the GPU kernels);
* ``memory``: the peak memory of ``velocity_jvp`` through one Wan 2.1 1.3B layer at ``--frames`` x 480 x 832 in
  bf16, beside ``videocm plan``'s figure for the math kernel's transient (4 x heads x queries x keys x 2 bytes),
  so the plan's sCM batch limit is checked against a measurement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def backend_rows() -> list[dict]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v = (torch.randn(1, 12, 4096, 128, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    tangents = tuple(torch.randn_like(x) for x in (q, k, v))
    rows = []
    for backend in (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
                    SDPBackend.MATH):
        row = {"backend": backend.name}
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        began = time.perf_counter()
        try:
            with sdpa_kernel([backend]), torch.no_grad():
                torch.func.jvp(torch.nn.functional.scaled_dot_product_attention, (q, k, v), tangents)
            torch.cuda.synchronize()
            row.update(ok=True, seconds=time.perf_counter() - began,
                       peak_gib=torch.cuda.max_memory_allocated() / 2**30)
        except Exception as error:  # noqa: BLE001 - the point is which kernels refuse, and how
            row.update(ok=False, error=str(error).splitlines()[0][:300])
        rows.append(row)
    return rows


def wan(layers: int, dtype: torch.dtype):
    from diffusers import WanTransformer3DModel

    config = json.loads((ROOT / "benchmarks/configs/wan2.1-t2v-1.3b.json").read_text())
    config = {k: v for k, v in config.items() if not k.startswith("_")}
    config["num_layers"] = layers
    return WanTransformer3DModel(**config).to("cuda", dtype).eval().requires_grad_(False)


def call(network):
    def denoiser(x, timestep, encoder_hidden_states):
        return network(hidden_states=x.to(network.dtype), timestep=timestep,
                       encoder_hidden_states=encoder_hidden_states.to(network.dtype), return_dict=False)[0]
    return denoiser


def agreement() -> dict:
    from videocm.diffusion import FlowSchedule
    from videocm.diffusion.trigflow import TrigFlow, velocity_jvp

    torch.manual_seed(0)
    denoiser = call(wan(2, torch.float32))
    trig = TrigFlow(FlowSchedule(shift=3.0))
    x = torch.randn(1, 16, 3, 16, 16, device="cuda")
    direction = torch.randn_like(x)
    t, speed = torch.tensor([0.9], device="cuda"), torch.tensor([0.5], device="cuda")
    text = {"encoder_hidden_states": torch.randn(1, 32, 4096, device="cuda")}
    with torch.no_grad():
        _, tangent = velocity_jvp(denoiser, trig, x, t, text, direction, speed)

        def at(h):
            return trig.velocity(trig.call(denoiser, x + h * direction, t + h * speed, text), x + h * direction,
                                 t + h * speed)

        difference = (at(1e-3) - at(-1e-3)) / 2e-3
    return {"relative_error": float((tangent - difference).norm() / difference.norm())}


def memory(frames: int) -> dict:
    from videocm.diffusion import FlowSchedule
    from videocm.diffusion.trigflow import TrigFlow, velocity_jvp

    denoiser = call(wan(1, torch.bfloat16))
    trig = TrigFlow(FlowSchedule(shift=3.0))
    latent_frames = (frames - 1) // 4 + 1
    x = torch.randn(1, 16, latent_frames, 60, 104, device="cuda")
    t = torch.tensor([0.9], device="cuda")
    text = {"encoder_hidden_states": torch.randn(1, 512, 4096, device="cuda")}
    tokens = latent_frames * 30 * 52
    planned = 4 * 12 * tokens * tokens * 2 / 2**30
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    row = {"frames": frames, "tokens": tokens, "planned_transient_gib": planned}
    try:
        with torch.no_grad():
            velocity_jvp(denoiser, trig, x, t, text, torch.ones_like(x), torch.ones_like(t))
        torch.cuda.synchronize()
        row["measured_peak_above_start_gib"] = (torch.cuda.max_memory_allocated() - before) / 2**30
    except torch.cuda.OutOfMemoryError as error:
        row["out_of_memory"] = str(error).splitlines()[0][:200]
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--json", type=Path)
    parser.add_argument("--frames", type=int, default=33)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_jvp_check.py needs a CUDA GPU")
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__, "backends": backend_rows(),
              "agreement": agreement(), "memory": memory(args.frames)}
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
