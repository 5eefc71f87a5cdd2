"""Conversions between what a network predicts and the clean sample / the noise.

All functions take ``alpha``, ``sigma`` already broadcast against ``x`` (see ``schedules.broadcast_to``) for the
forward process ``x = alpha * x0 + sigma * noise``. Prediction types:

* ``epsilon``: the noise; ``sample``: x0 itself;
* ``v_prediction``: ``v = alpha * noise - sigma * x0`` (Salimans & Ho 2022; needs ``alpha^2 + sigma^2 = 1``);
* ``flow``: the rectified-flow velocity ``noise - x0`` (needs ``alpha = 1 - sigma``).
"""

from __future__ import annotations

import torch

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample", "flow")


def _check(prediction_type: str) -> None:
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"unknown prediction_type {prediction_type!r}: use one of {', '.join(PREDICTION_TYPES)}")


def predicted_x0(
    output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The clean sample implied by the network ``output`` at ``x``."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return (x - sigma * output) / alpha
    if prediction_type == "v_prediction":
        return alpha * x - sigma * output
    if prediction_type == "sample":
        return output
    return x - sigma * output


def predicted_noise(
    output: torch.Tensor, x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """The noise implied by the network ``output`` at ``x``."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return output
    if prediction_type == "v_prediction":
        return alpha * output + sigma * x
    if prediction_type == "sample":
        return (x - alpha * output) / sigma
    return x + alpha * output


def prediction_target(
    x0: torch.Tensor, noise: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, prediction_type: str
) -> torch.Tensor:
    """What a network of ``prediction_type`` should output for ``x = alpha x0 + sigma noise`` (training target)."""
    _check(prediction_type)
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "v_prediction":
        return alpha * noise - sigma * x0
    if prediction_type == "sample":
        return x0
    return noise - x0
