"""Teachers: VAE and both denoiser families train (tiny configs), save as diffusers-format folders, load by path,
resume exactly after a crash, and sample through ``videocm sample``; plus the shipped models' folders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videocm.cli import main
from videocm.data.moving_digits import Geometry, make_clip
from videocm.training import teacher as teacher_module
from videocm.training.teacher import adapt_state_dict, train_teacher
from videocm.training.vae import clips_tensor
from videocm.errors import VideoCMError
from videocm.models.folder import load_model, load_vae

from conftest import machine_threads, tiny_teacher_config

REPO = Path(__file__).resolve().parents[1]
def test_vae_folder_normalises_latents_and_reports_quality(tiny_vae):
    info = json.loads((tiny_vae / "videocm.json").read_text())
    assert info["kind"] == "vae"
    assert np.isfinite(info["reconstruction"]["psnr"]) and info["reconstruction"]["n"] == 8
    assert (tiny_vae / "vae" / "config.json").is_file()
    assert (tiny_vae / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    vae = load_vae(tiny_vae)
    assert vae.latent_shape(8, 32) == (4, 8, 8, 8)  # 4x spatial, no temporal compression
    # the statistics were measured on train clips 0..7 of seed 777: those clips' latents are standardised
    clips = [make_clip(i, 777, "train", Geometry()) for i in range(8)]
    with torch.no_grad():
        latents = vae.encode(clips_tensor(clips))
        decoded = vae.decode(latents)
    torch.testing.assert_close(latents.mean(dim=(0, 2, 3, 4)), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(latents.std(dim=(0, 2, 3, 4)), torch.ones(4), atol=1e-3, rtol=0)
    assert decoded.shape == (8, 3, 8, 32, 32)


@pytest.mark.parametrize("family, subfolder, cls_name", [("wan", "transformer", "WanTransformer3DModel"),
                                                         ("unet3d", "unet", "UNet3DConditionModel")])
def test_teacher_folder_is_diffusers_format_and_self_describing(tiny_teachers, family, subfolder, cls_name):
    import diffusers

    folder = tiny_teachers[family]
    info = json.loads((folder / "videocm.json").read_text())
    for key in ("family", "schedule", "prediction_type", "latent_shape", "text_encoder", "default_guidance"):
        assert key in info
    assert info["family"] == family and info["latent_shape"] == [4, 8, 8, 8]
    if family == "wan":
        assert info["schedule"]["type"] == "flow" and info["prediction_type"] == "flow"
    else:
        assert info["schedule"]["type"] == "vp" and info["prediction_type"] == "v_prediction"
        assert info["schedule"]["zero_terminal_snr"] is True
    assert json.loads((folder / subfolder / "config.json").read_text())["_class_name"] == cls_name
    network = getattr(diffusers, cls_name).from_pretrained(folder / subfolder)  # plain diffusers can load it
    model = load_model(folder)
    for (name, theirs), ours in zip(network.state_dict().items(), model.denoiser.network.state_dict().values()):
        torch.testing.assert_close(theirs, ours, msg=name)
    config = (folder / "config.yaml").read_text()
    assert f"family: {family}" in config and "steps: 4" in config  # resolved config written beside outputs


@pytest.mark.parametrize("family", ["wan", "unet3d"])
def test_teacher_training_resumes_exactly_after_a_crash(tmp_path, tiny_vae, tiny_teachers, monkeypatch, family):
    real_loss = teacher_module.TeacherTask.loss

    def crash_at_step_3(self, model, step, *args):
        if step.number == 3:
            raise RuntimeError("simulated crash")
        return real_loss(self, model, step, *args)

    monkeypatch.setattr(teacher_module.TeacherTask, "loss", crash_at_step_3)
    config = tiny_teacher_config(tmp_path, family, tiny_vae)
    with pytest.raises(RuntimeError, match="simulated crash"), machine_threads():  # as the fixture was trained
        train_teacher(config, progress=False)
    assert not (tmp_path / "videocm.json").exists()
    monkeypatch.setattr(teacher_module.TeacherTask, "loss", real_loss)
    with pytest.raises(VideoCMError, match="pass --resume"):  # nothing already written is overwritten
        train_teacher(config, progress=False)
    with machine_threads():
        summary = train_teacher(replace(config, resume=True), progress=False)
    assert summary["resumed_from_step"] == 2
    subfolder = "transformer" if family == "wan" else "unet"
    resumed = load_file(tmp_path / subfolder / "diffusion_pytorch_model.safetensors")
    clean = load_file(tiny_teachers[family] / subfolder / "diffusion_pytorch_model.safetensors")
    assert resumed.keys() == clean.keys()
    for key in clean:
        torch.testing.assert_close(resumed[key], clean[key], atol=1e-6, rtol=1e-5, msg=key)


def test_wrong_init_from_family_is_one_line(tmp_path, tiny_vae, tiny_teachers):
    config = tiny_teacher_config(tmp_path, "unet3d", tiny_vae, init_from=str(tiny_teachers["wan"]))
    with pytest.raises(VideoCMError, match="is a wan model, not unet3d"):
        teacher_module.TeacherTask(config, "cpu")


def test_temporal_patch_adaptation_keeps_the_frame_mapping():
    from videocm.models.families import get_family

    build = get_family("wan").build_network
    small = dict(wan_layers=1, wan_heads=2, wan_head_dim=12, wan_ffn_dim=32)
    one = build(4, 384, 8, {**small, "wan_patch": [1, 2, 2]})
    two = build(4, 384, 8, {**small, "wan_patch": [2, 2, 2]})
    two.load_state_dict(adapt_state_dict(one.state_dict(), two))
    x = torch.randn(1, 4, 4, 8, 8)
    paired = x.repeat_interleave(2, dim=2)  # every frame twice: a 2-frame token sees one frame's content
    torch.testing.assert_close(two.patch_embedding(paired), one.patch_embedding(x))
    tokens = torch.randn(1, 3, two.proj_out.in_features)
    out_one, out_two = one.proj_out(tokens), two.proj_out(tokens)
    torch.testing.assert_close(out_two[..., :16], out_one)  # frame 0 of each token: the old prediction
    torch.testing.assert_close(out_two[..., 16:], out_one)  # frame 1: the same
    wider = build(4, 384, 8, {**small, "wan_ffn_dim": 64})
    with pytest.raises(VideoCMError, match="same architecture"):
        adapt_state_dict(one.state_dict(), wider)


def assert_same_clip(a: np.ndarray, b: np.ndarray) -> None:
    """Equal up to float rounding between batch shapes: a rare 1-level difference in uint8."""
    difference = np.abs(a.astype(int) - b.astype(int))
    assert difference.max() <= 1 and (difference > 0).mean() < 1e-3


def test_sample_cli_writes_prompt_order_and_is_batch_independent(tmp_path, tiny_teachers):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red 3 moving left\na blue 7 moving up\n\na green 0 moving down\n")
    model = str(tiny_teachers["unet3d"])
    common = ["sample", "--model", model, "--prompts", str(prompts), "--steps", "2", "--seed", "5"]
    assert main(common + ["--batch-size", "1", "--out", str(tmp_path / "one")]) == 0
    assert main(common + ["--batch-size", "3", "--out", str(tmp_path / "three")]) == 0
    names = sorted(p.name for p in (tmp_path / "one").glob("*.npy"))
    assert names == ["0000.npy", "0001.npy", "0002.npy"]
    assert (tmp_path / "one" / "prompts.txt").read_text().split("\n")[:3] == [
        "a red 3 moving left", "a blue 7 moving up", "a green 0 moving down"]
    for name in names:
        a, b = np.load(tmp_path / "one" / name), np.load(tmp_path / "three" / name)
        assert a.shape == (8, 32, 32, 3) and a.dtype == np.uint8
        assert_same_clip(a, b)
    # clip i uses seed S+i: the second clip equals a single-prompt run with seed 6
    assert main(["sample", "--model", model, "--prompt", "a blue 7 moving up", "--steps", "2", "--seed", "6",
                 "--out", str(tmp_path / "single.npy")]) == 0
    assert_same_clip(np.load(tmp_path / "single.npy"), np.load(tmp_path / "one" / "0001.npy"))


@pytest.mark.parametrize("fmt", ["gif", "mp4", "png"])
def test_sample_cli_formats_play_back(tmp_path, tiny_teachers, fmt):
    from videocm.data import read_video

    out = tmp_path / f"clip.{fmt}"
    assert main(["sample", "--model", str(tiny_teachers["wan"]), "--prompt", "a red 3 moving left",
                 "--steps", "1", "--out", str(out)]) == 0
    if fmt == "png":
        import imageio.v3 as iio

        assert iio.imread(out).shape == (128, 8 * 128, 3)
    else:
        assert read_video(out).shape[0] == 8


def test_sample_cli_errors_are_one_line(tmp_path, tiny_teachers, capsys):
    model = str(tiny_teachers["wan"])
    base = ["sample", "--prompt", "a red 3 moving left"]
    cases = [
        (["--model", str(tmp_path / "missing"), "--out", str(tmp_path / "a.npy")], "does not exist"),
        (["--model", str(tmp_path), "--out", str(tmp_path / "a.npy")], "is not a videocm model folder"),
        (["--model", model, "--out", str(tmp_path / "a.avi")], "cannot tell the format"),
        (["--model", model, "--steps", "0", "--out", str(tmp_path / "a.npy")], "--steps must be at least 1"),
        (["--model", model, "--steps", "-3", "--out", str(tmp_path / "a.npy")], "--steps must be at least 1"),
    ]
    for extra, message in cases:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err
    assert main(base + ["--model", model, "--format", "avi", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()  # the config's choices, checked before anything loads
    assert "--format 'avi': use one of mp4, gif, npy, png" in err and "\n" not in err


@pytest.mark.slow
def test_eval_scores_a_teacher_folder(tmp_path, tiny_teachers):
    out = tmp_path / "scores.json"
    assert main(["eval", "--model", str(tiny_teachers["wan"]), "--model", f"{tiny_teachers['unet3d']}@3",
                 "--steps", "1,2", "--n", "4", "--json", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["path"], row["steps"]) for row in rows] == [
        (str(tiny_teachers["wan"]), 1), (str(tiny_teachers["wan"]), 2), (str(tiny_teachers["unet3d"]), 3)]
    assert [row["nfe"] for row in rows] == [2, 4, 6]  # conditional + unconditional per step
    for row in rows:
        # a 4-step tiny teacher draws no steady sprite: its clips score below real ones on both measures
        assert row["n"] == 4 and row["coherence"] < 0.9 and row["frechet_distance"] > row["frechet_real_reference"]


@pytest.mark.parametrize("name, family", [("teacher-flow", "wan"), ("teacher-vp", "unet3d")])
def test_shipped_teachers_are_small_self_contained_folders(name, family):
    folder = REPO / "models" / name
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert size < 10 * 2**20
    info = json.loads((folder / "videocm.json").read_text())
    assert info["family"] == family and info["kind"] == "teacher"
    assert "Command" in (folder / "README.md").read_text()
    model = load_model(folder)
    assert model.latent_shape == (4, 8, 8, 8)


def test_a_damaged_newest_checkpoint_is_skipped_for_the_intact_one(tmp_path, tiny_vae, tiny_teachers, capsys):
    """A truncated file in the newest checkpoint (a crash or a full disk while copying) used to end --resume in a
    safetensors traceback although the checkpoint before it was intact; now each checkpoint's manifest (sizes and
    SHA-256, written last) is checked and the run resumes from the newest intact one, saying which it skipped."""
    from videocm.distill.checkpoints import CHECKPOINTS, COMPLETE, checkpoint_damage

    # the fixture's run (4 steps) with a checkpoint every step: checkpointing does not change the weights
    config = tiny_teacher_config(tmp_path, "wan", tiny_vae, checkpoint_every=1, keep_checkpoints=4)
    with machine_threads():  # as the fixture was trained
        train_teacher(config, progress=False)
    checkpoints = tmp_path / CHECKPOINTS
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-1", "step-2", "step-3", "step-4"]
    manifest = json.loads((checkpoints / "step-4" / COMPLETE).read_text())["files"]
    weights = next(name for name in manifest if name.endswith(".safetensors"))
    assert all(checkpoint_damage(checkpoints / f"step-{i}") is None for i in range(1, 5))
    newest = checkpoints / "step-4" / weights
    newest.write_bytes(newest.read_bytes()[: manifest[weights][0] // 2])  # truncated
    flipped = checkpoints / "step-3" / weights
    data = bytearray(flipped.read_bytes())
    data[-1] ^= 0xFF  # same size, other content
    flipped.write_bytes(bytes(data))
    assert "truncated" in checkpoint_damage(checkpoints / "step-4")
    assert "checksum" in checkpoint_damage(checkpoints / "step-3")
    capsys.readouterr()
    with machine_threads():  # as the fixture was trained
        summary = train_teacher(replace(config, resume=True), progress=False)
    out = capsys.readouterr().out
    assert "skipping checkpoint step-4" in out and "skipping checkpoint step-3" in out
    assert summary["resumed_from_step"] == 2
    resumed = load_file(tmp_path / "transformer" / "diffusion_pytorch_model.safetensors")
    expected = load_file(tiny_teachers["wan"] / "transformer" / "diffusion_pytorch_model.safetensors")
    for key in expected:
        torch.testing.assert_close(resumed[key], expected[key], atol=1e-6, rtol=1e-5, msg=key)
    for name in ("step-1", "step-2", "step-3", "step-4"):  # every checkpoint damaged: a one-line refusal
        for file in (checkpoints / name).rglob("*.safetensors"):
            file.write_bytes(b"")
    with pytest.raises(VideoCMError, match="every checkpoint .* is damaged"):
        train_teacher(replace(config, resume=True), progress=False)
