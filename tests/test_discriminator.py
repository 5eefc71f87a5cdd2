"""The detail expert's discriminator can learn: heads on the frozen teacher's features separate real clips from
noised ones, and cannot separate a clip from itself (the hinge loss stays at 2)."""

from __future__ import annotations

import pytest
import torch

from videocm.distill.trainer import Step
from videocm.data.moving_digits import make_clip
from videocm.distill.discriminator import fit_discriminator
from videocm.data.moving_digits import clips_tensor
from videocm.errors import VideoCMError
from videocm.models.experts import FeatureTap, feature_blocks
from videocm.models.folder import load_model
from videocm.models.text_encoder import TextEncoder


def teacher_features(teacher, latents, text, t: float, noise) -> list[torch.Tensor]:
    schedule, denoiser = teacher.schedule, teacher.denoiser
    sigma = torch.full((len(latents),), t)
    x = schedule.add_noise(latents, noise, sigma)
    with torch.no_grad(), FeatureTap(denoiser, feature_blocks(denoiser, 1))(tuple(x.shape)) as tap:
        denoiser(x, schedule.model_timestep(sigma), **text)
    return [f.detach() for f in tap.features]


def test_heads_learn_real_against_noised_clips_and_not_against_themselves(tiny_teachers):
    teacher = load_model(tiny_teachers["wan"])
    clips = [make_clip(i, 0, "train") for i in range(8)]
    with torch.no_grad():
        latents = teacher.vae.encode(clips_tensor(clips))
    text = TextEncoder(max_length=16).encode([c.caption for c in clips])
    g = torch.Generator().manual_seed(0)
    shared = torch.randn(latents.shape, generator=g)  # re-noised with the same noise, as DCM's detail stage does
    corrupted = latents + 1.5 * torch.randn(latents.shape, generator=g)
    real = teacher_features(teacher, latents, text, 0.3, shared)
    fake = teacher_features(teacher, corrupted, text, 0.3, shared)
    learned = fit_discriminator(real, fake, steps=150, lr=1e-3)
    assert learned[0] > 1.5 and min(learned[-10:]) < 1.0  # from chance to separating them
    same = fit_discriminator(real, real, steps=150, lr=1e-3)
    assert min(same) > 1.9  # identical features: nothing to learn, the loss stays at 2


def test_gan_real_side_can_be_the_data(tiny_teachers, tmp_path):
    """``gan_real="data"`` shows the discriminator the clips' clean latents as real (as LADD and DMD2 do) instead of
    the consistency target; the consistency term of the same step is unchanged."""
    import numpy as np

    from videocm.distill.dcm import DCMConfig, DCMStageTask

    semantic = load_model(tiny_teachers["wan"]).denoiser
    logs = {}
    for real in ("target", "data"):
        config = DCMConfig(teacher=str(tiny_teachers["wan"]), out=str(tmp_path / real), batch_size=2, latent_pool=4,
                           sample_every=0, disc_every=1, gan_real=real)
        task = DCMStageTask(config, 1, semantic, None, "cpu")
        _, logs[real] = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    assert logs["target"]["consistency"] == logs["data"]["consistency"]
    assert logs["target"]["feature_matching"] < logs["data"]["feature_matching"]  # data is farther than the target


def test_real_gradient_penalty_is_the_squared_input_gradient():
    from videocm.distill.discriminator import real_gradient_penalty

    weights = [torch.randn(3, 2, 1, 1, requires_grad=True), torch.randn(5, 1, 2, 2, requires_grad=True)]
    real = [torch.randn(4, 3, 2, 1, 1, requires_grad=True), torch.randn(4, 5, 1, 2, 2, requires_grad=True)]
    logits = [(w * x).flatten(1).sum(1, keepdim=True) for w, x in zip(weights, real)]
    # a linear logit's gradient is its weight, the same for every row
    expected = sum(float(w.detach().pow(2).sum()) for w in weights)
    penalty = real_gradient_penalty(real, logits)
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    assert penalty.requires_grad  # trains the heads: the penalty depends on their weights through the graph


def test_gradient_penalty_joins_the_discriminator_step_and_changes_its_update(tiny_teachers, tmp_path):
    import numpy as np

    from videocm.distill.dcm import DCMConfig, DCMStageTask

    semantic = load_model(tiny_teachers["wan"]).denoiser
    heads, logs = {}, {}
    for gamma in (0.0, 10.0):
        config = DCMConfig(teacher=str(tiny_teachers["wan"]), out=str(tmp_path / str(gamma)), batch_size=2,
                           latent_pool=4, sample_every=0, disc_every=1, disc_lr=1e-2, disc_gradient_penalty=gamma)
        task = DCMStageTask(config, 1, semantic, None, "cpu")
        torch.manual_seed(0)
        task.heads.load_state_dict(DCMStageTask(config, 1, semantic, None, "cpu").heads.state_dict())
        before = {k: v.clone() for k, v in task.heads.state_dict().items()}
        _, logs[gamma] = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
        heads[gamma] = {k: v - before[k] for k, v in task.heads.state_dict().items()}
    assert "gan_penalty" not in logs[0.0] and logs[10.0]["gan_penalty"] > 0
    assert logs[0.0]["gan_discriminator"] == pytest.approx(logs[10.0]["gan_discriminator"])  # same hinge loss
    assert any(not torch.allclose(heads[0.0][k], heads[10.0][k]) for k in heads[0.0])  # a different update
    with pytest.raises(VideoCMError, match="disc-gradient-penalty"):
        DCMStageTask(DCMConfig(teacher=str(tiny_teachers["wan"]), out=str(tmp_path / "bad"),
                               disc_gradient_penalty=-1.0), 1, semantic, None, "cpu")
