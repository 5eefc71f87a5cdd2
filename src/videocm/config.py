"""Typed run configuration: one dataclass per command, loaded from YAML, overridden by ``--key value`` pairs,
and written back beside the run's outputs as ``config.yaml``."""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import VideoCMError

ConfigT = TypeVar("ConfigT")
CONFIG_FILE = "config.yaml"


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Turn a YAML value or a command-line string into the field's declared type."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(value, options[0], key)
    if origin in (list, tuple):
        (item,) = typing.get_args(annotation)[:1] or (str,)
        items = value.split(",") if isinstance(value, str) else list(value)
        return [_coerce(v.strip() if isinstance(v, str) else v, item, key) for v in items if v != ""]
    try:
        if annotation is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if annotation in (int, float, str):
            if annotation is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return annotation(value)
    except (TypeError, ValueError) as error:
        raise VideoCMError(f"config key {key!r} expects {annotation.__name__}, got {value!r}") from error
    return value


def config_from_dict(cls: type[ConfigT], values: dict[str, Any], source: str = "config") -> ConfigT:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise VideoCMError(f"{source}: unknown key(s) {', '.join(unknown)}; known keys: {', '.join(sorted(names))}")
    return cls(**{k: _coerce(v, hints[k], k) for k, v in values.items()})


def parse_overrides(overrides: list[str]) -> dict[str, str]:
    """``["--lr", "1e-4", "--steps=10", "--resume"]`` -> ``{"lr": "1e-4", "steps": "10", "resume": "true"}``;
    dashes in keys become underscores, a bare flag means true."""
    result: dict[str, str] = {}
    i = 0
    while i < len(overrides):
        token = overrides[i]
        if not token.startswith("--") or len(token) < 3:
            raise VideoCMError(f"expected --key value, got {token!r}")
        if "=" in token:
            key, value = token[2:].split("=", 1)
            i += 1
        elif i + 1 >= len(overrides) or overrides[i + 1].startswith("--"):
            key, value = token[2:], "true"  # a bare flag such as --resume switches a boolean on
            i += 1
        else:
            key, value = token[2:], overrides[i + 1]
            i += 2
        result[key.replace("-", "_")] = value
    return result


def load_config(cls: type[ConfigT], path: str | Path | None = None, overrides: list[str] | None = None) -> ConfigT:
    """Defaults, then the YAML file, then command-line overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise VideoCMError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as error:
            raise VideoCMError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
        if not isinstance(loaded, dict):
            raise VideoCMError(f"config file {path} must hold a mapping of key: value")
        values.update(loaded)
    values.update(parse_overrides(overrides or []))
    return config_from_dict(cls, values, str(path) if path else "command line")


def write_config(config: Any, folder: str | Path) -> Path:
    """Write the resolved config as ``folder/config.yaml``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG_FILE
    path.write_text(yaml.safe_dump(dataclasses.asdict(config), sort_keys=False))
    return path
