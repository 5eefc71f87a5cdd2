"""Control branch: zero-initialised joining, plug-and-play on students and experts, folders, training, sampling,
control files and the IoU metric."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from videocm.cli import main
from videocm.data.moving_digits import make_clip
from videocm.training.control import ControlConfig, ControlConsistencyTask, ControlTask, train_control
from videocm.errors import VideoCMError
from videocm.evaluation.control import control_eval_set, control_scores, frame_iou
from videocm.models.control import (control_tensor, encode_control, load_control, new_control_branch, read_control,
                                    save_control, with_control)
from videocm.models.denoisers import ControlledDenoiser, DenoiserAdapter
from videocm.models.families import get_family
from videocm.models.info import ModelInfo
from videocm.models.experts import tied_expert
from videocm.models.folder import load_model
from videocm.pipeline import VideoPipeline

FAMILIES = ["wan", "unet3d"]


def tiny_denoiser(family: str, seed: int = 0, **changes) -> DenoiserAdapter:
    torch.manual_seed(seed)
    options = (dict(wan_layers=3, wan_heads=2, wan_head_dim=8, wan_ffn_dim=32, wan_freq_dim=16) if family == "wan"
               else dict(unet_channels=[16, 16], unet_head_dim=8, unet_norm_groups=8))
    return DenoiserAdapter(family, get_family(family).build_network(4, 24, 8, {**options, **changes})).eval()


def inputs(batch: int = 2, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 4, 4, 8, 8, generator=g), torch.full((batch,), 400.0),
            torch.randn(batch, 5, 24, generator=g), torch.randn(batch, 4, 4, 8, 8, generator=g))


def perturb(branch, scale: float = 0.05, seed: int = 3) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in branch.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("family", FAMILIES)
def test_new_branch_changes_nothing_and_a_trained_one_steers(family):
    denoiser = tiny_denoiser(family)
    x, t, text, control = inputs()
    with torch.no_grad():
        plain = denoiser(x, t, text)
        branch = new_control_branch(family, denoiser.network, 2, 4).eval()
        (controlled,) = with_control([denoiser], branch)
        assert torch.equal(controlled(x, t, text, control=control), plain)  # zero-initialised projections
        perturb(branch)
        steered = controlled(x, t, text, control=control)
        other = controlled(x, t, text, control=control.flip(0))
        off = ControlledDenoiser(denoiser, branch, scale=0.0)(x, t, text, control=control)
        assert torch.equal(denoiser(x, t, text), plain)  # the wrapped denoiser itself is unchanged
        assert torch.equal(controlled(x, t, text), plain)  # without control latents: the plain denoiser
    assert (steered - plain).abs().max() > 1e-3
    assert (steered - other).abs().max() > 1e-4  # the output depends on which control is given
    assert torch.allclose(off, plain, atol=1e-6)  # scale 0 switches the control off


@pytest.mark.parametrize("family", FAMILIES)
def test_branch_starts_as_a_copy_of_the_early_network(family):
    denoiser = tiny_denoiser(family)
    branch = new_control_branch(family, denoiser.network, 2, 4)
    network = denoiser.network.state_dict()
    if family == "wan":
        for name, value in branch.blocks[1].state_dict().items():
            if not name.startswith(("proj_in", "proj_out")):
                assert torch.equal(value, network[f"blocks.1.{name}"])
        assert torch.equal(branch.condition_embedder.time_embedder.linear_1.weight,
                           network["condition_embedder.time_embedder.linear_1.weight"])
    else:
        for name, value in branch.state_dict().items():
            if name in network:
                assert torch.equal(value, network[name])
        assert any(name.startswith("down_blocks.") for name in branch.state_dict())
        assert not any(name.startswith("up_blocks.") for name in branch.state_dict())


@pytest.mark.parametrize("family", FAMILIES)
def test_plug_and_play_on_a_student_and_a_lora_expert(family):
    """The branch reads only (x, t, text, control): joined to a fine-tuned copy or a LoRA expert it adds the same
    residuals, and the network's own weights decide the rest."""
    teacher = tiny_denoiser(family)
    branch = new_control_branch(family, teacher.network, 2, 4).eval()
    perturb(branch)
    student = copy.deepcopy(teacher)
    with torch.no_grad():
        for p in student.network.parameters():
            p.add_(0.01)
    expert = tied_expert(student, rank=2, alpha=2.0).eval()
    x, t, text, control = inputs()
    with torch.no_grad():
        residuals = branch(x, t, text, control)
        outputs = [d(x, t, text, control=control) for d in with_control([teacher, student, expert], branch)]
        plain = [d(x, t, text) for d in (teacher, student, expert)]
    assert all((o - p).abs().max() > 1e-3 for o, p in zip(outputs, plain))
    assert torch.allclose(outputs[1], outputs[2], atol=1e-5)  # a LoRA at init equals its base
    again = branch(x, t, text, control)
    flat = lambda r: torch.cat([v.flatten() for v in (r if family == "wan" else [*r[0], r[1]])])  # noqa: E731
    assert torch.equal(flat(residuals), flat(again))


@pytest.mark.parametrize("family", FAMILIES)
def test_control_folder_round_trips_and_refuses_other_networks(family, tmp_path, capsys):
    denoiser = tiny_denoiser(family)
    branch = new_control_branch(family, denoiser.network, 2, 4).eval()
    perturb(branch)
    save_control(tmp_path / "c", branch, ModelInfo(kind="control", teacher="t", video_shape=[4, 32, 32]))
    loaded, info = load_control(tmp_path / "c")
    assert info.kind == "control" and info.family == family
    x, t, text, control = inputs()
    with torch.no_grad():
        first = with_control([denoiser], branch)[0](x, t, text, control=control)
        assert torch.allclose(with_control([denoiser], loaded)[0](x, t, text, control=control), first, atol=1e-6)
    other = tiny_denoiser(family, **({"wan_ffn_dim": 48} if family == "wan" else {"unet_head_dim": 4}))
    with pytest.raises(VideoCMError, match="does not fit"):
        with_control([other], loaded)
    wrong = tiny_denoiser("unet3d" if family == "wan" else "wan")
    with pytest.raises(VideoCMError, match="trained for a"):
        with_control([wrong], loaded)
    assert main(["sample", "--model", "nowhere", "--prompt", "a red 1 moving up", "--out", str(tmp_path / "a.gif"),
                 "--control-model", str(tmp_path), "--control", "x.npy"]) == 2
    assert main(["eval-control", "--control-model", str(tmp_path), "--model", "m"]) == 2
    assert "not a videocm control model" in capsys.readouterr().err


def test_frame_iou_and_control_scores():
    clip = make_clip(0, 0, "test")
    assert np.all(frame_iou(clip.video, clip.control) == 1.0)
    empty = np.zeros_like(clip.video)
    assert np.all(frame_iou(empty, clip.control) == 0.0)
    shifted = np.roll(clip.video, 3, axis=2)  # three pixels right: partial overlap
    iou = frame_iou(shifted, clip.control)
    assert np.all((iou > 0.05) & (iou < 0.95))
    prompts, controls, seeds, real = control_eval_set(6)
    assert len(set(prompts)) == 6 and len(set(seeds)) == 6
    scores = control_scores(real, controls, prompts)
    assert scores["iou"] == 1.0 and scores["iou_worst_frame"] == 1.0 and scores["iou_mismatched"] < 0.6
    assert len(scores["iou_per_frame"]) == real[0].shape[0]


def test_read_control_checks_its_input(tmp_path):
    clip = make_clip(1, 0, "test")
    np.save(tmp_path / "ok.npy", clip.control)
    assert np.array_equal(read_control(tmp_path / "ok.npy", (8, 32, 32)), clip.control)
    np.save(tmp_path / "float.npy", clip.control.astype(np.float32))
    with pytest.raises(VideoCMError, match="must be uint8"):
        read_control(tmp_path / "float.npy")
    with pytest.raises(VideoCMError, match="this model makes 8x64x64"):
        read_control(tmp_path / "ok.npy", (8, 64, 64))
    from videocm.data.video_io import write_video

    write_video(tmp_path / "sil.gif", np.repeat(clip.control, 3, axis=-1))
    read = read_control(tmp_path / "sil.gif", (8, 32, 32))
    assert read.shape == (8, 32, 32, 1) and np.abs(read.astype(int) - clip.control.astype(int)).mean() < 8
    (tmp_path / "bad.mp4").write_bytes(b"not a video")
    with pytest.raises(VideoCMError, match="could not be read"):
        read_control(tmp_path / "bad.mp4")


@pytest.mark.parametrize("family", ["wan", pytest.param("unet3d", marks=pytest.mark.slow)])
def test_train_control_learns_only_the_branch_and_samples_with_teacher_and_student(
        family, tiny_teachers, tmp_path):
    teacher_path = tiny_teachers[family]
    before = load_model(teacher_path).denoiser.network.state_dict()
    config = ControlConfig(out=str(tmp_path / "control"), teacher=str(teacher_path), steps=3, batch_size=2,
                           warmup_steps=1, checkpoint_every=2, sample_every=0, control_blocks=1, lr=1e-2,
                           ema_decay=0.0)
    task = ControlTask(config, "cpu")
    assert not any(p.requires_grad for p in task.teacher.denoiser.network.parameters())
    summary = train_control(config, progress=False)
    assert summary["trainable_parameters"] == summary["parameters"] > 0
    branch, info = load_control(tmp_path / "control")
    assert info.teacher == str(teacher_path) and info.latent_shape
    # the branch moved off its zero start, the teacher did not move at all
    assert any(v.abs().sum() > 0 for k, v in branch.state_dict().items() if "proj_out" in k or "projection" in k)
    after = load_model(teacher_path).denoiser.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    # sampling with the control through the CLI, teacher and a student copy folder
    clip = make_clip(2, 0, "test", task.geometry)
    np.save(tmp_path / "control.npy", clip.control)
    out = tmp_path / "clip.npy"
    assert main(["sample", "--model", str(teacher_path), "--prompt", clip.caption, "--steps", "2", "--out",
                 str(out), "--control-model", str(tmp_path / "control"), "--control",
                 str(tmp_path / "control.npy")]) == 0
    controlled = np.load(out)
    assert controlled.shape == clip.video.shape and controlled.dtype == np.uint8
    assert main(["sample", "--model", str(teacher_path), "--prompt", clip.caption, "--steps", "2", "--out",
                 str(out), "--control-model", str(tmp_path / "control"), "--control",
                 str(tmp_path / "control.npy"), "--control-scale", "0", "--overwrite"]) == 0
    uncontrolled_by_scale = np.load(out)
    assert main(["sample", "--model", str(teacher_path), "--prompt", clip.caption, "--steps", "2", "--out",
                 str(out), "--overwrite"]) == 0
    assert np.array_equal(np.load(out), uncontrolled_by_scale)
    assert not np.array_equal(controlled, uncontrolled_by_scale)


def test_pipeline_control_errors(tiny_teachers):
    pipeline = VideoPipeline(load_model(tiny_teachers["wan"]))
    control = make_clip(0, 0, "test").control
    with pytest.raises(VideoCMError, match="without a control model"):
        pipeline.generate(["a red 1 moving up"], [0], 2, controls=[control])
    branch = new_control_branch("wan", pipeline.model.denoiser.network, 1, pipeline.model.vae.latent_channels)
    pipeline.use_control(branch)
    with pytest.raises(VideoCMError, match="give one per prompt"):
        pipeline.generate(["a red 1 moving up", "a red 2 moving up"], [0, 1], 2, controls=[control])
    latents = encode_control(pipeline.model.vae, control_tensor([control]))
    assert latents.shape[1:] == tuple(pipeline.model.latent_shape)


def test_train_control_refuses_students_and_other_data(tiny_teachers, tmp_path, capsys):
    code = main(["train-control", "--teacher", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert code == 2 and "does not exist" in capsys.readouterr().err


def test_fine_tuning_a_branch_for_a_student_trains_only_the_branch(tiny_teachers, tmp_path, capsys):
    from videocm.distill.lcm import LCMConfig, distill

    teacher = tiny_teachers["wan"]
    student = tmp_path / "student"
    distill(LCMConfig(teacher=str(teacher), out=str(student), steps=2, batch_size=2, latent_pool=8,
                      sample_every=0, checkpoint_every=2, warmup_steps=1), progress=False)
    base = ControlConfig(out=str(tmp_path / "control"), teacher=str(teacher), steps=2, batch_size=2,
                         warmup_steps=1, checkpoint_every=2, sample_every=0, control_blocks=1, lr=1e-2)
    train_control(base, progress=False)
    code = main(["train-control", "--teacher", str(teacher), "--student", str(student), "--out",
                 str(tmp_path / "x")])
    assert code == 2 and "--init-control" in capsys.readouterr().err
    tuned_config = dataclasses.replace(base, out=str(tmp_path / "tuned"), student=str(student),
                                init_control=str(tmp_path / "control"), steps=3)
    task = ControlConsistencyTask(tuned_config, "cpu")
    before = {k: v.clone() for k, v in task.student.denoiser.network.state_dict().items()}
    train_control(tuned_config, progress=False)
    original, _ = load_control(tmp_path / "control")
    tuned, info = load_control(tmp_path / "tuned")
    assert info.fine_tuned_for == str(student)
    assert any(not torch.equal(a, b) for a, b in zip(original.state_dict().values(), tuned.state_dict().values()))
    after = load_model(student).denoiser.network.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


@pytest.mark.parametrize("family", ["flow", "vp"])
@pytest.mark.slow
def test_shipped_control_branch_steers_the_shipped_student_unchanged(family):
    """Plug and play on the shipped models: the branch trained on the teacher makes the LCM student follow
    held-out silhouettes at 2 steps; without it the student only places a digit where the caption suggests."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    pipeline = VideoPipeline(load_model(root / "models" / f"lcm-{family}"))
    prompts, controls, seeds, _ = control_eval_set(8, seed=7)
    free = control_scores(pipeline.generate(prompts, seeds, 2), controls, prompts)
    branch, info = load_control(root / "models" / f"control-{family}")
    assert info.teacher == f"models/teacher-{family}"
    pipeline.use_control(branch)
    steered = control_scores(pipeline.generate(prompts, seeds, 2, controls=controls), controls, prompts)
    assert steered["iou"] > 0.65 > 0.45 > free["iou"]
    assert steered["iou_mismatched"] < 0.25
