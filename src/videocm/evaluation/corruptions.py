"""Corrupted versions of clips, used to train the judge's rejection classes and to check its verdicts.

All take and return uint8 ``(T, H, W, 3)`` arrays.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter

from ..data.moving_digits import COLOUR_NAMES, COLOURS, to_uint8


def blurred(video: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of every frame (spatial only)."""
    return to_uint8(gaussian_filter(video.astype(np.float32) / 255.0, sigma=(0, sigma, sigma, 0)))


def frozen(video: np.ndarray, frame: int | None = None) -> np.ndarray:
    """One frame (the middle one by default) repeated for the whole clip: no motion at all."""
    frame = video.shape[0] // 2 if frame is None else frame
    return np.repeat(video[frame : frame + 1], video.shape[0], axis=0)


def shuffled(video: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Frames in a random order that is neither the original nor its reverse (a reverse is real motion)."""
    frames = video.shape[0]
    identity, reverse = list(range(frames)), list(range(frames))[::-1]
    while True:
        order = rng.permutation(frames).tolist()
        if order not in (identity, reverse) or frames < 3:
            return video[order]


def colour_swapped(video: np.ndarray, colour: str, to: str | None = None) -> np.ndarray:
    """The same digit and motion recoloured from ``colour`` to ``to`` (default: the next colour in the list)."""
    to = COLOUR_NAMES[(COLOUR_NAMES.index(colour) + 1) % len(COLOUR_NAMES)] if to is None else to
    grey = video.astype(np.float32).max(axis=-1, keepdims=True) / 255.0
    return to_uint8(grey * np.asarray(COLOURS[to], dtype=np.float32))


def pure_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Uniform random pixels."""
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def smooth_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """Spatially smooth coloured blobs: noise a generator might plausibly emit."""
    sigma = float(rng.uniform(1.0, 3.0))
    field = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma=(0, sigma, sigma, 0))
    field = field / (field.std() + 1e-6) * 0.25 + 0.1
    return to_uint8(field)

