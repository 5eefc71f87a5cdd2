"""The demo (`make demo`, `videocm demo`): it distils the shipped flow teacher with DCM, evaluates the student
beside the teacher and the shipped LCM student, writes its report, and a second run reuses the student. In a file
of its own so the suite's two workers can run it beside test_dcm.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from videocm.models.folder import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_demo_distils_the_shipped_flow_teacher_and_writes_a_report(tmp_path):
    from videocm.demo import DemoConfig, run_demo

    out = tmp_path / "demo"
    config = DemoConfig(out=str(out), n=4, models_dir=str(REPO / "models"), teacher=str(REPO / "models" / "teacher-flow"),
                        compare=str(REPO / "models" / "lcm-flow"), semantic_steps=2, detail_steps=2, latent_pool=16,
                        batch_size=4, eval_n=3, eval_steps=[1, 2])
    summary = run_demo(config)
    rows = summary["distilled"]["rows"]
    assert {(row["model"], row["steps"]) for row in rows} >= {("dcm-student", 1), ("dcm-student", 2),
                                                             ("lcm-flow", 2), ("teacher-flow", 50)}
    nfe = {(row["model"], row["steps"]): row["nfe"] for row in rows}
    assert nfe[("dcm-student", 1)] == 1 and nfe[("dcm-student", 2)] == 2 and nfe[("lcm-flow", 2)] == 2
    assert nfe[("teacher-flow", 50)] == 100  # guided: conditional and unconditional per step
    assert all(row["n"] == 3 for row in rows)
    for name in ("report.md", "plot.png", "samples.gif", "results.json"):
        assert (out / "report" / name).is_file()
    assert len(load_model(out / "dcm-student").experts) == 2
    # the demo's run opens in TensorBoard with its curves: each stage's loss and learning rate, step by step
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("expert-0-semantic", "expert-1-detail"):
        files = sorted((out / "dcm-student" / "stages" / stage / "logs").rglob("events.out.tfevents.*"))
        boards = [EventAccumulator(str(file)) for file in files]  # the curves' file, and the settings' (hparams)
        for board in boards:
            board.Reload()
        curves = [board for board in boards if "loss" in board.Tags()["scalars"]]
        assert len(curves) == 1, stage
        assert {"loss", "lr", "grad_norm"} <= set(curves[0].Tags()["scalars"]), stage
        assert [e.step for e in curves[0].Scalars("loss")] == [1, 2], stage
    import yaml  # the main job trains with the test bench's recipe, as `videocm distill` would pick it

    from videocm.config import flat_mapping

    settings = flat_mapping(yaml.safe_load((out / "dcm-student" / "config.yaml").read_text()))
    assert (settings["recipe"], settings["split"], settings["semantic_lr"], settings["disc_head"]) == (
        "moving-digits", "share", 1e-4, "frame")
    # a rerun reuses the finished student (evaluated on fewer clips: only the reuse is checked here)
    again = run_demo(dataclasses.replace(config, eval_n=2))
    assert again["distilled"]["student"] == summary["distilled"]["student"]
