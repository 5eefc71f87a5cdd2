"""The user's own videos as a dataset: a folder of video files with captions.

Accepted layouts, checked in this order (paths relative to the folder; videos found recursively, hidden files and
folders ignored, items in sorted path order):

- ``captions.jsonl``: one JSON object a line, ``{"file": "clips/a.mp4", "caption": "a red car"}`` (the video may
  also be named by ``file_name``, ``video`` or ``path``, the caption by ``text`` or ``prompt``);
- ``metadata.csv`` (the Hugging Face videofolder convention): columns ``file_name`` (or ``video``, ``path``,
  ``file``) and ``caption`` (or ``text``, ``prompt``);
- otherwise ``NAME.txt`` beside each ``NAME.mp4``, holding its caption.

``scan_video_folder`` says which videos are usable and why the others are not; ``load_clip`` turns one video into a
fixed-size uint8 clip.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..errors import VideoCMError, read_user_text
from .video_io import read_video

VIDEO_EXTENSIONS = (".mp4", ".webm", ".gif", ".mov", ".mkv")
JSONL_FILE = "captions.jsonl"
CSV_FILE = "metadata.csv"
FILE_KEYS = ("file", "file_name", "video", "path")
CAPTION_KEYS = ("caption", "text", "prompt")
CSV_FILE_KEYS = ("file_name", "video", "path", "file")
ACCEPTED_LAYOUTS = (
    f'{JSONL_FILE} ({{"file": "a.mp4", "caption": "..."}} a line), {CSV_FILE} (columns file_name,caption) '
    "or NAME.txt beside each NAME.mp4"
)


@dataclass
class VideoItem:
    """One usable video: its file and its caption."""

    path: Path
    caption: str


@dataclass
class ScanReport:
    """The outcome of scanning a folder: the usable videos and, for each other one, ``(name, reason)``."""

    usable: list[VideoItem]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        """One line, e.g. ``42 usable videos, 3 skipped (1 unreadable, 1 too short, 1 no caption)``."""
        text = f"{len(self.usable)} usable video{'' if len(self.usable) == 1 else 's'}"
        if not self.skipped:
            return text
        kinds = Counter(skip_kind(reason) for _, reason in self.skipped)
        details = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        return f"{text}, {len(self.skipped)} skipped ({details})"


def skip_kind(reason: str) -> str:
    """The category of a skip reason, for the summary: ``too short: 3 frames, need 8`` -> ``too short``."""
    if reason.startswith("listed in ") and " but " in reason:
        return reason.split(" but ", 1)[1]
    return reason.split(":")[0]


def report_skip(name: str, reason: str) -> None:
    """Tell the user, on one stderr line, that a video is left out and why (tqdm-safe, so bars stay intact)."""
    tqdm.write(f"videocm: skipped {name}: {reason}", file=sys.stderr)


def scan_video_folder(folder, frames: int, check_readable: bool = True, progress: bool = False) -> ScanReport:
    """Find the captioned videos in ``folder`` that have at least ``frames`` frames.

    Each video left out is reported on stderr as it is found and listed in ``ScanReport.skipped``. With
    ``check_readable`` every video is opened (container metadata, plus decoding its first frame) and its frames
    counted. Raises ``VideoCMError`` if the folder is missing or holds no usable video.
    """
    folder = Path(folder)
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise VideoCMError(f"video folder {folder} {problem}: pass a folder of .mp4/.webm/.gif videos with captions")
    root = folder.resolve()
    videos = find_videos(root)
    captions, listed_unusable = read_captions(root, videos)
    skipped: list[tuple[str, str]] = []

    def skip(name: str, reason: str) -> None:
        skipped.append((name, reason))
        report_skip(name, reason)

    for name, reason in listed_unusable:
        skip(name, reason)
    candidates = []
    for name in videos:
        caption = captions.get(name)
        if caption is None:
            skip(name, "no caption")
        elif not caption.strip():
            skip(name, "empty caption")
        else:
            candidates.append(VideoItem(root / name, caption))
    usable = []
    for item in tqdm(candidates, desc="checking videos", disable=not (progress and check_readable)):
        name = item.path.relative_to(root).as_posix()
        if check_readable:
            try:
                count = count_frames(item.path)
            except Exception as error:  # noqa: BLE001 - decoders raise many types; all mean "unreadable"
                skip(name, f"unreadable: {short_reason(error, item.path)}")
                continue
            if count < frames:
                skip(name, f"too short: {count} frames, need {frames}")
                continue
        usable.append(item)
    report = ScanReport(usable, skipped)
    if not usable:
        if not videos and not listed_unusable:
            raise VideoCMError(
                f"{folder} holds no video files ({', '.join(VIDEO_EXTENSIONS)}): put your videos there with "
                f"captions in {ACCEPTED_LAYOUTS}"
            )
        raise VideoCMError(
            f"{folder} has no usable video ({report.summary()}): each video needs at least {frames} frames and a "
            f"caption, from {ACCEPTED_LAYOUTS}"
        )
    return report


def find_videos(root: Path) -> list[str]:
    """Relative POSIX names of the video files under ``root``, sorted, hidden files and folders left out."""
    names = []
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if not d.startswith(".")]
        for file in files:
            if not file.startswith(".") and Path(file).suffix.lower() in VIDEO_EXTENSIONS:
                names.append((Path(directory) / file).relative_to(root).as_posix())
    return sorted(names)


def read_captions(root: Path, videos: list[str]) -> tuple[dict[str, str], list[tuple[str, str]]]:
    """The captions by video name, and ``(name, reason)`` for each name the caption file lists but cannot be used."""
    if (root / JSONL_FILE).is_file():
        entries, source = read_jsonl_captions(root / JSONL_FILE), JSONL_FILE
    elif (root / CSV_FILE).is_file():
        entries, source = read_csv_captions(root / CSV_FILE), CSV_FILE
    else:
        captions = {}
        for name in videos:
            text_file = (root / name).with_suffix(".txt")
            if text_file.is_file():
                captions[name] = text_file.read_text(encoding="utf-8", errors="replace").strip()
        return captions, []
    existing = set(videos)
    captions: dict[str, str] = {}
    unusable: dict[str, str] = {}
    for file, caption in entries:
        name = normalise_name(root, file)
        if name in captions or name in unusable:
            continue  # the first caption of a video wins
        if name in existing:
            captions[name] = caption
        elif Path(name).is_absolute() or name.startswith("../"):
            unusable[name] = f"listed in {source} but outside the folder"
        elif not (root / name).is_file():
            unusable[name] = f"listed in {source} but missing"
        elif Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
            unusable[name] = f"listed in {source} but not a video file"
        else:
            unusable[name] = f"listed in {source} but hidden"
    return captions, list(unusable.items())


def normalise_name(root: Path, file: str) -> str:
    """A caption file's path entry as a POSIX name relative to ``root`` (absolute paths inside it allowed)."""
    path = Path(file.strip())
    if path.is_absolute():
        try:
            path = path.resolve().relative_to(root)
        except ValueError:
            return path.as_posix()
    return Path(os.path.normpath(path)).as_posix()


def first_present(entry: dict, keys: tuple[str, ...]):
    return next((entry[key] for key in keys if entry.get(key) not in (None, "")), None)


def read_jsonl_captions(path: Path) -> list[tuple[str, str]]:
    entries = []
    for number, line in enumerate(read_user_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as error:
            raise VideoCMError(f"{path} line {number} is not JSON ({error.msg}): write one "
                               '{"file": "a.mp4", "caption": "..."} object a line') from error
        file = first_present(entry, FILE_KEYS) if isinstance(entry, dict) else None
        if not isinstance(file, str):
            raise VideoCMError(f"{path} line {number} names no video: give it a \"file\" key "
                               f"(or one of {', '.join(FILE_KEYS[1:])})")
        caption = first_present(entry, CAPTION_KEYS)
        entries.append((file, "" if caption is None else str(caption)))
    return entries


def read_csv_captions(path: Path) -> list[tuple[str, str]]:
    with io.StringIO(read_user_text(path), newline="") as handle:  # a spreadsheet's byte-order mark is dropped
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        file_column = next((c for c in CSV_FILE_KEYS if c in columns), None)
        caption_column = next((c for c in CAPTION_KEYS if c in columns), None)
        if file_column is None or caption_column is None:
            raise VideoCMError(f"{path} has columns {columns}: it needs file_name (or video, path, file) and "
                               "caption (or text, prompt)")
        reader.fieldnames = columns
        return [(row[file_column], row[caption_column] or "") for row in reader if row.get(file_column)]


def count_frames(path: Path) -> int:
    """The number of frames of a video file, from container metadata when present, else by decoding.

    Opens the file and decodes its first frame, so an unreadable file raises (any exception type).
    """
    if path.suffix.lower() == ".gif":
        from PIL import Image

        with Image.open(path) as image:  # the same decoder read_video uses for GIFs
            image.load()
            return int(getattr(image, "n_frames", 1))
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise VideoCMError("no video stream")
        stream = container.streams.video[0]
        frames = container.decode(stream)
        next(frames)  # a file whose first frame does not decode is unreadable, whatever its metadata says
        if stream.frames > 0:
            return int(stream.frames)
        return 1 + sum(1 for _ in frames)  # e.g. WebM stores no frame count


def short_reason(error: BaseException, path: Path) -> str:
    """A decoder's error as a short phrase, without the file name it usually repeats."""
    if isinstance(error, StopIteration):
        return "no frames"
    text = getattr(error, "strerror", None) or next(iter(str(error).splitlines()), "")
    for noise in (f": '{path}'", f"'{path}'", str(path)):
        text = text.replace(noise, "")
    text = text.strip(" :") or type(error).__name__
    return text[:100]


def load_clip(path, frames: int, height: int, width: int, frame_stride: int = 0) -> np.ndarray:
    """``frames`` frames of a video, scaled to cover ``height x width`` and centre-cropped: uint8 ``(T, H, W, 3)``.

    ``frame_stride > 0`` takes frames ``0, s, 2s, ...`` from the start (evenly spaced over the clip instead when
    it is too short for that stride); ``frame_stride == 0`` spreads the frames evenly over the whole clip. Raises
    ``VideoCMError`` for an unreadable or too short video. Decodes every frame of the file (via ``read_video``).
    """
    path = Path(path)
    video = read_video(path)
    count = len(video)
    if count < frames:
        raise VideoCMError(f"video {path} is too short: {count} frames, need {frames} (use a longer video or fewer "
                           "frames)")
    video = video[frame_indices(count, frames, frame_stride)]
    return resize_and_crop(video, height, width)


def frame_indices(count: int, frames: int, frame_stride: int = 0) -> np.ndarray:
    """Which ``frames`` of ``count`` frames to take (see ``load_clip``)."""
    if frame_stride > 0 and (frames - 1) * frame_stride < count:
        return np.arange(frames) * frame_stride
    return np.linspace(0, count - 1, frames).round().astype(np.int64)


def resize_and_crop(video: np.ndarray, height: int, width: int) -> np.ndarray:
    """Scale uint8 ``(T, h, w, 3)`` frames, keeping aspect ratio, to cover ``height x width``; crop the centre."""
    _, source_height, source_width, _ = video.shape
    scale = max(height / source_height, width / source_width)
    new_height = max(height, round(source_height * scale))
    new_width = max(width, round(source_width * scale))
    if (new_height, new_width) != (source_height, source_width):
        frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2).float()
        frames = F.interpolate(frames, size=(new_height, new_width), mode="bilinear", antialias=True,
                               align_corners=False)
        video = frames.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    top, left = (new_height - height) // 2, (new_width - width) // 2
    return np.ascontiguousarray(video[:, top : top + height, left : left + width])
