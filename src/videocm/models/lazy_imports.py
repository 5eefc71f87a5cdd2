"""Importing one diffusers model class without importing all of them.

diffusers' ``models.transformers``, ``models.autoencoders`` and ``models.unets`` packages import every class they
hold when first touched (their ``__init__`` is eager), so loading a Wan transformer also imports several dozen other
networks and what they need (peft, scipy). :func:`defer_package_inits` puts a stand-in for each such package
into ``sys.modules`` that finds its submodules as the package would, and runs the real ``__init__`` only when
something asks the package itself for a name: ``from diffusers.models.transformers import X`` still works, and
importing the one submodule a model folder needs (``...transformers.transformer_wan``) skips the rest.

Only the ``videocm`` command does this (its process exists to run one command); importing videocm as a library
changes nothing.
"""

from __future__ import annotations

import importlib.util
import sys
import threading
import types

DEFERRED = ("diffusers.models.transformers", "diffusers.models.autoencoders", "diffusers.models.unets")


class DeferredPackage(types.ModuleType):
    """A package whose ``__init__`` runs the first time a name it defines is asked for."""

    def __init__(self, name: str, spec) -> None:
        super().__init__(name)
        self.__spec__, self.__file__, self.__package__ = spec, spec.origin, name
        self.__path__ = list(spec.submodule_search_locations)
        self.__dict__["_videocm_lock"] = threading.RLock()
        self.__dict__["_videocm_loaded"] = False

    def __getattr__(self, name: str):
        if name.startswith("__") or self.__dict__["_videocm_loaded"]:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        with self.__dict__["_videocm_lock"]:
            if not self.__dict__["_videocm_loaded"]:
                self.__dict__["_videocm_loaded"] = True
                self.__spec__.loader.exec_module(self)  # the real __init__, into this module
        return getattr(self, name)


def defer_package_inits(packages: tuple[str, ...] = DEFERRED) -> None:
    """Install :class:`DeferredPackage` stand-ins for ``packages`` not imported yet (idempotent; imports
    nothing itself, so a command that never loads a model pays nothing)."""
    from pathlib import Path

    for name in packages:
        if name in sys.modules:
            continue
        top, *rest = name.split(".")
        root = importlib.util.find_spec(top)  # finds the top package without importing it
        if root is None or root.submodule_search_locations is None:
            continue
        folder = Path(list(root.submodule_search_locations)[0]).joinpath(*rest)
        if not (folder / "__init__.py").is_file():
            continue
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
        sys.modules[name] = DeferredPackage(name, spec)
