"""Estimate GPU memory and time of LCM / DCM distillation of a 1.3B-parameter Wan teacher from measured scaling.

What is measured here (CPU, this machine): for Wan transformers of growing width and depth, the FLOPs of one
forward (torch's FlopCounterMode), the bytes autograd saves for the backward (saved-tensor hooks), and the wall
time of one forward and of one LCM distillation step (student forward + backward, guided teacher forward on a
doubled batch, target forward), so the step / forward cost ratio is a measurement, not an assumption. What is
computed: the same FLOPs and saved bytes for Wan2.1-T2V-1.3B's exact config (built on the meta device, no weights)
at a given clip size, extrapolated per token and layer from the measured small models. What is assumed (printed):
the GPU's bf16 peak and the fraction of it reached (MFU).

    python benchmarks/wan_1p3b_estimate.py [--frames 33 --height 480 --width 832 --peak-tflops 989 --mfu 0.35]
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

WAN_1P3B = dict(patch_size=(1, 2, 2), num_attention_heads=12, attention_head_dim=128, in_channels=16, out_channels=16,
                text_dim=4096, freq_dim=256, ffn_dim=8960, num_layers=30, cross_attn_norm=True,
                qk_norm="rms_norm_across_heads", eps=1e-6, rope_max_seq_len=1024)


def wan(**changes):
    from diffusers import WanTransformer3DModel

    return WanTransformer3DModel(**{**WAN_1P3B, **changes})


def inputs(model, batch, frames, height, width, text_tokens, device="cpu"):
    latent_frames = (frames - 1) // 4 + 1
    x = torch.randn(batch, model.config.in_channels, latent_frames, height // 8, width // 8, device=device)
    states = torch.randn(batch, text_tokens, model.config.text_dim, device=device)
    return x, torch.full((batch,), 500.0, device=device), states


def forward_flops(model, x, t, states) -> int:
    with FlopCounterMode(display=False) as counter:
        model(hidden_states=x, timestep=t, encoder_hidden_states=states, return_dict=False)
    return counter.get_total_flops()


def saved_bytes(model, x, t, states) -> int:
    total = 0

    def pack(tensor):
        nonlocal total
        total += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(hidden_states=x, timestep=t, encoder_hidden_states=states, return_dict=False)[0].sum()
    return total


def timed(fn, repeats=3) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def lcm_step_seconds(model, x, t, states) -> tuple[float, float]:
    """(one forward, one LCM step) wall seconds: student fwd+bwd, teacher fwd on 2B (guidance), target fwd."""
    teacher = wan(**{k: model.config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                                                  "ffn_dim", "text_dim", "in_channels", "out_channels")}).eval()
    target = wan(**{k: model.config[k] for k in ("num_layers", "num_attention_heads", "attention_head_dim",
                                                 "ffn_dim", "text_dim", "in_channels", "out_channels")}).eval()

    def forward():
        with torch.no_grad():
            model(hidden_states=x, timestep=t, encoder_hidden_states=states, return_dict=False)

    def step():
        out = model(hidden_states=x, timestep=t, encoder_hidden_states=states, return_dict=False)[0]
        with torch.no_grad():
            teacher(hidden_states=torch.cat([x, x]), timestep=torch.cat([t, t]),
                    encoder_hidden_states=torch.cat([states, states]), return_dict=False)
            target(hidden_states=x, timestep=t, encoder_hidden_states=states, return_dict=False)
        out.float().pow(2).mean().backward()

    return timed(forward), timed(step)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--text-tokens", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="GPU bf16 dense peak (H100 SXM: 989)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed fraction of peak reached")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(max(1, torch.get_num_threads()))

    rows = []  # measured on CPU: small Wans (8x8 latent grid per frame scaled up)
    for dim_heads, layers, size in [(2, 2, 128), (4, 2, 128), (4, 4, 128), (4, 4, 192)]:
        model = wan(num_attention_heads=dim_heads, attention_head_dim=64, ffn_dim=dim_heads * 64 * 4,
                    num_layers=layers, text_dim=256)
        x, t, states = inputs(model, 1, 9, size, size, 64)
        tokens = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2)
        flops = forward_flops(model, x, t, states)
        saved = saved_bytes(model, x, t, states)
        forward_s, step_s = lcm_step_seconds(model, x, t, states)
        dim = dim_heads * 64
        rows.append({"dim": dim, "layers": layers, "tokens": tokens, "forward_gflops": flops / 1e9,
                     "saved_bytes_per_token_dim_layer": saved / (tokens * dim * layers),
                     "forward_s": forward_s, "lcm_step_s": step_s, "step_over_forward": step_s / forward_s})
        print(json.dumps(rows[-1]))

    with torch.device("meta"):
        big = wan()
        x, t, states = inputs(big, args.batch, args.frames, args.height, args.width, args.text_tokens, "meta")
        flops = forward_flops(big, x, t, states)
    params = sum(p.numel() for p in big.parameters())
    tokens = x.shape[2] * (x.shape[3] // 2) * (x.shape[4] // 2) * args.batch
    ratio = sum(r["step_over_forward"] for r in rows) / len(rows)
    saved_per = max(r["saved_bytes_per_token_dim_layer"] for r in rows) / 2  # measured in fp32; bf16 halves it
    activations = saved_per * tokens * big.config.num_attention_heads * big.config.attention_head_dim * 30
    gib = 2**30
    memory = {"teacher_bf16": 2 * params / gib, "student_fp32_weights": 4 * params / gib,
              "student_grads_fp32": 4 * params / gib, "adam_states_fp32": 8 * params / gib,
              "ema_target_fp32": 4 * params / gib, "activations_bf16_no_checkpointing": activations / gib}
    # gradient checkpointing (--gradient-checkpointing true): each block's input kept, one block's activations live,
    # and the student's forward run twice
    hidden = tokens * big.config.num_attention_heads * big.config.attention_head_dim
    memory_checkpointed = dict(memory, activations_bf16_no_checkpointing=0.0,
                               activations_bf16_checkpointed=(2 * hidden * 30 + activations / 30) / gib)
    seconds = ratio * flops / (args.peak_tflops * 1e12 * args.mfu)
    result = {"parameters": params, "clip": [args.frames, args.height, args.width], "batch": args.batch,
              "tokens": tokens, "forward_tflops": flops / 1e12, "measured_step_over_forward": ratio,
              "assumed_peak_tflops": args.peak_tflops, "assumed_mfu": args.mfu,
              "estimated_seconds_per_lcm_step": seconds, "memory_gib": memory,
              "estimated_total_gib_full_finetune": sum(memory.values()),
              "estimated_total_gib_lora_student": memory["teacher_bf16"] + memory["student_fp32_weights"]
              + memory["activations_bf16_no_checkpointing"],
              "checkpointed": {"estimated_seconds_per_lcm_step": (ratio + 1) * flops / (args.peak_tflops * 1e12 * args.mfu),
                               "activations_gib": memory_checkpointed["activations_bf16_checkpointed"],
                               "estimated_total_gib_full_finetune": sum(memory_checkpointed.values()),
                               "estimated_total_gib_lora_student": memory["teacher_bf16"]
                               + memory["student_fp32_weights"] + memory_checkpointed["activations_bf16_checkpointed"]},
              "cpu_rows": rows}
    print(json.dumps({k: v for k, v in result.items() if k != "cpu_rows"}, indent=2))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=2)


if __name__ == "__main__":
    main()
