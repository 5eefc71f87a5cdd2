"""The shipped judge on real and corrupted clips, judge training with resume, and `videocm eval`."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videocm.cli import main
from videocm.evaluation import judge as judge_module
from videocm.evaluation.judge import Judge, JudgeConfig, head_accuracy, train_judge
from videocm.evaluation.verdicts import corruption_verdicts
from videocm.data.moving_digits import Geometry


@pytest.fixture(scope="module")
def judge():
    return Judge.load()


@pytest.fixture(scope="module")
def verdicts(judge):
    return {row["corruption"]: row for row in corruption_verdicts(judge, n=240)}


@pytest.mark.slow
def test_shipped_judge_is_accurate_on_real_test_clips(judge):
    accuracy = head_accuracy(judge, "test", 480, seed=123, geometry=Geometry())
    assert min(accuracy["digit"], accuracy["colour"], accuracy["direction"]) >= 0.98, accuracy
    assert judge.info["test_accuracy"]["all"] >= 0.97


@pytest.mark.slow
def test_judge_verdict_on_real_clips(verdicts):
    real = verdicts["real"]
    assert real["fidelity_all"] >= 0.97
    assert real["coherence"] == pytest.approx(1.0)
    assert real["frechet_distance"] < 2 * real["frechet_real_reference"] + 1.0


@pytest.mark.slow
def test_judge_does_not_reward_blur(verdicts):
    real, blur = verdicts["real"], verdicts["blurred (sigma 2)"]
    assert blur["fidelity_digit"] <= 0.3 and blur["fidelity_all"] < real["fidelity_all"] - 0.5
    assert blur["frechet_distance"] > 10 * real["frechet_distance"]
    assert verdicts["blurred (sigma 1)"]["frechet_distance"] > 3 * real["frechet_distance"]


@pytest.mark.slow
def test_judge_sees_no_motion_in_frozen_or_shuffled_clips(verdicts):
    assert verdicts["frozen (one frame repeated)"]["fidelity_direction"] <= 0.05
    assert verdicts["shuffled frames"]["fidelity_direction"] <= 0.15
    # The digit and colour are still there and still recognised.
    assert verdicts["frozen (one frame repeated)"]["fidelity_digit"] >= 0.9


@pytest.mark.slow
def test_judge_reads_the_colour_not_the_caption(verdicts):
    swapped = verdicts["colour-swapped"]
    assert swapped["fidelity_colour"] <= 0.02 and swapped["fidelity_digit"] >= 0.95


@pytest.mark.slow
def test_judge_gives_noise_nothing(verdicts):
    for name in ("pure noise", "smooth noise"):
        assert verdicts[name]["fidelity_all"] <= 0.01
        assert verdicts[name]["frechet_distance"] > 20 * verdicts["real"]["frechet_distance"]
        assert verdicts[name]["coherence"] < 0.6


def test_judge_rejects_other_shapes(judge):
    from videocm.errors import VideoCMError

    with pytest.raises(VideoCMError, match="trained on 8x32x32"):
        judge.run(np.zeros((2, 6, 32, 32, 3), np.uint8))


def test_judge_training_resumes_exactly(tmp_path, monkeypatch):
    base = dict(steps=4, batch_size=4, width=8, feature_dim=16, eval_clips=8, checkpoint_every=2)
    clean = train_judge(JudgeConfig(out=str(tmp_path / "clean"), **base), progress=False)
    assert set(clean["test_accuracy"]) == {"digit", "colour", "direction", "all"}

    real_batch = judge_module.training_batch
    calls = {"n": 0}

    def crashing_batch(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("simulated crash")
        return real_batch(*args, **kwargs)

    monkeypatch.setattr(judge_module, "training_batch", crashing_batch)
    out = tmp_path / "crashed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_judge(JudgeConfig(out=str(out), **base), progress=False)
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 2
    monkeypatch.setattr(judge_module, "training_batch", real_batch)
    train_judge(JudgeConfig(out=str(out), **base), progress=False)
    assert not (out / "checkpoint.pt").exists()
    resumed, uninterrupted = load_file(out / "model.safetensors"), load_file(tmp_path / "clean" / "model.safetensors")
    for key in uninterrupted:
        torch.testing.assert_close(resumed[key], uninterrupted[key], atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_eval_clips_on_exported_real_clips(tmp_path, capsys):
    clips = tmp_path / "real"
    assert main(["data", "export", "--split", "test", "--n", "480", "--seed", "7", "--out", str(clips)]) == 0
    assert main(["eval", "--clips", str(clips), "--json", str(tmp_path / "scores.json")]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    for key in ("fidelity_all", "fidelity_digit", "fidelity_colour", "fidelity_direction", "frechet_distance",
                "coherence", "n"):
        assert key in scores
    assert scores["n"] == 480 and scores["fidelity_all"] >= 0.98 and scores["coherence"] == pytest.approx(1.0)
    assert scores["frechet_distance"] < 1.5 * scores["frechet_real_reference"] + 0.5
    assert "fidelity_all" in capsys.readouterr().out


@pytest.mark.slow
def test_eval_models_compares_generators_and_writes_a_report(tmp_path):
    report = tmp_path / "report"
    code = main(["eval", "--model", "real", "--model", "real-blurred", "--steps", "1,4", "--n", "48",
                 "--teacher-model", "real", "--teacher-steps", "4", "--json", str(tmp_path / "r.json"), "--report",
                 str(report)])
    assert code == 0
    result = json.loads((tmp_path / "r.json").read_text())
    rows = {(r["model"], r["steps"]): r for r in result["rows"]}
    assert set(rows) == {("real", 1), ("real", 4), ("real-blurred", 1), ("real-blurred", 4)}
    assert rows[("real", 1)]["psnr_vs_teacher"] == 100.0 and rows[("real", 1)]["ssim_vs_teacher"] == 1.0
    # the reference row (the teacher at its own steps) has no agreement with itself: no placeholder 100.00
    assert rows[("real", 4)].get("psnr_vs_teacher") is None and rows[("real", 4)].get("ssim_vs_teacher") is None
    blurry, sharper = rows[("real-blurred", 1)], rows[("real-blurred", 4)]
    assert blurry["psnr_vs_teacher"] < sharper["psnr_vs_teacher"] < 100.0
    assert blurry["frechet_distance"] > sharper["frechet_distance"] > rows[("real", 4)]["frechet_distance"] * 0.5
    assert rows[("real", 1)]["fidelity_all"] >= 0.95
    for name in ("report.md", "report.html", "plot.png", "samples.gif"):
        assert (report / name).stat().st_size > 0
    text = (report / "report.md").read_text()
    assert "real-blurred" in text and "samples.gif" in text and "| model |" in text
    assert "generated 16 at a time, after one untimed warm-up clip" in text  # what the cost columns cover
    assert all(row["seconds_warmup"] >= 0 for row in result["rows"])
    reference = next(line for line in text.splitlines() if line.startswith("| real | 4 |"))
    assert "100.00" not in reference and "—" in reference
    from videocm.data import read_video

    grid = read_video(report / "samples.gif")
    assert grid.shape[0] == 8 and grid.shape[1] > grid.shape[2] / 8 * 4  # 5 rows of 8 clips
    # the columns shown cover different digits, and the page opens with the verdict, plot and grid embedded
    digits = [caption.split()[2] for caption in result["prompts_shown"]]
    assert len(set(digits)) == len(digits) == 8
    assert any(line.startswith("4 steps: best real ") for line in result["verdict"])
    assert any("against the teacher" in line for line in result["verdict"])
    page = (report / "report.html").read_text()
    assert page.index("Verdict") < page.index("<table>")
    assert "src='data:image/png;base64," in page and "src='data:image/gif;base64," in page
    assert text.index("## Verdict") < text.index("| model |")


def test_eval_errors_are_one_line(tmp_path, capsys):
    assert main(["eval", "--clips", str(tmp_path)]) == 2
    assert "no prompts.txt" in capsys.readouterr().err
    assert main(["eval", "--model", "real", "--steps", "1,x"]) == 2
    assert "comma-separated" in capsys.readouterr().err
    assert main(["eval", "--model", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_an_image_to_video_model_is_evaluated_from_the_real_clips_first_frames():
    """videocm eval of an image-to-video model: clip i starts from the first frame of real clip i, the one the
    report's real row shows for the same caption; a text-to-video model gets no images."""
    from types import SimpleNamespace

    from videocm.evaluation.evaluate import eval_prompts, generate_with_cost, real_clips_for
    from videocm.data.moving_digits import Geometry

    class Recording:
        name = "i2v"

        def __init__(self, condition):
            self.model = SimpleNamespace(info=SimpleNamespace(image_condition=condition, video_shape=[8, 32, 32]))
            self.images = []

        def generate(self, prompts, seeds, steps, guidance, meter, images=None):
            self.images += [] if images is None else list(images)
            meter.clips += len(prompts)
            return [np.zeros((8, 32, 32, 3), np.uint8) for _ in prompts]

    prompts, seeds = eval_prompts(6)
    i2v = Recording("channels")
    generate_with_cost(i2v, prompts, seeds, 2, None, 4, "x")
    real = real_clips_for(prompts, Geometry(8, 32))
    warmup, *timed = i2v.images  # the untimed warm-up clip is clip 0's
    assert np.array_equal(warmup, real[0][0])
    assert len(timed) == 6 and all(np.array_equal(a, clip[0]) for a, clip in zip(timed, real))
    t2v = Recording(None)
    generate_with_cost(t2v, prompts, seeds, 2, None, 4, "x")
    assert t2v.images == []


def test_cost_columns_leave_out_the_first_calls_warm_up():
    """A source whose first call pays a one-off set-up: the row's seconds per clip are its clips' own, and the
    set-up is reported apart (issue 38: the first model's 1- and 2-step rows showed 15x the 4-step cost)."""
    import time

    from videocm.evaluation.evaluate import eval_prompts, generate_with_cost

    class SlowFirstCall:
        name = "slow-start"
        calls = 0

        def generate(self, prompts, seeds, steps, guidance, meter, images=None):
            with meter.phase("denoise"):
                time.sleep(0.4 if self.calls == 0 else 0.001 * len(prompts))
            self.calls += 1
            meter.clips += len(prompts)
            return [np.zeros((8, 32, 32, 3), np.uint8) for _ in prompts]

    prompts, seeds = eval_prompts(8)
    clips, cost = generate_with_cost(SlowFirstCall(), prompts, seeds, 4, None, 4, "x")
    assert len(clips) == 8
    assert cost["seconds_warmup"] >= 0.4 and cost["seconds_total"] < 0.05, cost
