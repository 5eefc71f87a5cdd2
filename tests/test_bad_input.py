"""Bad input (issue 20): every number setting of every command declares its range, and a value outside it is a
one-line error when the config is read, before any model is loaded or any file written."""

from __future__ import annotations

import dataclasses
import os
import types
import typing
from pathlib import Path

import pytest

from videocm.cli import COMMANDS, main
from videocm.config import OneOf, resolve
from videocm.config import Range, settings


def _ranges(annotation) -> list[Range]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return [e for e in typing.get_args(annotation)[1:] if isinstance(e, Range)]
    if origin in (typing.Union, types.UnionType, list):
        return [r for a in typing.get_args(annotation) for r in _ranges(a)]
    return []


def _base(annotation):
    """int or float (the number type under any Annotated, Optional or list), else None."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _base(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType, list):
        found = [_base(a) for a in typing.get_args(annotation) if a is not type(None)]
        return found[0] if found else None
    return annotation if annotation in (int, float) else None


def _configs():
    seen = {}
    for name, command in sorted(COMMANDS.items()):
        config = resolve(command.config)
        for cls in [config.pick(c) for c in config.choices()] if isinstance(config, OneOf) else [config]:
            seen.setdefault(cls, name)
    return [(name, cls) for cls, name in seen.items()]


def _method_flag(cls) -> list[str]:
    """``--method M`` for a distillation method's config other than the default one."""
    method = getattr(cls, "method", None)
    return ["--method", method] if method not in (None, "lcm") else []


CONFIGS = _configs()
# number settings whose whole real line is meaningful (a mean, explicit times checked where they are used)
UNBOUNDED = {"logit_normal_mean", "timesteps", "boundary_timesteps", "guidance_range", "boundaries"}


@pytest.mark.parametrize("name,cls", CONFIGS, ids=[f"{n}-{c.__name__}" for n, c in CONFIGS])
def test_every_number_setting_has_a_range_its_default_is_in(name, cls):
    for setting in settings(cls):
        if _base(setting.type) is None or setting.name in UNBOUNDED:
            continue
        ranges = _ranges(setting.type)
        assert ranges, f"{name} {setting.flag} ({setting.type}) declares no Range"
        defaults = setting.default if isinstance(setting.default, list) else [setting.default]
        for value in defaults:
            if value is not None and value is not dataclasses.MISSING:
                assert all(r.holds(value) for r in ranges), f"{name} {setting.flag}: default {value} is out of range"


def _outside(ranges: list[Range], base) -> str:
    """A value just outside the first range."""
    r = ranges[0]
    if r.low is not None:
        return str(int(r.low) - 1 if base is int else (r.low if r.open_low else r.low - 0.5))
    return str(int(r.high) + 1 if base is int else (r.high if r.open_high else r.high + 0.5))


def _cases():
    for name, cls in CONFIGS:
        prefix = name.split() + _method_flag(cls)
        for setting in settings(cls):
            ranges = _ranges(setting.type)
            if ranges:
                yield pytest.param(prefix, setting.flag, _outside(ranges, _base(setting.type)),
                                   id=f"{cls.__name__}{setting.flag}")


@pytest.mark.parametrize("prefix,flag,value", list(_cases()))
def test_a_value_out_of_range_is_refused_in_one_line_before_any_work(prefix, flag, value, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing may be written: the folder stays empty
    argv = [*prefix, flag, value]
    assert main(argv) == 2, argv
    err = capsys.readouterr().err.strip()
    assert err.startswith("videocm: error:") and "\n" not in err and "Traceback" not in err, err
    assert f"{flag} must be" in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv,message", [
    (["sample", "--guidance", "nan"], "--guidance 'nan': give a finite number"),
    (["eval", "--guidance", "inf"], "--guidance 'inf': give a finite number"),
    (["distill", "--lr", "nan"], "--lr 'nan': give a finite number"),
    (["sample", "--control-scale", "-inf"], "--control-scale '-inf': give a finite number"),
    (["distill", "--disc-betas", "0.5,nan", "--method", "dcm"], "give a finite number"),
])
def test_non_finite_numbers_are_refused(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def _output_cases():
    from videocm.config import Output

    for name, cls in CONFIGS:
        prefix = name.split() + _method_flag(cls)
        for setting in settings(cls):
            annotation = setting.type
            options = [a for a in typing.get_args(annotation) if a is not type(None)] \
                if typing.get_origin(annotation) in (typing.Union, types.UnionType) else [annotation]
            if any(typing.get_origin(o) is typing.Annotated and any(isinstance(e, Output) for e in o.__metadata__)
                   for o in options):
                yield pytest.param(prefix, setting.flag, id=f"{cls.__name__}{setting.flag}")


OUTPUT_CASES = list(_output_cases())


def test_every_command_that_writes_declares_its_output_paths():
    flags = {(tuple(case.values[0]), case.values[1]) for case in OUTPUT_CASES}
    for command in ("sample", "eval", "distill", "train-teacher", "export", "encode", "data export", "demo",
                    "compare", "curves", "bench", "train-judge", "plan"):
        assert any(" ".join(prefix).startswith(command) for prefix, _ in flags), command


@pytest.mark.parametrize("prefix,flag", OUTPUT_CASES)
def test_an_output_under_a_file_is_refused_before_any_work(prefix, flag, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_bytes(b"keep me")
    assert main([*prefix, flag, str(blocker / "inside" / "out.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("videocm: error:") and "\n" not in err and "is a file" in err and flag in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"] and blocker.read_bytes() == b"keep me"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders; the check is for other users")
def test_an_output_in_a_read_only_folder_is_refused(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        assert main(["sample", "--prompt", "x", "--out", str(locked / "clip.mp4")]) == 2
        assert "is not writable" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)


MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.mark.parametrize("extra,message", [
    (["--steps", "4", "--timesteps", "1.0,0.5"], "give --steps or --timesteps, not both"),
    (["--frames", "9", "--height", "32", "--width", "32"], "size a diffusers pipeline teacher's clips"),
    (["--max-sequence-length", "16"], "--max-sequence-length size a diffusers pipeline teacher's clips"),
    (["--negative-prompt", "blurry"], "a student makes no unconditional pass"),
])
def test_a_flag_that_would_be_ignored_is_refused(extra, message, tmp_path, capsys):
    """These used to be accepted and silently ignored: --steps 4 with two timesteps ran 2 steps, a clip shape on a
    videocm model and a negative prompt on a student changed nothing."""
    out = tmp_path / "clip.npy"
    assert main(["sample", "--model", str(MODELS / "lcm-vp"), "--prompt", "a red 3 moving left", "--out", str(out),
                 *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not out.exists()


def test_a_negative_prompt_at_guidance_1_is_refused(tmp_path, capsys):
    assert main(["sample", "--model", str(MODELS / "teacher-vp"), "--prompt", "a red 3 moving left", "--out",
                 str(tmp_path / "clip.npy"), "--guidance", "1", "--negative-prompt", "blurry", "--steps", "2"]) == 2
    assert "no unconditional pass" in capsys.readouterr().err


def _device_cases():
    from videocm.config import Device

    for name, cls in CONFIGS:
        for setting in settings(cls):
            options = typing.get_args(setting.type) if typing.get_origin(setting.type) in (
                typing.Union, types.UnionType) else (setting.type,)
            for option in options:
                for marker in getattr(option, "__metadata__", ()):
                    if isinstance(marker, Device):
                        yield pytest.param(name.split(), setting.flag, marker.planned, id=f"{name}{setting.flag}")


@pytest.mark.parametrize("prefix,flag,planned", list(_device_cases()))
def test_a_device_torch_or_this_machine_lacks_is_refused_in_one_line(prefix, flag, planned, tmp_path, capsys,
                                                                     monkeypatch):
    import torch

    monkeypatch.chdir(tmp_path)
    values = ["tpu9", "cuda:x"] + ([] if planned or torch.cuda.is_available() else ["cuda", "cuda:1"])
    for value in values:
        assert main([*prefix, flag, value]) == 2, value
        err = capsys.readouterr().err.strip()
        assert err.startswith("videocm: error:") and "\n" not in err and flag in err and value in err, err
    assert list(tmp_path.iterdir()) == []
