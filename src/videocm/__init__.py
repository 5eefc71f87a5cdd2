"""videocm: consistency distillation of video diffusion models (VideoLCM, DCM) into 1-8 step students."""

__version__ = "0.1.0"

_DIFFUSERS_CLASSES = ("FlowConsistencyScheduler", "VPPhasedConsistencyScheduler", "ExpertSwitchingModel")


def __getattr__(name: str):
    """Diffusers loads exported students' classes as ``videocm.<Class>`` (``model_index.json``); import lazily."""
    if name in _DIFFUSERS_CLASSES:
        from .models import diffusers_classes

        return getattr(diffusers_classes, name)
    if name in ("ModelMixin", "SchedulerMixin"):  # diffusers finds a component's load method through these
        import diffusers

        return getattr(diffusers, name)
    raise AttributeError(f"module 'videocm' has no attribute {name!r}")
