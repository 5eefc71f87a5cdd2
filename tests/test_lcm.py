"""VideoLCM distillation: the loss's pieces, students (full, LoRA, guidance embedding), student folders and
sampling, and the shared trainer's exact resume after SIGKILL and its 2-process run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videocm.distill.trainer import Step
from videocm.cli import main
from videocm.diffusion.sampling import guided_output
from videocm.distill import lcm as lcm_module
from videocm.distill.lcm import LCMConfig, LCMTask, distill
from videocm.errors import VideoCMError
from videocm.models.folder import load_model
from videocm.models.student import merged_network_state

REPO = Path(__file__).resolve().parents[1]


def tiny_lcm(teacher: Path, out: Path, **changes) -> LCMConfig:
    values = dict(teacher=str(teacher), out=str(out), steps=4, batch_size=2, latent_pool=8, sample_every=0,
                  checkpoint_every=2, warmup_steps=1)
    values.update(changes)
    return LCMConfig(**values)


def latent_batch(task: LCMTask, n: int = 2):
    rng = np.random.default_rng(0)
    latents, text, _ = task.teacher_context.batches.draw(n, rng, (0, 1), "cpu")
    return latents, text


def test_teacher_target_is_one_batched_guided_forward(tiny_teachers, tmp_path, monkeypatch):
    task = LCMTask(tiny_lcm(tiny_teachers["wan"], tmp_path, guidance=3.0), "cpu")
    calls = []
    real = task.teacher_context.teacher.forward

    def counting(x, *args, **kwargs):
        calls.append(x.shape[0])
        return real(x, *args, **kwargs)

    monkeypatch.setattr(task.teacher_context.teacher, "forward", counting)
    loss, _ = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    assert torch.isfinite(loss) and loss.item() > 0  # the student (a copy of the teacher) misses the target
    assert calls == [4]  # conditional and unconditional of 2 clips together
    calls.clear()
    task.teacher_context.guidance = 1.0
    task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    assert calls == [2]  # w = 1: no unconditional pass


def test_guided_output_is_cfg_per_clip():
    def toy(x, t, states):
        return x * states.mean(dim=(1, 2)).reshape(-1, 1, 1, 1, 1)

    x = torch.randn(2, 1, 1, 2, 2)
    cond, uncond = {"states": torch.full((2, 3, 4), 2.0)}, {"states": torch.full((2, 3, 4), 0.5)}
    w = torch.tensor([1.5, 4.0])
    out = guided_output(toy, x, torch.zeros(2), cond, uncond, w)
    expected = 0.5 * x + w.reshape(2, 1, 1, 1, 1) * (2.0 * x - 0.5 * x)
    torch.testing.assert_close(out, expected)


def test_student_starts_as_its_teacher_and_guidance_embedding_starts_at_zero(tiny_teachers, tmp_path):
    task = LCMTask(tiny_lcm(tiny_teachers["unet3d"], tmp_path, guidance_range=[2.0, 6.0]), "cpu")
    task.model.eval()  # UNet3D's temporal convolutions use dropout in training mode
    latents, text = latent_batch(task)
    t = torch.tensor([500, 800])
    with torch.no_grad():
        teacher = task.teacher_context.teacher(latents, t, **text)
        for w in (2.0, 6.0):
            student = task.model(latents, t, **text, guidance=torch.full((2,), w))
            torch.testing.assert_close(student, teacher)
    with pytest.raises(ValueError, match="pass guidance="):
        task.model(latents, t, **text)


def test_lora_student_trains_adapters_only_and_merges_exactly(tiny_teachers, tmp_path):
    task = LCMTask(tiny_lcm(tiny_teachers["wan"], tmp_path, student="lora", lora_rank=4), "cpu")
    trainable = [name for name, p in task.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    with torch.no_grad():
        for name, p in task.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)  # a trained adapter
    latents, text = latent_batch(task)
    t = torch.tensor([300.0, 900.0])
    merged = load_model(tiny_teachers["wan"]).denoiser
    merged.network.load_state_dict(merged_network_state(task.model.network))
    with torch.no_grad():
        torch.testing.assert_close(merged(latents, t, **text), task.model(latents, t, **text), atol=1e-5, rtol=1e-4)
        assert not torch.allclose(task.teacher_context.teacher(latents, t, **text), task.model(latents, t, **text), atol=1e-4)


def test_ema_target_follows_the_student(tiny_teachers, tmp_path):
    task = LCMTask(tiny_lcm(tiny_teachers["wan"], tmp_path, target_decay=0.9), "cpu")
    before = [p.clone() for p in task.target_network.network.parameters()]
    with torch.no_grad():
        for p in task.model.parameters():
            p.add_(1.0)
    task.after_step(task.model)
    for old, new, online in zip(before, task.target_network.network.parameters(), task.model.parameters()):
        torch.testing.assert_close(new, 0.9 * old + 0.1 * online)
    online_task = LCMTask(tiny_lcm(tiny_teachers["wan"], tmp_path / "o", target="online"), "cpu")
    assert online_task.target_network(online_task.model) is online_task.model


@pytest.mark.parametrize("family", ["wan", pytest.param("unet3d", marks=pytest.mark.slow)])
def test_distilled_student_folder_samples_in_few_steps(tiny_teachers, tmp_path, family):
    out = tmp_path / "student"
    summary = distill(tiny_lcm(tiny_teachers[family], out), progress=False)
    assert summary["steps_done"] == 4
    info = json.loads((out / "videocm.json").read_text())
    assert info["kind"] == "student" and info["method"] == "lcm" and info["default_steps"] == 4
    assert info["consistency"]["grid_points"] == 50 and info["consistency"]["skip"] == 1
    assert info["guidance"] == {"mode": "fixed", "scale": 4.0}
    assert (out / "train_log.csv").read_text().splitlines()[0].startswith("step,loss,lr")
    scores = tmp_path / "scores.json"
    assert main(["eval", "--model", str(out), "--steps", "1,4", "--n", "4", "--json", str(scores)]) == 0
    rows = json.loads(scores.read_text())["rows"]
    assert [row["nfe"] for row in rows] == [1, 4]  # one network evaluation per step, guidance folded in
    clip = tmp_path / "clip.npy"
    assert main(["sample", "--model", str(out), "--prompt", "a red 3 moving left", "--out", str(clip)]) == 0
    assert np.load(clip).shape == (8, 32, 32, 3)


def test_distill_errors_are_one_line(tiny_teachers, tmp_path, capsys):
    teacher = str(tiny_teachers["wan"])
    cases = [
        (["--method", "gan"], "--method 'gan' is not known"),
        (["--teacher", teacher, "--target", "mean"], "--target 'mean'"),
        (["--teacher", teacher, "--guidance-range", "5,2"], "--guidance-range"),
        (["--teacher", str(tmp_path / "none")], "does not exist"),
    ]
    for extra, message in cases:
        assert main(["distill", "--out", str(tmp_path / "x")] + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err


def run_cli(args: list[str], **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "videocm.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def distill_args(teacher: Path, out: Path, steps: int) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--out", str(out), "--steps", str(steps), "--batch-size", "4",
            "--latent-pool", "16", "--sample-every", "0", "--checkpoint-every", "2", "--warmup-steps", "1",
            "--store-dtype", "float32"]


def final_weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "transformer" / "diffusion_pytorch_model.safetensors")


@pytest.mark.slow
def test_sigkilled_run_resumes_to_the_same_weights(tiny_teachers, tmp_path):
    steps = 16  # the kill lands after the step-4 checkpoint, 12 steps before the end
    clean = run_cli(distill_args(tiny_teachers["wan"], tmp_path / "clean", steps))
    assert clean.wait(timeout=600) == 0, clean.stdout.read()
    killed_out = tmp_path / "killed"
    run = run_cli(distill_args(tiny_teachers["wan"], killed_out, steps))
    checkpoint = killed_out / "checkpoints" / "step-4" / "complete.json"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    assert not (killed_out / "videocm.json").exists(), "the run finished before it could be killed"
    resumed = run_cli(distill_args(tiny_teachers["wan"], killed_out, steps) + ["--resume"])
    output = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, output
    assert "resuming from" in output
    a, b = final_weights(tmp_path / "clean"), final_weights(killed_out)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)  # exact on CPU


# Two DDP processes against one: tests/test_dcm.py::test_two_processes_match_one_in_both_stages (its semantic
# stage is this consistency step on a full network); under FSDP: tests/test_fsdp.py.


@pytest.mark.parametrize("name", ["lcm-flow", "lcm-vp"])
def test_shipped_students_are_small_self_describing_folders(name):
    folder = REPO / "models" / name
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 10 * 2**20
    info = json.loads((folder / "videocm.json").read_text())
    assert info["kind"] == "student" and info["method"] == "lcm" and info["default_steps"] == 4
    assert info["consistency"]["grid_points"] == 50
    assert "Command" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_shipped_flow_student_beats_its_teacher_at_four_steps():
    from videocm.evaluation.evaluate import eval_prompts, score_clips
    from videocm.evaluation.judge import Judge
    from videocm.pipeline import VideoPipeline

    prompts, seeds = eval_prompts(24, seed=3)
    judge = Judge.load()
    clips = {name: VideoPipeline.from_folder(REPO / "models" / name).generate(prompts, seeds, 4)
             for name in ("lcm-flow", "teacher-flow")}
    student, teacher = (score_clips(judge, clips[name], prompts) for name in ("lcm-flow", "teacher-flow"))
    assert student["fidelity_all"] >= teacher["fidelity_all"] + 0.2


def test_gradient_accumulation_equals_one_large_batch(tiny_teachers, tmp_path):
    common = dict(steps=3, batch_size=4, store_dtype="float32", target="online")
    distill(tiny_lcm(tiny_teachers["wan"], tmp_path / "one", **common), progress=False)
    distill(tiny_lcm(tiny_teachers["wan"], tmp_path / "acc", gradient_accumulation_steps=2, **common),
            progress=False)
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "acc")
    teacher = load_file(tiny_teachers["wan"] / "transformer" / "diffusion_pytorch_model.safetensors")
    assert any(not torch.equal(a[key], teacher[key]) for key in a)
    for key in a:
        torch.testing.assert_close(b[key], a[key], atol=1e-5, rtol=1e-4, msg=key)
    with pytest.raises(VideoCMError, match="does not split into --gradient-accumulation-steps 3"):
        distill(tiny_lcm(tiny_teachers["wan"], tmp_path / "bad", gradient_accumulation_steps=3, **common),
                progress=False)


def test_bf16_mixed_precision_runs_under_autocast_on_cpu(tiny_teachers, tmp_path):
    """--mixed-precision bf16 goes through accelerate's autocast (CPU too): the networks compute in bfloat16,
    the master weights stay float32 and training still moves them."""
    config = tiny_lcm(tiny_teachers["wan"], tmp_path / "bf16", steps=2, mixed_precision="bf16", store_dtype="float32")
    seen = []
    original = LCMTask.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        self.model.network.proj_out.register_forward_hook(lambda m, a, out: seen.append(out.dtype))

    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)  # accelerate's state is per process: start clean
    lcm_module.LCMTask.__init__ = spy
    try:
        summary = distill(config, progress=False)
    finally:
        lcm_module.LCMTask.__init__ = original
        AcceleratorState._reset_state(reset_partial_state=True)
    assert torch.bfloat16 in seen and np.isfinite(summary["final_loss"])
    student = load_file(tmp_path / "bf16" / "transformer" / "diffusion_pytorch_model.safetensors")
    teacher = load_file(tiny_teachers["wan"] / "transformer" / "diffusion_pytorch_model.safetensors")
    assert all(v.dtype == torch.float32 for v in student.values())
    assert any(not torch.equal(student[k], teacher[k]) for k in teacher)


def test_stop_at_step_keeps_the_schedule_of_the_full_run(tiny_teachers, tmp_path):
    """--stop-at-step M stops a run planned for N steps at M, with the learning rates of the N-step schedule: its
    step-M weights equal the full run's step-M checkpoint (a 3-step schedule would give other weights)."""
    runs = {"full": {}, "cut": {"stop_at_step": 3}, "short": {"steps": 3}}
    for name, change in runs.items():
        values = {"steps": 6, "warmup_steps": 1, "checkpoint_every": 3, "keep_checkpoints": 3, **change}
        summary = distill(tiny_lcm(tiny_teachers["wan"], tmp_path / name, **values), progress=False)
        assert summary["steps_done"] == (6 if name == "full" else 3)

    def weights(name):
        return load_file(tmp_path / name / "checkpoints" / "step-3" / "model.safetensors")

    full, cut, short = weights("full"), weights("cut"), weights("short")
    assert all(torch.equal(full[k], cut[k]) for k in full)
    assert any(not torch.equal(full[k], short[k]) for k in full)
    assert (tmp_path / "cut" / "videocm.json").is_file()


def _dropout_rates(module) -> list[float]:
    return [m.p for m in module.modules() if isinstance(m, torch.nn.modules.dropout._DropoutNd)]


def test_students_train_without_dropout_so_a_step_does_not_depend_on_the_process_count(tiny_teachers, tmp_path):
    """UNet3D's temporal convolutions have dropout 0.1: off by default, the step is a function of the batch, and
    a batch of 4 gives the gradient of two shards of 2."""
    task = LCMTask(tiny_lcm(tiny_teachers["unet3d"], tmp_path / "a", batch_size=4, cpu=True))
    assert _dropout_rates(task.model) and max(_dropout_rates(task.model)) == 0.0
    assert not task.target_network.network.training  # the target is a fixed function of its input

    def gradients(task, shards):
        task.model.zero_grad()
        for shard in shards:
            rng = np.random.default_rng([0, 0])
            generator = torch.Generator().manual_seed(int(rng.integers(2**63 - 1)))
            loss, _ = task.loss(task.model, Step(0, rng, generator, torch.device("cpu"), 4, shard))
            (loss / len(shards)).backward()
        return torch.cat([p.grad.flatten() for p in task.model.parameters() if p.grad is not None])

    whole, halves = gradients(task, [(0, 1)]), gradients(task, [(0, 2), (1, 2)])
    torch.testing.assert_close(halves, whole, atol=2e-6, rtol=1e-4)  # float32 sums in another order
    kept = LCMTask(tiny_lcm(tiny_teachers["unet3d"], tmp_path / "b", batch_size=4, cpu=True, student_dropout=True))
    assert max(_dropout_rates(kept.model)) > 0 and not kept.target_network.network.training
    # with the network's dropout the two differ far beyond rounding: the step depends on the RNG's order
    assert (gradients(kept, [(0, 1)]) - gradients(kept, [(0, 2), (1, 2)])).abs().max() > 1e-4
