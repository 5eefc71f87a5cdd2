"""``--resume`` starts from the run's own resolved config: a flag given anew that may change (steps, learning rate,
cadences, time caps) is applied, said and recorded at the step it takes effect; anything else is refused in one
line with the run folder byte-identical; DCM refuses --steps and --lr, which it would not use."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml

from videocm.cli import main, parse_command


def fingerprint(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder``: the folder is byte-identical when this is."""
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def lcm_args(teacher: Path, out: Path, steps: int = 2) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--out", str(out), "--steps", str(steps), "--batch-size", "2",
            "--latent-pool", "4", "--sample-every", "0", "--checkpoint-every", "1", "--warmup-steps", "1"]


@pytest.fixture(scope="module")
def runs(tiny_teachers, tmp_path_factory) -> dict[str, Path]:
    """An LCM run stopped at step 1 of 3 (unfinished) and a finished 2-step one, made once."""
    root = tmp_path_factory.mktemp("resume")
    unfinished, finished = root / "unfinished", root / "finished"
    assert main(lcm_args(tiny_teachers["wan"], unfinished, 3) + ["--stop-at-step", "1"]) == 0
    assert main(lcm_args(tiny_teachers["wan"], finished, 2)) == 0
    return {"unfinished": unfinished, "finished": finished}


def copy_of(run: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    return copy


@pytest.mark.parametrize("extra, flag", [
    (["--batch-size", "4"], "--batch-size 4"),
    (["--method", "dcm"], "--method dcm"),
    (["--teacher", "models/teacher-vp"], "--teacher models/teacher-vp"),
    (["--grid-points", "20"], "--grid-points 20"),
    (["--student", "lora"], "--student lora"),
    (["--parallel", "fsdp"], "--parallel fsdp"),  # a checkpoint's layout: accelerate's files or a DCP folder
], ids=["batch", "method", "teacher", "grid", "student", "parallel"])
@pytest.mark.parametrize("which", ["unfinished", "finished"])
def test_a_resume_that_changes_the_run_is_refused_with_the_folder_untouched(runs, tmp_path, capsys, extra, flag,
                                                                            which):
    run = copy_of(runs[which], tmp_path)
    before = fingerprint(run)
    capsys.readouterr()
    assert main(["distill", "--out", str(run), "--resume", "--steps", "3", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and flag in err and "was started with" in err, err
    assert "finished DCM run" not in err
    assert fingerprint(run) == before


def test_a_resume_takes_the_runs_own_settings_and_records_what_it_changes(runs, tmp_path, capsys):
    """No --teacher, --batch-size or --checkpoint-every given: the run's own are used, not the defaults; --steps and
    --lr are changed from step 1 and recorded there."""
    run = copy_of(runs["unfinished"], tmp_path)
    capsys.readouterr()
    assert main(["distill", "--out", str(run), "--resume", "--steps", "4", "--lr", "5e-5"]) == 0
    out = capsys.readouterr().out
    assert "with --steps 4 (the run had 3)" in out and "with --lr 5e-05 (the run had 0.0001)" in out
    config = yaml.safe_load((run / "config.yaml").read_text())["run"]
    assert (config["batch_size"], config["checkpoint_every"], config["steps"]) == (2, 1, 4)
    changes = [json.loads(line) for line in (run / "resume_changes.jsonl").read_text().splitlines()]
    assert changes == [{"step": 1, "setting": "steps", "from": 3, "to": 4},
                       {"step": 1, "setting": "lr", "from": 0.0001, "to": 5e-05}]
    assert json.loads((run / "train_summary.json").read_text())["resumed_from_step"] == 1
    assert sorted(p.name for p in (run / "checkpoints").iterdir())[-1] == "step-4"


def test_a_finished_run_resumed_without_new_steps_is_refused_untouched(runs, tmp_path, capsys):
    run = copy_of(runs["finished"], tmp_path)
    before = fingerprint(run)
    assert main(["distill", "--out", str(run), "--resume"]) == 2
    err = capsys.readouterr().err.strip()
    assert "has finished its 2 steps" in err and "\n" not in err
    assert fingerprint(run) == before


@pytest.mark.parametrize("extra", [["--steps", "2"], ["--lr", "1e-3"]])
def test_dcm_refuses_steps_and_lr_it_would_not_use(tiny_teachers, tmp_path, capsys, extra):
    out = tmp_path / "dcm"
    assert main(["distill", "--method", "dcm", "--teacher", str(tiny_teachers["wan"]), "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert "--semantic-steps" in err and "\n" not in err
    assert not out.exists()


def test_a_checkpoint_holds_its_state_by_name(runs):
    """Model, optimiser, schedule, the consistency target and the random generators, each under its name."""
    folder = runs["finished"] / "checkpoints" / "step-2"
    names = json.loads((folder / "named_state.json").read_text())["names"]
    assert names == ["model", "optimizer", "scheduler", "target"]
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "target.safetensors", "rng-0.pt"} <= {
        p.name for p in folder.iterdir()}
    assert not list(folder.glob("custom_checkpoint_*"))


def test_a_dcm_run_from_before_a_setting_existed_resumes_with_what_it_used(tmp_path):
    """A DCM run folder written before DCM's faithful defaults (its config.yaml has no split, head or update-order
    keys) resumes with the values it trained with, not the new defaults; a new run gets the new ones."""
    import yaml

    from videocm.config import write_config
    from videocm.distill.dcm import DCMConfig

    out = tmp_path / "older"
    _, _, config = parse_command(["distill", "--method", "dcm", "--out", str(out), "--recipe", "none"])
    assert (config.split, config.disc_head, config.disc_update) == ("sigma", "token", "after")
    write_config(config, out)
    values = yaml.safe_load((out / "config.yaml").read_text())
    for section in values.values():
        for key in DCMConfig.OLDER_RUNS:
            section.pop(key, None)
    (out / "config.yaml").write_text(yaml.safe_dump(values))
    (out / "stages").mkdir()
    _, _, resumed = parse_command(["distill", "--out", str(out), "--resume"])
    assert all(getattr(resumed, key) == value for key, value in DCMConfig.OLDER_RUNS.items())
    assert resumed.disc_lr == config.disc_lr  # a setting the run recorded keeps its recorded value
