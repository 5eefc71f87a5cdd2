"""Recipes: the settings a distillation of one teacher layout starts from, each with where it comes from.

A recipe is a YAML file in this folder: the teacher layout it is for (``match``: the pipeline class and denoiser
config keys that pick it from a teacher folder), the teacher's own conventions (``teacher``: its scheduler shift,
guidance and clip; read by checks, not applied), and per method (``lcm-full``, ``lcm-lora``, ``dcm``, ``dmd``, ``scm``, ``rcm``)
the value of each ``videocm distill`` setting with its source: the public repository, commit, file and flag it
was read from, or our own measurement, or, where no public value exists, what it was taken from instead.

``videocm distill`` picks the recipe from the teacher folder (``--recipe auto``, the default) or by name
(``--recipe NAME``; ``none``: the built-in defaults), prints it with each value's source, and applies it under
the YAML file and the flags (any flag overrides it). A small network (a denoiser under 100 MB: the test
pipelines, a toy of your own) gets the ``moving-digits`` recipe, the test bench's values, which are the built-in
defaults; a real network of a layout no recipe knows keeps the built-in defaults and is told so. ``videocm
recipes`` lists them.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from ..errors import VideoCMError

FOLDER = Path(__file__).resolve().parent
METHOD_KEYS = ("lcm-full", "lcm-lora", "dcm", "dmd", "scm", "rcm")
AUTO, NONE = "auto", "none"
LARGE_BYTES = 100 * 2**20  # a denoiser whose weight files are smaller is a toy: it gets the test bench's recipe


@dataclass(frozen=True)
class Value:
    value: Any
    source: str


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    match: dict  # pipeline: [classes]; config: {key: value} of the denoiser; videocm: true (a videocm teacher);
    # small: true (any pipeline whose denoiser is under LARGE_BYTES)
    teacher: dict[str, Value]  # the teacher's own conventions (informational)
    methods: dict[str, dict[str, Value]]
    notes: str = ""

    def values(self, key: str) -> dict[str, Value]:
        """The settings of method ``key`` (``lcm-full``, ...); a one-line error when the recipe has none."""
        if key not in self.methods:
            raise VideoCMError(f"recipe {self.name} has no {key} settings (it has {', '.join(self.methods)}); give "
                               f"--recipe none for the built-in defaults")
        return self.methods[key]


def _values(mapping: dict, where: str) -> dict[str, Value]:
    found = {}
    for key, entry in (mapping or {}).items():
        if not isinstance(entry, dict) or "value" not in entry or not entry.get("source"):
            raise ValueError(f"{where}: {key} needs a value and a source")
        found[key] = Value(entry["value"], str(entry["source"]))
    return found


def load_recipe(path: Path) -> Recipe:
    raw = yaml.safe_load(path.read_text())
    methods = {key: _values(values, f"{path.name} {key}") for key, values in (raw.get("methods") or {}).items()}
    unknown = sorted(set(methods) - set(METHOD_KEYS))
    if unknown:
        raise ValueError(f"{path.name}: unknown method keys {unknown}")
    return Recipe(raw["name"], raw["title"], raw.get("match") or {}, _values(raw.get("teacher"), path.name),
                  methods, raw.get("notes", ""))


@functools.cache
def all_recipes() -> tuple[Recipe, ...]:
    """Every recipe file, read once per process."""
    return tuple(load_recipe(path) for path in sorted(FOLDER.glob("*.yaml")))


def recipe_named(name: str) -> Recipe:
    recipes = {r.name: r for r in all_recipes()}
    if name not in recipes:
        raise VideoCMError(f"--recipe {name!r} is not a recipe: use auto, none or one of {', '.join(recipes)} "
                           f"(videocm recipes lists them)")
    return recipes[name]


def _denoiser_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) if folder.is_dir() else 0


def describe_folder(teacher: str | Path) -> dict:
    """What a recipe is matched on: ``{"videocm": bool, "pipeline": class, "config": denoiser config,
    "denoisers": [subfolders], "bytes": weight bytes of the first denoiser}``; {} for a folder that is neither."""
    from ..models.info import is_model_folder

    path = Path(teacher).expanduser()
    if is_model_folder(path):
        return {"videocm": True}
    index = path / "model_index.json"
    if not index.is_file():
        return {}
    try:
        layout = json.loads(index.read_text())
    except (OSError, json.JSONDecodeError):
        return {}
    denoisers = [name for name in ("transformer", "unet", "transformer_2") if isinstance(layout.get(name), list)
                 and layout[name][0] is not None]
    config = {}
    if denoisers and (path / denoisers[0] / "config.json").is_file():
        config = json.loads((path / denoisers[0] / "config.json").read_text())
    return {"videocm": False, "pipeline": layout.get("_class_name"), "config": config, "denoisers": denoisers,
            "bytes": _denoiser_bytes(path / denoisers[0]) if denoisers else 0}


def _matches(recipe: Recipe, found: dict) -> int:
    """How specifically ``recipe`` matches a folder (the number of its conditions), or -1."""
    match = recipe.match
    if found.get("videocm"):
        return 1 if match.get("videocm") else -1
    if found.get("bytes", 0) < LARGE_BYTES:
        return 1 if match.get("small") else -1
    if match.get("videocm") or found.get("pipeline") not in match.get("pipeline", []):
        return -1
    wanted = match.get("config", {})
    if any(found.get("config", {}).get(key) != value for key, value in wanted.items()):
        return -1
    if "two_experts" in match and match["two_experts"] != ("transformer_2" in found.get("denoisers", [])):
        return -1
    return 1 + len(wanted) + ("two_experts" in match)


def recipe_for_teacher(teacher: str | Path) -> Recipe | None:
    """The most specific recipe matching the teacher folder, or None (a real network of a layout no recipe knows,
    or no teacher folder)."""
    found = describe_folder(teacher)
    if not found:
        return None
    scored = [(score, recipe) for recipe in all_recipes() if (score := _matches(recipe, found)) >= 0]
    return max(scored, key=lambda item: item[0])[1] if scored else None


def method_key(method: str, student: str) -> str:
    return f"lcm-{student}" if method == "lcm" else method


def recipe_layer(config_class: type, tokens: list[str], values: dict, report=None) -> dict:
    """The values a distillation starts from under its YAML file and flags: the recipe's for its teacher, method
    and student (``--recipe``), with ``recipe`` set to the one used (left ``auto`` when none matches). What was
    used is said once the config is valid (:func:`recipe_lines`)."""
    from ..config import flag_value, flat_mapping, settings

    values = flat_mapping(values or {})
    known = {s.name: s for s in settings(config_class)}

    def chosen(name: str):
        given = flag_value(tokens, name.replace("_", "-"))
        return given if given is not None else values.get(name, known[name].default if name in known else None)

    choice = str(chosen("recipe") or AUTO)
    if choice == NONE:
        return {}
    recipe = recipe_for_teacher(str(chosen("teacher"))) if choice == AUTO else recipe_named(choice)
    if recipe is None:
        return {}
    student = str(chosen("student") or "full") if "student" in known else "full"
    key = method_key(str(chosen("method")), student)
    if key not in recipe.methods:
        return {"recipe": recipe.name}
    settings_of = recipe.values(key)
    unknown = sorted(set(settings_of) - set(known))
    if unknown:  # a recipe file's mistake, not the user's
        raise VideoCMError(f"recipe {recipe.name} {key}: {', '.join(unknown)} are not settings of distill --method "
                           f"{chosen('method')}")
    return {"recipe": recipe.name, **{name: entry.value for name, entry in settings_of.items()}}


def recipe_lines(config) -> list[str]:
    """What a distill config started from, to say before it runs: the recipe, and each of its values with the
    source, or the value the YAML file or a flag gave instead."""
    if config.recipe == NONE:
        return ["recipe: none (--recipe none): the built-in defaults"]
    if config.recipe == AUTO:  # a real network whose layout no recipe knows
        return [f"recipe: none matches {config.teacher} (a layout no recipe knows): the built-in defaults, tuned "
                f"on MovingDigits (videocm recipes lists the recipes; --recipe NAME picks one)"]
    recipe = recipe_named(config.recipe)
    key = method_key(config.method, getattr(config, "student", "full"))
    if key not in recipe.methods:
        return [f"recipe {recipe.name} ({recipe.title}) has no {key} settings (no public recipe to take them from): "
                f"the built-in defaults, tuned on MovingDigits"]
    why = ""
    found = describe_folder(config.teacher)
    if recipe.match.get("small") and not found.get("videocm") and found.get("bytes", LARGE_BYTES) < LARGE_BYTES:
        why = (f" [a {found['bytes'] / 2**20:.1f} MB denoiser, under the {LARGE_BYTES // 2**20} MB of a real "
               f"teacher: the test bench's values]")
    lines = [f"recipe {recipe.name} ({recipe.title}), {key}{why}:"]
    for name, entry in recipe.values(key).items():
        used = getattr(config, name)
        given = "" if used == entry.value else f" -> {_shown(used)} (given)"
        lines.append(f"  --{name.replace('_', '-')} {_shown(entry.value)}{given}  ({entry.source})")
    return lines


def _shown(value: Any) -> str:
    return ",".join(str(v) for v in value) if isinstance(value, list) else str(value)


def recipes_table() -> str:
    """``videocm recipes``: each recipe, what it matches and its methods."""
    lines = []
    for recipe in all_recipes():
        match = recipe.match
        what = ("a videocm teacher folder (MovingDigits), or any pipeline whose denoiser is under "
                f"{LARGE_BYTES // 2**20} MB" if match.get("videocm") else
                f"{'/'.join(match.get('pipeline', []))}" + (f" with {', '.join(f'{k}={v}' for k, v in match.get('config', {}).items())}"
                                                             if match.get("config") else ""))
        lines.append(f"{recipe.name}: {recipe.title}")
        lines.append(f"  matches {what}")
        for key, values in recipe.methods.items():
            lines.append(f"  {key}: " + ", ".join(f"{name} {_shown(v.value)}" for name, v in values.items()))
        if recipe.notes:
            lines.append(f"  note: {' '.join(recipe.notes.split())}")
    return "\n".join(lines)
