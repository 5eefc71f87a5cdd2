"""A LoRA student, its EMA target and its checkpoints cost what the trainable part costs: the student shares the
teacher's frozen weights, the target holds only the trainable weights, a checkpoint holds only trainable state
(safetensors for tensors), and a run resumed from one trains what the uninterrupted run trains. The same for
DMD's LoRA fake score and DCM's detail expert (which shared its base before)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from videocm.cli import main
from videocm.distill.core import TargetNetwork, merged_student
from videocm.distill.lcm import LCMConfig, LCMTask
from videocm.distill.parallel import TRAINABLE_ONLY
from videocm.models.folder import load_model

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "models" / "teacher-flow"


def lora_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(TEACHER), "--out", str(out), "--steps", str(steps), "--batch-size", "2",
            "--latent-pool", "4", "--sample-every", "0", "--checkpoint-every", "2", "--warmup-steps", "1",
            "--student", "lora", "--store-dtype", "float32", *extra]


def test_a_lora_student_shares_the_teachers_frozen_weights_and_its_target_holds_only_the_trainable(tmp_path):
    config = LCMConfig(teacher=str(TEACHER), out=str(tmp_path / "run"), student="lora", latent_pool=4, cpu=True,
                       guidance_range=[2.0, 6.0])
    task = LCMTask(config)
    teacher = {id(p) for p in task.teacher_context.teacher.parameters()}
    student = dict(task.model.named_parameters())
    frozen = [name for name, p in student.items() if not p.requires_grad]
    trainable = [name for name, p in student.items() if p.requires_grad]
    assert frozen and all(id(student[name]) in teacher for name in frozen)  # shared, not copied
    assert not any(id(student[name]) in teacher for name in trainable)
    assert any("guidance_embedding" in name for name in trainable)
    target = task.target_network
    assert target.network is None and target.names == trainable
    assert sum(w.numel() for w in target.weights) == sum(student[n].numel() for n in trainable)
    # the target is the student with the EMA weights: equal to a whole EMA copy, and the student restored after
    copy = TargetNetwork(task.model, "ema", config.target_decay, share_frozen=False)
    with torch.no_grad():
        for name in trainable:
            student[name].add_(0.01 * torch.randn_like(student[name]))
    target.update(task.model)
    copy.update(task.model)
    before = {name: p.detach().clone() for name, p in student.items()}
    x = torch.randn(1, *task.latent_shape)
    t = torch.tensor([500.0])
    text = {k: v[:1] for k, v in task.teacher_context.text.encode(["a red 3"]).items()}
    with torch.no_grad():
        torch.testing.assert_close(target(task.model)(x, t, guidance=torch.tensor([4.0]), **text),
                                   copy(task.model)(x, t, guidance=torch.tensor([4.0]), **text))
    assert all(torch.equal(before[name], p) for name, p in student.items())
    assert task.model.training
    # a student folder is written from shared weights: the teacher is not changed by merging or casting
    teacher_state = {k: v.clone() for k, v in task.teacher_context.teacher.network.state_dict().items()}
    with task.trained(task.model) as trained:
        merged = merged_student(task.teacher_context.teacher.network, trained)
    merged.network.half()
    assert all(torch.equal(v, task.teacher_context.teacher.network.state_dict()[k]) for k, v in teacher_state.items())
    assert next(task.teacher_context.teacher.parameters()).dtype == torch.float32


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lcm", "dmd"])
def test_a_lora_runs_checkpoint_holds_only_trainable_state_and_resumes_exactly(tmp_path, method):
    extra = ["--method", "dmd", "--fake-updates", "1", "--fake-score", "lora"] if method == "dmd" else []
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert main(lora_args(straight, 4, *extra)) == 0
    assert main(lora_args(resumed, 4, *extra, "--stop-at-step", "2")) == 0
    checkpoint = resumed / "checkpoints" / "step-2"
    model = load_file(checkpoint / "model.safetensors")
    assert model and all(".lora_" in key for key in model)  # the LoRA weights alone, not the frozen base
    with safe_open(str(checkpoint / "model.safetensors"), "pt") as handle:
        assert handle.metadata()["videocm"] == TRAINABLE_ONLY
    summary = json.loads((resumed / "train_summary.json").read_text())
    trainable, whole = summary["trainable_parameters"], summary["parameters"]
    tensors = sum(p.stat().st_size for p in checkpoint.glob("*.safetensors"))
    copies = 2 if method == "lcm" else 2 + 1  # the student's and the target's LoRA; DMD: the fake score's too
    assert tensors < 1.05 * copies * 4 * trainable and trainable < whole / 4  # float32 LoRA state, not the base
    assert not list(checkpoint.glob("*.pkl"))
    if method == "lcm":
        target = load_file(checkpoint / "target.safetensors")
        assert set(target) == set(model)
    else:
        fake = load_file(checkpoint / "fake_score.safetensors")
        assert fake and all(".lora_" in key for key in fake)
    assert main(lora_args(resumed, 4, *extra, "--resume")) == 0
    for name in ("transformer/diffusion_pytorch_model.safetensors", "lora/adapter_model.safetensors"):
        a, b = load_file(straight / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    summary = json.loads((resumed / "train_summary.json").read_text())
    assert summary["resumed_from_step"] == 2


def test_a_checkpoint_of_another_students_trainable_weights_is_refused_in_one_line(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(lora_args(run, 4, "--stop-at-step", "2")) == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("lora_rank: 16", "lora_rank: 4"))  # as if started at rank 4
    capsys.readouterr()
    assert main(lora_args(run, 4, "--resume")) == 2
    err = capsys.readouterr().err.strip()
    assert "trainable weights of another model" in err and "\n" not in err


@pytest.mark.slow
def test_a_dcm_detail_experts_target_holds_only_its_trainable_weights(tmp_path):
    args = ["distill", "--method", "dcm", "--teacher", str(TEACHER), "--out", str(tmp_path / "dcm"), "--steps", "0",
            "--semantic-steps", "2", "--detail-steps", "2", "--batch-size", "2", "--latent-pool", "4",
            "--sample-every", "0", "--checkpoint-every", "2", "--warmup-steps", "1", "--semantic-minutes", "0",
            "--detail-minutes", "0"]
    assert main(args) == 0
    checkpoint = tmp_path / "dcm" / "stages" / "expert-1-detail" / "checkpoints" / "step-2"
    model, target = load_file(checkpoint / "model.safetensors"), load_file(checkpoint / "target.safetensors")
    own = load_model(TEACHER).denoiser.spec.detail_own_modules  # the expert's own timestep modules
    assert set(model) == set(target)
    assert all(".lora_" in k or any(k.startswith(f"network.{prefix}") for prefix in own) for k in model)
    semantic = load_file(tmp_path / "dcm" / "transformer" / "diffusion_pytorch_model.safetensors")
    assert sum(v.numel() for v in model.values()) < sum(v.numel() for v in semantic.values()) / 4


def test_full_students_keep_a_whole_target_copy():
    config = LCMConfig(teacher=str(TEACHER), latent_pool=4, cpu=True)
    task = LCMTask(dataclasses.replace(config, out="unused"))
    assert task.target_network.network is not None and task.target_network.student is None
