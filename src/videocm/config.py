"""Typed run configuration: one dataclass per command, loaded from YAML, overridden by ``--key value`` flags,
and written back beside the run's outputs as ``config.yaml``.

A config is a dataclass of settings and sections (a field whose type is itself a dataclass, e.g.
:class:`VideoShape`). A config may also be composed of *groups*: dataclasses of related settings that it inherits,
each naming its YAML section with a class attribute ``SECTION = "teacher"`` (``videocm distill``'s config is the
run, teacher, data, student, guidance and matching groups plus its method's). A group's settings are read and
set flat (``config.grid_points``) and given as flat flags; ``config.yaml`` writes them under their section, and a
YAML file may give them under it or flat. A setting's flag is its name with dashes (``batch_size`` -> ``--batch-size``), unique
across the sections; its one-line doc is the trailing ``# comment`` on its line, read from the source, which
``--help`` prints. A field without a default is required; a ``Literal[...]`` type lists its choices; a ``bool``
flag given bare means true; a list is comma-separated (``--steps 1,2,4``), or repeatable
(``--model a --model b``) where the field says ``metadata={"repeat": True}``. YAML keys are the field names, a
section either as a mapping or flat.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import io
import math
import shutil
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml

from .errors import VideoCMError, read_user_text

ConfigT = TypeVar("ConfigT")
CONFIG_FILE = "config.yaml"
CONFIG_FLAG = "config"
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


# --- value ranges ---

@dataclass(frozen=True)
class Range:
    """The values a number setting takes, checked when the config is read (before any work): a field annotated
    ``Annotated[int, Range(1)]`` refuses 0 in one line. ``None`` leaves that end open."""

    low: float | None = None
    high: float | None = None
    open_low: bool = False  # the low end itself is excluded
    open_high: bool = False

    def describe(self) -> str:
        """``at least 1``, ``above 0``, ``in [0, 1)``."""
        if self.high is None:
            return f"{'above' if self.open_low else 'at least'} {self.low:g}"
        if self.low is None:
            return f"{'below' if self.open_high else 'at most'} {self.high:g}"
        return f"in {'(' if self.open_low else '['}{self.low:g}, {self.high:g}{')' if self.open_high else ']'}"

    def holds(self, value: float) -> bool:
        above = self.low is None or (value > self.low if self.open_low else value >= self.low)
        below = self.high is None or (value < self.high if self.open_high else value <= self.high)
        return above and below


Count = Annotated[int, Range(1)]  # a count of steps, clips, rows ...: at least 1
AtLeastTwo = Annotated[int, Range(2)]  # a count of clips that a Fréchet distance or an interval is computed over
Natural = Annotated[int, Range(0)]  # 0 or more (0 often meaning "off" or "none")
Positive = Annotated[float, Range(0, open_low=True)]  # a scale or rate above 0
NonNegative = Annotated[float, Range(0)]  # 0 (off) or more
Fraction = Annotated[float, Range(0, 1)]  # in [0, 1]
Decay = Annotated[float, Range(0, 1, open_high=True)]  # an EMA decay: 0 (off) up to, not including, 1


@dataclass(frozen=True)
class Output:
    """Marks a path setting the command writes (``Annotated[str, Output()]``): checked when the config is read,
    so a path under a file or in a read-only folder is refused before any model is loaded or clip generated, and
    so is one that already holds something (a file, or a folder that is not empty) unless the config's
    ``overwrite`` is on. ``kind``: ``"path"`` a file or folder the command makes; ``"run"`` a training run's
    folder, which ``--resume`` continues instead; ``"reused"`` a folder the command continues by design (a latent
    cache, the demo's folder), never refused for holding something. ``names``: the path is a folder the command
    writes these files into (a report), and only they count, or are replaced, there."""

    kind: Literal["path", "run", "reused"] = "path"
    names: tuple[str, ...] = ()


OutputPath = Annotated[str, Output()]
RunFolder = Annotated[str, Output("run")]
ReportFolder = Annotated[str, Output(names=("report.md", "report.html", "plot.png", "samples.gif"))]
ReusedFolder = Annotated[str, Output("reused")]
OVERWRITE_FLAG = "--overwrite"


def check_output_path(value: str, flag: str) -> None:
    """A one-line error when nothing can be written at ``value``: a folder on its way is a file, or the nearest
    existing folder (or the file itself) is not writable."""
    import os

    path = Path(value).expanduser()
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing != path and not existing.is_dir():
        raise VideoCMError(f"{flag} {value}: {existing} is a file, so nothing can be written under it; choose another "
                           f"path")
    target = existing if existing.exists() else Path(".")
    if not os.access(target, os.W_OK):
        raise VideoCMError(f"{flag} {value}: {target} is not writable; choose another path or fix its permissions")


def holds_something(path: Path) -> bool:
    """A file, or a folder with anything in it."""
    return path.is_file() or (path.is_dir() and any(path.iterdir()))


def is_run_folder(path: Path) -> bool:
    """A folder a videocm command has written its ``config.yaml`` into."""
    return (path / CONFIG_FILE).is_file()


def _written(path: Path, names: tuple[str, ...]) -> list[Path]:
    """What an output at ``path`` would replace: the named files in it, or the path itself."""
    if names:
        return [path / n for n in names if (path / n).exists()] if path.is_dir() else []
    return [path] if holds_something(path) else []


def existing_output_problem(value: str, flag: str, kind: str, overwrite: bool, resume: bool,
                            names: tuple[str, ...] = ()) -> str | None:
    """Why the command may not write at ``value`` as things stand there, or None. Nothing written is lost: an
    output that holds something needs ``--overwrite`` (a run folder: ``--resume`` continues it), and ``--resume``
    needs a run to continue."""
    path = Path(value).expanduser()
    if kind != "path" and path.is_file():
        return f"{flag} {value} is a file; give a folder (new, or one this command wrote)"
    if kind == "reused":
        return None
    if kind == "run" and resume:
        if overwrite:
            return f"give --resume (continue the run in {value}) or {OVERWRITE_FLAG} (replace it), not both"
        if not is_run_folder(path):
            what = "does not exist" if not path.exists() else "is not a videocm run folder (no config.yaml)"
            return f"--resume: {flag} {value} {what}, so there is no run to continue; drop --resume to start one"
        return None
    if overwrite or not _written(path, names):
        return None
    if names:
        found = ", ".join(p.name for p in _written(path, names))
        return (f"{flag} {value} already holds {found}; pass {OVERWRITE_FLAG} to replace them (nothing else there "
                f"is touched) or choose another {flag}")
    if kind == "run" and is_run_folder(path):
        return (f"{flag} {value} already holds a run; pass --resume to continue it, {OVERWRITE_FLAG} to delete it "
                f"and start again, or choose another {flag}")
    what = "is a file" if path.is_file() else "is a folder that is not empty"
    return (f"{flag} {value} {what}; pass {OVERWRITE_FLAG} to replace it (a folder is deleted first) or choose "
            f"another {flag}")


def output_settings(config: Any) -> list[tuple[Setting, str, Output]]:
    """(setting, value, marker) of every output path ``config`` has a value for."""
    found = []
    for setting in settings(type(config)):
        options = typing.get_args(setting.type) if typing.get_origin(setting.type) in (
            typing.Union, types.UnionType) else (setting.type,)
        markers = [m for o in options for m in getattr(o, "__metadata__", ()) if isinstance(m, Output)]
        value = setting.get(config)
        if markers and value is not None:
            found.append((setting, str(value), markers[0]))
    return found


def check_existing_outputs(config: Any) -> None:
    """A one-line error for the first output of ``config`` that may not be written as things stand."""
    overwrite, resume = bool(getattr(config, "overwrite", False)), bool(getattr(config, "resume", False))
    for setting, value, marker in output_settings(config):
        problem = existing_output_problem(value, setting.flag, marker.kind, overwrite, resume, marker.names)
        if problem:
            raise VideoCMError(problem)


@dataclass(frozen=True)
class Device:
    """Marks a torch device setting (``Annotated[str, Device()]``): refused when the config is read if torch
    does not know it or this machine does not have it (``--device cuda`` without a GPU)."""

    planned: bool = False  # a device a plan is made for, not one this machine must have


DeviceName = Annotated[str, Device()]
PlannedDevice = Annotated[str, Device(planned=True)]


def check_device(value: str, flag: str, planned: bool = False) -> None:
    import torch

    try:
        device = torch.device(value)
    except (RuntimeError, ValueError):
        raise VideoCMError(f"{flag} {value!r} is not a device torch knows; use cpu, cuda or cuda:N") from None
    if planned:
        if device.type not in ("cpu", "cuda"):
            raise VideoCMError(f"{flag} {value!r}: plans are made for cpu or cuda")
        return
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise VideoCMError(f"{flag} {value}: this machine has no CUDA GPU torch can use; leave {flag} out "
                               f"(the CPU is used) or pass {flag} cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise VideoCMError(f"{flag} {value}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    elif device.type != "cpu" and not (device.type == "mps" and torch.backends.mps.is_available()):
        raise VideoCMError(f"{flag} {value!r}: videocm runs on cpu or cuda")


# --- shared sections ---

@dataclass
class VideoShape:
    """Diffusers pipeline teachers: the clip shape and text length (default: the pipeline's)."""

    frames: Count | None = None  # frames per clip (4k+1 for CogVideoX, Wan, HunyuanVideo); with --height, --width
    height: Count | None = None  # clip height in pixels; with --frames, --width
    width: Count | None = None  # clip width in pixels; with --frames, --height
    max_sequence_length: Count | None = None  # text tokens

    def override(self) -> list[int] | None:
        """``[frames, height, width]``, or None when none of them is given."""
        shape = [self.frames, self.height, self.width]
        if all(v is None for v in shape):
            return None
        if any(v is None for v in shape):
            raise VideoCMError("give --frames, --height and --width together (they size a diffusers pipeline's clips)")
        return [int(v) for v in shape]


# --- what a config class declares ---

@dataclass(frozen=True)
class Setting:
    """One leaf field of a config: its flag name, type, default (``dataclasses.MISSING``: required) and doc."""

    name: str
    type: Any
    default: Any
    doc: str
    repeat: bool
    section: tuple[str, ...]  # the section fields it sits in, outermost first; () at the top level
    group: str = ""  # the YAML section of the group that declares it ("" for none)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is dataclasses.MISSING

    def get(self, config: Any) -> Any:
        """This setting's value in ``config`` (through its sections)."""
        for name in (*self.section, self.name):
            config = getattr(config, name)
        return config


def _own_field_docs(cls: type) -> dict[str, str]:
    """The trailing ``# comment`` of each field line in ``cls``'s own body (not its bases')."""
    try:
        source = textwrap.dedent(inspect.getsource(cls))
    except (OSError, TypeError):  # no source (e.g. a class made at run time): no docs
        return {}
    comments: dict[int, str] = {}
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            comments[token.start[0]] = token.string.lstrip("#").strip()
    tree = ast.parse(source)
    class_node = next(node for node in tree.body if isinstance(node, ast.ClassDef))
    docs = {}
    for node in class_node.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            lines = range(node.lineno, (node.end_lineno or node.lineno) + 1)
            found = [comments[line] for line in lines if line in comments]
            if found:
                docs[node.target.id] = found[0]
    return docs


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Field name -> one-line doc; a field redeclared without a comment keeps its base class's doc."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            docs.update(_own_field_docs(klass))
    return docs


@functools.cache
def groups(cls: type) -> dict[str, str]:
    """Top-level field name of ``cls`` -> the YAML section it is written under: the ``SECTION`` of the class that
    first declares the field (a field redeclared by a subclass, e.g. a method's own default, stays in its
    group); "" for a field of a class without one."""
    result: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if dataclasses.is_dataclass(klass):
            for name in inspect.get_annotations(klass):
                result.setdefault(name, klass.__dict__.get("SECTION", ""))
    names = {f.name for f in dataclasses.fields(cls)}
    return {name: group for name, group in result.items() if name in names}


def group_doc(cls: type, group: str) -> str:
    """The first paragraph of the docstring of the class that names ``group`` as its section, on one line."""
    for klass in reversed(cls.__mro__):
        if klass.__dict__.get("SECTION") == group:
            return " ".join((inspect.getdoc(klass) or "").split("\n\n")[0].split())
    return ""


def flat_mapping(values: dict[str, Any]) -> dict[str, Any]:
    """A ``config.yaml`` mapping with its group sections (one level of mappings) flattened."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        flat.update(value if isinstance(value, dict) else {key: value})
    return flat


def _is_section(annotation: Any) -> bool:
    return isinstance(annotation, type) and dataclasses.is_dataclass(annotation)


@functools.cache
def sections(cls: type) -> dict[tuple[str, ...], type]:
    """Section path -> its dataclass, the config itself at ``()``."""
    found = {(): cls}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            found.update({(f.name, *path): section for path, section in sections(hints[f.name]).items()})
    return found


@functools.cache
def settings(cls: type) -> tuple[Setting, ...]:
    """Every leaf setting of ``cls``, sections flattened in field order; flag names must be unique."""
    result: list[Setting] = []
    grouped = groups(cls)
    for path, section in sections(cls).items():
        hints, docs = typing.get_type_hints(section, include_extras=True), field_docs(section)
        for f in dataclasses.fields(section):
            if _is_section(hints[f.name]):
                continue
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            result.append(Setting(f.name, hints[f.name], default, docs.get(f.name, ""),
                                  bool(f.metadata.get("repeat")), path, grouped.get(path[0] if path else f.name, "")))
    names = [s.name for s in result] + [p[-1] for p in sections(cls) if p]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:  # a programming error in the config class, not the user's
        raise TypeError(f"{cls.__name__}: names {duplicates} appear twice among its settings and sections")
    return tuple(result)


# --- values ---

def type_name(annotation: Any) -> str:
    """``int | None`` -> ``int|None``, ``list[int]`` -> ``list[int]``, ``Literal['a', 'b']`` -> ``a|b``."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extras = typing.get_args(annotation)
        return type_name(base) + "".join(f" ({e.describe()})" for e in extras if isinstance(e, Range))
    if origin is Literal:
        return "|".join(str(a) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return "|".join("None" if a is type(None) else type_name(a) for a in typing.get_args(annotation))
    if origin in (list, tuple):
        return f"list[{type_name((typing.get_args(annotation) or (str,))[0])}]"
    return getattr(annotation, "__name__", str(annotation))


def _is_bool(annotation: Any) -> bool:
    if typing.get_origin(annotation) is Annotated:
        return _is_bool(typing.get_args(annotation)[0])
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return bool in typing.get_args(annotation)
    return annotation is bool


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML value or a command-line string into the field's declared type (and its :class:`Range`)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extras = typing.get_args(annotation)
        result = _coerce(value, base, key)
        if any(isinstance(e, Output) for e in extras) and result is not None:
            check_output_path(str(result), f"--{key.replace('_', '-')}")
        for device in (e for e in extras if isinstance(e, Device)):
            if result is not None:
                check_device(str(result), f"--{key.replace('_', '-')}", device.planned)
        for values in ([result] if not isinstance(result, list) else result):
            for bound in (e for e in extras if isinstance(e, Range)):
                if values is not None and not bound.holds(values):
                    raise VideoCMError(f"--{key.replace('_', '-')} must be {bound.describe()}, got {value!r}")
        return result
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, options[0], key)
    if origin is Literal:
        for choice in typing.get_args(annotation):
            if str(value) == str(choice):
                return choice
        choices = ", ".join(str(c) for c in typing.get_args(annotation))
        raise VideoCMError(f"--{key.replace('_', '-')} {value!r}: use one of {choices}")
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (str,)
        items = value.split(",") if isinstance(value, str) else list(value) if isinstance(value, list) else [value]
        try:
            return [_coerce(v.strip() if isinstance(v, str) else v, item, key) for v in items if v != ""]
        except VideoCMError as error:
            base = typing.get_args(item)[0] if typing.get_origin(item) is Annotated else item
            if base not in (int, float) or "finite" in str(error) or " must be " in str(error):
                raise
            raise VideoCMError(f"config key {key!r} expects comma-separated {type_name(item)} values, "
                               f"got {value!r}") from error
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in TRUE_WORDS:
                return True
            if str(value).lower() in FALSE_WORDS:
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            if annotation is int and isinstance(value, bool):
                raise ValueError(value)
            result = annotation(value)
            if annotation is float and not math.isfinite(result):
                raise VideoCMError(f"--{key.replace('_', '-')} {value!r}: give a finite number (not nan or inf)")
            return result
    except (TypeError, ValueError) as error:
        raise VideoCMError(f"config key {key!r} expects {annotation.__name__}, got {value!r}") from error
    return value


def _flatten(cls: type, values: dict[str, Any], source: str) -> dict[str, Any]:
    """Nested section and group mappings (as ``write_config`` writes them) -> leaf name -> value."""
    section_names = {path[-1]: section for path, section in sections(cls).items() if path}
    group_names = set(groups(cls).values()) - {""}
    leaves = {s.name for s in settings(cls)}
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in section_names:
            if not isinstance(value, dict):
                raise VideoCMError(f"{source}: {key!r} is a section; give it as a mapping of key: value")
            flat.update(_flatten(section_names[key], value, source))
        elif key in group_names and (isinstance(value, dict) or key not in leaves):
            if not isinstance(value, dict):
                raise VideoCMError(f"{source}: {key!r} is a section; give it as a mapping of key: value")
            flat.update(_flatten(cls, value, source))  # a group's keys are the config's own
        else:
            flat[key] = value
    return flat


def _unknown_message(unknown: list[str], known: list[str], source: str, as_flags: bool) -> str:
    def show(name: str) -> str:
        return "--" + name.replace("_", "-") if as_flags else name

    close = difflib.get_close_matches(unknown[0], known, n=1)
    hint = f" (did you mean {show(close[0])}?)" if close else ""
    listed = ([show(CONFIG_FLAG) + " FILE.yaml"] if as_flags else []) + [show(k) for k in sorted(known)]
    return f"{source}: unknown key(s) {', '.join(show(u) for u in unknown)}{hint}; known keys: {', '.join(listed)}"


def config_from_dict(cls: type[ConfigT], values: dict[str, Any], source: str = "config") -> ConfigT:
    """Build ``cls`` from leaf values (sections as mappings or flat), coercing each to its field's type."""
    known = {s.name: s for s in settings(cls)}
    values = _flatten(cls, values, source)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise VideoCMError(_unknown_message(unknown, list(known), source, as_flags=False))
    coerced = {}
    for name, value in values.items():
        if known[name].repeat and isinstance(value, str):
            value = [value]  # one value of a repeatable flag, never split on commas
        coerced[name] = _coerce(value, known[name].type, name)
    missing = [s.flag for s in known.values() if s.required and s.name not in coerced]
    if missing:
        raise VideoCMError(f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} required "
                           f"(a flag, or a key of --config FILE.yaml)")
    return _build(cls, coerced)


def _build(cls: type, values: dict[str, Any]) -> Any:
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if _is_section(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], values)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


# --- a config that is one of several classes ---

def resolve(reference: str) -> Any:
    """``"module:name"`` under ``videocm`` -> the object (the module imported only now)."""
    import importlib

    module, _, name = reference.partition(":")
    return getattr(importlib.import_module(f".{module}", "videocm"), name)


def flag_value(tokens: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` among ``tokens`` (the last one), if given."""
    value = None
    for i, token in enumerate(tokens):
        if token == f"--{name}" and i + 1 < len(tokens):
            value = tokens[i + 1]
        elif token.startswith(f"--{name}="):
            value = token.split("=", 1)[1]
    return value


@dataclass(frozen=True)
class OneOf:
    """A command's config that is one of several config classes, picked by one setting (``distill --method``):
    its value from the flags, else the YAML file, else a resumed run's own settings, else ``default``. Each class
    is named ``"module:Class"`` under ``videocm`` (imported only when picked) and defaults the setting to its own
    value, so the written ``config.yaml`` names it."""

    setting: str
    classes: tuple[tuple[str, str], ...]  # (value, "module:Class"), the default first
    default: str

    def choices(self) -> list[str]:
        return [value for value, _ in self.classes]

    def pick(self, value: str | None) -> type:
        value = self.default if value is None else str(value)
        for choice, reference in self.classes:
            if choice == value:
                return resolve(reference)
        raise VideoCMError(f"--{self.setting.replace('_', '-')} {value!r} is not known: use one of "
                           f"{', '.join(self.choices())}")

    def choose(self, tokens: list[str], values: dict[str, Any] | None = None,
               base: dict[str, Any] | None = None) -> type:
        """The class named by ``tokens`` (flags), then ``values`` (a YAML file), then ``base`` (a resumed run)."""
        value = flag_value(tokens, self.setting.replace("_", "-"))
        for source in (values or {}, base or {}):
            if value is None:
                value = flat_mapping(source).get(self.setting)
        return self.pick(value)


# --- the command line ---

def parse_flags(cls: type, tokens: list[str]) -> dict[str, Any]:
    """``["--lr", "1e-4", "--steps=10", "--resume"]`` -> ``{"lr": "1e-4", "steps": "10", "resume": "true"}``:
    dashes in keys become underscores; a bare flag, or a boolean one not followed by a yes/no word, means true;
    a repeatable flag collects its values in a list. Unknown keys are kept (``load_config`` reports them)."""
    known = {s.name: s for s in settings(cls)}
    result: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) < 3:
            raise VideoCMError(f"expected --key value, got {token!r}")
        key, has_value, value = token[2:].partition("=")
        key = key.replace("-", "_")
        setting = known.get(key)
        i += 1
        if not has_value:
            following = tokens[i] if i < len(tokens) else None
            switch = setting is not None and _is_bool(setting.type) and following is not None and \
                following.lower() not in TRUE_WORDS + FALSE_WORDS + ("none", "null")
            if following is None or following.startswith("--") or switch:
                value = "true"  # a bare flag such as --resume switches a boolean on
            else:
                value, i = following, i + 1
        if setting is not None and setting.repeat:
            result.setdefault(key, []).append(value)
        else:
            result[key] = value
    return result


def read_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file, with one-line errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise VideoCMError(f"config file {path} does not exist")
    try:
        loaded = yaml.safe_load(read_user_text(path, 'config file')) or {}
    except yaml.YAMLError as error:
        raise VideoCMError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
    if not isinstance(loaded, dict):
        raise VideoCMError(f"config file {path} must hold a mapping of key: value")
    return loaded


def check_values(config: Any) -> None:
    """A one-line error for the first setting of ``config`` outside its declared range or choices: what the
    command line's parsing checks, for a config built in Python."""
    for setting in settings(type(config)):
        value, annotation = setting.get(config), setting.type
        options = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
            else (annotation,)
        if value is None:
            continue
        for option in options:
            if typing.get_origin(option) is Literal and value not in typing.get_args(option):
                choices = ", ".join(str(c) for c in typing.get_args(option))
                raise VideoCMError(f"{setting.flag} {value!r}: use one of {choices}")
            if typing.get_origin(option) is Annotated:
                for bound in (e for e in typing.get_args(option)[1:] if isinstance(e, Range)):
                    for item in value if isinstance(value, (list, tuple)) else [value]:
                        if isinstance(item, (int, float)) and not bound.holds(item):
                            raise VideoCMError(f"{setting.flag} must be {bound.describe()}, got {item!r}")


def load_config(cls: type[ConfigT], path: str | Path | None = None, overrides: list[str] | None = None,
                base: dict[str, Any] | None = None, writes: bool = True) -> ConfigT:
    """Defaults, then ``base`` (a resumed run's own settings, or a recipe's; keys ``cls`` does not know are left
    out), then the YAML file, then command-line overrides."""
    known = {s.name for s in settings(cls)}
    values: dict[str, Any] = {k: v for k, v in (base or {}).items() if k in known}
    values.update(_flatten(cls, read_yaml(path), str(path)) if path is not None else {})
    flags = parse_flags(cls, overrides or [])
    unknown = sorted(set(flags) - {s.name for s in settings(cls)})
    if unknown:
        raise VideoCMError(_unknown_message(unknown, [s.name for s in settings(cls)], "command line", True))
    values.update(flags)
    config = config_from_dict(cls, values, str(path) if path else "command line")
    if writes:  # a command that writes nothing (videocm check) takes a config whose outputs it leaves alone
        check_existing_outputs(config)
    return config


def _default_text(value: Any) -> str:
    if value is None:
        return "None"
    if isinstance(value, list):
        return ",".join(str(v) for v in value) if value else "[]"
    if isinstance(value, str):
        return value if value else '""'
    return str(value)


def config_help(cls: type, width: int | None = None) -> str:
    """Every setting of ``cls`` as ``--flag TYPE = DEFAULT  doc``, grouped by section."""
    width = width or min(120, shutil.get_terminal_size((100, 20)).columns)
    entries: list[tuple[str, str, str]] = [
        ("", f"--{CONFIG_FLAG} FILE.yaml", "YAML file of settings (keys: the names below); flags override it")]
    order = list(dict.fromkeys(s.group for s in settings(cls)))
    for s in sorted(settings(cls), key=lambda s: order.index(s.group)):  # a group's settings together
        left = f"{s.flag} {type_name(s.type)}" + (" (required)" if s.required else f" = {_default_text(s.default)}")
        doc = s.doc + (" (repeatable)" if s.repeat else "") + (" (a bare flag means true)" if s.type is bool else "")
        heading = ".".join(((s.group,) if s.group else ()) + s.section)
        if heading:
            summary = (inspect.getdoc(sections(cls)[s.section]) or "").splitlines()[0] if s.section else \
                group_doc(cls, s.group)
            heading = f"{heading}: {summary}"
        entries.append((heading, left, doc))
    column = min(44, max(len(left) for _, left, _ in entries) + 4)
    lines: list[str] = []
    current: str | None = None
    for heading, left, doc in entries:
        if heading != current:
            current = heading
            lines += ["", *textwrap.wrap(heading, width, subsequent_indent="    ")] if heading else \
                ["", "settings:"] if lines else ["settings:"]
        head = f"  {left}"
        text = textwrap.wrap(doc, max(30, width - column), break_on_hyphens=False, break_long_words=False) or [""]
        if len(head) + 2 > column:
            lines.append(head)
            lines += [" " * column + t for t in text]
        else:
            lines.append(head.ljust(column) + text[0])
            lines += [" " * column + t for t in text[1:]]
    return "\n".join(lines)


def write_config(config: Any, folder: str | Path) -> Path:
    """Write the resolved config as ``folder/config.yaml``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    values, grouped = dataclasses.asdict(config), groups(type(config))
    written: dict[str, Any] = {}
    for name, value in values.items():  # field order; a group's settings under its section
        if grouped.get(name):
            written.setdefault(grouped[name], {})[name] = value
        else:
            written[name] = value
    path.write_text(yaml.safe_dump(written, sort_keys=False))
    return path
