"""The README's front door (issue 38): its "Distil your own model" block, as written, takes a new user from a
pipeline folder and a video folder to a sampled and exported student. Here the teacher is a tiny Wan 2.1 pipeline
(the same layout as Wan2.1-T2V-1.3B-Diffusers), the clips MovingDigits videos; the run is shortened to 2 steps."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
QUICK = " --steps 2 --batch-size 2 --sample-every 0"  # a test-sized run: the README's run takes 2000 steps


def readme_block(title: str) -> str:
    text = (REPO / "README.md").read_text()
    section = text.split(f"## {title}\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    assert len(blocks) == 1, section
    return blocks[0]


def test_the_readme_is_a_short_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) < 200
    for title in ("## Set up", "## Distil your own model", "## From Python", "## Methods", "## Results on the test bench",
                  "## Documentation"):
        assert title in text
    for link in re.findall(r"\]\(((?:docs|models)/[^)#]+)\)", text):  # every link to a file of the repository
        assert (REPO / link).exists(), link


@pytest.mark.slow
def test_the_readme_takes_a_new_user_from_a_pipeline_to_an_exported_student(tmp_path):
    from tiny_pipelines import build_tiny_pipeline
    from videocm.data.moving_digits import Geometry, make_clip
    from videocm.data.video_io import write_video

    block = readme_block("Distil your own model")
    settings = dict(re.findall(r"^(TEACHER|VIDEOS|SHAPE)=(.*?)\s+#", block, re.M))
    assert set(settings) == {"TEACHER", "VIDEOS", "SHAPE"}
    commands = [line.split("  #")[0].strip() for line in block.splitlines() if line.startswith("videocm ")]
    assert [c.split()[1] for c in commands] == ["encode", "distill", "sample", "export"]
    videos = tmp_path / "clips"
    lines = []
    for i in range(4):
        clip = make_clip(i, 0, "train", Geometry(12, 32))
        write_video(videos / f"clip{i}.mp4", clip.video, fps=8)
        lines.append({"file": f"clip{i}.mp4", "caption": clip.caption})
    (videos / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "TEACHER": str(build_tiny_pipeline("wan", tmp_path / "Wan2.1-T2V-tiny-Diffusers")), "VIDEOS": str(videos),
           "SHAPE": "--frames 9 --height 32 --width 32 --max-sequence-length 16"}
    for command in commands:
        if command.startswith("videocm distill"):
            command += QUICK
        done = subprocess.run(["bash", "-c", command], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, f"{command}\n{done.stderr[-2000:]}"
    assert (tmp_path / "clip.mp4").stat().st_size > 0
    exported = tmp_path / "runs" / "student-diffusers"
    assert (exported / "model_index.json").is_file() and (exported / "HOW_TO_USE.md").is_file()
