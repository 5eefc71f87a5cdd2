"""Distribution matching: DMD2's gradient and its normalisation, the fake score, ``--method dmd`` end to end (student
folder, exact resume), ``--dmd-weight`` on LCM and DCM, and distillation from a prompt list (``--data prompts:FILE``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videocm.distill.trainer import Step
from videocm.cli import main
from videocm.data.latent_cache import LatentCache
from videocm.diffusion.sampling import sample_teacher
from videocm.distill.dcm import DCMConfig, distill_dcm
from videocm.distill.dmd import DMDConfig, DMDTask, distill_dmd
from videocm.distill.lcm import LCMConfig, LCMTask, distill
from videocm.distill.matching import matching_gradient, matching_loss, timestep_range
from videocm.errors import VideoCMError
from videocm.models.folder import load_model
from videocm.pipeline import initial_noise


def tiny(config_class, teacher: Path, out: Path, **changes):
    values = dict(teacher=str(teacher), out=str(out), steps=4, batch_size=2, latent_pool=8, sample_every=0,
                  checkpoint_every=2, warmup_steps=1, fake_updates=2)
    values.update(changes)
    return config_class(**values)


def test_matching_gradient_is_normalised_per_clip_and_reaches_x0_through_the_loss():
    torch.manual_seed(0)
    x0 = torch.randn(2, 3, 2, 4, 4, requires_grad=True)
    real, fake = torch.randn(2, 3, 2, 4, 4), torch.randn(2, 3, 2, 4, 4)
    gradient = matching_gradient(x0.detach(), real, fake)
    scale = (x0.detach() - real).abs().mean(dim=(1, 2, 3, 4), keepdim=True)
    torch.testing.assert_close(gradient, (fake - real) / scale)
    matching_loss(x0, gradient).backward()
    torch.testing.assert_close(x0.grad, gradient / x0.numel())  # the loss hands exactly the gradient to x0


def test_timestep_range_maps_grid_fractions_to_indices():
    assert timestep_range([0.02, 0.98], 50) == (1, 49)
    assert timestep_range([0.5, 1.0], 50) == (25, 50)
    with pytest.raises(VideoCMError, match="--dmd-timestep-range"):
        timestep_range([0.9, 0.1], 50)


@pytest.mark.parametrize("family", ["wan", "unet3d"])
def test_a_fake_score_equal_to_the_teacher_gives_no_gradient_and_it_then_learns(tiny_teachers, tmp_path, family):
    task = LCMTask(tiny(LCMConfig, tiny_teachers[family], tmp_path / "run", dmd_weight=1.0, guidance=1.0,
                        fake_lr=1e-3))
    matching, d = task.matching, task.teacher_context
    rng, generator = np.random.default_rng(0), torch.Generator().manual_seed(0)
    latents, text, _ = d.batches.draw(2, rng, (0, 1), "cpu")
    x0 = latents.clone().requires_grad_(True)
    # unguided teacher against its own copy: the real and fake scores agree, so the term pulls nowhere
    term, logs = matching.term(x0, text, d.unconditional(text, 2), torch.ones(2), rng, generator, 2, slice(0, 2))
    term.backward()
    assert logs["dmd_gradient"] == 0.0 and float(x0.grad.abs().max()) == 0.0
    teacher_before = {k: v.clone() for k, v in d.teacher.state_dict().items()}
    fake_before = {k: v.clone() for k, v in matching.fake.state_dict().items()}
    fixed = [matching.update_fake(latents, text, np.random.default_rng(7), torch.Generator().manual_seed(7), 2,
                                  slice(0, 2)) for _ in range(25)]
    assert fixed[-1] < 0.8 * fixed[0], fixed  # the same noise and times again and again: it learns them
    assert any(not torch.equal(v, fake_before[k]) for k, v in matching.fake.state_dict().items())
    for key, value in d.teacher.state_dict().items():
        assert torch.equal(value, teacher_before[key]), f"the teacher changed: {key}"
    # now the two scores differ, and the term has a gradient
    x0.grad = None
    term, logs = matching.term(x0, text, d.unconditional(text, 2), torch.ones(2), rng, generator, 2, slice(0, 2))
    term.backward()
    assert logs["dmd_gradient"] > 0 and float(x0.grad.abs().max()) > 0


def test_dmd_student_folder_samples_at_one_two_and_four_steps(tiny_teachers, tmp_path):
    out = tmp_path / "dmd"
    summary = distill_dmd(tiny(DMDConfig, tiny_teachers["wan"], out), progress=False)
    assert summary["steps_done"] == 4
    info = json.loads((out / "videocm.json").read_text())
    assert info["kind"] == "student" and info["method"] == "dmd" and info["default_steps"] == 4
    header = (out / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"dmd", "dmd_gradient", "fake_score", "generator_step"} <= set(header)
    teacher = load_model(tiny_teachers["wan"]).denoiser.network.state_dict()
    student = load_model(out).denoiser.network.state_dict()
    assert any(not torch.allclose(student[k].float(), teacher[k].float()) for k in teacher)  # it trained
    scores = tmp_path / "scores.json"
    assert main(["eval", "--model", str(out), "--steps", "1,2,4", "--n", "4", "--json", str(scores)]) == 0
    assert [row["nfe"] for row in json.loads(scores.read_text())["rows"]] == [1, 2, 4]


@pytest.mark.parametrize("gan", [0.0, 0.01])
def test_dmd_resumes_exactly_with_its_fake_score(tiny_teachers, tmp_path, gan):
    teacher = tiny_teachers["unet3d"]
    distill_dmd(tiny(DMDConfig, teacher, tmp_path / "whole", dmd_gan_weight=gan), progress=False)
    distill_dmd(tiny(DMDConfig, teacher, tmp_path / "parts", stop_at_step=2, dmd_gan_weight=gan), progress=False)
    distill_dmd(tiny(DMDConfig, teacher, tmp_path / "parts", resume=True, dmd_gan_weight=gan), progress=False)
    a = load_file(str(tmp_path / "whole" / "unet" / "diffusion_pytorch_model.safetensors"))
    b = load_file(str(tmp_path / "parts" / "unet" / "diffusion_pytorch_model.safetensors"))
    for key in a:  # the generator's steps 3-4 read the fake score (and GAN head) the checkpoint restored
        torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)


@pytest.mark.parametrize("family", ["wan", "unet3d"])
def test_gan_head_on_the_fake_score_learns_real_from_generated_and_only_the_generator_gets_its_loss(
        tiny_teachers, tmp_path, family):
    task = DMDTask(tiny(DMDConfig, tiny_teachers[family], tmp_path / "dmd", dmd_gan_weight=0.5, fake_lr=1e-3,
                        dmd_gan_classifier_weight=1.0))
    matching, d = task.matching, task.teacher_context
    assert matching.heads is not None and len(matching.tap.blocks) == 1
    real, text, _ = d.batches.draw(2, np.random.default_rng(0), (0, 1), "cpu")
    generated = torch.zeros_like(real)  # an obviously wrong generator: blank latents
    losses = []
    for _ in range(30):  # the same clips, noise and times each time: the head learns to tell them apart
        matching.update_fake(generated, text, np.random.default_rng(3), torch.Generator().manual_seed(3), 2,
                             slice(0, 2), real)
        losses.append(matching.classifier_loss)
    assert losses[0] > 1.0 and losses[-1] < 0.5 * losses[0], losses  # 2 ln 2 = 1.39 is a coin toss
    # the generator's loss is the weighted sum of both terms
    loss, logs = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    assert {"dmd", "fake_score", "gan_generator", "gan_classifier"} <= set(logs)
    assert float(loss.detach()) == pytest.approx(logs["dmd"] + 0.5 * logs["gan_generator"], rel=1e-5)
    # the GAN generator loss reaches x0 and nothing of the fake score or its head
    x0 = real.clone().requires_grad_(True)
    gan = matching._generator_gan(x0, text, np.random.default_rng(1), torch.Generator().manual_seed(1), 2,
                                  slice(0, 2))
    gan.backward()
    assert float(x0.grad.abs().max()) > 0
    assert all(p.grad is None for p in [*matching.fake.parameters(), *matching.heads.parameters()])


def test_dmd_weight_adds_the_term_to_lcm_and_to_the_dcm_detail_stage(tiny_teachers, tmp_path):
    teacher = tiny_teachers["wan"]
    plain = tmp_path / "lcm"
    distill(tiny(LCMConfig, teacher, plain), progress=False)
    regularised = tmp_path / "lcm-dmd"
    distill(tiny(LCMConfig, teacher, regularised, dmd_weight=2.0), progress=False)
    rows = [json.loads(line) for line in (regularised / "train_log.jsonl").read_text().splitlines()]
    assert {"consistency", "dmd", "fake_score"} <= set(rows[-1])
    a = load_model(plain).denoiser.network.state_dict()
    b = load_model(regularised).denoiser.network.state_dict()
    assert any(not torch.equal(a[k], b[k]) for k in a)
    dcm = tmp_path / "dcm"
    distill_dcm(tiny(DCMConfig, teacher, dcm, steps=0, semantic_steps=2, detail_steps=2, dmd_weight=1.0, gan_weight=0.0,
                     feature_matching_weight=0.0), progress=False)
    semantic = (dcm / "stages" / "expert-0-semantic" / "train_log.csv").read_text().splitlines()[0]
    detail = (dcm / "stages" / "expert-1-detail" / "train_log.csv").read_text().splitlines()[0]
    assert "dmd" not in semantic.split(",") and {"dmd", "fake_score"} <= set(detail.split(","))


def test_lcm_from_prompts_alone_distils_on_the_teachers_own_clips(tiny_teachers, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red 3 moving left\n\na blue 7 moving up\n")
    out = tmp_path / "lcm"
    config = tiny(LCMConfig, tiny_teachers["wan"], out, data=f"prompts:{prompts}", prompt_samples=2,
                  prompt_teacher_steps=3, steps=2)
    distill(config, progress=False)
    cache = LatentCache(out / "latent-cache")
    assert cache.captions == ["a red 3 moving left"] * 2 + ["a blue 7 moving up"] * 2
    record = cache.fingerprint
    assert record["teacher_steps"] == 3 and record["guidance"] == 4.0 and record["samples_per_prompt"] == 2
    # each cached clip is the teacher's 3-step guided sample from its own seed
    model = load_model(tiny_teachers["wan"])
    from videocm.models.text_encoder import TextEncoder

    text = TextEncoder(max_length=model.info.text_length)
    cond = text.encode(["a blue 7 moving up"])
    noise = initial_noise([3], tuple(model.info.latent_shape))
    expected = sample_teacher(model.denoiser.eval(), noise, model.schedule, 3, cond, text.encode([""]), 4.0)
    torch.testing.assert_close(cache.latents[3:4].float(), expected, atol=1e-4, rtol=1e-4)
    # a second run reuses the cache as it is
    stamp = (out / "latent-cache" / "index.json").stat().st_mtime_ns
    distill(tiny(LCMConfig, tiny_teachers["wan"], tmp_path / "again", data=f"prompts:{prompts}", prompt_samples=2,
                 prompt_teacher_steps=3, steps=2, cache=str(out / "latent-cache")), progress=False)
    assert (out / "latent-cache" / "index.json").stat().st_mtime_ns == stamp


def test_dmd_from_prompts_reads_only_the_prompts(tiny_teachers, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a green 1 moving right\n")
    task = DMDTask(tiny(DMDConfig, tiny_teachers["wan"], tmp_path / "dmd", data=f"prompts:{prompts}"))
    latents, text, captions = task.teacher_context.batches.draw(2, np.random.default_rng(0), (0, 1), "cpu")
    assert latents is None and captions == ["a green 1 moving right"] * 2
    assert not (tmp_path / "dmd" / "latent-cache").exists()
    loss, logs = task.loss(task.model, Step(0, np.random.default_rng(0), torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    assert torch.isfinite(loss) and loss.requires_grad and "dmd" in logs


def test_dmd_and_prompt_errors_are_one_line(tiny_teachers, tmp_path, capsys):
    teacher = str(tiny_teachers["wan"])
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a red 3 moving left\n")
    cases = [
        (["--data", f"prompts:{tmp_path / 'missing.txt'}"], "no such file"),
        (["--data", f"prompts:{empty}"], "holds no prompts"),
        (["--method", "dmd", "--guidance-range", "2,6"], "--guidance-range"),
        (["--method", "dmd", "--dmd-weight", "0"], "--dmd-weight above 0"),
        (["--dmd-weight", "1", "--gradient-accumulation-steps", "2"], "--gradient-accumulation-steps 1"),
        (["--dmd-weight", "1", "--fake-score", "half"], "--fake-score"),
        (["--method", "dmd", "--data", f"prompts:{prompts}", "--dmd-gan-weight", "0.01"], "--dmd-gan-weight 0"),
    ]
    for n, (flags, message) in enumerate(cases):
        code = main(["distill", "--teacher", teacher, "--out", str(tmp_path / f"run-{n}"), "--steps", "2",
                     "--batch-size", "2", "--latent-pool", "4", *flags])
        error = capsys.readouterr().err.strip()
        assert code != 0 and message in error and len(error.splitlines()) == 1, (flags, error)


def test_diversity_is_the_mean_pairwise_feature_distance_within_a_caption():
    from videocm.evaluation.evaluate import caption_diversity, pairwise_spread
    from videocm.evaluation.clip_sources import load_clip_source
    from videocm.evaluation.judge import Judge

    features = np.zeros((2, 4, 3))
    features[1, 1:, 0] = 2.0  # caption 1: one clip 2 away from three identical ones
    torch.testing.assert_close(torch.from_numpy(pairwise_spread(features)), torch.tensor([0.0, 1.0],
                                                                                        dtype=torch.float64))
    judge = Judge.load()
    real = load_clip_source("real")

    class SeedBlind:  # the same clip whatever the seed: no diversity at all
        name = "seed-blind"

        def generate(self, prompts, seeds, steps, guidance, meter):
            return real.generate(prompts, [0] * len(prompts), steps, guidance, meter)

    varied = caption_diversity(judge, real, 1, None, captions=6)
    blind = caption_diversity(judge, SeedBlind(), 1, None, captions=6)
    assert blind["diversity"] == 0.0
    assert varied["diversity"] > 0 and varied["diversity_ci"][0] <= varied["diversity"] <= varied["diversity_ci"][1]


def test_shipped_dmd_flow_student_is_a_small_few_step_student_with_its_log(tmp_path):
    folder = Path(__file__).resolve().parents[1] / "models" / "dmd-flow"
    info = json.loads((folder / "videocm.json").read_text())
    assert info["kind"] == "student" and info["method"] == "dmd" and info["default_steps"] == 4
    assert sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) < 12 * 2**20
    header = (folder / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"dmd", "dmd_gradient", "fake_score", "generator_step"} <= set(header)
    clip = tmp_path / "clip.npy"
    assert main(["sample", "--model", str(folder), "--prompt", "a red 3 moving left", "--steps", "2", "--out",
                 str(clip)]) == 0
    assert np.load(clip).shape == (8, 32, 32, 3)
