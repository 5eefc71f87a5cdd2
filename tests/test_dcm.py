"""DCM: the phased math and expert-switching sampler, the experts (shared weights, own modules, LoRA), the
temporal coherence, GAN and feature-matching losses, and whole two-stage runs on both teacher families
(any latent shape, resume, two processes, student folders that `videocm sample --steps N` loads)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from videocm.cli import main
from videocm.config import load_config
from videocm.diffusion import FlowSchedule, consistency_function, sample_consistency, skipping_grid, vp_schedule
from videocm.diffusion.consistency import consistency_times
from videocm.diffusion.phased import (owning_expert, phased_function, phased_times, sample_phased, segment_bounds,
                                      split_steps)
from videocm.distill.dcm import (DCMConfig, DCMStageTask, describe_split, distill_dcm, log_snr, resolve_boundaries,
                                 split_log_snr, temporal_coherence_loss)
from videocm.distill.discriminator import FeatureDiscriminator
from videocm.errors import VideoCMError
from videocm.models.experts import FeatureTap, feature_blocks, tied_expert
from videocm.models.folder import load_model
from videocm.pipeline import VideoPipeline

REPO = Path(__file__).resolve().parents[1]
SCHEDULES = {"flow": FlowSchedule(shift=3.0), "vp": vp_schedule(prediction_type="v_prediction",
                                                                  zero_terminal_snr=True,
                                                                  timestep_spacing="trailing")}


def tiny_dcm(teacher: Path, out: Path, **changes) -> DCMConfig:
    values = dict(teacher=str(teacher), out=str(out), semantic_steps=2, detail_steps=2, batch_size=2, latent_pool=8,
                  sample_every=0, checkpoint_every=1, warmup_steps=1, grid_points=10, disc_every=1)
    values.update(changes)
    return DCMConfig(**values)


# ---- phased math ---------------------------------------------------------------------------------------------


def test_segments_ownership_and_step_split():
    segments = segment_bounds([35], 50)
    assert segments == [(35, 50), (0, 35)]
    assert segment_bounds([10, 30], 50) == [(30, 50), (10, 30), (0, 10)]
    grid = skipping_grid(SCHEDULES["vp"], 50)
    assert owning_expert(grid[50], grid, segments) == 0
    assert owning_expert(grid[36], grid, segments) == 0
    assert owning_expert(grid[35], grid, segments) == 1  # a boundary belongs to the lower segment
    assert split_steps(4, segments) == [2, 2] and split_steps(1, segments) == [1, 0]
    assert split_steps(5, segments) == [3, 2]
    times = phased_times(grid, segments, 4)
    assert [int(t) for t in times] == [int(grid[50]), int(grid[43]), int(grid[35]), int(grid[18])]
    with pytest.raises(ValueError):
        segment_bounds([0], 50)
    # a narrow segment takes what it holds and passes the rest on (DCM's split on an unshifted grid)
    assert split_steps(4, [(49, 50), (0, 49)]) == [1, 3] and split_steps(40, [(45, 50), (0, 45)]) == [5, 35]
    with pytest.raises(ValueError):
        split_steps(51, [(45, 50), (0, 45)])  # more steps than grid points


@pytest.mark.parametrize("kind", ["flow", "vp"])
def test_phased_function_boundary_conditions(kind):
    schedule = SCHEDULES[kind]
    grid = skipping_grid(schedule, 50)
    x, output = torch.randn(3, 4, 2, 4, 4), torch.randn(3, 4, 2, 4, 4)
    s = grid[20].expand(3)
    torch.testing.assert_close(phased_function(schedule, output, x, s, s), x, atol=1e-5, rtol=1e-5)
    t = grid[40].expand(3)
    # to the clean end it is LCM's consistency function exactly
    torch.testing.assert_close(phased_function(schedule, output, x, t, grid[0].expand(3)),
                               consistency_function(schedule, output, x, t))
    # mixed ends in one batch pick per row
    ends = torch.stack([grid[0], grid[20], grid[0]])
    mixed = phased_function(schedule, output, x, t, ends)
    torch.testing.assert_close(mixed[1], phased_function(schedule, output, x, t, s)[1])
    torch.testing.assert_close(mixed[0], consistency_function(schedule, output, x, t)[0])


class Recorder:
    def __init__(self, name, calls, scale):
        self.name, self.calls, self.scale = name, calls, scale

    def __call__(self, x, timestep, states):
        self.calls.append((self.name, float(timestep[0])))
        return self.scale * x + states.mean()


@pytest.mark.parametrize("kind", ["flow", "vp"])
@pytest.mark.parametrize("steps", [1, 2, 3, 4, 8])
def test_sampler_honours_steps_and_switches_expert_at_the_split(kind, steps):
    schedule = SCHEDULES[kind]
    grid = skipping_grid(schedule, 50)
    segments = segment_bounds([35], 50)
    calls = []
    experts = [Recorder("semantic", calls, 0.3), Recorder("detail", calls, -0.2)]
    times = phased_times(grid, segments, steps)
    noise = torch.randn(2, 4, 2, 4, 4)
    out = sample_phased(experts, noise, schedule, grid, segments, times, {"states": torch.ones(2, 3, 5)})
    assert len(calls) == steps and out.shape == noise.shape
    for (name, timestep), t in zip(calls, times):
        assert timestep == pytest.approx(float(schedule.model_timestep(t)))
        assert name == ("semantic" if float(t) > float(grid[35]) else "detail")
    assert [name for name, _ in calls] == sorted([name for name, _ in calls], key=lambda n: n != "semantic")


@pytest.mark.parametrize("kind", ["flow", "vp"])
def test_one_phase_is_lcm_sampling(kind):
    schedule = SCHEDULES[kind]
    grid = skipping_grid(schedule, 50)
    expert = Recorder("only", [], 0.5)
    times = consistency_times(grid, 4)
    noise = torch.randn(2, 4, 2, 4, 4)
    cond = {"states": torch.ones(2, 3, 5)}
    torch.manual_seed(0)
    phased = sample_phased([expert], noise, schedule, grid, [(0, 50)], times, cond)
    torch.manual_seed(0)
    lcm = sample_consistency(expert, noise, schedule, times, cond)
    torch.testing.assert_close(phased, lcm)


def test_explicit_timesteps_run_the_owning_expert():
    schedule = SCHEDULES["vp"]
    grid = skipping_grid(schedule, 50)
    calls = []
    experts = [Recorder("semantic", calls, 0.3), Recorder("detail", calls, -0.2)]
    times = torch.tensor([999, 900, 500])
    sample_phased(experts, torch.randn(1, 4, 2, 4, 4), schedule, grid, segment_bounds([35], 50), times,
                  {"states": torch.ones(1, 3, 5)})
    assert calls == [("semantic", 999.0), ("semantic", 900.0), ("detail", 500.0)]
    with pytest.raises(ValueError):
        sample_phased(experts, torch.randn(1, 4, 2, 4, 4), schedule, grid, segment_bounds([35], 50),
                      torch.tensor([500, 900]), {"states": torch.ones(1, 3, 5)})


def test_default_boundaries():
    schedule = SCHEDULES["flow"]
    grid = skipping_grid(schedule, 50)
    share = DCMConfig(split="share")
    assert resolve_boundaries(share, grid, schedule) == [35]
    assert resolve_boundaries(dataclasses.replace(share, phases=3), grid, schedule) == [18, 35]
    assert resolve_boundaries(DCMConfig(boundaries=[20]), grid, schedule) == [20]
    assert resolve_boundaries(DCMConfig(boundary_timesteps=[float(grid[30])]), grid, schedule) == [30]
    with pytest.raises(VideoCMError):
        resolve_boundaries(DCMConfig(boundaries=[20, 30]), grid, schedule)
    with pytest.raises(VideoCMError):
        resolve_boundaries(DCMConfig(boundaries=[50]), grid, schedule)


def test_the_default_split_is_dcms_noise_level_on_the_teachers_schedule():
    """DCM splits at flow sigma 0.975 (log-SNR -7.33; grid index 35 of 50 under shift 17): on an unshifted flow grid
    that is the point nearest sigma 0.975; on a VP schedule the step of the nearest log-SNR; a shifted flow grid
    (shift 17, DCM's) gives DCM's own index 35 back."""
    flow = FlowSchedule()  # unshifted, as the MovingDigits flow teacher
    grid = skipping_grid(flow, 50)
    assert resolve_boundaries(DCMConfig(), grid, flow) == [49]  # sigma 0.98: the semantic expert's one interval
    shifted = FlowSchedule(shift=17.0)
    assert resolve_boundaries(DCMConfig(), skipping_grid(shifted, 50), shifted) == [35]
    vp = SCHEDULES["vp"]
    vp_grid = skipping_grid(vp, 50)
    [top] = resolve_boundaries(DCMConfig(), vp_grid, vp)
    levels = log_snr(vp, vp_grid)
    assert abs(float(levels[top]) - split_log_snr(DCMConfig())) <= min(
        abs(float(levels[top + 1]) - split_log_snr(DCMConfig())), abs(float(levels[top - 1]) - split_log_snr(DCMConfig())))
    assert resolve_boundaries(DCMConfig(boundary_logsnr=float(levels[30])), vp_grid, vp) == [30]
    assert resolve_boundaries(DCMConfig(boundary_sigma=0.5), grid, flow) == [25]  # log-SNR 0 at sigma 0.5
    assert resolve_boundaries(DCMConfig(boundary_sigma=0.001), grid, flow) == [1]  # each expert keeps an interval
    assert resolve_boundaries(DCMConfig(phases=3), grid, flow) == [24, 49]
    assert "sigma 0.975" in describe_split(DCMConfig(), grid, flow, [49])


# ---- losses --------------------------------------------------------------------------------------------------


def test_temporal_coherence_loss():
    target = torch.randn(2, 4, 6, 3, 3)
    # a per-clip constant offset keeps every frame difference: no temporal penalty
    assert temporal_coherence_loss(target + torch.randn(2, 4, 1, 3, 3), target, 3).item() == pytest.approx(0, abs=1e-10)
    shuffled = target[:, :, torch.randperm(6)]
    assert temporal_coherence_loss(shuffled, target, 3).item() > 0.1
    # stride clamped to 1: the prediction's one frame difference is twice the target's, so the MSE is its square
    two = target[:, :, :2]
    expected = ((two[:, :, 1] - two[:, :, 0]) ** 2).mean().item()
    assert temporal_coherence_loss(two * 2, two, 3).item() == pytest.approx(expected, rel=1e-5)
    assert temporal_coherence_loss(target[:, :, :1] * 2, target[:, :, :1], 3).item() == 0  # one frame: nothing


@pytest.mark.parametrize("shape", [(2, 16, 4, 6, 6), (3, 8, 1, 5, 7), (1, 24, 9, 2, 3)])
def test_discriminator_heads_take_any_latent_shape(shape):
    heads = FeatureDiscriminator([shape[1], shape[1]])
    logits = heads([torch.randn(shape), torch.randn(shape)])
    assert [tuple(x.shape) for x in logits] == [(shape[0], shape[2])] * 2


@pytest.mark.parametrize("family", ["wan", "unet3d"])
@pytest.mark.parametrize("latent", [(4, 4, 8, 8), (4, 2, 4, 12)])
def test_feature_tap_gives_video_maps_for_any_shape(tiny_teachers, family, latent):
    teacher = load_model(tiny_teachers[family]).denoiser
    blocks = feature_blocks(teacher, 1)
    tap = FeatureTap(teacher, blocks)
    x = torch.randn(3, *latent)
    states = torch.randn(3, 5, 384)
    with torch.no_grad(), tap(tuple(x.shape)):
        teacher(x, torch.full((3,), 500.0), states)
    assert len(tap.features) == len(blocks)
    for features in tap.features:
        assert features.ndim == 5 and features.shape[0] == 3
        assert latent[1] % features.shape[2] == 0  # frames (or temporal patches) preserved per clip
    heads = FeatureDiscriminator([f.shape[1] for f in tap.features])
    assert all(tuple(x.shape) == (3, f.shape[2]) for x, f in zip(heads(tap.features), tap.features))


# ---- experts -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["wan", "unet3d"])
def test_tied_expert_shares_the_frozen_base_and_owns_its_embeddings(tiny_teachers, family):
    base = load_model(tiny_teachers[family]).denoiser
    expert = tied_expert(base, rank=4, alpha=8)
    base_parameters = dict(base.network.named_parameters())
    shared = own = 0
    for name, parameter in expert.network.named_parameters():
        plain = name.replace(".base_layer.", ".")
        if ".lora_" in name:
            assert parameter.requires_grad
            continue
        if parameter.data_ptr() == base_parameters[plain].data_ptr():
            shared += 1
            assert not parameter.requires_grad
        else:
            own += 1
            assert parameter.requires_grad
    assert shared > own > 0
    x, states = torch.randn(2, 4, 4, 8, 8), torch.randn(2, 5, 384)
    timestep = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        torch.testing.assert_close(expert(x, timestep, states), base(x, timestep, states))  # LoRA starts at zero
        before = base(x, timestep, states)
        for name, parameter in expert.network.named_parameters():
            if parameter.requires_grad:
                parameter.add_(0.05 * torch.randn_like(parameter))
        assert not torch.allclose(expert(x, timestep, states), before)
        torch.testing.assert_close(base(x, timestep, states), before)  # the semantic expert is untouched


# ---- whole runs ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["wan", pytest.param("unet3d", marks=pytest.mark.slow)])
def test_dcm_run_writes_a_student_that_samples_any_step_count(tiny_teachers, tmp_path, family):
    out = tmp_path / "dcm"
    summary = distill_dcm(tiny_dcm(tiny_teachers[family], out), progress=False)
    assert set(summary["stages"]) == {"semantic", "detail"}
    log = [json.loads(line) for line in (out / "stages" / "expert-1-detail" / "train_log.jsonl").read_text().splitlines()]
    assert {"gan_generator", "feature_matching", "gan_discriminator", "consistency"} <= set(log[-1])
    semantic_log = (out / "stages" / "expert-0-semantic" / "train_log.jsonl").read_text().splitlines()
    assert "temporal" in json.loads(semantic_log[-1])
    info = json.loads((out / "videocm.json").read_text())
    # DCM's split (sigma 0.975) on a 10-point grid: the semantic expert owns the top interval
    assert info["method"] == "dcm" and info["phased"]["boundaries"] == [9] and info["default_steps"] == 4
    model = load_model(out)
    assert len(model.experts) == 2 and model.experts[1] is not model.experts[0]
    pipeline = VideoPipeline(model)
    for steps in (1, 3, 4):
        from videocm.evaluation.cost import CostMeter

        meter = CostMeter()
        clips = pipeline.generate(["a red 3 moving left"], [0], steps, meter=meter)
        assert meter.network_rows == steps and clips[0].dtype == np.uint8
    # the detail expert really differs from the semantic expert (LoRA and own modules were trained)
    x, states = torch.randn(1, *model.latent_shape), torch.randn(1, 5, 384)
    with torch.no_grad():
        assert not torch.allclose(model.experts[1](x, torch.tensor([100.0]), states),
                                  model.experts[0](x, torch.tensor([100.0]), states))
    assert main(["sample", "--model", str(out), "--prompt", "a red 3", "--steps", "2",
                 "--out", str(tmp_path / "clip.npy")]) == 0
    assert np.load(tmp_path / "clip.npy").shape[-1] == 3


def test_dcm_on_a_latent_shape_of_its_own(tiny_vae, tmp_path):
    """Nothing in DCM is tied to one resolution or frame count: a teacher on 4-frame 24x24 clips distils too."""
    from conftest import tiny_teacher_config
    from videocm.training.teacher import train_teacher

    teacher = tmp_path / "teacher"
    train_teacher(tiny_teacher_config(teacher, "wan", tiny_vae, frames=4, size=24), progress=False)
    distill_dcm(tiny_dcm(teacher, tmp_path / "dcm", semantic_steps=1, detail_steps=1), progress=False)
    clip = VideoPipeline.from_folder(tmp_path / "dcm").generate(["a blue 5"], [0], 2)[0]
    assert clip.shape[:3] == (4, 24, 24)


def test_interrupted_detail_stage_resumes_to_the_same_weights(tiny_teachers, tmp_path, monkeypatch):
    teacher = tiny_teachers["wan"]
    distill_dcm(tiny_dcm(teacher, tmp_path / "clean", detail_steps=4), progress=False)
    real = DCMStageTask.loss

    def crash_at_step_3(self, model, step, *args):
        if self.expert == 1 and step.number == 3:
            raise KeyboardInterrupt
        return real(self, model, step, *args)

    monkeypatch.setattr(DCMStageTask, "loss", crash_at_step_3)
    with pytest.raises(KeyboardInterrupt):
        distill_dcm(tiny_dcm(teacher, tmp_path / "crashed", detail_steps=4), progress=False)
    monkeypatch.setattr(DCMStageTask, "loss", real)
    with pytest.raises(VideoCMError, match="--resume"):
        distill_dcm(tiny_dcm(teacher, tmp_path / "crashed", detail_steps=4), progress=False)
    distill_dcm(tiny_dcm(teacher, tmp_path / "crashed", detail_steps=4, resume=True), progress=False)
    for part in ("adapter_model.safetensors", "own_modules.safetensors"):
        a = load_file(tmp_path / "clean" / "experts" / "expert-1" / part)
        b = load_file(tmp_path / "crashed" / "experts" / "expert-1" / part)
        for key in a:
            torch.testing.assert_close(b[key], a[key], atol=0, rtol=0, msg=key)


@pytest.mark.slow
def test_three_phases_and_reused_semantic_expert(tiny_teachers, tmp_path):
    teacher = tiny_teachers["unet3d"]
    distill_dcm(tiny_dcm(teacher, tmp_path / "two", detail_steps=1), progress=False)
    distill_dcm(tiny_dcm(teacher, tmp_path / "three", phases=3, detail_steps=1, semantic_from=str(tmp_path / "two"),
                         split="share"), progress=False)  # three even segments
    model = load_model(tmp_path / "three")
    assert len(model.experts) == 3 and len(json.loads((tmp_path / "three" / "videocm.json").read_text())
                                           ["phased"]["boundaries"]) == 2
    a = load_file(tmp_path / "two" / "unet" / "diffusion_pytorch_model.safetensors")
    b = load_file(tmp_path / "three" / "unet" / "diffusion_pytorch_model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)  # the semantic expert was reused, not retrained
    calls = []
    pipeline = VideoPipeline(model)
    for j, expert in enumerate(model.experts):
        expert.register_forward_hook(lambda module, args, output, j=j: calls.append(j))
    pipeline.generate(["a green 1"], [0], 6)
    assert calls == [0, 0, 1, 1, 2, 2]


@pytest.mark.slow
def test_two_processes_match_one_in_both_stages(tiny_teachers, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}

    def args(out):
        return ["distill", "--method", "dcm", "--teacher", str(tiny_teachers["wan"]), "--out", str(out),
                "--semantic-steps", "2", "--detail-steps", "2", "--batch-size", "4", "--latent-pool", "8",
                "--sample-every", "0", "--checkpoint-every", "2", "--warmup-steps", "1", "--grid-points", "10",
                "--disc-every", "1"]  # no --cpu: what a user launches on a machine without a GPU

    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29541", "-m", "videocm.cli", *args(tmp_path / "two")], env=env, capture_output=True,
                         text=True, timeout=900)
    assert two.returncode == 0, two.stdout[-3000:] + two.stderr[-3000:]
    stages = json.loads((tmp_path / "two" / "train_summary.json").read_text())["stages"]
    assert stages["detail"]["processes"] == 2
    one = subprocess.run([sys.executable, "-m", "videocm.cli", *args(tmp_path / "one")], env=env,
                         capture_output=True, text=True, timeout=900)
    assert one.returncode == 0, one.stderr[-3000:]
    for part in ("adapter_model.safetensors", "own_modules.safetensors"):
        a = load_file(tmp_path / "one" / "experts" / "expert-1" / part)
        b = load_file(tmp_path / "two" / "experts" / "expert-1" / part)
        for key in a:
            torch.testing.assert_close(b[key].float(), a[key].float(), atol=2e-3, rtol=1e-2, msg=key)
    # the semantic stage is the shared consistency step on a full network (what LCM trains): two DDP processes of
    # batch 2 train what one process of batch 4 trains
    weights = "transformer/diffusion_pytorch_model.safetensors"
    one_semantic, two_semantic = load_file(tmp_path / "one" / weights), load_file(tmp_path / "two" / weights)
    teacher = load_file(tiny_teachers["wan"] / weights)
    for key in one_semantic:
        torch.testing.assert_close(two_semantic[key].float(), one_semantic[key].float(), atol=2e-3, rtol=1e-2,
                                   msg=key)
    assert any(not torch.equal(one_semantic[k], teacher[k].to(one_semantic[k].dtype)) for k in one_semantic)


def test_bad_dcm_settings_are_one_line_errors(tiny_teachers, tmp_path):
    with pytest.raises(VideoCMError, match="boundaries"):
        distill_dcm(tiny_dcm(tiny_teachers["wan"], tmp_path / "a", boundaries=[3, 4]), progress=False)
    with pytest.raises(VideoCMError, match="unknown key.*--student"):  # DCM's experts have their own settings
        load_config(DCMConfig, overrides=["--student", "lora"])
    out = tmp_path / "c"
    distill_dcm(tiny_dcm(tiny_teachers["wan"], out, semantic_steps=1, detail_steps=1), progress=False)
    with pytest.raises(VideoCMError, match="steps must be between 1 and 10"):
        VideoPipeline.from_folder(out).generate(["a red 1"], [0], 11)  # more steps than the grid's 10 points


@pytest.mark.parametrize("name", ["dcm-flow", "dcm-vp"])
def test_shipped_dcm_students_are_small_two_expert_folders(name):
    folder = REPO / "models" / name
    # dcm-vp's detail expert is a full network (docs/reports/dcm-vp-arms/), dcm-flow's a LoRA
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < (16 if name == "dcm-vp" else 10) * 2**20
    info = json.loads((folder / "videocm.json").read_text())
    assert info["method"] == "dcm" and info["phased"]["boundaries"] == [35] and info["default_steps"] == 4
    model = load_model(folder)
    assert len(model.experts) == 2 and model.experts[1] is not model.experts[0]
    assert "Command" in (folder / "README.md").read_text()


@pytest.mark.slow
def test_shipped_flow_dcm_student_beats_its_teacher_at_four_steps():
    from videocm.evaluation.evaluate import eval_prompts, score_clips
    from videocm.evaluation.judge import Judge

    prompts, seeds = eval_prompts(24, seed=3)
    judge = Judge.load()
    scores = {name: score_clips(judge, VideoPipeline.from_folder(REPO / "models" / name).generate(prompts, seeds, 4),
                                prompts) for name in ("dcm-flow", "teacher-flow")}
    assert scores["dcm-flow"]["fidelity_all"] >= scores["teacher-flow"]["fidelity_all"] + 0.2


def test_a_semantic_expert_hands_off_to_the_teachers_guided_solver_or_an_lcm_student_below_its_boundary():
    """DCM's semantic-stage sample checks: the semantic expert takes its share of the steps down to the boundary,
    then the teacher's guided solver (two rows a call: guidance) over the given number of grid points below it,
    or a consistency student its own share; the clips differ from the student's own."""
    repo = Path(__file__).resolve().parents[1]
    teacher = load_model(repo / "models" / "teacher-flow")
    lcm = load_model(repo / "models" / "lcm-flow")
    calls = []

    def watch(network, name):  # each call and its batch rows
        def seen(module, args, kwargs):
            calls.append((name, len(args[0]) if args else len(next(iter(kwargs.values())))))

        return network.register_forward_pre_hook(seen, with_kwargs=True)

    own = VideoPipeline.from_folder(repo / "models" / "dcm-flow").generate(["a red 3 moves left"], [0], 4)
    pipeline = VideoPipeline.from_folder(repo / "models" / "dcm-flow")
    semantic = pipeline.model.experts[0].network
    handles = [watch(semantic, "semantic"), watch(teacher.denoiser.network, "teacher"), watch(lcm.denoiser.network, "lcm")]
    pipeline.finish_with(teacher.denoiser, 4.0, 5, "semantic expert, then the teacher")
    handed = pipeline.generate(["a red 3 moves left"], [0], 4)
    assert [name for name, _ in calls] == ["semantic"] * 2 + ["teacher"] * 5
    assert all(rows == 2 for name, rows in calls if name == "teacher")  # guided: conditional and unconditional
    assert pipeline.sampled_as == "semantic expert, then the teacher"
    assert not np.array_equal(handed[0], own[0])
    calls.clear()
    pipeline.finish_with(lcm.denoiser, None, 0, "semantic expert, then lcm-flow")
    pipeline.generate(["a red 3 moves left"], [0], 4)
    assert [name for name, _ in calls] == ["semantic", "semantic", "lcm", "lcm"]
    for handle in handles:
        handle.remove()
    with pytest.raises(VideoCMError, match="not a phased student"):
        VideoPipeline.from_folder(repo / "models" / "lcm-flow").finish_with(teacher.denoiser, 4.0, 5)


@pytest.mark.slow
def test_the_semantic_stage_sample_check_says_it_handed_off_to_the_teacher(tiny_teachers, tmp_path):
    from conftest import JudgeMonitor

    out = tmp_path / "dcm"
    distill_dcm(tiny_dcm(tiny_teachers["wan"], out, split="share", detail_steps=0, sample_every=2, sample_clips=2,
                         sample_steps=2), progress=False, monitor=JudgeMonitor())
    rows = [json.loads(line) for line in
            (out / "stages" / "expert-0-semantic" / "samples" / "scores.jsonl").read_text().splitlines()]
    assert rows and all(r["sampled_as"].startswith("semantic expert to the boundary, then the teacher (")
                        for r in rows)


def test_vp_dcm_students_export_and_the_exported_model_and_scheduler_sample_as_videocm_does(tmp_path):
    """A VP DCM student (DDIM jumps above the boundary, consistency steps below: what diffusers' LCMScheduler
    cannot run) exports as an ExpertSwitchingModel and videocm's VPPhasedConsistencyScheduler; a diffusers-style
    loop over them (set_timesteps, the model, step) gives the latents videocm's own sampler gives."""
    import videocm
    from videocm.diffusion.phased import sample_phased
    from videocm.pipeline import sampling_noise

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "export"
    assert main(["export", "--model", str(repo / "models" / "dcm-vp"), "--out", str(out)]) == 0
    assert json.loads((out / "scheduler" / "scheduler_config.json").read_text())["_class_name"] == \
        "VPPhasedConsistencyScheduler"
    scheduler = videocm.VPPhasedConsistencyScheduler.from_pretrained(out, subfolder="scheduler")
    switching = videocm.ExpertSwitchingModel.from_pretrained(out / "unet")
    student = load_model(repo / "models" / "dcm-vp")
    pipeline = VideoPipeline(student)
    cond = pipeline._conditioning(["a red 3 moves left"], None)
    noise, renoise = sampling_noise([0], student.latent_shape, "videocm")
    info = student.info
    grid = skipping_grid(student.schedule, int(info.consistency.grid_points))
    segments = segment_bounds(info.phased.boundaries, int(info.consistency.grid_points))
    boundary = float(grid[segments[-1][1]])
    for steps in (2, 4):
        ours = sample_phased(student.experts, noise, student.schedule, grid, segments,
                             phased_times(grid, segments, steps), cond, renoise)
        scheduler.set_timesteps(steps)
        times = [float(t) for t in scheduler.sigmas[:-1]]
        assert times == [float(t) for t in phased_times(grid, segments, steps)]
        # the consistency steps' re-noising noise, drawn as videocm draws it (in step order)
        fresh = {i: renoise(i, tuple(noise.shape)) for i in range(steps - 1) if times[i] <= boundary}
        exported, denoiser = noise.clone(), student.denoiser.of(switching)
        for i, t in enumerate(scheduler.timesteps):
            with torch.no_grad():
                output = denoiser(exported, t.expand(1), **cond)
            result = scheduler.step(output, t, exported)
            exported = (student.schedule.add_noise(result.denoised, fresh[i], scheduler.sigmas[i + 1]) if i in fresh
                        else result.prev_sample)
        torch.testing.assert_close(exported, ours, rtol=1e-4, atol=1e-4)
