"""The command line, the clip-folder format, video files and the config loader."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest

from videocm.cli import main
from videocm.config import load_config, write_config
from videocm.data import make_clip, read_clip_folder, read_video, tile, write_video
from videocm.data.moving_digits import Geometry
from videocm.errors import VideoCMError


def test_data_export_writes_spec_clips(tmp_path):
    out = tmp_path / "clips"
    assert main(["data", "export", "--split", "test", "--n", "5", "--seed", "3", "--out", str(out),
                 "--frames", "6", "--size", "40"]) == 0
    names = sorted(p.name for p in out.glob("*.npy"))
    assert names == [f"{i:04d}.npy" for i in range(5)]
    prompts = (out / "prompts.txt").read_text().splitlines()
    assert len(prompts) == 5
    for i, prompt in enumerate(prompts):
        video = np.load(out / f"{i:04d}.npy")
        expected = make_clip(i, 3, "test", Geometry(6, 40))
        assert video.dtype == np.uint8 and video.shape == (6, 40, 40, 3)
        assert np.array_equal(video, expected.video) and prompt == expected.caption
        assert np.array_equal(np.load(out / "control" / f"{i:04d}.npy"), expected.control)
    labels = [json.loads(line) for line in (out / "labels.jsonl").read_text().splitlines()]
    assert [label["caption"] for label in labels] == prompts
    videos, read_prompts = read_clip_folder(out)
    assert read_prompts == prompts and len(videos) == 5


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["data", "export", "--out", str(tmp_path / "x"), "--frames", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videocm: error:") and "\n" not in err and "fewer frames" in err
    assert main(["data", "export", "--out", str(tmp_path / "x"), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err


@pytest.mark.slow
def test_console_script_runs_as_a_module(tmp_path):
    result = subprocess.run([sys.executable, "-m", "videocm.cli", "data", "export", "--n", "2", "--out",
                             str(tmp_path / "c")], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "c" / "0001.npy").is_file()


def test_read_clip_folder_reports_missing_and_corrupt_files(tmp_path):
    with pytest.raises(VideoCMError, match="no prompts.txt"):
        read_clip_folder(tmp_path)
    (tmp_path / "prompts.txt").write_text("a red 1 moving up\n")
    with pytest.raises(VideoCMError, match="0000.npy is missing"):
        read_clip_folder(tmp_path)
    (tmp_path / "0000.npy").write_bytes(b"not numpy")
    with pytest.raises(VideoCMError, match="not a readable .npy"):
        read_clip_folder(tmp_path)
    np.save(tmp_path / "0000.npy", np.zeros((8, 32, 32), np.float32))
    with pytest.raises(VideoCMError, match=r"uint8 of shape \(T, H, W, 3\)"):
        read_clip_folder(tmp_path)


@pytest.mark.parametrize("suffix,tolerance", [(".gif", 0.0), (".mp4", 4.0), (".webm", 4.0)])
def test_video_files_round_trip(tmp_path, suffix, tolerance):
    video = make_clip(0, 0, "test").video
    path = write_video(tmp_path / f"clip{suffix}", video, scale=4)
    back = read_video(path)
    assert back.shape == (8, 128, 128, 3)
    expected = video.repeat(4, axis=1).repeat(4, axis=2).astype(np.float64)
    assert np.abs(back.astype(np.float64) - expected).mean() <= tolerance


def test_unreadable_video_and_bad_suffix(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(VideoCMError, match="cannot read video"):
        read_video(broken)
    with pytest.raises(VideoCMError, match=r"\.gif, \.mp4 or \.webm"):
        write_video(tmp_path / "clip.avi", make_clip(0).video)


def test_tile_places_clips_in_a_grid():
    a, b = np.full((2, 4, 4, 3), 10, np.uint8), np.full((2, 4, 4, 3), 200, np.uint8)
    grid = tile([a, b, a], columns=2, gap=1)
    assert grid.shape == (2, 11, 11, 3)
    assert (grid[:, 1:5, 1:5] == 10).all() and (grid[:, 1:5, 6:10] == 200).all() and (grid[:, 6:10, 1:5] == 10).all()


@dataclasses.dataclass
class ExampleConfig:
    lr: float = 1e-4
    steps: int = 10
    name: str = "run"
    use_ema: bool = True
    steps_list: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    teacher: str | None = None


def test_config_yaml_overrides_and_resolved_copy(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("lr: 0.001\nsteps: 20\nuse_ema: false\n")
    config = load_config(ExampleConfig, path, ["--steps", "30", "--steps-list=1,4,8", "--teacher", "models/t"])
    assert config == ExampleConfig(lr=0.001, steps=30, use_ema=False, steps_list=[1, 4, 8], teacher="models/t")
    written = write_config(config, tmp_path / "run")
    assert load_config(ExampleConfig, written) == config
    with pytest.raises(VideoCMError, match="unknown key"):
        load_config(ExampleConfig, None, ["--learning-rate", "1"])
    with pytest.raises(VideoCMError, match="expects int"):
        load_config(ExampleConfig, None, ["--steps", "ten"])
    with pytest.raises(VideoCMError, match="does not exist"):
        load_config(ExampleConfig, tmp_path / "missing.yaml")
    with pytest.raises(VideoCMError, match="expects int, got 'true'"):
        load_config(ExampleConfig, None, ["--steps"])  # a bare flag is a boolean switch, not a number
    assert load_config(ExampleConfig, path, ["--use-ema", "--steps", "3"]) == ExampleConfig(lr=0.001, steps=3)
