"""The detail expert's discriminator can learn: heads on the frozen teacher's features separate real clips from
noised ones, and cannot separate a clip from itself (the hinge loss stays at 2)."""

from __future__ import annotations

import torch

from videocm.data.moving_digits import make_clip
from videocm.distill.dcm import fit_discriminator
from videocm.distill.vae_training import clips_tensor
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
        _, logs[real] = task.loss(task.model, 0, np.random.default_rng(0), torch.Generator().manual_seed(0), "cpu")
    assert logs["target"]["consistency"] == logs["data"]["consistency"]
    assert logs["target"]["feature_matching"] < logs["data"]["feature_matching"]  # data is farther than the target
