"""MovingDigits-v1, the built-in text-to-video benchmark (specification: shared/MOVINGDIGITS.md).

A clip is an sklearn digit sprite (8x8, upscaled 2x to 16x16) in one of 6 colours, moving left, right, up or down
in a straight line across a black ``size x size`` canvas for ``frames`` frames, captioned
``"a {colour} {digit} moving {direction}"``. Its structure (control) video is the grey silhouette.
Clip ``i`` of a set with seed ``S`` is drawn from ``numpy.random.default_rng([S, i])``, so any clip can be made
on its own, in any order, on any machine.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import VideoCMError

SPRITE_SIZE = 16
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (1.0, 0.0, 0.0),
    "green": (0.0, 1.0, 0.0),
    "blue": (0.0, 0.0, 1.0),
    "yellow": (1.0, 1.0, 0.0),
    "cyan": (0.0, 1.0, 1.0),
    "magenta": (1.0, 0.0, 1.0),
}
COLOUR_NAMES = tuple(COLOURS)
DIRECTIONS = ("left", "right", "up", "down")
DIGITS = tuple(range(10))
SPLITS = ("train", "test")


def caption_for(digit: int, colour: str, direction: str) -> str:
    return f"a {colour} {digit} moving {direction}"


def all_captions() -> list[tuple[int, str, str]]:
    """The 240 (digit, colour, direction) triples in a fixed order: digit, then colour, then direction."""
    return [(d, c, m) for d in DIGITS for c in COLOUR_NAMES for m in DIRECTIONS]


def parse_caption(caption: str) -> tuple[int, str, str]:
    """Inverse of :func:`caption_for`; raises :class:`VideoCMError` for a caption outside the benchmark."""
    words = caption.strip().split()
    if (
        len(words) != 5 or words[0] != "a" or words[3] != "moving" or words[1] not in COLOURS
        or words[4] not in DIRECTIONS or not words[2].isdigit() or int(words[2]) not in DIGITS
    ):
        raise VideoCMError(
            f"caption {caption!r} is not a MovingDigits caption: expected 'a {{colour}} {{digit}} moving {{direction}}'"
        )
    return int(words[2]), words[1], words[4]


@functools.lru_cache(maxsize=1)
def _all_sprites() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    digits = load_digits()
    sprites = (digits.images / 16.0).repeat(2, axis=1).repeat(2, axis=2).astype(np.float32)
    return sprites, digits.target.astype(np.int64)


def split_indices(split: str) -> np.ndarray:
    """sklearn indices of a split: ``i % 10 == 0`` is test, every other index is train."""
    if split not in SPLITS:
        raise VideoCMError(f"unknown split {split!r}: use 'train' or 'test'")
    indices = np.arange(len(_all_sprites()[1]))
    return indices[indices % 10 == 0] if split == "test" else indices[indices % 10 != 0]


def sprite(index: int) -> tuple[np.ndarray, int]:
    """The 16x16 float sprite in [0, 1] with sklearn index ``index``, and its digit."""
    sprites, labels = _all_sprites()
    return sprites[index], int(labels[index])


@dataclass(frozen=True)
class Geometry:
    """The spec's motion formulas for a ``frames`` x ``size`` clip."""

    frames: int = 8
    size: int = 32

    def __post_init__(self) -> None:
        if self.frames < 2:
            raise VideoCMError(f"frames must be at least 2 (got {self.frames}): a clip needs motion")
        if self.size < SPRITE_SIZE:
            raise VideoCMError(f"size must be at least {SPRITE_SIZE} (got {self.size}) to hold a sprite")
        if self.travel > self.room:
            raise VideoCMError(
                f"a {self.frames}-frame clip moves {self.travel} px but a {self.size} px canvas has room for "
                f"{self.room}: use fewer frames or a larger size"
            )

    @property
    def speed(self) -> int:
        return max(1, (self.size - SPRITE_SIZE) // (self.frames - 1))

    @property
    def room(self) -> int:
        return self.size - SPRITE_SIZE

    @property
    def travel(self) -> int:
        return (self.frames - 1) * self.speed

    def positions(self, direction: str, p0: int, perp: int) -> list[tuple[int, int]]:
        """Top-left (row, column) of the sprite in each frame."""
        along = [
            p0 + t * self.speed if direction in ("right", "down") else self.room - p0 - t * self.speed
            for t in range(self.frames)
        ]
        if direction in ("left", "right"):
            return [(perp, a) for a in along]
        return [(a, perp) for a in along]


@dataclass(frozen=True)
class Clip:
    """One MovingDigits clip: ``video`` uint8 ``(T, H, W, 3)``, ``control`` uint8 ``(T, H, W, 1)``."""

    video: np.ndarray
    control: np.ndarray
    caption: str
    digit: int
    colour: str
    direction: str
    sprite_index: int
    positions: tuple[tuple[int, int], ...]

    def labels(self) -> dict:
        return {
            "caption": self.caption, "digit": self.digit, "colour": self.colour, "direction": self.direction,
            "sprite_index": self.sprite_index, "positions": [list(p) for p in self.positions],
        }


def to_uint8(values: np.ndarray) -> np.ndarray:
    """The spec's storage: ``round(255 * value)``."""
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def render(sprite_index: int, colour: str, direction: str, p0: int, perp: int, geometry: Geometry) -> Clip:
    """Render one clip exactly as the spec places it."""
    if not (0 <= p0 <= geometry.room - geometry.travel and 0 <= perp <= geometry.room):
        raise VideoCMError(
            f"start p0={p0}, perp={perp} leaves the canvas: p0 must be in [0, {geometry.room - geometry.travel}] "
            f"and perp in [0, {geometry.room}] for {geometry.frames} frames of {geometry.size} px"
        )
    if direction not in DIRECTIONS or colour not in COLOURS:
        raise VideoCMError(f"unknown colour {colour!r} or direction {direction!r}: see COLOURS and DIRECTIONS")
    image, digit = sprite(sprite_index)
    positions = geometry.positions(direction, p0, perp)
    grey = np.zeros((geometry.frames, geometry.size, geometry.size), dtype=np.float32)
    for t, (row, col) in enumerate(positions):
        grey[t, row : row + SPRITE_SIZE, col : col + SPRITE_SIZE] = image
    video = grey[..., None] * np.asarray(COLOURS[colour], dtype=np.float32)
    return Clip(
        to_uint8(video), to_uint8(grey[..., None]), caption_for(digit, colour, direction),
        digit, colour, direction, int(sprite_index), tuple(positions),
    )


def draw_clip(
    rng: np.random.Generator,
    split: str = "train",
    geometry: Geometry = Geometry(),
    digit: int | None = None,
    colour: str | None = None,
    direction: str | None = None,
) -> Clip:
    """Draw a clip from the split's sprites; ``digit``, ``colour`` or ``direction`` may be fixed (for a caption)."""
    indices = split_indices(split)
    if digit is not None:
        indices = indices[_all_sprites()[1][indices] == digit]
    sprite_index = int(rng.choice(indices))
    colour = colour if colour is not None else COLOUR_NAMES[int(rng.integers(len(COLOUR_NAMES)))]
    direction = direction if direction is not None else DIRECTIONS[int(rng.integers(len(DIRECTIONS)))]
    p0 = int(rng.integers(0, geometry.room - geometry.travel + 1))
    perp = int(rng.integers(0, geometry.room + 1))
    return render(sprite_index, colour, direction, p0, perp, geometry)


def make_clip(
    index: int, seed: int = 0, split: str = "train", geometry: Geometry = Geometry(), cover_captions: bool = False
) -> Clip:
    """Clip ``index`` of the set ``(split, seed)``; with ``cover_captions`` clip ``i`` has caption ``i % 240``
    (in :func:`all_captions` order), so any 240 consecutive clips cover every caption once."""
    rng = np.random.default_rng([seed, index])
    if cover_captions:
        digit, colour, direction = all_captions()[index % len(all_captions())]
        return draw_clip(rng, split, geometry, digit, colour, direction)
    return draw_clip(rng, split, geometry)


class MovingDigitsDataset(torch.utils.data.Dataset):
    """``n`` clips of a split as tensors for training.

    An item is a dict: ``video`` float32 ``(3, T, H, W)`` in [-1, 1]; ``control`` float32 ``(1, T, H, W)`` in
    [0, 1]; ``caption`` str; ``digit``, ``colour``, ``direction`` int labels (indices into ``DIGITS``,
    ``COLOUR_NAMES``, ``DIRECTIONS``).
    """

    def __init__(
        self, split: str = "train", n: int = 10_000, seed: int = 0, frames: int = 8, size: int = 32,
        cover_captions: bool = False,
    ) -> None:
        split_indices(split)  # validates the split name
        if n < 1:
            raise VideoCMError(f"a MovingDigits set needs at least one clip (n={n})")
        self.split, self.n, self.seed = split, n, seed
        self.geometry = Geometry(frames, size)
        self.cover_captions = cover_captions

    def __len__(self) -> int:
        return self.n

    def clip(self, index: int) -> Clip:
        if not 0 <= index < self.n:
            raise IndexError(index)
        return make_clip(index, self.seed, self.split, self.geometry, self.cover_captions)

    def __getitem__(self, index: int) -> dict:
        clip = self.clip(index)
        video = torch.from_numpy(clip.video).permute(3, 0, 1, 2).float() / 127.5 - 1.0
        control = torch.from_numpy(clip.control).permute(3, 0, 1, 2).float() / 255.0
        return {
            "video": video, "control": control, "caption": clip.caption, "digit": clip.digit,
            "colour": COLOUR_NAMES.index(clip.colour), "direction": DIRECTIONS.index(clip.direction),
        }


def clips_tensor(clips) -> torch.Tensor:
    """uint8 clips' videos ``(T, H, W, 3)`` as one float tensor ``(B, 3, T, H, W)`` in [-1, 1]."""
    return torch.from_numpy(np.stack([c.video for c in clips])).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
