"""Metrics that do not need the judge: Fréchet distance, coherence, teacher agreement, cost, prompts."""

import json
import time

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from videocm.data import all_captions, make_clip
from videocm.errors import VideoCMError
from videocm.evaluation import corruptions
from videocm.evaluation.cost import CostMeter, PeakMemory
from videocm.evaluation.evaluate import eval_prompts
from videocm.evaluation.clip_sources import RealClipSource, load_clip_source
from videocm.evaluation.metrics import (
    PSNR_CAP,
    clip_coherence,
    clip_psnr,
    clip_ssim,
    fidelity,
    frechet_distance,
    teacher_agreement,
)


def test_frechet_distance_matches_closed_form_and_grows_with_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((4000, 3))
    b = rng.standard_normal((4000, 3)) * 2.0 + np.array([1.0, 0.0, 0.0])
    # For N(0, I) vs N(m, 4I): |m|^2 + tr(I + 4I - 2*2I) = 1 + 3 = 4.
    assert frechet_distance(a, b) == pytest.approx(4.0, rel=0.08)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    near = frechet_distance(a, rng.standard_normal((4000, 3)) + 0.1)
    far = frechet_distance(a, rng.standard_normal((4000, 3)) + 1.0)
    assert near < 0.1 < 2.5 < far
    with pytest.raises(ValueError):
        frechet_distance(a[:1], b)


def test_coherence_is_one_for_real_clips_and_lower_when_the_shape_changes():
    rng = np.random.default_rng(1)
    real = [make_clip(i, 0, "test").video for i in range(20)]
    assert all(clip_coherence(v) == pytest.approx(1.0, abs=1e-9) for v in real)
    # Moving real clips stay at 1.0 even though the sprite moves: alignment undoes the motion.
    noise = [corruptions.pure_noise(real[0].shape, rng) for _ in range(5)]
    assert max(clip_coherence(v) for v in noise) < 0.5
    # A clip whose digit changes halfway (a morph) loses coherence.
    other = make_clip(1, 0, "test").video
    morph = np.concatenate([real[0][:4], other[4:]])
    assert clip_coherence(morph) < 0.9
    flicker = real[0].copy()
    flicker[::2] = 0
    assert clip_coherence(flicker) < 0.7
    assert clip_coherence(np.zeros_like(real[0])) == 0.0


def test_psnr_and_ssim_agree_with_definitions():
    a = make_clip(0, 0, "test").video
    assert clip_psnr(a, a) == PSNR_CAP and clip_ssim(a, a) == pytest.approx(1.0)
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert clip_psnr(b, a) == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-6)
    expected = np.mean([structural_similarity(a[t], b[t], channel_axis=-1, data_range=255) for t in range(8)])
    assert clip_ssim(b, a) == pytest.approx(expected)
    blurred = corruptions.blurred(a, 1.5)
    agreement = teacher_agreement([b, blurred], [a, a])
    # the mean over the two pairs, each computed here with numpy and skimage
    mse_blurred = np.mean((a.astype(float) - blurred.astype(float)) ** 2)
    assert agreement["psnr"] == pytest.approx(np.mean([10 * np.log10(255**2 / m) for m in (mse, mse_blurred)]))
    ssim_blurred = np.mean([structural_similarity(a[t], blurred[t], channel_axis=-1, data_range=255)
                            for t in range(8)])
    assert agreement["ssim"] == pytest.approx((expected + ssim_blurred) / 2)
    with pytest.raises(ValueError):
        teacher_agreement([a], [a, a])


def test_fidelity_counts_each_head_and_all():
    prompts = ["a red 3 moving left", "a blue 7 moving up", "a green 0 moving down", "a cyan 9 moving right"]
    predictions = {
        "digit": np.array([3, 7, 1, 9]),
        "colour": np.array([0, 2, 1, 6]),  # 6 = none
        "direction": np.array([0, 2, 3, 1]),
    }
    assert fidelity(predictions, prompts) == {"digit": 0.75, "colour": 0.75, "direction": 1.0, "all": 0.5}
    with pytest.raises(VideoCMError):
        fidelity(predictions, ["a red cat"] * 4)


def test_eval_prompts_cover_captions_evenly():
    prompts, seeds = eval_prompts(480, seed=3)
    assert len(set(prompts)) == 240 and all(prompts.count(p) == 2 for p in set(prompts))
    assert set(prompts) == {f"a {colour} {digit} moving {direction}" for digit, colour, direction in all_captions()}
    assert len(set(seeds)) == 480
    few, _ = eval_prompts(24)
    assert len(set(few)) == 24
    digits = {p.split()[2] for p in few}
    assert digits == {str(d) for d in range(10)}  # spread over the caption list, not its first 24
    assert eval_prompts(24, 1)[0] == few and eval_prompts(24, 1)[1] != eval_prompts(24, 0)[1]


def test_stand_in_generator_is_deterministic_and_follows_captions():
    generator = RealClipSource()
    meter = CostMeter()
    prompts = ["a red 3 moving left", "a blue 7 moving up"]
    first = generator.generate(prompts, [5, 6], 4, None, meter)
    again = generator.generate(prompts, [5, 6], 4, None, meter)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert first[0][..., 1:].max() == 0 and first[0][..., 0].max() > 0  # red only
    blurry = RealClipSource(blur_at_one_step=2.0)
    one, eight = blurry.generate(prompts, [5, 6], 1, None, meter), blurry.generate(prompts, [5, 6], 8, None, meter)
    assert clip_psnr(one[0], first[0]) < clip_psnr(eight[0], first[0])
    assert meter.summary()["nfe"] == 0 and meter.clips == 8


def test_cost_meter_counts_guided_passes_and_phases():
    meter = CostMeter()
    network = meter.counted(lambda x, t: x * 0)
    with meter.phase("denoise"):
        for _ in range(4):
            network(torch.zeros(6, 1), None)  # 3 clips, conditional + unconditional rows
        time.sleep(0.02)
    meter.clips = 3
    summary = meter.summary()
    assert summary["nfe"] == 8
    assert summary["seconds_denoise"] >= 0.02 / 3 and summary["seconds_text"] == 0


def test_peak_memory_sees_an_allocation():
    with PeakMemory() as memory:
        block = np.ones(200 * 2**20 // 8)
        time.sleep(0.05)
        del block
    assert memory.above_start_mb > 100


def test_load_generator_errors(tmp_path):
    with pytest.raises(VideoCMError, match="no such folder"):
        load_clip_source(str(tmp_path / "missing"))
    with pytest.raises(VideoCMError, match="no videocm.json"):
        load_clip_source(str(tmp_path))
    (tmp_path / "videocm.json").write_text(json.dumps({"family": "imaginary"}))
    with pytest.raises(VideoCMError, match="names kind None"):
        load_clip_source(str(tmp_path))
    (tmp_path / "videocm.json").write_text(json.dumps({"kind": "teacher", "family": "imaginary"}))
    with pytest.raises(VideoCMError, match="unknown model family 'imaginary' \\(the \"family\" of .*videocm.json\\)"):
        load_clip_source(str(tmp_path))
    (tmp_path / "videocm.json").write_text(json.dumps({"kind": "vae", "family": "cogvideox-vae"}))
    with pytest.raises(VideoCMError, match="holds a vae model, which does not generate clips"):
        load_clip_source(str(tmp_path))
    (tmp_path / "videocm.json").write_text("{broken")
    with pytest.raises(VideoCMError, match="not valid JSON"):
        load_clip_source(str(tmp_path))
    assert load_clip_source("real").name == "real"
