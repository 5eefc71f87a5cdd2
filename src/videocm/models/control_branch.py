"""What every control branch shares (:mod:`models.control` explains control branches; each family's branch class
lives in its family file, :mod:`models.families`).

A branch computes residuals from ``(x_t, timestep, text states, control latents)`` alone and joins them to a frozen
network inside ``with branch.joined(network, residuals, scale) as extra:`` (``extra``: keyword arguments for the
network's call). :meth:`ControlBranch.check_fits` refuses a network of another architecture in one line.
"""

from __future__ import annotations

from diffusers.configuration_utils import ConfigMixin
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import VideoCMError


def network_config(network: nn.Module) -> dict:
    """The architecture of a diffusers network as a plain dict (its config without diffusers' private keys)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(network.config).items()
            if not k.startswith("_")}


def zero_init(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ControlBranch(ModelMixin, ConfigMixin):
    """What every family's branch shares: compatibility checks and joining their residuals to a network."""

    family: str

    def check_fits(self, family: str, network: nn.Module, where: str = "this model") -> None:
        """A one-line error unless ``network`` has the architecture this branch was trained for."""
        if family != self.family:
            raise VideoCMError(f"the control model was trained for a {self.family} network; {where} is {family}")
        mine, theirs = self.config.network_config, network_config(network)
        differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differing:
            shown = ", ".join(f"{k} {mine.get(k)} vs {theirs.get(k)}" for k in differing[:3])
            raise VideoCMError(f"the control model does not fit {where}: its network differs in {shown}; train a "
                               f"control model on this model's teacher (videocm train-control --teacher DIR)")


