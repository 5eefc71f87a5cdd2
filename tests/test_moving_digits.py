"""MovingDigits-v1 against its specification (shared/MOVINGDIGITS.md)."""

import re

import numpy as np
import pytest
from sklearn.datasets import load_digits

from videocm.data import (
    COLOURS,
    DIRECTIONS,
    Geometry,
    MovingDigitsDataset,
    all_captions,
    make_clip,
    parse_caption,
    render,
    split_indices,
)
from videocm.errors import VideoCMError

CAPTION = re.compile(r"^a (red|green|blue|yellow|cyan|magenta) ([0-9]) moving (left|right|up|down)$")
DIGITS = load_digits()


def sprite_of(index: int) -> np.ndarray:
    return np.kron(DIGITS.images[index] / 16.0, np.ones((2, 2)))


def test_split_is_index_mod_10_and_disjoint():
    test, train = split_indices("test"), split_indices("train")
    assert len(test) == 180 and len(train) == 1617
    assert set(test.tolist()).isdisjoint(train.tolist())
    assert all(i % 10 == 0 for i in test) and all(i % 10 != 0 for i in train)
    for split in ("train", "test"):
        allowed = set(split_indices(split).tolist())
        assert all(make_clip(i, 7, split).sprite_index in allowed for i in range(60))


def test_colours_and_pixels_follow_the_spec():
    for i in range(40):
        clip = make_clip(i, 1, "train")
        colour = np.asarray(COLOURS[clip.colour])
        grey = clip.control[..., 0].astype(np.float64) / 255.0
        expected = np.rint(grey[..., None] * colour * 255)
        # A pixel is sprite_value * colour: zero channels stay zero, lit channels equal the silhouette.
        assert np.array_equal(clip.video.astype(np.float64), expected)
        row, col = clip.positions[0]
        np.testing.assert_array_equal(clip.control[0, row:row + 16, col:col + 16, 0],
                                      np.rint(sprite_of(clip.sprite_index) * 255).astype(np.uint8))
        assert clip.video.dtype == np.uint8 and clip.video.shape == (8, 32, 32, 3)
        assert clip.control.shape == (8, 32, 32, 1)
        # Background stays 0: everything outside the sprite's box is black.
        mask = np.zeros((32, 32), bool)
        mask[row:row + 16, col:col + 16] = True
        assert clip.video[0][~mask].max() == 0


@pytest.mark.parametrize("frames,size,speed", [(8, 32, 2), (4, 32, 5), (16, 32, 1), (8, 64, 6), (2, 18, 2)])
def test_speed_direction_and_sprite_inside(frames, size, speed):
    geometry = Geometry(frames, size)
    assert geometry.speed == speed == max(1, (size - 16) // (frames - 1))
    seen = set()
    for i in range(80):
        clip = make_clip(i, 3, "test", geometry)
        seen.add(clip.direction)
        rows, cols = zip(*clip.positions)
        assert clip.video.shape == (frames, size, size, 3)
        assert min(rows + cols) >= 0 and max(rows + cols) <= size - 16  # fully inside the canvas
        d_row, d_col = rows[1] - rows[0], cols[1] - cols[0]
        expected = {"left": (0, -speed), "right": (0, speed), "up": (-speed, 0), "down": (speed, 0)}
        assert (d_row, d_col) == expected[clip.direction]
        assert len(set(np.diff(rows))) == 1 and len(set(np.diff(cols))) == 1  # constant speed
    assert seen == set(DIRECTIONS)


def test_start_position_formula():
    geometry = Geometry(8, 32)
    index = int(split_indices("test")[0])
    right = render(index, "red", "right", p0=2, perp=5, geometry=geometry)
    left = render(index, "red", "left", p0=2, perp=5, geometry=geometry)
    up = render(index, "red", "up", p0=0, perp=16, geometry=geometry)
    down = render(index, "red", "down", p0=1, perp=0, geometry=geometry)
    assert right.positions[0] == (5, 2) and right.positions[-1] == (5, 2 + 14)
    assert left.positions[0] == (5, 16 - 2) and left.positions[-1] == (5, 16 - 2 - 14)
    assert up.positions[0] == (16, 16) and up.positions[-1] == (2, 16)
    assert down.positions[0] == (1, 0) and down.positions[-1] == (15, 0)
    with pytest.raises(VideoCMError, match="leaves the canvas"):
        render(index, "red", "right", p0=3, perp=5, geometry=geometry)


def test_caption_grammar_and_labels():
    for i in range(100):
        clip = make_clip(i, 0, "train")
        match = CAPTION.match(clip.caption)
        assert match, clip.caption
        assert match.groups() == (clip.colour, str(clip.digit), clip.direction)
        assert clip.digit == DIGITS.target[clip.sprite_index]
        assert parse_caption(clip.caption) == (clip.digit, clip.colour, clip.direction)
    assert len(set(all_captions())) == 240
    with pytest.raises(VideoCMError, match="not a MovingDigits caption"):
        parse_caption("a purple 3 moving left")


def test_determinism_and_cover_captions():
    a, b = make_clip(5, 11, "train"), make_clip(5, 11, "train")
    assert np.array_equal(a.video, b.video) and a.caption == b.caption
    others = [make_clip(5, s, "train") for s in range(12, 20)]
    assert any(not np.array_equal(a.video, o.video) for o in others)
    covered = [make_clip(i, 0, "test", cover_captions=True) for i in range(240)]
    assert sorted({(c.digit, c.colour, c.direction) for c in covered}) == sorted(all_captions())


def test_distribution_is_uniform_over_colours_digits_and_directions():
    clips = [make_clip(i, 0, "train") for i in range(1200)]
    for values, k in (([c.colour for c in clips], 6), ([c.direction for c in clips], 4)):
        counts = np.unique(values, return_counts=True)[1]
        assert len(counts) == k and counts.min() > 1200 / k * 0.75


def test_dataset_tensors():
    dataset = MovingDigitsDataset("test", n=5, seed=2)
    item = dataset[3]
    clip = dataset.clip(3)
    assert item["video"].shape == (3, 8, 32, 32) and item["control"].shape == (1, 8, 32, 32)
    assert float(item["video"].min()) == -1.0
    np.testing.assert_allclose(((item["video"] + 1) * 127.5).permute(1, 2, 3, 0).numpy(), clip.video, atol=1e-4)
    assert item["caption"] == clip.caption and len(dataset) == 5
    with pytest.raises(IndexError):
        dataset[5]


def test_bad_geometry_and_split_are_clear_errors():
    with pytest.raises(VideoCMError, match="fewer frames or a larger size"):
        Geometry(20, 32)
    with pytest.raises(VideoCMError, match="at least 2"):
        Geometry(1, 32)
    with pytest.raises(VideoCMError, match="unknown split"):
        MovingDigitsDataset("val")
