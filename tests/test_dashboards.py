"""--report-to (issue 38 item 3): every training command logs its losses, learning rate, gradient norm, sample
scores and sample grids to TensorBoard through accelerate's trackers; a missing package is a one-line error."""

from __future__ import annotations

from pathlib import Path

import pytest

from videocm.cli import main

TEACHER = Path(__file__).resolve().parents[1] / "models" / "teacher-flow"
RUN = ["distill", "--teacher", str(TEACHER), "--batch-size", "2", "--latent-pool", "8", "--steps", "4",
       "--sample-every", "2", "--sample-clips", "8", "--sample-steps", "2", "--checkpoint-every", "2"]


def events(folder: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = sorted(folder.rglob("events.out.tfevents.*"))
    assert files, f"no TensorBoard event file under {folder}"
    accumulators = []
    for file in files:
        accumulator = EventAccumulator(str(file), size_guidance={"images": 0, "scalars": 0})
        accumulator.Reload()
        accumulators.append(accumulator)
    scalars = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for acc in accumulators
               for tag in acc.Tags()["scalars"]}
    images = {tag: [e.step for e in acc.Images(tag)] for acc in accumulators for tag in acc.Tags()["images"]}
    return scalars, images


def test_a_short_run_writes_loss_and_sample_score_curves_and_grids_to_tensorboard(tmp_path):
    out = tmp_path / "run"
    assert main([*RUN, "--out", str(out), "--report-to", "tensorboard"]) == 0
    scalars, images = events(out / "logs")
    for tag in ("loss", "lr", "grad_norm"):
        assert [step for step, _ in scalars[tag]] == [1, 2, 3, 4], tag
    # the sample checks at steps 2 and 4: their scores, intervals and grids
    assert [step for step, _ in scalars["fidelity_all"]] == [2, 4]
    assert all(low <= value <= high for (_, value), (_, low), (_, high) in zip(
        scalars["fidelity_all"], scalars["fidelity_all_low"], scalars["fidelity_all_high"]))
    assert images["samples"] == [2, 4]
    assert scalars["grad_norm"][0][1] > 0
    # the CSV log has the gradient norm too
    assert "grad_norm" in (out / "train_log.csv").read_text().splitlines()[0].split(",")


def test_report_to_a_missing_package_is_one_line_error(tmp_path, capsys, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "wandb" else real(name, *a))
    assert main([*RUN, "--out", str(tmp_path / "run"), "--report-to", "wandb"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("videocm: error: --report-to wandb needs the wandb package: pip install wandb")


def test_an_unknown_dashboard_is_refused(tmp_path, capsys):
    assert main([*RUN, "--out", str(tmp_path / "run"), "--report-to", "mlflow"]) == 2
    assert "--report-to 'mlflow': use one of none, tensorboard, wandb" in capsys.readouterr().err


def test_the_csv_log_widens_for_a_column_that_appears_later(tmp_path):
    """rCM's matching term logs from the end of the tangent warm-up, the sample checks at their steps: their
    columns join train_log.csv when they first appear (they were dropped when the first row fixed the header)."""
    import csv

    from videocm.distill.trainer import _write_logs

    _write_logs(tmp_path, {"step": 10, "loss": 0.5}, 1.0)
    _write_logs(tmp_path, {"step": 20, "loss": 0.4, "dmd": 0.8}, 2.0)
    _write_logs(tmp_path, {"step": 30, "loss": 0.3}, 3.0)
    with (tmp_path / "train_log.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "loss", "seconds", "dmd"]
    assert [row["dmd"] for row in rows] == ["", "0.8", ""]
    assert [row["step"] for row in rows] == ["10", "20", "30"] and rows[2]["seconds"] == "3.0"
