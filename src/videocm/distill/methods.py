"""The distillation methods ``videocm distill --method`` picks from: each method's config and run function, named
here and imported only when picked (the methods' modules take seconds to import, which ``videocm --help`` should
not pay). A new method is its own file in ``distill/`` and one row below."""

from __future__ import annotations

from ..config import OneOf, resolve

METHODS = {  # --method: (its config class, its run function)
    "lcm": ("distill.lcm:LCMConfig", "distill.lcm:distill"),
    "dcm": ("distill.dcm:DCMConfig", "distill.dcm:distill_dcm"),
    "dmd": ("distill.dmd:DMDConfig", "distill.dmd:distill_dmd"),
    "scm": ("distill.scm:SCMConfig", "distill.scm:distill_scm"),
    "rcm": ("distill.scm:RCMConfig", "distill.scm:distill_rcm"),
}

DISTILL_CONFIG = OneOf("method", tuple((method, config) for method, (config, _) in METHODS.items()), default="lcm")


def run_distill(config, progress: bool = True, monitor=None) -> dict:
    """Run (or resume) the distillation ``config.method`` names, after ``videocm check`` where
    :func:`wants_preflight` says so."""
    import os

    from .trainer import say_ready, say_when_ready

    # the recipe, said once the run's teacher, data and settings have loaded (a bad flag's error stays one line)
    said = os.environ.get("RANK", "0") == "0" and not config.resume
    say_when_ready([f"videocm: {line}" for line in resolve("recipes:recipe_lines")(config)] if said else [])
    if wants_preflight(config):
        say_ready()
        resolve("training.preflight:preflight")(config)
    return resolve(METHODS[config.method][1])(config, progress=progress, monitor=monitor)


def wants_preflight(config) -> bool:
    """``--preflight true``; ``auto``: a new run (not a resume) on one process of a teacher a real layout's recipe
    matched (not MovingDigits, not a small network: both get the moving-digits recipe)."""
    import os

    if config.preflight != "auto":
        return config.preflight == "true"
    return (not config.resume and int(os.environ.get("WORLD_SIZE", "1")) == 1
            and config.recipe not in ("auto", "none", "moving-digits"))
