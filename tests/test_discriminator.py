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


def one_detail_step(teacher_folder, out, **settings):
    """A detail-stage task on the tiny teacher (its network as the frozen base) and the logs of its first loss."""
    import numpy as np

    from videocm.distill.dcm import DCMConfig, DCMStageTask

    semantic = load_model(teacher_folder).denoiser
    config = DCMConfig(teacher=str(teacher_folder), out=str(out), batch_size=2, latent_pool=4, sample_every=0,
                       disc_every=1, **settings)
    task = DCMStageTask(config, 1, semantic, None, "cpu")
    step = Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), config.batch_size)
    loss, logs = task.loss(task.model, step)
    return task, loss, logs


def test_dcms_token_heads_give_a_logit_per_token_and_its_generator_loss_stops_at_the_margin():
    from videocm.distill.discriminator import FeatureDiscriminator, hinge_generator_loss

    heads = FeatureDiscriminator([8, 12], head="token", width=64)
    features = [torch.randn(2, 8, 3, 4, 5), torch.randn(2, 12, 3, 2, 2)]
    assert [tuple(x.shape) for x in heads(features)] == [(2, 60), (2, 12)]
    frame = FeatureDiscriminator([8], head="frame")
    assert tuple(frame(features[:1])[0].shape) == (2, 3)
    # hinge (DCM's): relu(1 - fake), no push once the fake is called real by the margin; linear: -fake
    fake = [torch.tensor([[2.0, 0.5]])]
    assert float(hinge_generator_loss(fake, "hinge")) == pytest.approx(0.25)
    assert float(hinge_generator_loss(fake, "linear")) == pytest.approx(-1.25)


def test_feature_matching_through_the_output_layer_is_the_networks_own_output_for_its_last_block(tiny_teachers):
    """DCM matches the read blocks' features through the teacher's final layer (norm, modulation, projection):
    for the last block that is exactly what the network outputs (up to the patch order)."""
    teacher = load_model(tiny_teachers["wan"])
    denoiser = teacher.denoiser
    last = denoiser.spec.feature_blocks(denoiser.network)[-1]
    x = torch.randn(2, *teacher.info.latent_shape)
    text = TextEncoder(max_length=16).encode(["a red 3", "a blue 7"])
    timestep = teacher.schedule.model_timestep(torch.tensor([0.3, 0.8]))
    with torch.no_grad(), FeatureTap(denoiser, [last], project=True)(tuple(x.shape)) as tap:
        output = denoiser(x, timestep, **text)
    assert tap.projects and tuple(tap.projections[0].shape) == (2, output[0].numel())
    for row in range(2):
        torch.testing.assert_close(tap.projections[0][row].sort().values, output[row].flatten().sort().values)


def test_unet_features_have_no_projection_and_match_on_the_blocks(tiny_teachers):
    denoiser = load_model(tiny_teachers["unet3d"]).denoiser
    assert not FeatureTap(denoiser, feature_blocks(denoiser, 1), project=True).projects


def test_the_generator_reads_the_heads_before_their_step_and_frozen_heads_do_not_move(tiny_teachers, tmp_path):
    """DCM's order (--disc-update after): the generator's logits come from the heads as they were before this
    step's discriminator update; --disc-update before reads them after it. --disc-lr 0 keeps the heads where they
    started (the D3 control arm). Every detail step logs the mean real and fake logits and how far the heads
    moved."""
    folder = tiny_teachers["wan"]
    after, _, logs_after = one_detail_step(folder, tmp_path / "a", disc_lr=0.05)
    before, _, logs_before = one_detail_step(folder, tmp_path / "b", disc_lr=0.05, disc_update="before")
    frozen, _, logs_frozen = one_detail_step(folder, tmp_path / "f", disc_lr=0.0)
    assert {"gan_real_logit", "gan_fake_logit", "disc_weight_change"} <= set(logs_after)
    assert logs_after["gan_discriminator"] == pytest.approx(logs_before["gan_discriminator"])  # the same heads read
    assert logs_after["gan_generator"] == pytest.approx(logs_frozen["gan_generator"])  # read before the step
    assert logs_before["gan_generator"] != pytest.approx(logs_after["gan_generator"], rel=1e-4)
    assert logs_after["disc_weight_change"] > 0 and logs_frozen["disc_weight_change"] == 0
    start = {k: v.clone() for k, v in zip(range(len(frozen.heads_at_start)), frozen.heads_at_start)}
    assert all(torch.equal(p, start[i]) for i, p in enumerate(frozen.heads.parameters()))
