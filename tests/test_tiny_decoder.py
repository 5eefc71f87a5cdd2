"""The tiny decoder: its shapes against the VAE's (with and without temporal compression), distillation and the
folder it writes (a stock diffusers AutoencoderTiny), `--decoder` in the pipeline, sample and eval, the refusals,
and sample's overlapped writing."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch

from tiny_pipelines import build_tiny_pipeline
from videocm.cli import main
from videocm.data.clip_folder import ClipWriter
from videocm.training.decoder import DecoderConfig, distill_decoder
from videocm.errors import VideoCMError
from videocm.evaluation.monitor import JudgeMonitor
from videocm.models.folder import load_model, load_vae
from videocm.models.tiny_decoder import (TinyDecoder, build_tiny_decoder, load_tiny_decoder, resolve_decoder,
                                         vae_fingerprint)
from videocm.models.vae import to_uint8_frames
from videocm.pipeline import VideoPipeline


def fast_config(out, **changes) -> DecoderConfig:
    values = dict(out=str(out), steps=6, batch_size=2, eval_clips=4, warmup_steps=1, checkpoint_every=3,
                  channels=8, lr=5e-3)
    values.update(changes)
    return DecoderConfig(**values)


@pytest.fixture(scope="module")
def decoder_of_tiny_vae(tiny_vae, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny-decoder")
    summary = distill_decoder(fast_config(out, vae=str(tiny_vae)), progress=False, monitor=JudgeMonitor())
    return out, summary


def decoder_of_another_vae(decoder, out):
    """A copy of ``decoder`` that says it was distilled from another VAE."""
    shutil.copytree(decoder, out)
    info = json.loads((out / "videocm.json").read_text())
    info["vae_fingerprint"] = "0" * 16
    (out / "videocm.json").write_text(json.dumps(info))
    return out


def test_the_decoder_matches_the_vae_shape_with_and_without_temporal_compression(tiny_vae, tmp_path):
    vae = load_vae(tiny_vae)
    latents = torch.randn(2, vae.latent_channels, 8, 8, 8)
    decoder = TinyDecoder(build_tiny_decoder(vae.latent_channels, vae.spatial_factor, 1, 8))
    assert decoder.decode(latents).shape == vae.decode(latents).shape == (2, 3, 8, 32, 32)
    wan = load_model(build_tiny_pipeline("wan", tmp_path / "wan"))
    assert (wan.vae.spatial_factor, wan.vae.temporal_factor) == (8, 4)
    latents = torch.randn(1, wan.vae.latent_channels, 3, 4, 4)
    causal = TinyDecoder(build_tiny_decoder(wan.vae.latent_channels, 8, 4, 8), temporal_factor=4)
    assert causal.decode(latents).shape == wan.vae.decode(latents).shape == (1, 3, 9, 32, 32)
    decoded = causal.decode(latents)
    assert decoded.abs().max() <= 1.0
    with pytest.raises(VideoCMError, match="powers of 2"):
        build_tiny_decoder(4, 6)
    with pytest.raises(VideoCMError, match="levels"):
        build_tiny_decoder(4, 4, blocks=(1, 1))


def test_distilling_writes_a_stock_autoencoder_tiny_folder_that_learned(decoder_of_tiny_vae, tiny_vae):
    from diffusers import AutoencoderTiny

    out, summary = decoder_of_tiny_vae
    info = json.loads((out / "videocm.json").read_text())
    assert info["kind"] == "decoder" and info["family"] == "autoencoder-tiny"
    assert info["vae_fingerprint"] == vae_fingerprint(load_vae(tiny_vae)) and info["temporal_factor"] == 1
    quality = summary["quality"]
    assert quality["n"] == 4 and 0 < quality["psnr_vs_full_decoder"] < 100
    assert quality["seconds_per_clip_tiny"] > 0 and "fidelity_all" in quality["tiny"]
    assert (out / "decoded.gif").is_file()
    stock = AutoencoderTiny.from_pretrained(out / "decoder")  # diffusers loads it without videocm
    decoder, _ = load_tiny_decoder(out)
    latents = torch.randn(1, 4, 8, 8, 8)
    frames = latents.transpose(1, 2).flatten(0, 1)
    assert torch.allclose(stock.decode(frames).sample.clamp(-1, 1), decoder.decode(latents)[0].transpose(0, 1),
                          atol=1e-6)
    # it learned: the loss fell, and the trained decoder is nearer the full one than a fresh one
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert log and log[-1]["step"] == 6
    vae = load_vae(tiny_vae)
    fresh = TinyDecoder(build_tiny_decoder(4, 4, 1, 8))
    target = vae.decode(latents)
    assert (decoder.decode(latents) - target).abs().mean() < (fresh.decode(latents) - target).abs().mean()


@pytest.mark.slow  # 15-30 s with the other worker busy: make test runs it, not test-fast
def test_distilling_resumes_and_refuses_bad_input(tiny_vae, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["distill-decoder", "--vae", str(tiny_vae), "--out", str(out), "--steps", "6", "--batch-size", "2",
                 "--eval-clips", "2", "--channels", "8", "--checkpoint-every", "3", "--stop-at-step", "3"]) == 0
    assert (out / "checkpoints" / "step-3").is_dir()
    assert main(["distill-decoder", "--vae", str(tiny_vae), "--out", str(out), "--steps", "6", "--batch-size", "2",
                 "--eval-clips", "2", "--channels", "8", "--checkpoint-every", "3", "--resume"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["resumed_from_step"] == 3
    capsys.readouterr()
    for argv, message in (
            (["--vae", str(tiny_vae), "--teacher", str(tiny_vae)], "not both"),
            (["--vae", str(tmp_path)], "not a videocm model folder"),
            (["--vae", str(tiny_vae), "--blocks", "1,1"], "levels")):
        assert main(["distill-decoder", "--out", str(tmp_path / "bad"), "--steps", "2", *argv]) == 2
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error and "Traceback" not in error


def test_the_pipeline_decodes_with_the_tiny_decoder(decoder_of_tiny_vae, tiny_teachers):
    out, _ = decoder_of_tiny_vae
    pipeline = VideoPipeline.from_folder(tiny_teachers["wan"]).use_decoder(str(out))
    assert isinstance(pipeline.decoder, TinyDecoder) and pipeline.decoder_name == str(out)
    seen = []
    decode = pipeline.decoder.decode
    pipeline.decoder.decode = lambda latents: seen.append(decode(latents)) or seen[-1]
    clips = pipeline.generate(["a red 3 moving left"], [0], steps=2)
    assert len(seen) == 1 and np.array_equal(clips[0], to_uint8_frames(seen[0])[0])
    full = VideoPipeline.from_folder(tiny_teachers["wan"]).generate(["a red 3 moving left"], [0], steps=2)
    assert not np.array_equal(full[0], clips[0])  # the VAE decoded those


@pytest.mark.slow  # 15-30 s with the other worker busy: make test runs it, not test-fast
def test_decoder_tiny_is_found_beside_the_model_and_refused_for_another_vae(decoder_of_tiny_vae, tiny_teachers,
                                                                            tmp_path, capsys):
    out, _ = decoder_of_tiny_vae
    models = tmp_path / "models"
    teacher = models / "teacher"
    shutil.copytree(tiny_teachers["wan"], teacher)
    with pytest.raises(VideoCMError, match="no tiny decoder found"):
        resolve_decoder("tiny", load_model(teacher), models_dir=str(tmp_path / "none"))
    shutil.copytree(out, models / "tiny-decoder")
    assert isinstance(resolve_decoder("tiny", load_model(teacher), models_dir=str(tmp_path / "none")), TinyDecoder)
    assert resolve_decoder("full", load_model(teacher)) is not None
    # sample and eval take it; the clip differs from the full decoder's
    assert main(["sample", "--model", str(teacher), "--prompt", "a red 3 moving left", "--steps", "2",
                 "--decoder", "tiny", "--out", str(tmp_path / "tiny.npy")]) == 0
    assert main(["sample", "--model", str(teacher), "--prompt", "a red 3 moving left", "--steps", "2",
                 "--out", str(tmp_path / "full.npy")]) == 0
    assert not np.array_equal(np.load(tmp_path / "tiny.npy"), np.load(tmp_path / "full.npy"))
    assert main(["eval", "--model", f"{teacher}+tiny@2", "--model", f"{teacher}@2", "--steps", "2", "--n", "4",
                 "--json", str(tmp_path / "eval.json")]) == 0
    rows = json.loads((tmp_path / "eval.json").read_text())["rows"]
    assert [(row["model"], row["decoder"]) for row in rows] == [("teacher+tiny", "tiny"), ("teacher", "full")]
    # a decoder distilled from another VAE is refused in one line
    other = decoder_of_another_vae(out, tmp_path / "other")
    capsys.readouterr()
    assert main(["sample", "--model", str(teacher), "--prompt", "a red 3 moving left", "--decoder", str(other),
                 "--out", str(tmp_path / "x.npy")]) == 2
    error = capsys.readouterr().err.strip()
    assert "distilled from another VAE" in error and "\n" not in error
    assert main(["sample", "--model", str(teacher), "--prompt", "a red 3 moving left", "--decoder", str(teacher),
                 "--out", str(tmp_path / "y.npy")]) == 2
    assert "not a tiny decoder" in capsys.readouterr().err


def test_the_clip_writer_writes_on_a_thread_while_the_caller_goes_on(tmp_path, monkeypatch):
    import videocm.data.clip_folder as clip_folder

    release, started = threading.Event(), threading.Event()
    real = clip_folder.write_clip

    def slow(path, clip, fmt):
        started.set()
        assert release.wait(10)
        return real(path, clip, fmt)

    monkeypatch.setattr(clip_folder, "write_clip", slow)
    clip = np.zeros((2, 8, 8, 3), np.uint8)
    with ClipWriter(tmp_path / "clips", "gif", single=False, overlap=True) as writer:
        writer.add([clip, clip])  # returns while the first file is still being written
        assert started.wait(10) and not (tmp_path / "clips" / "0000.gif").exists()
        writer.add([clip])
        release.set()
    assert sorted(p.name for p in (tmp_path / "clips").iterdir()) == ["0000.gif", "0001.gif", "0002.gif"]
    monkeypatch.setattr(clip_folder, "write_clip", real)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OSError):  # a failed write is raised at the end, not lost on the thread
        with ClipWriter(tmp_path / "file" / "under", "gif", single=False, overlap=True) as writer:
            writer.add([clip])
    with ClipWriter(tmp_path / "now", "gif", single=False, overlap=False) as writer:
        writer.add([clip])
        assert (tmp_path / "now" / "0000.gif").is_file()  # without overlap, written before add returns


def test_export_adds_the_tiny_decoder_as_a_separate_component(decoder_of_tiny_vae, tiny_teachers, tmp_path, capsys):
    from diffusers import AutoencoderTiny

    from videocm.distill.lcm import LCMConfig, distill

    out, _ = decoder_of_tiny_vae
    student = tmp_path / "student"
    distill(LCMConfig(teacher=str(tiny_teachers["wan"]), out=str(student), steps=2, batch_size=2, latent_pool=8,
                      sample_every=0, checkpoint_every=2, warmup_steps=1), progress=False)
    export = tmp_path / "export"
    assert main(["export", "--model", str(student), "--out", str(export), "--decoder", str(out)]) == 0
    stock = AutoencoderTiny.from_pretrained(export / "tiny_decoder")
    decoder, _ = load_tiny_decoder(out)
    latents = torch.randn(1, 4, 8, 8, 8)
    assert torch.allclose(stock.decode(latents.transpose(1, 2).flatten(0, 1)).sample.clamp(-1, 1),
                          decoder.decode(latents)[0].transpose(0, 1), atol=1e-6)
    guide = (export / "HOW_TO_USE.md").read_text()
    assert "## Faster decoding: `tiny_decoder/`" in guide and "AutoencoderTiny.from_pretrained" in guide
    assert guide.count("```python") <= 1  # the guide's one code block stays the pipeline's
    # a decoder of another VAE is refused before anything is written
    other = decoder_of_another_vae(out, tmp_path / "other")
    capsys.readouterr()
    assert main(["export", "--model", str(student), "--out", str(tmp_path / "refused"), "--decoder", str(other)]) == 2
    assert "distilled from another VAE" in capsys.readouterr().err and not (tmp_path / "refused").exists()
