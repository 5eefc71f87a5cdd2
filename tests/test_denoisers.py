"""Denoiser wrappers compose and never change the denoiser they wrap."""

from __future__ import annotations

import pytest
import torch

from videocm.models.control import new_control_branch
from videocm.models.denoisers import (ControlledDenoiser, DenoiserAdapter, GuidanceEmbeddedDenoiser, unwrapped)
from videocm.models.families import get_family
from videocm.models.student import new_guidance_embedding

OPTIONS = dict(wan_layers=2, wan_heads=2, wan_head_dim=8, wan_ffn_dim=16, wan_freq_dim=16)


def tiny_wan() -> DenoiserAdapter:
    torch.manual_seed(0)
    return DenoiserAdapter("wan", get_family("wan").build_network(4, 24, 8, OPTIONS)).eval()


def perturb(module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g))


def test_guidance_and_control_wrappers_compose_without_touching_the_base():
    base = tiny_wan()
    g = torch.Generator().manual_seed(1)
    x, t, text = torch.randn(2, 4, 4, 8, 8, generator=g), torch.full((2,), 300.0), torch.randn(2, 5, 24, generator=g)
    control = torch.randn(2, 4, 4, 8, 8, generator=g)
    guided = GuidanceEmbeddedDenoiser(base, new_guidance_embedding(base))
    branch = new_control_branch("wan", base.network, 1, 4).eval()
    both = ControlledDenoiser(guided, branch)
    w = torch.full((2,), 4.0)
    with torch.no_grad():
        plain = base(x, t, text)
        # fresh parts start at zero: the composition computes what the base computes
        assert torch.equal(both(x, t, text, guidance=w, control=control), plain)
        perturb(guided.guidance_embedding, 2)
        perturb(branch, 3)
        steered = both(x, t, text, guidance=w, control=control)
        only_guidance = guided(x, t, text, guidance=w)
        assert (steered - only_guidance).abs().max() > 1e-4  # the control adds its residuals
        assert (only_guidance - plain).abs().max() > 1e-4  # the embedding shifts the timestep embedding
        assert torch.equal(base(x, t, text), plain)  # the base itself is unchanged by either wrapper
        assert not torch.allclose(guided(x, t, text, guidance=torch.full((2,), 8.0)), only_guidance)
    assert unwrapped(both) is base and both.network is base.network and both.family == "wan"
    with pytest.raises(ValueError, match="pass guidance="):
        guided(x, t, text)
    with pytest.raises(ValueError, match="without a control branch"):
        base(x, t, text, control=control)


def test_embedded_guidance_is_fixed_per_adapter():
    base = tiny_wan()
    other = base.with_embedded_guidance(7.5)
    assert other.network is base.network and other.embedded_guidance == 7.5 and base.embedded_guidance is None
