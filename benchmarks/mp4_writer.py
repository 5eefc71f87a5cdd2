"""Seconds to write one 8-frame MovingDigits clip (enlarged 4x to 128x128, as ``videocm sample`` writes it) as
mp4: imageio's PyAV plugin with its defaults (what videocm used before) against videocm's writer (x264
``veryfast``, CRF 18, one encoder thread for small frames).

    python benchmarks/mp4_writer.py [--clips 48]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import imageio.v3 as iio

from videocm.data.moving_digits import make_clip
from videocm.data.video_io import upscale, write_video


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clips", type=int, default=48)
    args = parser.parse_args()
    clips = [make_clip(i, 0, "test").video for i in range(args.clips)]
    writers = {
        "imageio pyav plugin, defaults": lambda path, clip: iio.imwrite(path, upscale(clip, 4), plugin="pyav",
                                                                       codec="libx264", fps=4),
        "videocm write_video": lambda path, clip: write_video(path, clip, scale=4),
    }
    with tempfile.TemporaryDirectory() as folder:
        for name, write in writers.items():
            write(Path(folder) / "warm.mp4", clips[0])
            seconds = []
            for i, clip in enumerate(clips):
                began = time.perf_counter()
                write(Path(folder) / f"{i}.mp4", clip)
                seconds.append(time.perf_counter() - began)
            print(f"{name:32s} median {1000 * statistics.median(seconds):6.1f} ms/clip, "
                  f"mean {1000 * statistics.mean(seconds):6.1f} ms/clip")


if __name__ == "__main__":
    main()
