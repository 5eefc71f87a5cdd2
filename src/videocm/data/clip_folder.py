"""The clip-folder exchange format: ``DIR/0000.npy ...`` (uint8 ``(T, H, W, 3)``) and ``DIR/prompts.txt``
(one caption a line, same order). ``videocm data export`` writes it; ``videocm eval --clips`` reads it, so any
generator's output can be judged. Optional extras written by export: ``DIR/control/0000.npy`` (the structure
video, uint8 ``(T, H, W, 1)``) and ``DIR/labels.jsonl`` (digit, colour, direction, sprite index, positions).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from ..errors import VideoCMError, read_user_text
from .moving_digits import Geometry, make_clip
from .video_io import write_video

PROMPTS_FILE = "prompts.txt"


def clip_name(index: int) -> str:
    return f"{index:04d}.npy"


def write_clip_folder(out: Path, videos: list[np.ndarray], prompts: list[str]) -> None:
    """Write clips and their prompts; ``prompts.txt`` goes last, so a folder with it is complete."""
    if len(videos) != len(prompts):
        raise ValueError(f"{len(videos)} videos but {len(prompts)} prompts")
    out.mkdir(parents=True, exist_ok=True)
    for i, video in enumerate(videos):
        check_video_array(video, f"clip {i}")
        np.save(out / clip_name(i), video)
    (out / PROMPTS_FILE).write_text("".join(p.replace("\n", " ") + "\n" for p in prompts))


def write_clip(path: Path, clip: np.ndarray, fmt: str) -> Path:
    """One uint8 clip ``(T, H, W, 3)`` as ``path`` with the suffix of ``fmt`` (mp4, gif, npy, or png: the frames
    side by side); returns the path written."""
    path = path.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        np.save(path, clip)
    elif fmt == "png":
        import imageio.v3 as iio

        iio.imwrite(path, np.concatenate(list(clip.repeat(4, 1).repeat(4, 2)), axis=1))  # frames side by side
    else:
        write_video(path, clip, scale=4 if clip.shape[1] < 128 else 1)  # small clips enlarged to be seen
    return path


def check_video_array(video: np.ndarray, name: str) -> None:
    if video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        raise VideoCMError(f"{name} must be uint8 of shape (T, H, W, 3), got {video.dtype} {tuple(video.shape)}")


def read_clip_folder(folder: Path) -> tuple[list[np.ndarray], list[str]]:
    """Read a clip folder back: the clips in order and their prompts."""
    folder = Path(folder)
    prompts_path = folder / PROMPTS_FILE
    if not prompts_path.is_file():
        raise VideoCMError(f"{folder} has no {PROMPTS_FILE}: a clip folder holds 0000.npy ... and {PROMPTS_FILE}")
    prompts = read_user_text(prompts_path).splitlines()
    clips = sorted(p.name for p in folder.glob("[0-9][0-9][0-9][0-9].npy"))
    if len(clips) > len(prompts):
        raise VideoCMError(f"{folder} holds {len(clips)} clips but {PROMPTS_FILE} lists {len(prompts)} prompts; "
                           f"give one prompt a line for each clip 0000.npy ... (the others would not be scored)")
    videos = []
    for i in range(len(prompts)):
        path = folder / clip_name(i)
        if not path.is_file():
            raise VideoCMError(f"{path} is missing: {PROMPTS_FILE} lists {len(prompts)} prompts")
        try:
            video = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise VideoCMError(f"{path} is not a readable .npy file ({error}); re-export it") from error
        check_video_array(video, str(path))
        videos.append(video)
    return videos, prompts


def export_moving_digits(
    out: Path, split: str = "test", n: int = 240, seed: int = 0, frames: int = 8, size: int = 32,
    cover_captions: bool = False, progress: bool = True,
) -> list[str]:
    """Render ``n`` MovingDigits clips into a clip folder, with controls and labels; returns the prompts."""
    geometry = Geometry(frames, size)
    clips = [make_clip(i, seed, split, geometry, cover_captions) for i in tqdm(range(n), desc="rendering",
                                                                               disable=not progress)]
    control_dir = Path(out) / "control"
    control_dir.mkdir(parents=True, exist_ok=True)
    for i, clip in enumerate(clips):
        np.save(control_dir / clip_name(i), clip.control)
    with open(Path(out) / "labels.jsonl", "w") as handle:
        for clip in clips:
            handle.write(json.dumps(clip.labels()) + "\n")
    prompts = [clip.caption for clip in clips]
    write_clip_folder(Path(out), [clip.video for clip in clips], prompts)
    return prompts


def spare_core() -> bool:
    """Whether a core is left over by torch's compute threads (a writer thread then costs the compute nothing;
    on a machine whose every core torch uses, it slows torch's threads more than it saves)."""
    import os

    import torch

    return (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) > \
        torch.get_num_threads()


class ClipWriter:
    """Writes each batch of clips, with ``overlap`` on one background thread while the caller generates the next
    (``with``: waits for every file and re-raises a failed write); ``overlap=None`` overlaps when a core is
    spare (:func:`spare_core`). ``single``: one clip to the file ``out``; ``npy`` keeps the clips for one clip
    folder written at the end; other formats write ``out/NNNN.<fmt>`` as clips arrive."""

    def __init__(self, out: Path, fmt: str, single: bool, overlap: bool | None = None) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.out, self.fmt, self.single = out, fmt, single
        self.overlap = spare_core() if overlap is None else overlap
        self.clips: list[np.ndarray] = []
        self.written: list[Path] = []
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="videocm-writer")
        self._pending = []

    def add(self, clips: list[np.ndarray]) -> None:
        first = len(self.clips)
        self.clips += clips
        if self.fmt == "npy" and not self.single:
            return
        if not self.overlap:
            self._write(first, clips)
            return
        self._pending.append(self._pool.submit(self._write, first, clips))

    def _write(self, first: int, clips: list[np.ndarray]) -> None:
        for i, clip in enumerate(clips, first):
            self.written.append(write_clip(self.out if self.single else self.out / f"{i:04d}", clip, self.fmt))

    def __enter__(self) -> "ClipWriter":
        return self

    def __exit__(self, *exc) -> None:
        try:
            for future in self._pending:
                future.result()  # a failed write raises here, after the clips generated so far are written
        finally:
            self._pool.shutdown(wait=True)
