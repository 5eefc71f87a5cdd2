"""Discriminator heads on a frozen (or fake-score) network's features, and the adversarial losses around them.

DCM's detail expert reads the frozen teacher's block features with light heads (hinge loss, feature matching);
DMD2's optional GAN term reads the fake score's features (the non-saturating logistic loss). A feature map is
``(B, D, T, H, W)`` (:class:`videocm.models.experts.FeatureTap`); a head gives one logit per token ``(B, T*H*W)``
(:class:`TokenHead`, DCM's) or per frame ``(B, T)`` (:class:`DiscriminatorHead`).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class DiscriminatorHead(nn.Module):
    """A feature map ``(B, D, T, H, W)`` -> per-frame logits ``(B, T)``: 1x1 conv, GroupNorm, LeakyReLU, residual,
    1x1 conv to one channel, mean over space. Works for any T, H, W."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(channels, channels, 1)
        self.norm = nn.GroupNorm(math.gcd(channels, 32), channels)
        self.act = nn.LeakyReLU(0.2)
        self.logit = nn.Conv3d(channels, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = features + self.act(self.norm(self.conv(features)))
        return self.logit(hidden).mean(dim=(3, 4)).flatten(1)


class TokenHead(nn.Module):
    """DCM's head: a feature map ``(B, D, T, H, W)`` -> one logit per token ``(B, T * H * W)``: 1x1 conv to
    ``width`` channels, GroupNorm, LeakyReLU; a second such layer with a residual; 1x1 conv to one channel. The
    GroupNorm statistics are per frame (DCM folds the frames into the batch)."""

    def __init__(self, channels: int, width: int = 1024) -> None:
        super().__init__()
        groups = math.gcd(width, 32)
        self.first = nn.Sequential(nn.Conv2d(channels, width, 1), nn.GroupNorm(groups, width), nn.LeakyReLU(0.01))
        self.second = nn.Sequential(nn.Conv2d(width, width, 1), nn.GroupNorm(groups, width), nn.LeakyReLU(0.01))
        self.logit = nn.Conv2d(width, 1, 1)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        batch, channels, frames, height, width = features.shape
        frames_first = features.transpose(1, 2).reshape(batch * frames, channels, height, width)
        hidden = self.first(frames_first)
        hidden = self.second(hidden) + hidden
        return self.logit(hidden).reshape(batch, frames * height * width)


class FeatureDiscriminator(nn.Module):
    """One head per tapped teacher block: :class:`TokenHead` (``head="token"``, DCM's) or
    :class:`DiscriminatorHead` (``"frame"``)."""

    def __init__(self, channels: list[int], head: str = "frame", width: int = 1024) -> None:
        super().__init__()
        if head not in ("token", "frame"):
            raise ValueError(f"head must be token or frame, got {head!r}")
        self.heads = nn.ModuleList(TokenHead(c, width) if head == "token" else DiscriminatorHead(c) for c in channels)

    def forward(self, features: list[torch.Tensor]) -> list[torch.Tensor]:
        return [head(f) for head, f in zip(self.heads, features)]


def hinge_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    return sum(torch.relu(1 - r).mean() + torch.relu(1 + f).mean() for r, f in zip(real, fake)) / len(real)


def hinge_generator_loss(fake: list[torch.Tensor], kind: str = "linear") -> torch.Tensor:
    """The generator's side of the hinge GAN: ``-fake`` (``linear``, the usual form) or ``relu(1 - fake)``
    (``hinge``, DCM's: no push once the heads call the fake real by a margin), averaged over heads."""
    if kind == "hinge":
        return sum(torch.relu(1 - f).mean() for f in fake) / len(fake)
    return sum(-f.mean() for f in fake) / len(fake)


def real_gradient_penalty(real: list[torch.Tensor], logits: list[torch.Tensor]) -> torch.Tensor:
    """Zero-centred gradient penalty on the real side (R1): the mean over rows of the squared norm of the
    gradient of the real logits with respect to the real features, summed over tapped blocks. ``real`` must
    require grad and ``logits`` be the heads' outputs on it; the graph is kept so the penalty trains the heads."""
    grads = torch.autograd.grad(sum(x.sum() for x in logits), real, create_graph=True)
    return sum(g.float().pow(2).flatten(1).sum(1).mean() for g in grads)


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    return sum(nn.functional.mse_loss(f.float(), r.float()) for f, r in zip(fake, real)) / len(fake)


def fit_discriminator(real: list[torch.Tensor], fake: list[torch.Tensor], steps: int = 200, lr: float = 1e-4,
                      betas: tuple[float, float] = (0.0, 0.999), seed: int = 0, head: str = "frame",
                      width: int = 1024) -> list[float]:
    """Train fresh heads on fixed feature maps (one ``(B, D, T, H, W)`` per tapped block) of "real" and "fake"
    with the hinge loss and DCM's optimiser settings; the loss of every step. A diagnosis of the adversarial term:
    heads that cannot push the loss below 2 cannot tell the two apart."""
    torch.manual_seed(seed)
    heads = FeatureDiscriminator([f.shape[1] for f in real], head, width).to(real[0].device)
    optimizer = torch.optim.AdamW(heads.parameters(), lr=lr, betas=betas, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        logits = heads([torch.cat([r, f]) for r, f in zip(real, fake)])
        n = len(real[0])
        loss = hinge_discriminator_loss([x[:n] for x in logits], [x[n:] for x in logits])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return losses


def logistic_discriminator_loss(real: list[torch.Tensor], fake: list[torch.Tensor]) -> torch.Tensor:
    """The non-saturating GAN's classifier loss ``softplus(-real) + softplus(fake)`` (DMD2's), averaged over heads."""
    return sum(nn.functional.softplus(-r).mean() + nn.functional.softplus(f).mean()
               for r, f in zip(real, fake)) / len(real)


def logistic_generator_loss(fake: list[torch.Tensor]) -> torch.Tensor:
    """The non-saturating generator loss ``softplus(-fake)`` (DMD2's), averaged over heads."""
    return sum(nn.functional.softplus(-f).mean() for f in fake) / len(fake)


def with_frozen_weights(module: nn.Module, *args, copied: bool = False, **kwargs):
    """``module(*args, **kwargs)`` with its parameters detached: the gradient reaches the inputs only (a generator's
    adversarial term read through a discriminator, or a fake score, that this loss must not train). ``copied``:
    copies of the weights, for a graph whose backward comes after the module's own optimiser step."""
    frozen = {name: value.detach().clone() if copied else value.detach() for name, value in module.named_parameters()}
    return torch.func.functional_call(module, frozen, args, kwargs)
