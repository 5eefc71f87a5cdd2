"""Bootstrap intervals and paired comparisons (evaluation/statistics.py), the flicker figure, and
`videocm eval --clip-scores` with `videocm compare`."""

import json

import numpy as np
import pytest

from videocm.cli import main
from videocm.data.moving_digits import Geometry
from videocm.evaluation.evaluate import eval_prompts, real_clips_for
from videocm.evaluation.metrics import clip_coherence, clip_flicker, frechet_distance
from videocm.evaluation.statistics import (ClipScores, FrechetToReference, bootstrap_intervals, paired_comparison,
                                           percentile_interval, resampled_indices)


def fake_scores(rng, n, accuracy, feature_shift=0.0, flicker=1.0):
    return ClipScores(correct=(rng.random(n) < accuracy).astype(float), coherence=rng.uniform(0.9, 1.0, n),
                      flicker=rng.exponential(flicker, n), features=rng.normal(size=(n, 8)) + feature_shift)


def test_frechet_to_reference_equals_the_fid_formula():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 16)) @ rng.normal(size=(16, 16))
    for shift in (0.0, 0.5, 2.0):
        features = rng.normal(size=(120, 16)) * 1.3 + shift
        assert FrechetToReference(reference)(features) == pytest.approx(frechet_distance(features, reference),
                                                                         rel=1e-6, abs=1e-8)
    # many subsets at once, repeats allowed, with fewer clips than feature dimensions (the small Gram side) and more
    frechet = FrechetToReference(reference)
    for n in (6, 40):
        features = rng.normal(size=(n, 16)) + 0.3
        index_sets = resampled_indices(n, 5, seed=n)
        expected = [frechet_distance(features[i], reference) for i in index_sets]
        assert frechet.many(features, index_sets, chunk=2) == pytest.approx(expected, rel=1e-6, abs=1e-6)


def test_bootstrap_interval_of_a_mean_covers_the_truth_about_95_percent_of_the_time():
    rng = np.random.default_rng(1)
    covered = 0
    for experiment in range(200):
        values = (rng.random(150) < 0.7).astype(float)
        draws = values[resampled_indices(150, 500, seed=experiment)].mean(axis=1)
        low, high = percentile_interval(draws)
        covered += low <= 0.7 <= high
    assert 0.88 <= covered / 200 <= 0.99, covered


def test_frechet_interval_is_corrected_for_the_resampling_bias():
    rng = np.random.default_rng(4)
    frechet = FrechetToReference(rng.normal(size=(960, 32)))
    scores = fake_scores(rng, 240, 0.8)
    scores.features = rng.normal(size=(240, 32)) + 0.3
    whole = frechet(scores.features)
    draws = np.array([frechet(scores.features[i]) for i in resampled_indices(240, 300)])
    assert np.percentile(draws, 2.5) > whole  # repeated clips inflate the distance: raw percentiles miss it
    low, high = bootstrap_intervals(scores, frechet, resamples=300)["frechet_distance_ci"]
    assert low < whole < high


def test_intervals_hold_the_estimate_and_narrow_with_more_clips():
    rng = np.random.default_rng(2)
    frechet = FrechetToReference(rng.normal(size=(400, 8)))
    widths = {}
    for n in (30, 480):
        scores = fake_scores(rng, n, 0.8)
        intervals = bootstrap_intervals(scores, frechet, resamples=300)
        whole = scores.scores(np.arange(n), frechet)
        for key in ("fidelity_all", "coherence", "flicker", "frechet_distance"):
            low, high = intervals[f"{key}_ci"]
            assert low <= whole[key] <= high, key
        widths[n] = np.diff(intervals["fidelity_all_ci"])[0]
    assert widths[480] < widths[30] / 2.5


def test_paired_comparison_calls_ties_and_wins_by_each_scores_direction():
    rng = np.random.default_rng(3)
    frechet = FrechetToReference(rng.normal(size=(400, 8)))
    base = fake_scores(rng, 240, 0.6)
    same = paired_comparison(base, base, frechet, resamples=200)
    assert all(v["verdict"] == "tie" and v["difference"] == 0 for v in same.values())
    better = ClipScores(np.maximum(base.correct, (rng.random(240) < 0.5)), base.coherence, base.flicker * 0.5,
                        base.features + 1.5)
    result = paired_comparison(better, base, frechet, resamples=200)
    assert result["fidelity_all"]["verdict"] == "better" and result["fidelity_all"]["difference"] > 0
    assert result["flicker"]["verdict"] == "better" and result["flicker"]["difference"] < 0  # lower flicker wins
    assert result["frechet_distance"]["verdict"] == "worse"  # shifted features are farther from the reference
    assert result["coherence"]["verdict"] == "tie"
    with pytest.raises(ValueError, match="same clips"):
        paired_comparison(base, fake_scores(rng, 10, 0.5), frechet)


def test_a_shared_cache_bootstraps_each_row_once_and_changes_no_figure():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(300, 8))
    reference = FrechetToReference(features)
    calls = []

    class Counted(FrechetToReference):
        def many(self, features, index_sets, chunk=100):
            calls.extend([len(index_sets[0])] * len(index_sets))
            return super().many(features, index_sets, chunk)

    counted = Counted(features)

    rows = [fake_scores(rng, 50, accuracy) for accuracy in (0.5, 0.7, 0.9)]
    plain = [paired_comparison(a, b, reference, resamples=100) for i, a in enumerate(rows) for b in rows[i + 1:]]
    cache = {}
    cached = [paired_comparison(a, b, counted, resamples=100, cache=cache) for i, a in enumerate(rows)
              for b in rows[i + 1:]]
    assert cached == plain
    assert len(calls) == 3 * 101  # three rows, each on all clips and 100 resamples, for three pairs


def test_diversity_is_compared_paired_over_captions_and_survives_the_clip_scores_file(tmp_path):
    from dataclasses import replace

    from videocm.evaluation.evaluate import ModelRun, read_clip_scores, write_clip_scores

    rng = np.random.default_rng(5)
    frechet = FrechetToReference(rng.normal(size=(400, 8)))
    base = fake_scores(rng, 60, 0.8)
    teacher = replace(base, diversity=rng.uniform(2.5, 4.0, 30))
    collapsed = replace(base, diversity=teacher.diversity - rng.uniform(0.3, 0.7, 30))  # every caption less varied
    result = paired_comparison(collapsed, teacher, frechet, resamples=200)
    assert result["diversity"]["verdict"] == "worse"
    assert result["diversity"]["difference"] == pytest.approx(np.mean(collapsed.diversity - teacher.diversity))
    low, high = result["diversity"]["ci"]
    assert -0.7 < low <= result["diversity"]["difference"] <= high < -0.3
    noisy = replace(base, diversity=teacher.diversity + rng.normal(0, 0.5, 30) * np.sign(rng.normal(size=30)))
    assert paired_comparison(noisy, teacher, frechet, resamples=200)["diversity"]["verdict"] == "tie"
    assert "diversity" not in paired_comparison(base, teacher, frechet, resamples=50)  # one side has none
    path = tmp_path / "scores.npz"
    write_clip_scores([ModelRun({"model": "a", "steps": 2}, per_clip=collapsed)], path)
    back = read_clip_scores(path, "a@2")
    np.testing.assert_allclose(back.diversity, collapsed.diversity, rtol=1e-6)


def test_flicker_is_zero_for_real_clips_and_grows_with_frame_to_frame_changes():
    prompts, _ = eval_prompts(24)
    clips = real_clips_for(prompts, Geometry())
    assert max(clip_flicker(c) for c in clips) == 0.0  # the sprite only translates
    blinking = [c.copy() for c in clips]
    for clip in blinking:
        clip[::2] = 0
    recoloured = [c.copy() for c in clips]
    for clip in recoloured:
        clip[1::2] = clip[1::2, ..., ::-1]  # every other frame swaps red and blue
    assert min(clip_flicker(c) for c in blinking) > 1.0
    assert np.mean([clip_flicker(c) for c in recoloured]) > 1.0
    # coherence, which is colour-blind and normalised, does not see the colour swap
    assert np.mean([clip_coherence(c) for c in recoloured]) == pytest.approx(1.0)


@pytest.mark.slow
def test_eval_writes_intervals_and_compare_reads_them_back(tmp_path, capsys):
    scores = tmp_path / "clips.npz"
    assert main(["eval", "--model", "real", "--model", "real-blurred", "--steps", "1", "--n", "64",
                 "--json", str(tmp_path / "r.json"), "--clip-scores", str(scores)]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    real, blurred = result["rows"]
    for row in (real, blurred):
        for key in ("fidelity_all", "frechet_distance", "coherence", "flicker"):
            low, high = row[f"{key}_ci"]
            assert low <= row[key] <= high
    (comparison,) = result["comparisons"]
    assert comparison["first"] == "real@1" and comparison["second"] == "real-blurred@1"
    assert comparison["fidelity_all"]["verdict"] == "better"
    assert comparison["frechet_distance"]["verdict"] == "better"
    assert "| real@1 | real-blurred@1 | fidelity_all |" in capsys.readouterr().out
    assert main(["compare", "--first", f"{scores}#real-blurred@1", "--second", f"{scores}#real@1",
                 "--json", str(tmp_path / "c.json")]) == 0
    again = json.loads((tmp_path / "c.json").read_text())
    assert again["fidelity_all"]["verdict"] == "worse"
    assert again["fidelity_all"]["difference"] == pytest.approx(-comparison["fidelity_all"]["difference"])
    assert main(["compare", "--first", f"{scores}#nope@1", "--second", f"{scores}#real@1"]) == 2
    assert "has no row 'nope@1'; it has: real-blurred@1, real@1" in capsys.readouterr().err
    assert main(["compare", "--first", str(scores), "--second", f"{scores}#real@1"]) == 2
    assert "FILE.npz#model@steps" in capsys.readouterr().err


def test_curves_plots_a_runs_monitor_scores_with_reference_rows(tmp_path, capsys):
    run = tmp_path / "run" / "samples"
    run.mkdir(parents=True)
    run.joinpath("scores.jsonl").write_text("\n".join(json.dumps(
        {"step": s, "fidelity_all": f, "frechet_distance": d}) for s, f, d in ((500, 0.9, 6.0), (250, 0.8, 9.0))))
    evaluation = tmp_path / "eval.json"
    evaluation.write_text(json.dumps({"rows": [{"model": "teacher-vp", "steps": 4, "fidelity_all": 0.927,
                                                "frechet_distance": 9.93}]}))
    out = tmp_path / "curve.png"
    assert main(["curves", "--run", f"long={tmp_path / 'run'}", "--reference", f"teacher 4={evaluation}#teacher-vp@4",
                 "--out", str(out)]) == 0
    assert out.stat().st_size > 5000
    printed = capsys.readouterr().out
    assert "long: 2 points, last at step 500: fidelity_all 0.900, frechet_distance 6.000" in printed
    assert main(["curves", "--run", str(tmp_path), "--out", str(out), "--overwrite"]) == 2
    assert "samples/scores.jsonl: no such file" in capsys.readouterr().err
    assert main(["curves", "--run", str(tmp_path / "run"), "--reference", f"x={evaluation}#teacher-vp@50"]) == 2
    assert "has no row 'teacher-vp@50'; it has: teacher-vp@4" in capsys.readouterr().err


def test_the_teachers_reference_clips_serve_its_own_row(monkeypatch):
    from videocm.evaluation import evaluate
    from videocm.evaluation.judge import Judge

    calls = []
    original = evaluate.generate_with_cost

    def counted(generator, prompts, seeds, steps, *args, **kwargs):
        calls.append(steps)
        return original(generator, prompts, seeds, steps, *args, **kwargs)

    monkeypatch.setattr(evaluate, "generate_with_cost", counted)
    result, _, _ = evaluate.evaluate_models(["real-blurred"], [4, 50], Judge.load(), n=8, teacher="real-blurred",
                                            teacher_steps=50)
    assert calls == [50, 4]  # the 50-step row reuses the reference clips
    rows = {row["steps"]: row for row in result["rows"]}
    # the reference row reports no agreement with itself (it would be a placeholder 100.00)
    assert rows[50].get("psnr_vs_teacher") is None and rows[4]["psnr_vs_teacher"] < 100.0
