"""A plain (not editable) install, used from another directory as a new user would: the judge comes with the
package, and the shipped teachers are found through --models-dir or not at all, with a one-line error."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(args: list[str], cwd: Path, site: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("VIDEOCM_JUDGE", "VIDEOCM_MODELS")}
    env.update(PYTHONPATH=str(site), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_installed_package_carries_the_judge_and_finds_models_through_models_dir(tmp_path):
    source = tmp_path / "source"  # built from a copy, so the build leaves nothing in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "src", source / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                            "--target", str(site), str(source)], capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr
    assert (site / "videocm" / "evaluation" / "judge_model" / "model.safetensors").is_file()

    user = tmp_path / "user"
    user.mkdir()
    judged = run(["-c", "import videocm; from videocm.evaluation.judge import Judge, default_judge_folder; "
                  "Judge.load(); print(videocm.__file__); print(default_judge_folder())"], user, site)
    assert judged.returncode == 0, judged.stderr
    module_file, judge_folder = judged.stdout.split()
    assert module_file.startswith(str(site)) and judge_folder.startswith(str(site))

    prompt = ["-m", "videocm.cli", "sample", "--prompt", "a red 3 moving left", "--steps", "2"]
    missing = run([*prompt, "--out", "x.mp4"], user, site)
    err = missing.stderr.strip()
    assert missing.returncode == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("videocm: error:") and "--model DIR" in err and "--models-dir DIR" in err
    assert str(user / "models" / "teacher-flow") in err and not (user / "x.mp4").exists()

    made = run([*prompt, "--out", "x.mp4", "--models-dir", str(REPO / "models")], user, site)
    assert made.returncode == 0, made.stderr
    assert (user / "x.mp4").stat().st_size > 0
