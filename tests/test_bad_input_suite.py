"""The bad-input suite (issue 20): bad input to every command, as a new user gives it, each case asserting
exit code 2, one ``videocm: error:`` line that names the input and the fix, no traceback, and that every file
already in the folder is byte-identical afterwards (nothing written, replaced or left half-done)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import pytest

from videocm.cli import main

M = str(Path(__file__).resolve().parents[1] / "models")

TF, LF, LV, TV, CF = f"{M}/teacher-flow", f"{M}/lcm-flow", f"{M}/lcm-vp", f"{M}/teacher-vp", f"{M}/control-flow"
X = ["--prompt", "a red 3 moving left"]
CASES = [
    # sample
    (["sample", *X, "--out", "file.txt"], "is a file; pass --overwrite"),
    (["sample", "--prompts", "prompts.txt", "--out", "clips"], "is a folder that is not empty"),
    (["sample", "--prompts", "latin1.txt", "--out", "new"], "is not UTF-8 text (byte 0xe9 on line 2)"),
    (["sample", "--prompts", "missing.txt", "--out", "new"], "does not exist"),
    (["sample", "--prompts", "empty.txt", "--out", "new"], "holds no prompts"),
    (["sample", "--model", "damaged", *X, "--out", "a.npy"], "cannot be read"),
    (["sample", "--model", "noweights", *X, "--out", "a.npy"], "no weights file"),
    (["sample", "--model", CF, *X, "--out", "a.npy"], "pass it as --control-model"),
    (["sample", "--model", "notrun", *X, "--out", "a.npy"], 'has no videocm.json'),
    (["sample", "--model", "nothere", *X, "--out", "a.npy"], 'does not exist'),
    (["sample", "--model", TV, "--steps", "5000", *X, "--out", "a.npy"], "between 1 and 1000"),
    (["sample", "--model", LV, "--steps", "5000", *X, "--out", "a.npy"], "between 1 and 50"),
    (["sample", *X, "--prompts", "prompts.txt", "--out", "a.npy"], "give exactly one of"),
    (["sample", *X, "--out", "a.xyz"], "cannot tell the format"),
    (["sample", *X, "--out", "a.npy", "--guidance", "nan"], "give a finite number"),
    (["sample", *X, "--out", "a.npy", "--steps", "4", "--timesteps", "1.0,0.5"], "not both"),
    (["sample", *X, "--out", "a.npy", "--device", "tpu9"], "not a device torch knows"),
    (["sample", *X, "--out", "a.npy", "--control-model", CF], "together"),
    (["sample", *X, "--out", "a.npy", "--format", "avi"], "use one of"),
    (["sample", *X, "--out", "a.npy", "--bogus", "1"], "unknown key"),
    (["sample", "--out", "a.npy"], "give exactly one of"),
    (["sample", *X, "--out", "file.txt/a.npy"], "nothing can be written under it"),
    (["sample", "--config", "bad.yaml"], "is not valid YAML"),
    (["sample", "--config", "latin1.yaml"], "is not UTF-8 text"),
    (["sample", "--config", "missing.yaml"], "does not exist"),
    (["sample", "--model", LV, *X, "--out", "a.npy", "--negative-prompt", "blurry"], "no unconditional pass"),
    (["sample", "--model", LV, *X, "--out", "a.npy", "--frames", "9", "--height", "32", "--width", "32"], "size a diffusers pipeline"),
    (["sample", *X, "--out", "a.npy", "--steps", "0"], "--steps must be at least 1"),
    (["sample", *X, "--out", "a.npy", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["sample", *X, "--out", "a.npy", "--seed", "-1"], "--seed must be at least 0"),
    (["sample", *X, "--out", "a.npy", "--frames", "9"], 'give --frames, --height and --width together'),
    (["sample", *X, "--out", "a.npy", "--model", LF, "--decoder", "nothere"], "does not exist"),
    (["sample", *X, "--out", "a.npy", "--model", LF, "--decoder", TF], "not a tiny decoder"),
    (["sample", *X, "--out", "a.npy", "--overlap-writes", "maybe"], "use one of"),
    # distill-decoder
    (["distill-decoder", "--vae", "nothere", "--out", "dec"], "does not exist"),
    (["distill-decoder", "--vae", f"{M}/vae", "--teacher", TF, "--out", "dec"], "not both"),
    (["distill-decoder", "--vae", CF, "--out", "dec"], "is a control folder"),
    (["distill-decoder", "--vae", f"{M}/vae", "--blocks", "1,1", "--out", "dec"], "levels"),
    (["distill-decoder", "--vae", f"{M}/vae", "--cache", "nothere", "--out", "dec"], "does not exist"),
    (["distill-decoder", "--vae", f"{M}/vae", "--out", "file.txt"], "is a file"),
    (["distill-decoder", "--vae", f"{M}/vae", "--out", "dec", "--feature-weight", "-1"], "at least 0"),
    # serve (refused before the page starts)
    (["serve", "--model", "nothere"], "not a videocm model folder"),
    (["serve", "--model", f"{M}/vae"], "is a vae folder"),
    (["serve", "--model", TF], "at least one teacher and one student"),
    (["serve", "--port", "0"], "--port must be in [1, 65535]"),
    (["serve", "--port", "70000"], "--port must be in [1, 65535], got '70000'"),
    # eval
    (["eval", "--clips", "clips3"], "holds 8 clips but prompts.txt lists 3 prompts"),
    (["eval", "--clips", "clipslatin"], "is not UTF-8 text"),
    (["eval", "--clips", "clips", "--json", "file.txt"], "is a file; pass --overwrite"),
    (["eval", "--model", LF, "--report", "rep"], "already holds report.md"),
    (["eval", "--model", "nothere"], "no such folder"),
    (["eval", "--model", CF], "is a control branch"),
    (["eval", "--model", "damaged", "--n", "2"], "cannot be read"),
    (["eval", "--clips", "notrun"], "has no prompts.txt"),
    (["eval", "--clips", "clips", "--n", "0"], "--n must be at least 2"),
    (["eval", "--model", LF, "--n", "1"], "--n must be at least 2"),
    (["eval", "--model", f"{LF}@abc"], "(its own step counts after @): give comma-separated whole numbers"),
    (["eval", "--model", LF, "--steps", "0"], "--steps must be at least 1"),
    (["eval", "--clips", "clips", "--clip-scores", "file.txt"], "is a file"),
    (["eval", "--model", LF, "--guidance", "inf"], "give a finite number"),
    (["eval", "--clips", "clips", "--report", "newrep"], '--report goes with --model'),
    (["eval"], 'give --clips DIR'),
    (["eval", "--clips", "clips", "--model", LF], 'not both'),
    # distill
    (["distill", "--teacher", TF, "--out", "run"], "already holds a run; pass --resume"),
    (["distill", "--teacher", TF, "--out", "run", "--steps", "2", "--resume"], "has finished its 2 steps"),
    (["distill", "--out", "notrun", "--resume"], "is not a videocm run folder"),
    (["distill", "--out", "nothere", "--resume"], "does not exist, so there is no run to continue"),
    (["distill", "--out", "notrun"], "is a folder that is not empty"),
    (["distill", "--out", "run", "--resume", "--overwrite"], "not both"),
    (["distill", "--out", "file.txt"], "is a file; give a folder"),
    (["distill", "--method", "dcm", "--teacher", TF, "--out", "run"], "already holds a run"),
    (["distill", "--method", "dcm", "--out", "notrun", "--resume"], "is not a videocm run folder"),
    (["distill", "--method", "xyz"], "is not known"),
    (["distill", "--mixed-precision", "fp8x", "--out", "new"], "use one of no, bf16, fp16"),
    (["distill", "--parallel", "zero3", "--out", "new"], "use one of ddp, fsdp"),
    (["distill", "--on-collapse", "explode", "--out", "new"], "use one of stop, rollback, warn"),
    (["distill", "--teacher", CF, "--out", "new", "--steps", "1"], "is a control branch"),
    (["distill", "--teacher", "damaged-teacher", "--out", "new", "--steps", "1"], "cannot be read"),
    (["distill", "--teacher", "nothere", "--out", "new", "--steps", "1"], 'does not exist'),
    (["distill", "--teacher", TF, "--data", "notrun", "--out", "new", "--steps", "1"], 'holds no video files'),
    (["distill", "--lr", "nan", "--out", "new"], "give a finite number"),
    (["distill", "--teacher", TF, "--out", "new", "--steps", "1", "--guidance-2", "2"], "two-expert teacher"),
    (["distill", "--steps", "0", "--out", "new"], "--steps must be at least 1"),
    (["distill", "--steps", "-5", "--out", "new"], "--steps must be at least 1"),
    (["distill", "--teacher", TF, "--out", "new", "--batch-size", "3", "--gradient-accumulation-steps", "2"], "does not split"),
    (["distill", "--config", "latin1.yaml"], "is not UTF-8 text"),
    (["distill", "--teacher", LF, "--out", "new", "--steps", "1"], '--teacher needs a teacher'),
    (["distill", "--method", "dcm", "--teacher", TF, "--out", "new", "--phases", "0"], "--phases must be at least 1"),
    (["distill", "--method", "dcm", "--teacher", CF, "--out", "new", "--semantic-steps", "1"], "is a control branch"),
    # training commands
    (["train-teacher", "--out", "run"], "already holds a run"),
    (["train-teacher", "--out", "notrun", "--resume"], "is not a videocm run folder"),
    (["train-vae", "--out", "clips"], "is a folder that is not empty"),
    (["train-control", "--teacher", TF, "--out", "run"], "already holds a run"),
    (["train-teacher", "--family", "nope", "--out", "new"], "unknown model family 'nope'"),
    (["train-teacher", "--steps", "-5", "--out", "new"], "--steps must be at least 1"),
    (["train-vae", "--resume", "--overwrite", "--out", "run"], "not both"),
    (["train-control", "--teacher", "nothere", "--out", "new"], 'does not exist'),
    (["train-judge", "--out", "file.txt"], "is a file; give a folder"),
    (["train-judge", "--steps", "0"], "--steps must be at least 1"),
    # data export
    (["data", "export", "--out", "clips", "--n", "3"], "is a folder that is not empty"),
    (["data", "export", "--out", "file.txt"], "is a file; pass --overwrite"),
    (["data", "export", "--out", "x", "--split", "val"], "use one of train, test"),
    (["data", "export", "--out", "x", "--n", "0"], "--n must be at least 1"),
    (["data", "export", "--out", "x", "--seed", "-1"], "--seed must be at least 0"),
    (["data", "exprt"], "unknown command"),
    (["data", "export"], "--out is required"),
    # encode-captions, encode
    (["encode-captions", "--out", "file.txt"], "is a file; pass --overwrite"),
    (["encode-captions"], "--out is required"),
    (["encode", "--teacher", TF, "--data", "nothere", "--out", "cache"], 'does not exist'),
    (["encode", "--teacher", TF, "--data", "notrun", "--out", "cache"], 'holds no video files'),
    (["encode", "--teacher", TF, "--data", "notrun", "--out", "cache", "--batch-size", "0"], "--batch-size must be at least 1"),
    (["encode", "--teacher", TF, "--data", "notrun", "--out", "file.txt"], "is a file; give a folder"),
    (["encode", "--teacher", "damaged-teacher", "--data", "clips", "--out", "cache"], 'cannot be read'),
    (["encode", "--teacher", TF, "--data", "clips", "--out", "cache", "--frames", "16", "--height", "64", "--width", "64"],
     "is a videocm model folder, which encodes at the shape it was made for: leave --frames out"),
    # export
    (["export", "--model", LF, "--out", "clips"], "is a folder that is not empty"),
    (["export", "--model", "nothere", "--out", "new"], 'does not exist'),
    (["export", "--model", TF, "--out", "new"], 'hands back students'),
    (["export", "--model", LF, "--out", "new", "--format", "zip"], "use one of"),
    (["export", "--model", "damaged", "--out", "new"], 'cannot be read'),
    (["export", "--model", "notrun", "--out", "new"], 'has no videocm.json'),
    # compare, curves
    (["compare", "--first", "a.npz#x@1", "--second", "b.npz#y@1"], 'no such file'),
    (["compare", "--first", "a.npz#x@1", "--second", "b.npz#y@1", "--json", "file.txt"], "is a file"),
    (["compare", "--resamples", "0"], "--resamples must be at least 1"),
    (["curves", "--run", "nothere"], 'no such file'),
    (["curves", "--run", "run", "--out", "file.txt"], "is a file"),
    (["curves"], 'give at least one --run'),
    # bench, plan, judge-check, eval-control, demo
    (["bench", "--out", "file.txt"], "is a file"),
    (["bench", "--family", "xyz"], 'use one of flow, vp'),
    (["bench", "--repeats", "0"], "--repeats must be at least 1"),
    (["bench", "--device", "cuda"], "no CUDA GPU"),
    (["plan", "--teacher", "nothere"], 'give a videocm teacher folder'),
    (["plan", "--teacher", TF, "--json", "file.txt"], "is a file"),
    (["plan", "--teacher", TF, "--mfu", "2"], "--mfu must be in [0, 1]"),
    (["plan", "--teacher", TF, "--device", "tpu9"], "not a device torch knows"),
    (["judge-check", "--json", "file.txt"], "is a file"),
    (["judge-check", "--judge", "notrun"], "no judge in"),
    (["judge-check", "--n", "0"], "--n must be at least 1"),
    (["eval-control", "--control-model", LF, "--model", f"{TF}@4"], 'not a control model'),
    (["eval-control", "--control-model", CF, "--model", f"{TF}@4", "--report", "rep"], "already holds report.md"),
    (["eval-control", "--control-model", CF, "--model", f"{TF}@4", "--json", "file.txt"], "is a file"),
    (["eval-control", "--control-model", CF, "--model", "nothere@4", "--n", "2"], 'does not exist'),
    (["recipes", "--name", "wan9"], "is not a recipe"),
    (["check", "--recipe", "wan9"], "is not a recipe"),
    (["check", "--teacher", TF, "--data", "nothere"], "check: clips: video folder nothere does not exist"),
    (["demo", "--out", "file.txt"], "is a file; give a folder"),
    (["demo", "--n", "1"], "--n must be at least 2"),
    (["demo", "--generate", "1", "--distill", "false", "--out", "d"], "give --generate 2 or more, or 0 for none"),
    (["demo", "--models-dir", "nothere", "--distill", "false", "--out", "d"], "no model folders (a folder with videocm.json) in --models-dir nothere"),
    # the command line itself
    (["nosuchcommand"], "unknown command"),
    (["sample", "--config"], "needs a value"),
    (["sample", "positional"], "expected --key value"),
]


def _state(folder: Path) -> dict[str, str]:
    """Every path under ``folder`` with its SHA-256 (folders: "dir")."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A folder of what users point commands at: clip folders (one with too few prompts, one not UTF-8), prompt
    files, a finished run, a folder that is not a run, a report folder with a hand-written README, model folders
    with truncated or missing weights."""
    folder = tmp_path_factory.mktemp("bad-input")
    build(folder, Path(M))
    return folder


@pytest.mark.parametrize("argv,message", CASES, ids=[f"{i:03d}-{' '.join(a[:2])}" for i, (a, _) in enumerate(CASES)])
def test_bad_input_is_one_line_and_changes_nothing(argv, message, workspace, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = _state(workspace)
    capsys.readouterr()
    assert main(argv) == 2, argv
    captured = capsys.readouterr()
    errors = [line for line in captured.err.replace("\r", "\n").splitlines() if "videocm: error:" in line]
    assert len(errors) == 1 and "Traceback" not in captured.err, captured.err
    error = errors[0][errors[0].index("videocm: error:"):]
    assert message in error, error
    assert _state(workspace) == before, argv


def test_the_suite_covers_every_command():
    from videocm.cli import COMMANDS

    covered = {" ".join(argv[:2]) if argv[0] == "data" else argv[0] for argv, _ in CASES}
    assert set(COMMANDS) <= covered, set(COMMANDS) - covered
    assert len(CASES) >= 100


def build(ws: Path, models: Path) -> None:
    ws.mkdir(parents=True, exist_ok=True)
    assert main(["data", "export", "--out", str(ws / "clips"), "--n", "8"]) == 0
    shutil.copytree(ws / "clips", ws / "clips3")
    (ws / "clips3" / "prompts.txt").write_text("".join(l + "\n" for l in (ws / "clips" / "prompts.txt").read_text().splitlines()[:3]))
    shutil.copytree(ws / "clips", ws / "clipslatin")
    (ws / "clipslatin" / "prompts.txt").write_bytes("caf\u00e9\n".encode("latin-1") * 8)
    (ws / "prompts.txt").write_text("a red 3 moving left\n\na blue 7 moving up\n")
    (ws / "latin1.txt").write_bytes("a red 3 moving left\ncaf\u00e9 au lait\n".encode("latin-1"))
    (ws / "empty.txt").write_text("\n\n")
    (ws / "file.txt").write_text("keep me\n")
    (ws / "bad.yaml").write_text("steps: [1, 2\n")
    (ws / "latin1.yaml").write_bytes("prompt: caf\u00e9\n".encode("latin-1"))
    (ws / "notrun").mkdir()
    (ws / "notrun" / "notes.md").write_text("not a run\n")
    (ws / "rep").mkdir()
    (ws / "rep" / "README.md").write_text("hand-written\n")
    (ws / "rep" / "report.md").write_text("an earlier report\n")
    for name, source, part in (("damaged", "lcm-flow", "transformer"), ("damaged-teacher", "teacher-flow", "transformer")):
        shutil.copytree(models / source, ws / name, ignore=shutil.ignore_patterns("samples", "train_log*"))
        weights = ws / name / part / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[:4000])
    shutil.copytree(models / "lcm-flow", ws / "noweights", ignore=shutil.ignore_patterns("samples", "train_log*"))
    (ws / "noweights" / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(["distill", "--teacher", str(models / "teacher-flow"), "--out", str(ws / "run"), "--steps", "2",
                 "--batch-size", "2", "--latent-pool", "8", "--sample-every", "0", "--checkpoint-every", "1",
                 "--warmup-steps", "1"]) == 0


# --- what --overwrite and --resume do when they are given ---

def test_overwrite_clears_a_clip_folder_so_no_stale_clip_is_left(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["data", "export", "--out", "d", "--n", "8"]) == 0
    assert main(["data", "export", "--out", "d", "--n", "3", "--overwrite"]) == 0
    assert sorted(p.name for p in Path("d").glob("*.npy")) == ["0000.npy", "0001.npy", "0002.npy"]
    assert len(Path("d/prompts.txt").read_text().splitlines()) == 3
    assert len(Path("d/labels.jsonl").read_text().splitlines()) == 3


def test_overwrite_of_a_report_folder_replaces_only_the_report(tmp_path):
    from videocm.config import ReportFolder  # noqa: F401 - the marker under test
    from videocm.runs import clear_outputs
    from videocm.evaluation.cli import EvalConfig

    folder = tmp_path / "rep"
    folder.mkdir()
    (folder / "README.md").write_text("hand-written\n")
    (folder / "report.md").write_text("old\n")
    (folder / "plot.png").write_bytes(b"old")
    cleared = clear_outputs(EvalConfig(model=["x"], report=str(folder), overwrite=True))
    assert sorted(Path(c).name for c in cleared) == ["plot.png", "report.md"]
    assert sorted(p.name for p in folder.iterdir()) == ["README.md"]


def test_overwrite_never_deletes_the_current_folder_or_a_checkout(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "keep.txt").write_text("x")
    assert main(["data", "export", "--out", ".", "--n", "2", "--overwrite"]) == 2
    assert "would delete ." in capsys.readouterr().err
    (tmp_path / "repo" / ".git").mkdir(parents=True)
    assert main(["data", "export", "--out", "repo", "--n", "2", "--overwrite"]) == 2
    assert (tmp_path / "keep.txt").exists() and (tmp_path / "repo" / ".git").is_dir()


def test_sample_prompts_txt_lines_up_with_the_clips_when_the_file_has_blank_lines(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red 3 moving left\n\n  \na blue 7 moving up\n")
    out = tmp_path / "gifs"
    assert main(["sample", "--model", f"{M}/lcm-flow", "--prompts", str(prompts), "--out", str(out),
                 "--format", "gif", "--steps", "1"]) == 0
    assert sorted(p.name for p in out.glob("*.gif")) == ["0000.gif", "0001.gif"]
    assert (out / "prompts.txt").read_text().splitlines() == ["a red 3 moving left", "a blue 7 moving up"]


def test_resume_with_more_steps_continues_a_finished_run_and_a_refused_run_leaves_no_folder(tmp_path, capsys):
    run = ["distill", "--teacher", f"{M}/teacher-flow", "--out", str(tmp_path / "run"), "--batch-size", "2",
           "--latent-pool", "8", "--sample-every", "0", "--checkpoint-every", "1", "--warmup-steps", "1"]
    assert main([*run, "--steps", "1"]) == 0
    summary = (tmp_path / "run" / "train_summary.json").read_bytes()
    assert main([*run, "--steps", "1", "--resume"]) == 2  # finished: nothing to resume, the summary kept
    assert (tmp_path / "run" / "train_summary.json").read_bytes() == summary
    assert main([*run, "--steps", "2", "--resume"]) == 0
    assert '"resumed_from_step": 1' in (tmp_path / "run" / "train_summary.json").read_text()
    # a teacher that does not load: refused, and the folder the run made is gone again
    assert main(["distill", "--teacher", f"{M}/lcm-flow", "--out", str(tmp_path / "new"), "--steps", "1"]) == 2
    assert not (tmp_path / "new").exists()
