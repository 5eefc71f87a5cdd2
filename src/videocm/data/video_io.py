"""Reading and writing video files (GIF through imageio's Pillow plugin, MP4/WebM through PyAV)."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np

from ..errors import VideoCMError


def upscale(video: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour upscaling of ``(T, H, W, C)`` frames, so 32 px clips are visible."""
    return video if factor == 1 else video.repeat(factor, axis=1).repeat(factor, axis=2)


def tile(videos: list[np.ndarray], columns: int, gap: int = 2) -> np.ndarray:
    """Tile equally shaped ``(T, H, W, C)`` clips into one clip, ``columns`` wide, with a grey gap."""
    if not videos:
        raise ValueError("nothing to tile")
    frames, height, width, channels = videos[0].shape
    rows = -(-len(videos) // columns)
    canvas = np.full(
        (frames, rows * (height + gap) + gap, columns * (width + gap) + gap, channels), 64, dtype=np.uint8
    )
    for i, video in enumerate(videos):
        r, c = divmod(i, columns)
        top, left = gap + r * (height + gap), gap + c * (width + gap)
        canvas[:, top : top + height, left : left + width] = video
    return canvas


def labelled_grid(rows: list[list[np.ndarray]], row_labels: list[str], column_labels: list[str] | list[list[str]],
                  scale: int = 3, gap: int = 2) -> np.ndarray:
    """A grid clip of ``rows`` (each a list of equally shaped uint8 ``(T, H, W, C)`` clips, one per column)
    upscaled ``scale`` times, with each row's label in a band on its left and the columns' labels (e.g. their
    captions, wrapped) in a band above them, drawn into every frame: one header for all rows, or with a list
    of labels per row, a band above each row. Returns ``(T, H', W', 3)`` uint8."""
    from PIL import ImageDraw, ImageFont, Image

    if not rows or not rows[0]:
        raise ValueError("nothing to tile")
    per_row = bool(column_labels) and not isinstance(column_labels[0], str)
    headers = list(column_labels) if per_row else [list(column_labels)]
    columns = max(len(labels) for labels in headers)
    if len(row_labels) != len(rows) or (per_row and len(headers) != len(rows)) or any(
            len(row) > columns for row in rows):
        raise ValueError(f"{len(rows)} rows of up to {max(map(len, rows))} clips but {len(row_labels)} row "
                         f"labels and {columns} column labels")
    font = ImageFont.load_default(size=11)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_height, blank = 13, np.zeros_like(rows[0][0])

    def wrapped(text: str, width: int) -> list[str]:
        lines, line = [], ""
        for word in text.split():
            trial = f"{line} {word}".strip()
            if line and measure.textlength(trial, font=font) > width:
                lines.append(line)
                line = word
            else:
                line = trial
        return lines + [line] if line else lines

    left = gap + int(min(160, max((measure.textlength(word, font=font) for label in row_labels
                                   for word in label.split()), default=0) + 8))

    def block(clips: list[np.ndarray], labels: list[str], header: list[str] | None) -> np.ndarray:
        """Rows of ``clips`` (``columns`` to a row) with their labels on the left and ``header`` above."""
        cells = [upscale(clip if clip.shape[-1] == 3 else clip.repeat(3, axis=-1), scale) for clip in clips]
        body = tile(cells, columns, gap)
        cell = cells[0].shape[2]
        header_lines = [wrapped(label, cell - 4) for label in header or []]
        top = gap + line_height * max(map(len, header_lines), default=0) if header else 0
        band = Image.new("RGB", (left + body.shape[2], top + body.shape[1]), (255, 255, 255))
        draw = ImageDraw.Draw(band)
        for c, lines in enumerate(header_lines):
            for k, line in enumerate(lines):
                draw.text((left + gap + c * (cell + gap) + 2, gap + k * line_height), line, fill=(0, 0, 0),
                          font=font)
        for r, label in enumerate(labels):
            for k, line in enumerate(wrapped(label, left - 6)):
                draw.text((3, top + gap + r * (cell + gap) + k * line_height), line, fill=(0, 0, 0), font=font)
        canvas = np.repeat(np.asarray(band)[None], body.shape[0], axis=0)
        canvas[:, top:, left:] = body
        return canvas

    padded = [row + [blank] * (columns - len(row)) for row in rows]
    if per_row:
        return np.concatenate([block(row, [label], header) for row, label, header in
                               zip(padded, row_labels, headers)], axis=1)
    return block([clip for row in padded for clip in row], row_labels, headers[0])


def write_video(path: Path, video: np.ndarray, fps: float = 4.0, scale: int = 1) -> Path:
    """Write uint8 ``(T, H, W, 3)`` (or ``(T, H, W, 1)``) frames to ``.gif``, ``.mp4`` or ``.webm``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = upscale(np.asarray(video, dtype=np.uint8), scale)
    if frames.shape[-1] == 1:
        frames = frames.repeat(3, axis=-1)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        iio.imwrite(path, frames, extension=".gif", duration=1000.0 / fps, loop=0)
    elif suffix in (".mp4", ".webm"):
        # Codecs want even sizes; pad by edge replication rather than resample.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
        if suffix == ".mp4":
            _write_h264(path, frames, fps)
        else:
            iio.imwrite(path, frames, plugin="pyav", codec="libvpx-vp9", fps=fps)
    else:
        raise VideoCMError(f"cannot write {path}: use a .gif, .mp4 or .webm file name")
    return path


def _write_h264(path: Path, frames: np.ndarray, fps: float) -> None:
    """H.264 through PyAV with settings for short clips: the ``veryfast`` preset at CRF 18 (visually lossless at
    these sizes) and, for frames up to 512x512, one encoder thread (x264's thread pool costs more to start than
    such a clip takes to encode: 5-10x slower per file otherwise, measured here)."""
    import av
    from fractions import Fraction

    height, width = frames.shape[1:3]
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1000))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"preset": "veryfast", "crf": "18"}
        if height * width <= 512 * 512:
            stream.codec_context.thread_count = 1
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())


def read_video(path: Path) -> np.ndarray:
    """Read every frame of a video file as uint8 ``(T, H, W, 3)``."""
    path = Path(path)
    if not path.is_file():
        raise VideoCMError(f"video {path} does not exist")
    try:
        if path.suffix.lower() == ".gif":
            frames = iio.imread(path, index=None, extension=".gif", mode="RGB")
        else:
            frames = iio.imread(path, plugin="pyav", index=None)
    except Exception as error:  # noqa: BLE001 - decoders raise many types; all mean "unreadable"
        raise VideoCMError(f"cannot read video {path}: {type(error).__name__}: {error}") from error
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[0] == 0:
        raise VideoCMError(f"video {path} has no frames")
    return frames[..., :3].astype(np.uint8)


def read_first_frame(path: str | Path) -> np.ndarray:
    """An image-to-video model's first frame as uint8 ``(H, W, 3)``: a .png/.jpg/.webp image, an ``.npy`` of
    ``(H, W, 3)`` or ``(T, H, W, 3)`` (its first frame), or a video's first frame."""
    path = Path(path)
    if not path.is_file():
        raise VideoCMError(f"--image {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            frame = np.load(path, allow_pickle=False)
            frame = frame[0] if frame.ndim == 4 else frame
        elif suffix in (".png", ".jpg", ".jpeg", ".webp", ".bmp"):
            import imageio.v3 as iio

            frame = iio.imread(path)
            frame = frame[..., :3] if frame.ndim == 3 else np.repeat(frame[..., None], 3, axis=-1)
        else:
            frame = read_video(path)[0]
    except VideoCMError:
        raise
    except Exception as error:  # noqa: BLE001 - any decoder failure is the same user error
        raise VideoCMError(f"--image {path} could not be read as an image ({str(error).splitlines()[0]})") from None
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise VideoCMError(f"--image {path} holds {frame.dtype} {tuple(frame.shape)}; give an RGB image (uint8 "
                           f"(H, W, 3))")
    return frame
