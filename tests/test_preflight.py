"""``videocm check`` (and ``distill --preflight``): a verdict per line on the teacher's own samples, the clips, a VAE
round trip, guidance and shift, memory and time; a broken teacher is refused in one line before anything runs."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load_file, save_file

from videocm.cli import main, parse_command
from videocm.distill.methods import wants_preflight
from videocm.training.preflight import NOISE_CORRELATION, frame_correlation

REPO = Path(__file__).resolve().parents[1]
TEACHER = REPO / "models" / "teacher-flow"
CHECKS = ("teacher samples", "clips", "guidance and shift", "memory", "time")


@pytest.fixture(scope="module")
def broken_teacher(tmp_path_factory) -> Path:
    """The shipped flow teacher with its output layer zeroed: its samples are the starting noise."""
    folder = tmp_path_factory.mktemp("broken") / "teacher"
    shutil.copytree(TEACHER, folder)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    state = load_file(weights)
    save_file({k: v * 0 if k.startswith("proj_out") else v for k, v in state.items()}, weights,
              metadata={"format": "pt"})
    return folder


def verdicts(text: str) -> dict[str, str]:
    found = {}
    for line in text.splitlines():
        verdict, _, rest = line.partition("  ")
        if verdict.strip() in ("ok", "warn", "fail") and ":" in rest:
            found[rest.split(":")[0].strip()] = verdict.strip()
    return found


def test_frame_correlation_tells_video_from_noise():
    rng = np.random.default_rng(0)
    noise = [rng.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8) for _ in range(2)]
    x = np.linspace(0, 255, 16)
    moving = [np.stack([np.broadcast_to(np.roll(x, t)[None, :, None], (16, 16, 3)) for t in range(8)])
              .astype(np.uint8) for _ in range(2)]
    assert frame_correlation(noise) < NOISE_CORRELATION < 0.5 < frame_correlation(moving)


def test_check_passes_the_shipped_teacher_with_a_verdict_per_line(capsys):
    assert main(["check", "--teacher", str(TEACHER)]) == 0
    out = capsys.readouterr().out
    assert verdicts(out) == {name: "ok" for name in CHECKS}
    assert "none failed" in out


def test_a_teacher_whose_samples_are_noise_is_refused_in_one_line(broken_teacher, tmp_path, capsys):
    assert main(["check", "--teacher", str(broken_teacher)]) == 2
    captured = capsys.readouterr()
    assert verdicts(captured.out)["teacher samples"] == "fail"
    err = captured.err.strip()
    assert "check: teacher samples" in err and "noise, not video" in err and "\n" not in err
    # distill checks first when asked, and writes nothing
    out = tmp_path / "run"
    assert main(["distill", "--teacher", str(broken_teacher), "--out", str(out), "--preflight", "true",
                 "--steps", "2"]) == 2
    assert "noise, not video" in capsys.readouterr().err and not out.exists()


@pytest.mark.slow
def test_a_video_folder_with_a_corrupt_and_a_short_file_is_checked_and_round_tripped(tmp_path, capsys):
    from videocm.data.moving_digits import make_clip
    from videocm.data.video_io import write_video

    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        clip = make_clip(i, split="test")
        write_video(folder / f"clip{i}.mp4", clip.video, fps=8)
        (folder / f"clip{i}.txt").write_text(clip.caption)
    write_video(folder / "short.mp4", make_clip(3, split="test").video[:3], fps=8)
    (folder / "short.txt").write_text("a red 3 moving left")
    (folder / "broken.mp4").write_bytes(b"not a video at all")
    (folder / "broken.txt").write_text("a blue 7 moving up")
    assert main(["check", "--teacher", str(TEACHER), "--data", str(folder)]) == 0
    captured = capsys.readouterr()
    found = verdicts(captured.out)
    assert found["clips"] == "warn" and found["VAE round trip"] == "ok"
    assert "3 usable videos, 2 skipped (1 unreadable, 1 too short)" in captured.out
    assert "skipped short.mp4: too short" in captured.err and "skipped broken.mp4: unreadable" in captured.err


@pytest.mark.slow
def test_check_on_a_tiny_pipeline_gives_every_line(tmp_path, capsys):
    from tiny_pipelines import build_tiny_pipeline

    pipeline = build_tiny_pipeline("wan", tmp_path / "wan")
    code = main(["check", "--teacher", str(pipeline), "--frames", "9", "--height", "32", "--width", "32",
                 "--max-sequence-length", "16"])
    out = capsys.readouterr().out
    assert set(CHECKS) <= set(verdicts(out)) and "scheduler shift" in out
    assert "recipe moving-digits" in out and "MB denoiser" in out and "(ours: " in out  # the recipe, with sources
    # random weights: whatever the teacher's own samples say decides the exit code, one line either way
    assert code == (2 if verdicts(out)["teacher samples"] == "fail" else 0)


def test_distill_checks_first_only_for_a_real_teachers_new_one_process_run(tmp_path):
    _, _, config = parse_command(["distill", "--out", str(tmp_path / "o")])
    assert config.recipe == "moving-digits" and not wants_preflight(config)
    real = dataclasses.replace(config, recipe="wan2.1-t2v-1.3b")
    assert wants_preflight(real) and not wants_preflight(dataclasses.replace(real, resume=True))
    assert not wants_preflight(dataclasses.replace(real, preflight="false"))
    assert wants_preflight(dataclasses.replace(config, preflight="true"))
