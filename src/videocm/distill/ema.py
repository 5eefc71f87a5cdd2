"""The trainer's sampling EMA of the weights, as a checkpointable object."""

from __future__ import annotations

import torch


class EMAState:
    """EMA weights as a checkpointable object (diffusers' EMAModel)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        from diffusers.training_utils import EMAModel

        self.ema = EMAModel([p for p in model.parameters() if p.requires_grad], decay=decay, use_ema_warmup=True,
                            power=0.75)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
