"""What a person reads at a glance: labelled GIF grids, the clips a report shows, the verdict sentences and the
training progress bar's bound."""

import io

import numpy as np
import pytest

from videocm.data.video_io import labelled_grid
from videocm.distill.trainer import TrainConfig, progress_bar as make_bar, step_bound
from videocm.evaluation.evaluate import eval_prompts, shown_indices, verdict_lines


def clips(n, value=200, frames=4):
    return [np.full((frames, 8, 8, 3), value, np.uint8) for _ in range(n)]


def test_a_labelled_grid_draws_its_labels_beside_and_above_the_clips():
    grid = labelled_grid([clips(3), clips(3)], ["real", "lcm-flow, 4 steps"], ["a red 3 moving left", "b", "c"],
                         scale=2)
    plain = labelled_grid([clips(3), clips(3)], ["", ""], ["", "", ""], scale=2)
    assert grid.shape[0] == 4 and grid.dtype == np.uint8 and grid.shape[-1] == 3
    # the clips sit at the bottom right; the bands above and to their left hold dark text on white
    body_height, body_width = 2 * (16 + 2) + 2, 3 * (16 + 2) + 2
    top, left = grid.shape[1] - body_height, grid.shape[2] - body_width
    assert top > 0 and left > 0
    header, side = grid[:, :top, left:], grid[:, top:, :left]
    assert (header < 128).any() and (side < 128).any() and (header == 255).mean() > 0.5
    assert (grid[:, top + 2:top + 18, left + 2:left + 18] == 200).all()  # a clip, untouched by the labels
    assert (grid[0] == grid[-1]).all()  # labels are in every frame
    plain_left = plain.shape[2] - body_width
    assert plain.shape[1] < grid.shape[1] and plain_left < left and not (plain[:, :, :plain_left] < 128).any()


def test_a_grid_with_labels_per_row_and_mismatched_labels():
    grid = labelled_grid([clips(2), clips(1)], ["first", "second"], [["a", "b"], ["c"]], scale=1)
    single = labelled_grid([clips(2), clips(1)], ["first", "second"], ["a", "b"], scale=1)
    assert grid.shape[2] == single.shape[2] and grid.shape[1] > single.shape[1]  # a caption band per row
    with pytest.raises(ValueError, match="row labels"):
        labelled_grid([clips(2)], ["a", "b"], ["x", "y"])
    with pytest.raises(ValueError, match="column labels"):
        labelled_grid([clips(3)], ["a"], ["x", "y"])


@pytest.mark.parametrize("n", [8, 24, 96, 240, 480])
def test_the_shown_clips_cover_different_digits(n):
    prompts, _ = eval_prompts(n)
    shown = shown_indices(prompts, 8)
    assert len(shown) == len(set(shown)) == 8
    digits = [prompts[i].split()[2] for i in shown]
    assert len(set(digits)) == min(8, len({p.split()[2] for p in prompts}))
    assert shown_indices(prompts[:3], 8) == [0, 1, 2]


def test_shown_clips_of_prompts_outside_the_benchmark_are_spread():
    prompts = ["a cat"] * 5 + ["a dog"] * 5
    assert shown_indices(prompts, 2) == [0, 5]


def test_the_progress_bar_shows_the_bound_that_stops_the_run():
    def progress_bar(config, start, name, disable):
        return make_bar(config, start, name, disable, file=io.StringIO())

    bar = progress_bar(TrainConfig(steps=1200, stop_at_step=300), 0, "run", disable=False)
    assert bar.total == 300 == step_bound(TrainConfig(steps=1200, stop_at_step=300))
    assert step_bound(TrainConfig(steps=1200, stop_at_step=5000)) == 1200
    capped = progress_bar(TrainConfig(steps=1200, max_minutes=5), 0, "semantic", disable=False)
    capped.update(7)
    text = str(capped)
    assert "5:00 time cap" in text and "7/1200" in text and "remaining" not in text and "<" not in text
    assert "2:30 time cap" in str(progress_bar(TrainConfig(steps=10, max_minutes=2.5), 0, "d", disable=False))
    plain = progress_bar(TrainConfig(steps=40), 10, "run", disable=False)
    assert "10/40" in str(plain) and "time cap" not in str(plain)


def comparison(first, second, fidelity, frechet):
    def entry(value, higher_is_better):
        difference, low, high = value
        verdict = "tie" if low <= 0 <= high else "better" if (low > 0) == higher_is_better else "worse"
        return {"difference": difference, "ci": [low, high], "verdict": verdict}

    return {"first": first, "second": second, "fidelity_all": entry(fidelity, True),
            "frechet_distance": entry(frechet, False)}


def test_the_verdict_names_the_best_row_at_each_step_count_and_turns_comparisons_round():
    rows = [{"model": "lcm", "steps": 4, "fidelity_all": 0.90, "frechet_distance": 5.0},
            {"model": "dcm", "steps": 4, "fidelity_all": 0.95, "frechet_distance": 4.0},
            {"model": "teacher", "steps": 50, "fidelity_all": 1.0, "frechet_distance": 3.0}]
    result = {"rows": rows, "teacher": "models/teacher-flow", "teacher_steps": 50,
              "comparisons": [comparison("lcm@4", "dcm@4", (-0.05, -0.08, -0.02), (1.0, 0.5, 1.5))],
              "teacher_comparisons": [comparison("dcm@4", "teacher", (-0.05, -0.1, 0.01), (1.0, 0.4, 1.6))]}
    lines = verdict_lines(result)
    assert lines[0].startswith("4 steps: best dcm (fidelity 0.950, Fréchet 4.00); against lcm@4: fidelity better "
                               "(+0.050 [+0.020, +0.080]), Fréchet better (-1.00 [-1.50, -0.50])")
    assert lines[1].startswith("50 steps: best teacher")
    assert lines[2] == ("dcm@4 against the teacher (teacher-flow, 50 steps): fidelity tie (-0.050 [-0.100, +0.010]), "
                        "Fréchet worse (+1.00 [+0.40, +1.60]).")


def test_the_decoder_quality_table_shows_each_decoder_minus_the_full_one():
    from videocm.evaluation.bench import decoder_quality_table

    rows = [{"model": "lcm", "decoder": "full", "steps": 4, "fidelity_all": 0.99, "frechet_distance": 4.9},
            {"model": "lcm+tiny", "decoder": "tiny", "steps": 4, "fidelity_all": 0.98, "frechet_distance": 4.5}]
    # the evaluation compares full (first) against tiny (second)
    table = decoder_quality_table([{"rows": rows, "comparisons": [
        comparison("lcm@4", "lcm+tiny@4", (0.01, 0.0, 0.02), (0.4, 0.2, 0.7))]}])
    lines = table.splitlines()
    assert lines[2] == "| lcm | full | 4 | 0.990 | 4.90 | - | - |"
    assert lines[3] == "| lcm+tiny | tiny | 4 | 0.980 | 4.50 | -0.010 [-0.020, -0.000] | -0.40 [-0.70, -0.20] |"
