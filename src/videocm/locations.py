"""Where the shipped teachers and students are: ``--models-dir DIR``, else ``$VIDEOCM_MODELS``, else ``./models``
in the working directory. Only the command line's run functions resolve defaults through here; the library
takes model folders by path. (The judge is not here: it ships inside the package, see ``evaluation.judge``.)"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import VideoCMError

MODELS_ENV = "VIDEOCM_MODELS"


def models_dir(explicit: str | Path | None = None) -> Path:
    """The folder holding the shipped models: ``explicit``, else ``$VIDEOCM_MODELS``, else ``./models``."""
    return _resolve(explicit)


def _resolve(explicit: str | Path | None) -> Path:
    if explicit:
        return Path(explicit)
    if os.environ.get(MODELS_ENV):
        return Path(os.environ[MODELS_ENV])
    return Path("models")


def shipped_model(name: str, models_dir: str | Path | None = None, flag: str = "--model") -> Path:
    """The folder of shipped model ``name`` (e.g. ``teacher-flow``), or a one-line error naming where it was
    looked for and how to point at it (``flag`` is the command's own flag for a model folder)."""
    folder = _resolve(models_dir) / name
    if folder.is_dir():
        return folder
    where = f"--models-dir {models_dir}" if models_dir else (
        f"${MODELS_ENV}" if os.environ.get(MODELS_ENV) else "the working directory's models/")
    raise VideoCMError(f"no shipped model {name!r}: looked for {folder.resolve()} (from {where}); pass {flag} DIR, "
                       f"or --models-dir DIR or {MODELS_ENV}=DIR for the folder holding {name}/")
