"""``videocm plan``: meta-device counts against the real network, its memory figures against a measured training
step (three small configs, within 15%), the table and JSON, and its one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from videocm.cli import main
from videocm.training.plan import (PlanConfig, build_on_meta, cheapest, describe_teacher, measure_network,
                                  plan_rows)

REPO = Path(__file__).resolve().parents[1]
SMALL_WAN = {"_class_name": "WanTransformer3DModel", "patch_size": [1, 2, 2], "num_attention_heads": 2,
             "attention_head_dim": 16, "in_channels": 4, "out_channels": 4, "text_dim": 32, "freq_dim": 32,
             "ffn_dim": 64, "num_layers": 2, "rope_max_seq_len": 64}


def test_meta_counts_equal_the_real_networks_and_fused_attention_matches_the_cpu_kernel(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SMALL_WAN))
    spec, config, _, _, _ = describe_teacher(path)
    latent = (4, 3, 16, 16)
    meta = measure_network(spec, build_on_meta(spec, config, torch.float32), latent, 8)
    real_network = spec.diffusers_class().from_config(config)
    real = measure_network(spec, real_network, latent, 8, fused_attention=False)  # the CPU's own SDPA kernel
    with sdpa_kernel(SDPBackend.MATH):  # the counter has no formula for the CPU's fused kernel: count it unfused
        unfused = measure_network(spec, real_network, latent, 8, fused_attention=False)
    assert meta.parameters == real.parameters == sum(p.numel() for p in real_network.parameters())
    assert meta.forward_flops == unfused.forward_flops > real.forward_flops > 0
    assert meta.blocks == 2 and meta.largest_block_parameters < meta.parameters
    # the stand-in counts what the CPU's fused kernel saves (within 10%), not the attention matrix the
    # unfused path keeps
    assert abs(meta.saved_bytes - real.saved_bytes) <= 0.10 * real.saved_bytes < unfused.saved_bytes - real.saved_bytes
    assert meta.checkpointed_bytes < meta.saved_bytes
    assert 0 < meta.lora_parameters < meta.parameters and 0 < meta.detail_parameters < meta.parameters


@pytest.mark.slow
def test_planned_memory_is_within_15_percent_of_a_measured_step():
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, str(REPO / "benchmarks" / "plan_check.py")], env=env, capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert [r["config"] for r in rows] == ["wan", "unet3d", "wan-lora"]
    for row in rows:
        assert 0.85 <= row["planned_over_measured"] <= 1.15, row


def test_plan_prints_every_mode_and_names_the_cheapest_that_fits(tiny_teachers, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main(["plan", "--teacher", str(tiny_teachers["wan"]), "--gpus", "2", "--gpu-memory", "4",
                 "--device", "cpu", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    assert [(r["mode"], r["gradient_checkpointing"]) for r in result["rows"]] == [
        ("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True), ("fsdp+cp2", False), ("fsdp+cp2", True)]
    ddp, fsdp = result["rows"][0]["stages"][0], result["rows"][2]["stages"][0]
    # sharding halves the weights, gradients, optimiser and EMA target over 2 GPUs
    for part in ("student_weights", "gradients", "optimiser", "ema_target", "teacher"):
        assert fsdp[part] == pytest.approx(ddp[part] / 2)
    assert result["cheapest"] == {"mode": "ddp", "context_parallel": 1, "gradient_checkpointing": False}  # fits anywhere
    assert "cheapest mode that fits: ddp" in printed and "| fsdp+cp2 | yes |" in printed
    assert "(distill flags: --parallel ddp)" in printed
    from videocm.training.plan import mode_flags

    assert mode_flags({"mode": "fsdp+cp4", "context_parallel": 4, "gradient_checkpointing": True}) == (
        "--parallel fsdp --context-parallel 4 --gradient-checkpointing true")


def test_nothing_fits_on_a_tiny_gpu_and_dcm_plans_both_stages(tiny_teachers):
    spec, config, _, tokens, latent = describe_teacher(tiny_teachers["wan"])
    cost = measure_network(spec, build_on_meta(spec, config, torch.float32), tuple(latent), tokens)
    rows = plan_rows(cost, PlanConfig(teacher="x", gpus=1, gpu_memory=1e-6, reserve=0.0))
    assert cheapest(rows) is None and all(r["largest_global_batch"] == 0 for r in rows)
    dcm = plan_rows(cost, PlanConfig(teacher="x", method="dcm", gpus=1))
    stages = dcm[0]["stages"]
    assert [s["stage"] for s in stages] == ["full", "detail"]
    # the detail expert trains a LoRA: fewer gradients, but the teacher's features cost activations
    assert stages[1]["gradients"] < stages[0]["gradients"]
    assert stages[1]["activations_per_clip"] > stages[0]["activations_per_clip"]


def test_scm_and_rcm_plan_the_jvps_attention_and_the_fake_score():
    """sCM's forward-mode JVP runs attention on the math kernel: the plan counts its score matrices (heads x
    queries x keys, with softmax and tangents) per clip, divided by context parallelism; no EMA target; rCM adds
    its fake score and its passes."""
    from videocm.models.families import family_for_network

    spec = family_for_network("WanTransformer3DModel")
    network = build_on_meta(spec, SMALL_WAN, torch.bfloat16)
    cost = measure_network(spec, network, (4, 3, 16, 16), 8)
    tokens = 3 * 8 * 8  # patch 1x2x2
    assert cost.attention_scores == 2 * tokens * tokens  # two heads of self-attention, the largest
    lcm, scm, rcm = (plan_rows(cost, PlanConfig(teacher="x", method=m, gpus=4)) for m in ("lcm", "scm", "rcm"))
    by_mode = {r["mode"]: r["stages"][0] for r in scm if not r["gradient_checkpointing"]}
    assert by_mode["ddp"]["ema_target"] == 0.0
    jvp = 4 * cost.attention_scores * 2 / 2**30
    assert by_mode["ddp"]["activations_per_clip"] == pytest.approx(max(jvp, cost.saved_bytes / 2**30))
    assert by_mode["fsdp+cp4"]["activations_per_clip"] == pytest.approx(max(jvp, cost.saved_bytes / 2**30) / 4)
    fake = rcm[0]["stages"][0]["fake_score"]
    assert fake == pytest.approx(16 * cost.parameters / 2**30) and "fake_score" not in scm[0]["stages"][0]
    ratio = scm[0]["stages"][0]["seconds_per_step"] / lcm[0]["stages"][0]["seconds_per_step"]
    assert ratio == pytest.approx((5 + 4.0) / 5.8 * (scm[0]["stages"][0]["largest_global_batch"] /
                                                     lcm[0]["stages"][0]["largest_global_batch"]))


@pytest.mark.parametrize("args,message", [
    (["--method", "gan"], "--method 'gan': use one of lcm, dcm"),
    (["--gpus", "0"], "--gpus must be at least 1"),
    (["--frames", "9"], "distils at its own clip shape"),
])
def test_plan_rejects_bad_settings_in_one_line(tiny_teachers, capsys, args, message):
    assert main(["plan", "--teacher", str(tiny_teachers["wan"]), *args]) != 0
    error = capsys.readouterr().err.strip()
    assert message in error and "\n" not in error


def test_plan_of_a_folder_that_is_no_teacher_is_one_line_error(tmp_path, capsys):
    assert main(["plan", "--teacher", str(tmp_path)]) != 0
    assert "give a videocm teacher folder, a diffusers pipeline folder" in capsys.readouterr().err
