"""videocm: consistency distillation of video diffusion models (VideoLCM, DCM) into 1-8 step students.

The Python API (``docs/python-api.md``), on the same code paths as the ``videocm`` command:

- :func:`load` a teacher or student folder; call the result with a prompt (``.to(device)``, ``.export(out)``);
- :func:`distill` a teacher (keywords are the command's flags; or a :class:`LCMConfig`, :class:`DCMConfig`,
  :class:`DMDConfig`, :class:`SCMConfig`, :class:`RCMConfig`), with an optional per-step ``callback``;
- :func:`evaluate` models on the MovingDigits judge, :func:`export` a student for diffusers, :func:`save_video`.

Names are imported when first used, so ``import videocm`` stays quick.
"""

__version__ = "0.1.0"

_DIFFUSERS_CLASSES = ("FlowConsistencyScheduler", "VPPhasedConsistencyScheduler", "TrigFlowConsistencyScheduler",
                      "ExpertSwitchingModel")
_API = {  # public name: (module, attribute)
    "load": ("api", "load"), "Generator": ("api", "Generator"),
    "evaluate": ("api", "evaluate"), "export": ("api", "export"), "save_video": ("api", "save_video"),
    "LCMConfig": ("distill.lcm", "LCMConfig"), "DCMConfig": ("distill.dcm", "DCMConfig"),
    "DMDConfig": ("distill.dmd", "DMDConfig"), "SCMConfig": ("distill.scm", "SCMConfig"),
    "RCMConfig": ("distill.scm", "RCMConfig"), "VideoCMError": ("errors", "VideoCMError"),
}
__all__ = [*_API, "distill", *_DIFFUSERS_CLASSES]


def __getattr__(name: str):
    """The API's names, and the classes diffusers loads exported students with (``videocm.<Class>`` in
    ``model_index.json``), imported on first use."""
    if name == "distill":  # the subpackage, callable as the API's distill (see videocm/distill/__init__.py)
        import importlib

        return importlib.import_module(".distill", __name__)
    if name in _API:
        import importlib

        module, attribute = _API[name]
        return getattr(importlib.import_module(f".{module}", __name__), attribute)
    if name in _DIFFUSERS_CLASSES:
        from .models import diffusers_classes

        return getattr(diffusers_classes, name)
    if name in ("ModelMixin", "SchedulerMixin"):  # diffusers finds a component's load method through these
        import diffusers

        return getattr(diffusers, name)
    raise AttributeError(f"module 'videocm' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
