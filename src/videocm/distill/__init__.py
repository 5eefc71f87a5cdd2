"""Distillation: the methods (``lcm``, ``dcm``, ``dmd``), their shared core and the trainer.

The package is also the Python API's ``videocm.distill(...)``: calling it runs :func:`videocm.api.distill` (a
subpackage and a function cannot share the name ``videocm.distill`` otherwise, since importing the subpackage
sets that attribute)."""

import sys
import types


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        from ..api import distill

        return distill(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
