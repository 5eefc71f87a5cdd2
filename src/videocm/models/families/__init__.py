"""The registry of network families: every module in this package that defines ``FAMILY`` (a
:class:`FamilySpec`) is one family, found by itself. A new family is one new file here (docs/adding-a-family.md).
"""

from __future__ import annotations

import importlib
import pkgutil

from ...errors import VideoCMError
from .base import FamilySpec, PipelineLayout

__all__ = ["FAMILIES", "FamilySpec", "PipelineLayout", "family_for_pipeline", "get_family", "pipeline_classes"]


def _discover() -> dict[str, FamilySpec]:
    found: dict[str, FamilySpec] = {}
    for module in sorted(m.name for m in pkgutil.iter_modules(__path__) if m.name != "base"):
        spec = getattr(importlib.import_module(f"{__name__}.{module}"), "FAMILY", None)
        if isinstance(spec, FamilySpec):
            found[spec.name] = spec
    return found


FAMILIES: dict[str, FamilySpec] = _discover()


def get_family(name: str | None, source=None) -> FamilySpec:
    """The family called ``name``, or a one-line error naming the known ones (and ``source``, the file that named
    it, e.g. a folder's ``videocm.json``)."""
    if name not in FAMILIES:
        where = f" (the \"family\" of {source})" if source is not None else ""
        raise VideoCMError(f"unknown model family {name!r}{where}: videocm loads {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_for_pipeline(class_name: str | None) -> FamilySpec | None:
    """The family whose diffusers pipeline class is ``class_name`` (None when no family has it)."""
    for spec in FAMILIES.values():
        if any(layout.class_name == class_name for layout in spec.layouts):
            return spec
    return None


def family_for_network(class_name: str | None) -> FamilySpec | None:
    """The family whose denoiser class is ``class_name`` (None when no family has it)."""
    for spec in FAMILIES.values():
        if spec.network_class == class_name:
            return spec
    return None


def pipeline_classes() -> list[str]:
    return [layout.class_name for spec in FAMILIES.values() for layout in spec.layouts]
