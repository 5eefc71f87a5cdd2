"""Tiny random diffusers video pipelines (tests/tiny_pipelines.py): each of the five layouts builds offline, saves,
reloads with ``DiffusionPipeline.from_pretrained`` and its own class, and generates deterministic 2-step videos."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import diffusers  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from diffusers import DiffusionPipeline  # noqa: E402

from tiny_pipelines import (  # noqa: E402
    LAYOUTS, NUM_FRAMES, SPECS, build_tiny_pipeline, call_kwargs, hunyuan_prompt_template,
)

PROMPT = "a red 3 moving left"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    return {layout: build_tiny_pipeline(layout, tmp_path_factory.mktemp(layout)) for layout in LAYOUTS}


def _load(path, cls=DiffusionPipeline):
    pipe = cls.from_pretrained(path)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _generate(pipe, layout, seed, **overrides):
    kwargs = call_kwargs(layout, **overrides)
    kwargs.setdefault("output_type", "np")
    return pipe(PROMPT, num_inference_steps=2, generator=torch.Generator("cpu").manual_seed(seed), **kwargs).frames


@pytest.mark.parametrize("layout", LAYOUTS)
def test_builds_reloads_and_generates_deterministically(layout, tmp_path):
    path = build_tiny_pipeline(layout, tmp_path / layout, seed=0)
    assert (path / "model_index.json").is_file()
    cls = getattr(diffusers, SPECS[layout]["pipeline"])

    pipe = _load(path)
    assert type(pipe) is cls
    assert next(pipe.components[name] for name in ("unet", "transformer") if name in pipe.components).device.type \
        == "cpu"
    video = _generate(pipe, layout, seed=0)
    shape = (1, NUM_FRAMES, call_kwargs(layout)["height"], call_kwargs(layout)["width"], 3)
    assert isinstance(video, np.ndarray) and video.shape == shape
    assert np.isfinite(video).all()

    again = _generate(_load(path, cls), layout, seed=0)  # the specific class loads the same folder
    np.testing.assert_array_equal(again, video)
    other = _generate(pipe, layout, seed=1)
    assert other.shape == shape and not np.allclose(other, video)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_latent_shape_and_build_seed(layout, tiny_dirs, tmp_path):
    pipe = _load(tiny_dirs[layout])
    latents = _generate(pipe, layout, seed=0, output_type="latent")
    assert tuple(latents.shape) == SPECS[layout]["latent_shape"]
    # the same build seed gives the same weights; another seed other weights
    same = _load(build_tiny_pipeline(layout, tmp_path / "same", seed=0))
    other = _load(build_tiny_pipeline(layout, tmp_path / "other", seed=1))
    name = "unet" if "unet" in pipe.components else "transformer"
    for mine, theirs in zip(pipe.components[name].state_dict().values(), same.components[name].state_dict().values()):
        torch.testing.assert_close(mine, theirs, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(pipe.components[name].state_dict().values(),
                                                      other.components[name].state_dict().values()))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_smallest_size(layout, tiny_dirs):
    """16x16 pixels (2x2 latents) is the smallest size the first four layouts accept (8x8: Wan/Hunyuan reject,
    CogVideoX fails); LTXPipeline takes multiples of 32 only."""
    size = 32 if layout == "ltx" else 16
    video = _generate(_load(tiny_dirs[layout]), layout, seed=0, height=size, width=size)
    assert video.shape == (1, NUM_FRAMES, size, size, 3) and np.isfinite(video).all()
    if layout == "ltx":
        with pytest.raises(ValueError, match="divisible by 32"):
            _generate(_load(tiny_dirs[layout]), layout, seed=0, height=16, width=16)


def test_tokenizers_reload_with_their_special_tokens(tiny_dirs):
    from transformers import CLIPTokenizer, LlamaTokenizer, T5Tokenizer

    unet3d = _load(tiny_dirs["unet3d"])
    assert isinstance(unet3d.tokenizer, CLIPTokenizer) and unet3d.tokenizer.model_max_length == 16
    tokens = unet3d.tokenizer.convert_ids_to_tokens(unet3d.tokenizer(PROMPT).input_ids)
    assert tokens == ["<|startoftext|>", "a</w>", "red</w>", "3</w>", "moving</w>", "left</w>", "<|endoftext|>"]
    assert unet3d.text_encoder.config.eos_token_id == unet3d.tokenizer.eos_token_id

    for layout in ("cogvideox", "wan"):
        tokenizer = _load(tiny_dirs[layout]).tokenizer
        assert isinstance(tokenizer, T5Tokenizer)
        assert tokenizer.convert_ids_to_tokens(tokenizer(PROMPT).input_ids) == [
            "▁a", "▁red", "▁3", "▁moving", "▁left", "</s>"]
        assert (tokenizer.pad_token_id, tokenizer.eos_token_id) == (0, 1)

    hunyuan = _load(tiny_dirs["hunyuan"])
    assert isinstance(hunyuan.tokenizer, LlamaTokenizer) and hunyuan.tokenizer.padding_side == "right"
    template = hunyuan_prompt_template(hunyuan.tokenizer)
    assert template["crop_start"] == 95  # as DEFAULT_PROMPT_TEMPLATE: the default template works unchanged
    ids = hunyuan.tokenizer(template["template"].format(PROMPT)).input_ids
    tokens = hunyuan.tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "<|begin_of_text|>" and tokens[94] == "\n\n"
    assert tokens[95:] == ["a", "▁red", "▁", "3", "▁moving", "▁left", "<|eot_id|>"]
    assert hunyuan.tokenizer_2.model_max_length == 77 and hunyuan.text_encoder_2.config.max_position_embeddings == 77
