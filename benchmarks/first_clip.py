"""Wall time of `videocm sample` as a user meets it: a fresh process for one clip (time to the first clip, most of
it imports), and a 64-clip run of the 50-step teacher against a 4-step student through the CLI. Also the import
time of the sampling path with and without the deferred diffusers packages (``models/lazy_imports.py``).

    python benchmarks/first_clip.py [--repeats 3 --student models/lcm-flow --decoder tiny]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
IMPORTS = """
import time
began = time.perf_counter()
{defer}
from videocm.models.folder import load_model
from videocm.pipeline import VideoPipeline
model = load_model("{model}")
print(time.perf_counter() - began)
"""


def wall(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--teacher", default="models/teacher-flow")
    parser.add_argument("--student", default="models/lcm-flow")
    parser.add_argument("--decoder", default="full")
    parser.add_argument("--clips", type=int, default=64)
    args = parser.parse_args()
    videocm = str(Path(sys.executable).parent / "videocm")
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for defer, label in (("", "imports + model load, every diffusers class of the package"),
                             ("from videocm.models.lazy_imports import defer_package_inits; defer_package_inits()",
                              "imports + model load, deferred packages (what the videocm command does)")):
            code = IMPORTS.format(defer=defer, model=args.student)
            times = [float(subprocess.run([sys.executable, "-c", code], check=True, env=ENV, capture_output=True,
                                          text=True).stdout.split()[-1]) for _ in range(args.repeats)]
            print(f"{label}: {median(times):.2f} s (median of {args.repeats})")
        one = [wall([videocm, "sample", "--model", args.student, "--prompt", "a red 3 moving left", "--decoder",
                     args.decoder, "--out", str(scratch / f"one-{i}.mp4")]) for i in range(args.repeats)]
        print(f"time to the first clip, {Path(args.student).name} (4 steps, {args.decoder} decoder): "
              f"{median(one):.2f} s wall (median of {args.repeats})")
        prompts = scratch / "prompts.txt"
        captions = ["a red 3 moving left", "a blue 7 moving up", "a green 0 moving right", "a yellow 5 moving down"]
        prompts.write_text("".join(captions[i % 4] + "\n" for i in range(args.clips)))
        teacher = wall([videocm, "sample", "--model", args.teacher, "--prompts", str(prompts), "--format", "mp4",
                        "--out", str(scratch / "teacher")])
        student = wall([videocm, "sample", "--model", args.student, "--prompts", str(prompts), "--format", "mp4",
                        "--decoder", args.decoder, "--out", str(scratch / "student")])
        print(f"{args.clips} clips through the CLI (mp4): teacher 50 steps {teacher:.1f} s, student 4 steps "
              f"({args.decoder} decoder) {student:.1f} s: {teacher / student:.1f}x")


if __name__ == "__main__":
    main()
