"""The user's video folder (scan, captions, clip loading) and the latent cache (round trip, resume, refusals)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from videocm.data.latent_cache import LatentCache, cache_status, write_latent_cache
from videocm.data.video_folder import VideoItem, load_clip, scan_video_folder
from videocm.data.video_io import write_video
from videocm.errors import VideoCMError

FRAMES = 8


def noise_clip(frames: int = 12, height: int = 40, width: int = 56, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, height, width, 3), dtype=np.uint8)


def grey_levels_clip(frames: int = 12, height: int = 40, width: int = 56) -> np.ndarray:
    """Frame ``i`` is one constant grey ``20 * i``, so a frame's mean says which frame it is."""
    return np.stack([np.full((height, width, 3), 20 * i, dtype=np.uint8) for i in range(frames)])


def stripes_clip(frames: int = 1, height: int = 40, width: int = 80) -> np.ndarray:
    """Four vertical stripes of greys 0, 80, 160, 240, each a quarter of the width (one frame: a GIF writer merges
    identical frames)."""
    clip = np.zeros((frames, height, width, 3), dtype=np.uint8)
    for stripe in range(4):
        clip[:, :, stripe * width // 4 : (stripe + 1) * width // 4] = 80 * stripe
    return clip


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory) -> Path:
    """Three usable videos (mp4, webm, gif in a subfolder) and one of each kind of problem."""
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "a.mp4", noise_clip(seed=1))
    write_video(folder / "c.webm", noise_clip(seed=2))
    write_video(folder / "sub" / "b.gif", noise_clip(seed=3))
    write_video(folder / "short.mp4", noise_clip(frames=3))
    write_video(folder / "nocap.mp4", noise_clip(seed=4))
    write_video(folder / ".hidden.mp4", noise_clip(seed=5))
    write_video(folder / ".thumbnails" / "a.gif", noise_clip(frames=2, height=8, width=8))  # ignored: hidden folder
    (folder / "corrupt.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    lines = [{"file": "a.mp4", "caption": "first"}, {"file_name": "sub/b.gif", "text": "second"},
             {"video": "./c.webm", "prompt": "third"}, {"path": "corrupt.mp4", "caption": "broken"},
             {"file": "short.mp4", "caption": "brief"}, {"file": "missing.mp4", "caption": "gone"},
             {"file": ".hidden.mp4", "caption": "hidden"}]
    (folder / "captions.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines) + "\n")
    return folder


def test_scan_sorts_usable_videos_and_reports_each_skip(mixed_folder, capsys):
    report = scan_video_folder(mixed_folder, frames=FRAMES)
    root = mixed_folder.resolve()
    assert [(item.path, item.caption) for item in report.usable] == [
        (root / "a.mp4", "first"), (root / "c.webm", "third"), (root / "sub/b.gif", "second")]
    reasons = dict(report.skipped)
    assert set(reasons) == {"missing.mp4", ".hidden.mp4", "corrupt.mp4", "nocap.mp4", "short.mp4"}
    assert reasons["missing.mp4"] == "listed in captions.jsonl but missing"
    assert reasons[".hidden.mp4"] == "listed in captions.jsonl but hidden"
    assert reasons["nocap.mp4"] == "no caption"
    assert reasons["short.mp4"] == f"too short: 3 frames, need {FRAMES}"
    assert reasons["corrupt.mp4"].startswith("unreadable: ") and "\n" not in reasons["corrupt.mp4"]
    assert str(mixed_folder) not in reasons["corrupt.mp4"]
    assert report.summary() == ("3 usable videos, 5 skipped "
                                "(1 missing, 1 hidden, 1 no caption, 1 unreadable, 1 too short)")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 5 and all(line.startswith("videocm: skipped ") for line in lines)
    assert "videocm: skipped short.mp4: too short: 3 frames, need 8" in lines


def test_scan_without_readability_check_keeps_corrupt_and_short(mixed_folder):
    report = scan_video_folder(mixed_folder, frames=FRAMES, check_readable=False)
    assert [item.path.name for item in report.usable] == ["a.mp4", "c.webm", "corrupt.mp4", "short.mp4", "b.gif"]
    assert report.summary() == "5 usable videos, 3 skipped (1 missing, 1 hidden, 1 no caption)"


def test_scan_frame_threshold_counts_webm_without_metadata(mixed_folder):
    """12-frame videos pass at frames=12 and fail at 13, whatever the container (WebM stores no frame count)."""
    assert len(scan_video_folder(mixed_folder, frames=12).usable) == 3
    with pytest.raises(VideoCMError, match="no usable video"):
        scan_video_folder(mixed_folder, frames=13)


@pytest.mark.parametrize("layout", ["jsonl", "csv", "csv-alternative-columns", "txt"])
def test_each_caption_source(tmp_path, layout):
    for name in ("x.gif", "deep/y.gif", "z.gif"):
        write_video(tmp_path / name, noise_clip(frames=4, height=8, width=8))
    captions = {"x.gif": "a, \"quoted\" caption", "deep/y.gif": "why"}  # z.gif stays uncaptioned
    if layout == "jsonl":
        (tmp_path / "captions.jsonl").write_text(
            "".join(json.dumps({"file": f, "caption": c}) + "\n" for f, c in captions.items()))
    elif layout.startswith("csv"):
        import csv

        columns = ["video", "prompt"] if layout == "csv-alternative-columns" else ["file_name", "caption"]
        with open(tmp_path / "metadata.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns + ["other"])
            writer.writerows([f, c, "1"] for f, c in captions.items())
    else:
        for file, caption in captions.items():
            (tmp_path / file).with_suffix(".txt").write_text(caption + "\n")
    report = scan_video_folder(tmp_path, frames=4)
    assert {item.path.relative_to(tmp_path.resolve()).as_posix(): item.caption for item in report.usable} == captions
    assert [item.path.name for item in report.usable] == ["y.gif", "x.gif"]  # sorted by path: deep/y before x
    assert report.skipped == [("z.gif", "no caption")]


def test_jsonl_wins_over_csv_and_txt(tmp_path):
    write_video(tmp_path / "x.gif", noise_clip(frames=4, height=8, width=8))
    (tmp_path / "captions.jsonl").write_text(json.dumps({"file": "x.gif", "caption": "from jsonl"}) + "\n")
    (tmp_path / "metadata.csv").write_text("file_name,caption\nx.gif,from csv\n")
    (tmp_path / "x.txt").write_text("from txt")
    assert scan_video_folder(tmp_path, frames=4).usable[0].caption == "from jsonl"
    (tmp_path / "captions.jsonl").unlink()
    assert scan_video_folder(tmp_path, frames=4).usable[0].caption == "from csv"


def test_folder_errors_are_one_line_and_say_what_to_do(tmp_path):
    with pytest.raises(VideoCMError, match="does not exist") as missing:
        scan_video_folder(tmp_path / "nowhere", frames=4)
    with pytest.raises(VideoCMError, match="captions.jsonl") as empty:
        scan_video_folder(tmp_path, frames=4)
    write_video(tmp_path / "x.gif", noise_clip(frames=4, height=8, width=8))
    with pytest.raises(VideoCMError, match=r"no usable video \(0 usable videos, 1 skipped \(1 no caption\)\)"):
        scan_video_folder(tmp_path, frames=4)
    (tmp_path / "captions.jsonl").write_text('{"file": "x.gif", "caption": "ok"}\n{not json\n')
    with pytest.raises(VideoCMError, match="line 2 is not JSON") as bad_line:
        scan_video_folder(tmp_path, frames=4)
    (tmp_path / "captions.jsonl").unlink()
    (tmp_path / "metadata.csv").write_text("name,caption\nx.gif,hello\n")
    with pytest.raises(VideoCMError, match="needs file_name") as bad_csv:
        scan_video_folder(tmp_path, frames=4)
    for error in (missing, empty, bad_line, bad_csv):
        assert "\n" not in str(error.value)


@pytest.mark.parametrize(("frame_stride", "expected"), [(0, [0, 4, 7, 11]), (3, [0, 3, 6, 9]), (5, [0, 4, 7, 11])])
def test_load_clip_picks_frames(tmp_path, frame_stride, expected):
    path = write_video(tmp_path / "greys.gif", grey_levels_clip())
    clip = load_clip(path, frames=4, height=40, width=56, frame_stride=frame_stride)
    assert clip.shape == (4, 40, 56, 3) and clip.dtype == np.uint8
    assert (clip[:, 0, 0, 0] // 20).tolist() == expected
    assert all((frame == frame[0, 0, 0]).all() for frame in clip)


def test_load_clip_covers_then_crops_the_centre(tmp_path):
    path = write_video(tmp_path / "stripes.gif", stripes_clip())
    same_scale = load_clip(path, frames=1, height=40, width=40)  # no resize: columns 20..59 of 80
    assert same_scale.shape == (1, 40, 40, 3)
    assert (same_scale[:, :, :20] == 80).all() and (same_scale[:, :, 20:] == 160).all()
    smaller = load_clip(path, frames=1, height=20, width=20)  # halved to 20x40, then columns 10..29
    assert smaller.shape == (1, 20, 20, 3)
    assert (smaller[:, :, 2:8] == 80).all() and (smaller[:, :, 12:18] == 160).all()
    wider = load_clip(path, frames=1, height=10, width=80)  # no upscale needed: rows 15..24 of 40
    assert wider.shape == (1, 10, 80, 3) and (wider[0, 0, ::20, 0] == [0, 80, 160, 240]).all()
    taller = load_clip(path, frames=1, height=80, width=40)  # doubled to 80x160, then columns 60..99
    assert taller.shape == (1, 80, 40, 3)
    assert (taller[:, :, :18] == 80).all() and (taller[:, :, 22:] == 160).all()


def test_load_clip_reads_mp4_and_refuses_bad_videos(mixed_folder):
    clip = load_clip(mixed_folder / "a.mp4", frames=FRAMES, height=24, width=24, frame_stride=1)
    assert clip.shape == (FRAMES, 24, 24, 3) and clip.dtype == np.uint8
    with pytest.raises(VideoCMError, match="too short: 3 frames, need 8"):
        load_clip(mixed_folder / "short.mp4", frames=FRAMES, height=24, width=24)
    with pytest.raises(VideoCMError, match="cannot read video"):
        load_clip(mixed_folder / "corrupt.mp4", frames=FRAMES, height=24, width=24)


# --- latent cache -------------------------------------------------------------------------------------------


class FakeEncoders:
    """Latents: the mean colour of each frame ``(B, T, 3)``; text: character codes ``(B, 6)`` and a mask."""

    def __init__(self, dtype: torch.dtype = torch.float32) -> None:
        self.video_calls = 0
        self.dtype = dtype

    def encode_videos(self, videos: np.ndarray) -> torch.Tensor:
        self.video_calls += 1
        assert videos.dtype == np.uint8 and videos.ndim == 5
        return torch.from_numpy(videos.astype(np.float32)).mean(dim=(2, 3)).to(self.dtype)

    @staticmethod
    def encode_texts(captions: list[str]) -> dict[str, torch.Tensor]:
        codes = torch.tensor([[ord(c) for c in caption.ljust(6)[:6]] for caption in captions], dtype=torch.float32)
        return {"states": codes, "mask": (codes != ord(" ")).long()}


def fake_items(count: int) -> list[VideoItem]:
    return [VideoItem(Path(f"/videos/{i:02d}.mp4"), f"caption {i}") for i in range(count)]


def fake_load(item: VideoItem) -> np.ndarray:
    number = int(item.path.stem)
    return np.random.default_rng(number).integers(0, 256, (3, 4, 5, 3), dtype=np.uint8)


def expected_cache(items: list[VideoItem], load=fake_load) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """What the fake encoders give for each video on its own."""
    latents = torch.cat([FakeEncoders().encode_videos(load(item)[None]) for item in items])
    texts = FakeEncoders.encode_texts([item.caption for item in items])
    return latents, texts


def assert_cache_equals(cache: LatentCache, items: list[VideoItem]) -> None:
    latents, texts = expected_cache(items)
    assert len(cache) == len(items)
    assert cache.captions == [item.caption for item in items]
    assert cache.sources == [str(item.path) for item in items]
    got_latents, got_texts, got_captions = cache.get(range(len(items)))
    assert torch.equal(got_latents, latents) and got_texts.keys() == texts.keys()
    assert all(torch.equal(got_texts[name], texts[name]) for name in texts)
    assert got_captions == cache.captions


def test_cache_round_trip_from_real_videos_skips_the_unreadable(mixed_folder, tmp_path, capsys):
    items = scan_video_folder(mixed_folder, frames=3, check_readable=False).usable  # corrupt.mp4 included
    encoders = FakeEncoders()

    def load(item):
        return load_clip(item.path, frames=3, height=16, width=16)

    out = tmp_path / "cache"
    index = write_latent_cache(out, items, load, encoders.encode_videos, encoders.encode_texts,
                               fingerprint={"vae": "tiny", "frames": 3, "size": (16, 16)}, shard_size=2,
                               batch_size=2, progress=False)
    good = [item for item in items if item.path.name != "corrupt.mp4"]
    assert index["count"] == 4 and index["complete"] and [s["count"] for s in index["shards"]] == [2, 2]
    assert [name for name, _ in index["skipped"]] == [str(mixed_folder.resolve() / "corrupt.mp4")]
    assert "cannot read video" in index["skipped"][0][1]
    assert "videocm: skipped" in capsys.readouterr().err
    assert json.loads((out / "index.json").read_text()) == index and not (out / "progress.json").exists()
    assert sorted(p.name for p in out.iterdir()) == ["index.json", "shard-00000.safetensors", "shard-00001.safetensors"]
    cache = LatentCache(out)
    latents, texts, captions = cache.get([3, 0])
    assert captions == [good[3].caption, good[0].caption]
    expected = torch.cat([encoders.encode_videos(load(good[i])[None]) for i in (3, 0)])
    assert torch.equal(latents, expected) and torch.equal(texts["states"],
                                                          encoders.encode_texts(captions)["states"])
    assert cache.fingerprint == {"vae": "tiny", "frames": 3, "size": [16, 16]}
    assert cache_status(out, {"vae": "tiny", "frames": 3, "size": (16, 16)}) == "complete"


def test_cache_keeps_bfloat16_and_stores_contiguous(tmp_path):
    items = fake_items(3)
    encoders = FakeEncoders(torch.bfloat16)
    write_latent_cache(tmp_path / "c", items, fake_load, encoders.encode_videos, encoders.encode_texts, {"x": 1},
                       shard_size=2, progress=False)
    cache = LatentCache(tmp_path / "c")
    assert cache.latents.dtype == torch.bfloat16 and cache.latents.is_contiguous()
    assert torch.equal(cache.latents, expected_cache(items)[0].to(torch.bfloat16))


def test_killed_run_is_refused_then_resumed_without_reencoding(tmp_path):
    items = fake_items(10)
    fingerprint = {"vae": "tiny", "frames": 3}
    whole, whole_encoders = tmp_path / "whole", FakeEncoders()
    write_latent_cache(whole, items, fake_load, whole_encoders.encode_videos, whole_encoders.encode_texts,
                       fingerprint, shard_size=2, batch_size=4, progress=False)
    assert whole_encoders.video_calls == 5

    def killed_load(item):
        if item is items[4]:
            raise KeyboardInterrupt
        return fake_load(item)

    out, encoders = tmp_path / "resumed", FakeEncoders()
    with pytest.raises(KeyboardInterrupt):
        write_latent_cache(out, items, killed_load, encoders.encode_videos, encoders.encode_texts, fingerprint,
                           shard_size=2, batch_size=4, progress=False)
    assert encoders.video_calls == 2 and not (out / "index.json").exists()
    assert cache_status(out, fingerprint) == "partial"
    with pytest.raises(VideoCMError, match=r"is a half-written latent cache \(4 of 10 videos\): run `videocm "
                                           r"encode` again with the same arguments to finish it"):
        LatentCache(out)
    loaded = []

    def counting_load(item):
        loaded.append(item)
        return fake_load(item)

    encoders.video_calls = 0
    index = write_latent_cache(out, items, counting_load, encoders.encode_videos, encoders.encode_texts,
                               fingerprint, shard_size=2, batch_size=4, progress=False)
    assert encoders.video_calls == 3 and loaded == items[4:]
    assert cache_status(out, fingerprint) == "complete" and not (out / "progress.json").exists()
    assert index == json.loads((whole / "index.json").read_text())
    assert_cache_equals(LatentCache(out), items)
    assert_cache_equals(LatentCache(whole), items)
    encoders.video_calls = 0  # a finished cache is not encoded again
    write_latent_cache(out, items, fake_load, encoders.encode_videos, encoders.encode_texts, fingerprint,
                       shard_size=2, progress=False)
    assert encoders.video_calls == 0


def test_other_fingerprint_or_other_videos_are_refused(tmp_path):
    items, encoders = fake_items(5), FakeEncoders()

    def write(fingerprint, items=items, load=fake_load):
        return write_latent_cache(tmp_path / "c", items, load, encoders.encode_videos, encoders.encode_texts,
                                  fingerprint, shard_size=2, progress=False)

    def killed_load(item):
        if item is items[3]:
            raise KeyboardInterrupt
        return fake_load(item)

    with pytest.raises(KeyboardInterrupt):
        write({"vae": "a"}, load=killed_load)
    assert cache_status(tmp_path / "c", {"vae": "b"}) == "mismatch"
    with pytest.raises(VideoCMError, match=r"different settings \(vae differ\): use another --out or delete"):
        write({"vae": "b"})
    with pytest.raises(VideoCMError, match="different list of videos"):
        write({"vae": "a"}, items=items[:4])
    write({"vae": "a"})
    assert cache_status(tmp_path / "c", {"vae": "a"}) == "complete"
    assert cache_status(tmp_path / "c", {"vae": "a", "frames": 3}) == "mismatch"
    with pytest.raises(VideoCMError, match="use another --out or delete that folder"):
        write({"vae": "a", "frames": 3})
    assert cache_status(tmp_path / "nowhere", {"vae": "a"}) == "missing"


def test_failed_videos_are_skipped_and_recorded(tmp_path, capsys):
    items, encoders = fake_items(6), FakeEncoders()

    def flaky_load(item):
        if item.path.stem in ("01", "04"):
            raise VideoCMError(f"cannot read video {item.path}: broken")
        return fake_load(item)

    index = write_latent_cache(tmp_path / "c", items, flaky_load, encoders.encode_videos, encoders.encode_texts,
                               {"x": 1}, shard_size=2, batch_size=2, progress=False)
    assert index["skipped"] == [[str(items[i].path), f"cannot read video {items[i].path}: broken"] for i in (1, 4)]
    assert LatentCache(tmp_path / "c").captions == [items[i].caption for i in (0, 2, 3, 5)]
    assert_cache_equals(LatentCache(tmp_path / "c"), [items[i] for i in (0, 2, 3, 5)])
    assert capsys.readouterr().err.count("videocm: skipped /videos/") == 2


def test_nothing_encoded_and_not_a_cache_are_errors(tmp_path):
    encoders = FakeEncoders()

    def broken(item):
        raise VideoCMError("broken")

    with pytest.raises(VideoCMError, match=r"no video could be encoded .*2 skipped \(first: /videos/00.mp4: broken\)"):
        write_latent_cache(tmp_path / "c", fake_items(2), broken, encoders.encode_videos, encoders.encode_texts,
                           {"x": 1}, progress=False)
    with pytest.raises(VideoCMError, match="does not exist"):
        LatentCache(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(VideoCMError, match="is not a latent cache"):
        LatentCache(tmp_path / "other")
    with pytest.raises(VideoCMError, match="exists and is not a latent cache"):
        write_latent_cache(tmp_path / "other", fake_items(2), fake_load, encoders.encode_videos,
                           encoders.encode_texts, {"x": 1}, progress=False)
