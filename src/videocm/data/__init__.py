"""Data: MovingDigits-v1, clip folders, video files."""

from .clip_folder import export_moving_digits, read_clip_folder, write_clip_folder
from .moving_digits import (
    COLOUR_NAMES,
    COLOURS,
    DIRECTIONS,
    Clip,
    Geometry,
    MovingDigitsDataset,
    all_captions,
    caption_for,
    draw_clip,
    make_clip,
    parse_caption,
    render,
    split_indices,
)
from .video_io import read_video, tile, write_video

__all__ = [
    "COLOURS", "COLOUR_NAMES", "DIRECTIONS", "Clip", "Geometry", "MovingDigitsDataset", "all_captions",
    "caption_for", "draw_clip", "export_moving_digits", "make_clip", "parse_caption", "read_clip_folder",
    "read_video", "render", "split_indices", "tile", "write_clip_folder", "write_video",
]
