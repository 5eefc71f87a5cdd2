"""Every command is a typed config read from flags and YAML, with each setting's doc in its --help."""

from pathlib import Path

import pytest
import yaml

from videocm import locations
from videocm.cli import COMMANDS, main, parse_command
from videocm.config import OneOf, resolve, settings, write_config
from videocm.errors import VideoCMError

SRC = Path(__file__).resolve().parents[1] / "src" / "videocm"


def config_classes():
    for name, command in COMMANDS.items():
        config = resolve(command.config)
        for choice in config.choices() if isinstance(config, OneOf) else [None]:
            yield name, config.pick(choice) if isinstance(config, OneOf) else config


def test_every_setting_of_every_command_has_a_one_line_doc():
    for name, config in config_classes():
        for setting in settings(config):
            assert setting.doc and "\n" not in setting.doc, f"{name}: {config.__name__}.{setting.name} has no doc"


SPOT_CHECKS = [
    (["data", "export", "--out", "d", "--split", "train", "--n", "5", "--cover-captions"],
     {"out": "d", "split": "train", "n": 5, "cover_captions": True, "frames": 8}),
    (["train-judge", "--steps", "10", "--out", "j", "--lr", "0.01"], {"steps": 10, "out": "j", "lr": 0.01}),
    (["eval", "--model", "a@1,2", "--model", "real", "--steps", "1,4", "--json", "s.json"],
     {"model": ["a@1,2", "real"], "steps": [1, 4], "json": "s.json", "clips": None, "n": 240}),
    (["eval", "--clips", "c", "--judge", "j"], {"clips": "c", "judge": "j", "model": []}),
    (["judge-check", "--n", "24", "--json", "v.json"], {"n": 24, "json": "v.json", "judge": None}),
    (["train-vae", "--steps", "5", "--block-out-channels", "8,16", "--resume", "--out", "run"],
     {"steps": 5, "block_out_channels": [8, 16], "resume": True}),
    (["train-teacher", "--family", "unet3d", "--resume", "--steps", "3", "--out", "run"],
     {"family": "unet3d", "resume": True, "steps": 3}),
    (["distill", "--teacher", "t", "--steps", "3", "--student", "lora", "--guidance", "none"],
     {"method": "lcm", "teacher": "t", "steps": 3, "student": "lora", "guidance": None}),
    (["distill", "--method", "dcm", "--detail-steps", "0", "--boundaries", "20"],
     {"method": "dcm", "detail_steps": 0, "boundaries": [20]}),
    (["encode-captions", "--out", "p.safetensors", "--max-length", "8"], {"out": "p.safetensors", "max_length": 8}),
    (["encode", "--teacher", "t", "--data", "v", "--out", "c", "--frames", "9", "--height", "32", "--width", "32"],
     {"teacher": "t", "data": "v", "out": "c", "batch_size": 4}),
    (["export", "--model", "s", "--out", "o", "--format", "lora", "--copy", "--dtype", "float16"],
     {"model": "s", "out": "o", "format": "lora", "copy": True, "dtype": "float16"}),
    (["sample", "--prompt", "a red 3", "--out", "x.gif", "--timesteps", "999,499", "--noise",
      "videocm", "--models-dir", "m"],
     {"prompt": "a red 3", "out": "x.gif", "steps": None, "timesteps": [999.0, 499.0], "noise": "videocm",
      "models_dir": "m", "model": None}),
    (["bench", "--family", "vp", "--distillation", "false", "--batch-sizes", "1,2", "--models-dir", "m"],
     {"family": "vp", "distillation": False, "batch_sizes": [1, 2], "models_dir": "m", "sampling": True}),
    (["train-control", "--teacher", "t", "--control-blocks", "2", "--resume", "--out", "run"],
     {"teacher": "t", "control_blocks": 2, "resume": True}),
    (["eval-control", "--control-model", "c", "--model", "a@1", "--model", "b@2,4", "--baseline"],
     {"control_model": "c", "model": ["a@1", "b@2,4"], "baseline": True, "n": 96}),
    (["demo", "--out", "o", "--n", "4", "--distill", "false", "--eval-steps", "1,2"],
     {"out": "o", "n": 4, "distill": False, "eval_steps": [1, 2], "models_dir": None}),
]


@pytest.mark.parametrize("argv,expected", SPOT_CHECKS, ids=[" ".join(a[:2]) for a, _ in SPOT_CHECKS])
def test_flags_parse_into_the_commands_config(argv, expected, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")  # --resume needs a run to continue
    _, _, config = parse_command(argv)
    for key, value in expected.items():
        assert getattr(config, key) == value, key


def test_command_table_covers_every_command():
    assert set(COMMANDS) == {"data export", "train-judge", "eval", "judge-check", "train-vae", "train-teacher",
                             "distill", "encode-captions", "encode", "export", "sample", "bench", "train-control",
                             "eval-control", "demo", "compare", "curves", "plan", "distill-decoder", "serve",
                             "check", "recipes"}
    _, run, config = parse_command(["distill", "--method", "dcm"])
    assert type(config).__name__ == "DCMConfig" and run.__name__ == "run_distill"
    _, _, encode = parse_command(["encode", "--teacher", "t", "--data", "v", "--out", "c", "--frames", "9",
                                  "--height", "16", "--width", "16", "--max-sequence-length", "32"])
    assert encode.shape.override() == [9, 16, 16] and encode.shape.max_sequence_length == 32
    _, _, sample = parse_command(["sample", "--prompts", "p.txt", "--out", "o", "--control-model", "c",
                                  "--control", "v.npy", "--control-scale", "0.5"])
    assert (sample.control_input.control_model, sample.control_input.control_scale) == ("c", 0.5)


def test_config_file_then_flags(tmp_path):
    path = tmp_path / "export.yaml"
    path.write_text("model: s\nout: o\nformat: model\ncopy: true\n")
    _, _, config = parse_command(["export", "--config", str(path), "--format", "lora"])
    assert (config.model, config.out, config.format, config.copy) == ("s", "o", "lora", True)
    path = tmp_path / "sample.yaml"  # a section as a mapping (as write_config writes it) or flat
    path.write_text("prompt: a red 3\nout: x.npy\nsteps: 4\nshape: {frames: 9, height: 16}\nwidth: 16\n")
    _, _, sample = parse_command(["sample", f"--config={path}", "--steps", "2"])
    assert sample.steps == 2 and sample.shape.override() == [9, 16, 16]
    written = write_config(sample, tmp_path / "run")
    assert parse_command(["sample", "--config", str(written)])[2] == sample
    path = tmp_path / "distill.yaml"
    path.write_text("method: dcm\nsemantic_steps: 7\n")
    _, _, distill = parse_command(["distill", "--config", str(path)])
    assert type(distill).__name__ == "DCMConfig" and distill.semantic_steps == 7
    with pytest.raises(VideoCMError, match="unknown key.*semantic_steps"):  # the flag picks LCM, which has none
        parse_command(["distill", "--config", str(path), "--method", "lcm"])


@pytest.mark.parametrize("method, own", [("lcm", ["consistency", "lcm"]), ("dcm", ["consistency", "dcm"]),
                                         ("dmd", ["dmd"])])
def test_a_distill_config_is_the_shared_sections_plus_its_methods(method, own, tmp_path, capsys):
    """config.yaml holds run, teacher, data, student, guidance and matching, then the method's own section(s);
    the same settings given flat, under their sections, or mixed build the same config, and --help shows them."""
    _, _, config = parse_command(["distill", "--method", method, "--teacher", "t", "--grid-points", "20",
                                  "--guidance", "3", "--out", str(tmp_path / "run")])
    written = yaml.safe_load(write_config(config, tmp_path / "w").read_text())
    assert list(written) == ["run", "teacher", "data", "student", "guidance", "matching", *own]
    assert written["run"]["method"] == method and written["teacher"] == {**written["teacher"], "teacher": "t",
                                                                          "grid_points": 20}
    assert written["guidance"]["guidance"] == 3
    flat = {key: value for section in written.values() for key, value in section.items()}
    assert len(flat) == sum(len(section) for section in written.values()) == len(settings(type(config)))
    mixed = {**written.pop("teacher"), **written}  # the teacher section given flat, the rest nested
    for values in (flat, mixed):
        path = tmp_path / "given.yaml"
        path.write_text(yaml.safe_dump(values))
        assert parse_command(["distill", "--config", str(path)])[2] == config
    path.write_text("teacher: 5\n")  # a section's name with a value that is not a mapping: the setting
    assert parse_command(["distill", "--config", str(path)])[2].teacher == "5"
    path.write_text("guidance: {guidanse: 2}\n")
    with pytest.raises(VideoCMError, match="unknown key.*guidanse.*did you mean guidance"):
        parse_command(["distill", "--config", str(path)])
    assert main(["distill", "--method", method, "--help"]) == 0
    text = capsys.readouterr().out
    headings = [line.split(":")[0] for line in text[text.index("\nsettings:"):].splitlines() if line[:1].strip()]
    assert headings == ["settings", "run", "teacher", "data", "student", "guidance", "matching", *own]


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_lists_every_setting_with_its_type_default_and_doc(name, capsys):
    assert main([*name.split(), "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert f"videocm {name}" in text and "--config FILE.yaml" in text
    config = resolve(COMMANDS[name].config)
    for setting in settings(config.pick(None) if isinstance(config, OneOf) else config):
        assert f"{setting.flag} " in text, setting.name
        assert " ".join(setting.doc.split()) in text, setting.name
    if name == "distill":
        assert main(["distill", "--method", "dcm", "--help"]) == 0
        assert "--semantic-steps int (at least 1) = 2000" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["sample", "--prompt", "a", "--out", "x.gif", "--stepz", "2"], "--stepz (did you mean --steps?)"),
    (["export", "--model", "s", "--out", "o", "--format", "tar"], "--format 'tar': use one of pipeline, model, lora"),
    (["export", "--out", "o"], "--model is required"),
    (["encode-captions"], "--out is required"),
    (["eval-control", "--control-model", "c"], "--model is required"),
    (["sample", "--prompt", "a", "--prompts", "p.txt", "--out", "o"], "exactly one of --prompt"),
    (["sample", "--out", "o"], "exactly one of --prompt"),
    (["eval"], "--clips DIR"),
    (["eval", "--clips", "c", "--model", "real"], "not both"),
    (["eval", "--model", "real", "--n", "ten"], "expects int"),
    (["distill", "--method", "gan"], "--method 'gan' is not known: use one of lcm, dcm"),
    (["sample", "stray"], "expected --key value"),
    (["sample", "--config"], "--config needs a value"),
    (["sample", "--prompt", "a", "--out", "o.gif", "--guidance", "nan"], "--guidance 'nan': give a finite number"),
    (["eval", "--model", "real", "--guidance", "inf"], "--guidance 'inf': give a finite number"),
    (["distill", "--lr", "-inf"], "--lr '-inf': give a finite number"),
    (["distill", "--guidance-range", "1,nan"], "--guidance-range 'nan': give a finite"),
    (["distill", "--method", "dmd", "--target", "ema"], "unknown key(s) --target"),
    (["distill", "--method", "dcm", "--student", "lora"], "unknown key(s) --student"),
    (["nonsense"], "unknown command 'nonsense'"),
    (["data", "import"], "unknown command 'data import'"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videocm: error:") and "\n" not in err and message in err, err


def test_unknown_flag_lists_the_known_ones(capsys):
    assert main(["judge-check", "--bogus", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--bogus" in err and "known keys: --config FILE.yaml, --json, --judge, --n" in err


def test_version_and_bare_command(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == "0.1.0"
    assert main([]) == 2 and "commands:" in capsys.readouterr().out
    assert main(["data"]) == 1 and "data export" in capsys.readouterr().out


def test_models_dir_comes_from_the_flag_then_the_environment_then_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(locations.MODELS_ENV, raising=False)
    assert locations.models_dir() == Path("models")
    monkeypatch.setenv(locations.MODELS_ENV, str(tmp_path / "env"))
    assert locations.models_dir() == tmp_path / "env"
    assert locations.models_dir(tmp_path / "flag") == tmp_path / "flag"
    (tmp_path / "env" / "teacher-flow").mkdir(parents=True)
    assert locations.shipped_model("teacher-flow") == tmp_path / "env" / "teacher-flow"
    with pytest.raises(VideoCMError) as error:
        locations.shipped_model("teacher-flow", tmp_path / "flag")
    message = str(error.value)
    assert "\n" not in message and str(tmp_path / "flag" / "teacher-flow") in message
    assert all(word in message for word in ("--model DIR", "--models-dir DIR", "VIDEOCM_MODELS"))


def test_sample_without_a_shipped_teacher_says_where_it_looked(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(locations.MODELS_ENV, raising=False)
    assert main(["sample", "--prompt", "a red 3 moving left", "--out", "x.mp4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(tmp_path / "models" / "teacher-flow") in err and "--models-dir" in err


def test_the_judge_ships_inside_the_package(monkeypatch, tmp_path):
    from videocm.evaluation import judge

    monkeypatch.delenv("VIDEOCM_JUDGE", raising=False)
    assert judge.default_judge_folder() == SRC / "evaluation" / "judge_model"
    assert (judge.default_judge_folder() / judge.WEIGHTS_FILE).is_file()
    monkeypatch.setenv("VIDEOCM_JUDGE", str(tmp_path))
    assert judge.default_judge_folder() == tmp_path


def test_no_source_file_finds_files_by_climbing_parents():
    offenders = [str(p) for p in SRC.rglob("*.py") if "parents[" in p.read_text()]
    assert offenders == []


def test_resolved_configs_load_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.yaml").write_text("{}")
    for i, (argv, _) in enumerate(SPOT_CHECKS):
        _, _, config = parse_command(argv)
        written = write_config(config, tmp_path / str(i))
        name = argv[:2] if argv[0] == "data" else argv[:1]
        assert parse_command([*name, "--config", str(written)])[2] == config, argv
