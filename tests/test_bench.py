"""``videocm bench`` on tiny models, the fast paths it relies on, and the bf16 teacher."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from videocm.distill.trainer import Step
from videocm.cli import main
from videocm.diffusion import FlowSchedule, sample_consistency, seeded_noise, vp_schedule
from videocm.distill.lcm import LCMConfig, LCMTask, distill
from videocm.evaluation.bench import BenchConfig, distillation_table, run_bench, sampling_table


@pytest.fixture(scope="module")
def tiny_student(tiny_teachers, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-student")
    distill(LCMConfig(teacher=str(tiny_teachers["wan"]), out=str(out), steps=2, batch_size=2, latent_pool=8,
                      sample_every=0, checkpoint_every=2, warmup_steps=1), progress=False)
    return out


@pytest.mark.slow
def test_bench_measures_sampling_and_distillation_against_their_limits(tiny_teachers, tiny_student, tmp_path):
    out = tmp_path / "bench.json"
    config = BenchConfig(teacher=str(tiny_teachers["wan"]), students=[str(tiny_student)], batch_sizes=[1, 2],
                         teacher_steps=3, student_steps=[1, 2], repeats=1, distill_batch_size=2,
                         distill_warmup_steps=1, distill_timed_steps=2, floor_repeats=1, disc_every=1,
                         out=str(out))
    result = run_bench(config)
    saved = json.loads(out.read_text())
    assert saved["sampling"] == result["sampling"] and saved["machine"]["torch"] == torch.__version__
    rows = saved["sampling"]
    assert [(r["kind"], r["steps"], r["batch"]) for r in rows] == [
        ("teacher", 3, 1), ("student", 1, 1), ("student", 2, 1), ("teacher", 3, 2), ("student", 1, 2),
        ("student", 2, 2)]
    for row in rows:
        phases = sum(row[f"seconds_{p}"] for p in ("text", "denoise", "decode", "write"))
        assert 0 < phases <= row["seconds_per_clip"] * 1.05 and row["peak_memory_mb"] > 0
    teachers = {r["batch"]: r for r in rows if r["kind"] == "teacher"}
    for row in rows:
        teacher = teachers[row["batch"]]
        if row["kind"] == "teacher":
            assert row["nfe"] == 6  # 3 guided steps: conditional and unconditional
            continue
        assert row["nfe"] == row["steps"]
        assert row["nfe_limit"] == pytest.approx(6 / row["steps"])
        # the figures are the ratios of the measured times (speed itself is the benchmark's output, not a test)
        assert row["denoise_speedup"] == pytest.approx(teacher["seconds_denoise"] / row["seconds_denoise"])
        assert row["denoise_share_of_limit"] == pytest.approx(row["denoise_speedup"] / row["nfe_limit"])
    distilled = saved["distillation"]
    assert [(r["method"], r["stage"]) for r in distilled] == [
        ("lcm", "-"), ("scm", "-"), ("rcm", "-"), ("dcm", "semantic"), ("dcm", "detail")]
    for row in distilled:
        assert row["ratio_to_floor"] == pytest.approx(row["seconds_per_step"] / row["floor"])
        assert row["seconds_per_step"] > 0 and row["floor"] > 0 and row["peak_memory_mb"] > 0
    # only the detail stage has discriminator heads, so only it pays the adversarial passes
    assert "floor_with_adversarial" in distilled[4]
    assert not any("floor_with_adversarial" in distilled[i] for i in range(4))
    # sCM's floor has the student's JVP in the target's place, timed against a plain forward; rCM's adds the
    # matching term's passes
    scm, rcm = distilled[1], distilled[2]
    assert scm["jvp_to_forward"] == pytest.approx(scm["student_jvp"] / scm["student_forward"])
    assert scm["floor"] == pytest.approx(scm["student_forward_backward"] + scm["teacher_guided_forward"]
                                         + scm["student_jvp"])
    assert rcm["floor"] == pytest.approx(rcm["student_forward_backward"] + rcm["teacher_guided_forward"]
                                         + rcm["student_jvp"] + rcm["matching_passes"])
    assert "matching_passes" not in scm and "JVP" in distillation_table(distilled)
    assert "| lcm | - | 2 |" in distillation_table(distilled)
    assert sampling_table(rows).count("\n") == len(rows) + 1


def test_bench_rejects_bad_settings(capsys):
    assert main(["bench", "--family", "sde"]) == 2
    assert "--family 'sde'" in capsys.readouterr().err
    assert main(["bench", "--batch-sizes", "0"]) == 2


@pytest.mark.parametrize("schedule", [FlowSchedule(shift=3.0), vp_schedule(prediction_type="v_prediction",
                                                                           zero_terminal_snr=True,
                                                                           timestep_spacing="trailing")])
def test_consistency_sampler_draws_its_noise_before_the_loop_without_changing_the_clip(schedule):
    """The loop takes every step's re-noising noise from one tensor copied before it; the clip is the one a
    step-by-step draw gives (reference written out here)."""
    from videocm.diffusion import consistency_times, skipping_grid
    from videocm.diffusion.consistency import consistency_function

    def denoiser(x, timestep, states):
        return 0.3 * x + states.mean() + timestep.float().reshape(-1, 1, 1, 1, 1) / 5000

    grid = skipping_grid(schedule, 50)
    times = consistency_times(grid, 4)
    noise = torch.randn(2, 4, 2, 4, 4, generator=torch.Generator().manual_seed(0))
    cond = {"states": torch.ones(2, 3, 5)}
    drawn = []

    def source(step, shape):
        drawn.append(step)
        return seeded_noise([1, 2])(step, shape)

    fast = sample_consistency(denoiser, noise, schedule, times, cond, source)
    assert drawn == [0, 1, 2]
    x, reference = noise, None
    for i, t in enumerate(times):
        reference = consistency_function(schedule, denoiser(x, schedule.model_timestep(t).expand(2), **cond), x, t)
        if i + 1 < len(times):
            x = schedule.add_noise(reference, seeded_noise([1, 2])(i, tuple(x.shape)), times[i + 1])
    assert torch.allclose(fast, reference, atol=1e-6)


def test_bf16_teacher_halves_its_memory_and_still_trains(tiny_teachers, tmp_path):
    config = LCMConfig(teacher=str(tiny_teachers["wan"]), out=str(tmp_path), steps=1, batch_size=2, latent_pool=4,
                       sample_every=0, teacher_dtype="bfloat16")
    task = LCMTask(config, "cpu")
    assert {p.dtype for p in task.teacher_context.teacher.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in task.model.parameters()} == {torch.float32}  # the student keeps full precision
    rng = np.random.default_rng(0)
    loss, _ = task.loss(task.model, Step(0, rng, torch.Generator().manual_seed(0), torch.device("cpu"), task.config.batch_size))
    loss.backward()
    assert torch.isfinite(loss) and any(p.grad is not None for p in task.model.parameters())
    assert LCMTask(LCMConfig(**{**config.__dict__, "teacher_dtype": "auto"}), "cpu").teacher_context.teacher_dtype == torch.float32
    assert main(["distill", "--teacher", str(tiny_teachers["wan"]), "--out", str(tmp_path / "x"),
                 "--teacher-dtype", "int8"]) == 2
