"""The Python API (issue 38 item 2): the notebook-style session in docs/python-api.md runs as written, and the
API's names are importable from the top level without importing torch."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def doc_cells() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "docs" / "python-api.md").read_text(), re.S)


@pytest.mark.slow
def test_the_documented_session_runs_as_written(tmp_path, monkeypatch, capsys):
    cells = doc_cells()
    assert len(cells) == 4
    (tmp_path / "models").symlink_to(REPO / "models")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for cell in cells:
        exec(compile(cell, "docs/python-api.md", "exec"), namespace)
    out = capsys.readouterr().out
    assert "videocm.Generator('models/lcm-flow', kind='student', default_steps=4" in out
    assert (tmp_path / "outputs" / "api" / "red-3.gif").stat().st_size > 0
    assert (tmp_path / "outputs" / "api" / "exported" / "HOW_TO_USE.md").is_file()
    rows = {(row["model"], row["steps"]) for row in namespace["result"]["rows"]}
    assert rows == {("run", 4), ("lcm-flow", 4)}


def test_top_level_names_are_lazy_and_documented():
    code = ("import sys, videocm; names = videocm.__all__; "
            "assert 'torch' not in sys.modules, 'import videocm imported torch'; "
            "import inspect; missing = [n for n in names if not inspect.getdoc(getattr(videocm, n))]; "
            "assert not missing, missing; print(len(names))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 10


def test_api_errors_are_videocm_errors():
    import videocm

    with pytest.raises(videocm.VideoCMError, match="does not exist"):
        videocm.load(REPO / "models" / "nothere")
    with pytest.raises(videocm.VideoCMError, match="give teacher= and out="):
        videocm.distill()
    with pytest.raises(videocm.VideoCMError, match="--steps must be at least 1"):
        videocm.distill(REPO / "models" / "teacher-flow", "/nonexistent/run", steps=0)
    student = videocm.load(REPO / "models" / "lcm-flow")
    with pytest.raises(videocm.VideoCMError, match="steps must be at least 1"):
        student("a red 3 moving left", steps=0)
