"""Every registered network family, checked through the registry: what a new family file gets for free."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_spec_modules_exist
from videocm.errors import VideoCMError
from videocm.models.denoisers import DenoiserAdapter
from videocm.models.families import FAMILIES, FamilySpec, family_for_pipeline, get_family
from videocm.models.families.base import PipelineLayout

BUILT_IN = [name for name, spec in FAMILIES.items() if spec.teacher_schedule]
TINY = dict(wan_layers=2, wan_heads=2, wan_head_dim=8, wan_ffn_dim=16, wan_freq_dim=16, unet_channels=[16, 16],
            unet_head_dim=8, unet_norm_groups=8)


def test_the_registry_finds_every_family_file():
    assert set(FAMILIES) >= {"wan", "unet3d", "cogvideox", "hunyuan"}
    with pytest.raises(VideoCMError, match="unknown model family 'sora'"):
        get_family("sora")


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_family_spec_is_consistent(name):
    import diffusers

    spec = FAMILIES[name]
    assert isinstance(spec, FamilySpec) and spec.name == name
    assert hasattr(diffusers, spec.network_class), f"{spec.network_class} is not a diffusers class"
    assert spec.subfolder in ("transformer", "unet")
    assert spec.detail_own_modules, "a DCM detail expert needs its own modules"
    if spec.pipeline is not None:
        assert isinstance(spec.pipeline, PipelineLayout)
        assert hasattr(diffusers, spec.pipeline.class_name)
        assert family_for_pipeline(spec.pipeline.class_name) is spec  # no other family claims the class
    assert family_for_pipeline("NoSuchPipeline") is None


@pytest.mark.parametrize("name", BUILT_IN)
def test_built_in_family_networks_have_what_the_spec_names(name):
    """The modules the spec names (LoRA targets, the detail expert's own modules, the time embedding, feature
    blocks) exist in a network the family builds, and the adapter maps latents to latents of the same shape."""
    spec = get_family(name)
    torch.manual_seed(0)
    network = spec.build_network(4, 24, 8, TINY).eval()
    assert_spec_modules_exist(spec, network)
    assert spec.time_embedding(network).linear_2.out_features > 0
    denoiser = DenoiserAdapter(spec, network)
    x = torch.randn(2, 4, 4, 8, 8)
    with torch.no_grad():
        out = denoiser(x, torch.full((2,), 500.0), torch.randn(2, 5, 24))
    assert out.shape == x.shape and torch.isfinite(out).all()


@pytest.mark.parametrize("name", BUILT_IN)
def test_feature_maps_are_video_shaped(name):
    from videocm.models.experts import FeatureTap

    spec = get_family(name)
    torch.manual_seed(0)
    denoiser = DenoiserAdapter(spec, spec.build_network(4, 24, 8, TINY).eval())
    shape = (2, 4, 4, 8, 8)
    with torch.no_grad(), FeatureTap(denoiser, spec.feature_blocks(denoiser.network))(shape) as tap:
        denoiser(torch.randn(shape), torch.full((2,), 500.0), torch.randn(2, 5, 24))
    assert tap.features and all(f.ndim == 5 and f.shape[0] == 2 for f in tap.features)


def test_families_without_a_built_in_network_refuse_in_one_line():
    for spec in FAMILIES.values():
        if not spec.teacher_schedule:
            with pytest.raises(VideoCMError, match="distil a"):
                spec.build_network(4, 24, 8, {})
