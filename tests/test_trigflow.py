"""TrigFlow conversions (issue 39): a teacher's schedule seen in TrigFlow time is exact, its ODE steps are the
teacher's own sampler's, and the sCM sampler's times follow rCM's."""

import math

import pytest
import torch

from videocm.diffusion import FlowSchedule, sample_teacher, vp_schedule
from videocm.diffusion.trigflow import TrigFlow, sample_trigflow, scm_times

SCHEDULES = {
    "flow": lambda: FlowSchedule(shift=3.0),
    "vp-v-zero-snr": lambda: vp_schedule(prediction_type="v_prediction", zero_terminal_snr=True,
                                         timestep_spacing="trailing"),
    "vp-epsilon": lambda: vp_schedule(prediction_type="epsilon"),
    "vp-sample": lambda: vp_schedule(prediction_type="sample", beta_schedule="squaredcos_cap_v2"),
}


def toy_denoiser(x, timestep, **cond):
    """A smooth stand-in for a network: depends on its input and (continuously) on its timestep."""
    return torch.tanh(0.7 * x + torch.sin(timestep.to(x.dtype) / 300).reshape(-1, *[1] * (x.dim() - 1))) + 0.1 * x


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_trigflow_points_are_the_teachers_points(name, sigma_data):
    schedule, generator = SCHEDULES[name](), torch.Generator().manual_seed(0)
    trig = TrigFlow(schedule, sigma_data)
    x0, z = torch.randn(4, 3, generator=generator), torch.randn(4, 3, generator=generator)
    native = torch.tensor([0.05, 0.3, 0.7, 0.95]) if name == "flow" else torch.tensor([0, 250, 640, 998])
    t = trig.time_of(native).float()
    point = trig.native(t)
    # the teacher's point at its own time is scale(t) times TrigFlow's at t
    teacher_point = schedule.add_noise(x0, z, native)
    trig_point = trig.add_noise(x0, z, t)
    torch.testing.assert_close(point.scale[:, None] * trig_point, teacher_point, atol=2e-5, rtol=1e-4)
    # and the network sees the teacher's own timestep there (a VP timestep back as the integer it was)
    torch.testing.assert_close(point.timestep, schedule.model_timestep(native).float(), atol=2e-3, rtol=1e-5)


@pytest.mark.parametrize("name", SCHEDULES)
def test_vp_timestep_is_continuous_and_monotone(name):
    trig = TrigFlow(SCHEDULES[name]())
    t = torch.linspace(1e-4, trig.t_top, 2001, dtype=torch.float64)
    timestep = trig.native(t).timestep
    assert bool((timestep[1:] >= timestep[:-1]).all())
    assert float(timestep.diff().max()) < (5.0 if name != "flow" else 1.0)  # no jumps on a fine grid
    assert float(timestep[-1]) == pytest.approx(999.0 if name != "flow" else 1000.0, abs=0.5)


@pytest.mark.parametrize("name", SCHEDULES)
@pytest.mark.parametrize("steps", [1, 4, 12])
def test_trigflow_ddim_is_the_teachers_sampler(name, steps):
    """DDIM in TrigFlow time over the teacher's own times, with the network called through the conversion,
    lands where the teacher's DDIM (VP) or Euler (flow) sampler does."""
    schedule = SCHEDULES[name]()
    trig = TrigFlow(schedule)
    noise = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    native_times = schedule.sampling_times(steps)
    if name == "vp-epsilon":
        native_times = native_times.clamp(max=980)  # away from where epsilon's x0 = (x - sigma eps)/alpha blows up
    expected = sample_teacher(toy_denoiser, noise, schedule, steps, {}, times=native_times)
    times = trig.time_of(native_times)
    x = noise / trig.native(times[0]).scale
    for i in range(steps):
        t, s = times[i].expand(2), times[i + 1].expand(2)
        x = trig.ddim_step(x, trig.call(toy_denoiser, x.double(), t, {}).float(), t.float(), s.float())
    torch.testing.assert_close(x, expected, atol=3e-4, rtol=1e-3)


def test_clean_end_is_the_boundary_condition():
    """f(x, t) -> x as t -> 0 for epsilon, v and flow networks (no c_skip / c_out needed); not for a network that
    predicts x0 itself."""
    x = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(2))
    for name, make in SCHEDULES.items():
        trig = TrigFlow(make())
        x0 = trig.call(toy_denoiser, x, torch.full((2,), 1e-5), {})
        if name == "vp-sample":
            assert not torch.allclose(x0, x, atol=2e-3)
        else:
            torch.testing.assert_close(x0, x, atol=2e-3, rtol=1e-3, msg=name)


def test_scm_times_follow_rcm_and_refuse_bad_lists():
    trig = TrigFlow(FlowSchedule())
    times = scm_times(trig, 4)
    assert [round(float(v), 4) for v in times] == [round(math.atan(80.0), 4), 1.5, 1.4, 1.0, 0.0]
    assert len(scm_times(trig, 1)) == 2
    with pytest.raises(ValueError, match="intermediate times"):
        scm_times(trig, 5)
    with pytest.raises(ValueError, match="descend"):
        scm_times(trig, 3, mid_times=[1.0, 1.2])
    # a VP teacher that never reaches zero SNR starts at its own top noise level
    vp = TrigFlow(vp_schedule(prediction_type="epsilon"))
    assert float(scm_times(vp, 2)[0]) == pytest.approx(vp.t_top) and vp.t_top < math.atan(80.0)


@pytest.mark.parametrize("name", ["flow", "vp-v-zero-snr"])
def test_one_step_sampler_is_the_networks_clean_estimate(name):
    """One sCM step from the top is the clean estimate of the start point; more steps re-noise in between."""
    schedule = SCHEDULES[name]()
    trig = TrigFlow(schedule)
    noise = torch.randn(2, 4, 3, 2, 2, generator=torch.Generator().manual_seed(3))
    times = scm_times(trig, 1)
    out = sample_trigflow(toy_denoiser, noise, trig, times, {})
    start = noise / float(trig.native(times[0]).scale)  # the teacher's own starting point, noise
    assert float(trig.native(times[0]).scale) == pytest.approx(
        1 / (math.cos(float(times[0])) + math.sin(float(times[0]))) if name == "flow" else 1.0)
    torch.testing.assert_close(out, trig.call(toy_denoiser, start, times[0].float().expand(2), {}))
    seen = []
    sample_trigflow(toy_denoiser, noise, trig, scm_times(trig, 3), {}, callback=lambda info: seen.append(info))
    assert [round(float(s["t"]), 3) for s in seen] == [round(math.atan(80.0), 3), 1.5, 1.4]


@pytest.mark.parametrize("layout", ["unet3d", "cogvideox", "wan", "hunyuan", "ltx"])
def test_jvp_through_each_family_matches_a_finite_difference(layout, tmp_path):
    """The time derivative sCM needs, by forward mode through the time conversion and a real diffusers network
    of every family (loaded as a teacher checkpoint is), against a central finite difference in float64 (the
    networks embed their timestep in float32, so the difference is good to about 1e-3)."""
    from tiny_pipelines import HEIGHT, MAX_SEQUENCE_LENGTH, NUM_FRAMES, WIDTH, build_tiny_pipeline
    from videocm.diffusion.trigflow import velocity_jvp
    from videocm.models.folder import load_model

    teacher = load_model(build_tiny_pipeline(layout, tmp_path / layout), video_shape=[NUM_FRAMES, HEIGHT, WIDTH],
                         max_sequence_length=MAX_SEQUENCE_LENGTH)
    denoiser = teacher.denoiser.double()
    trig = TrigFlow(teacher.schedule)
    generator = torch.Generator().manual_seed(4)
    shape = (2, *teacher.info.latent_shape)
    x, direction = torch.randn(shape, generator=generator).double(), torch.randn(shape, generator=generator).double()
    t = torch.tensor([0.6, 1.2], dtype=torch.float64)
    if trig._table is not None:  # a VP timestep is linear in t between integer timesteps: difference inside one
        upper = torch.searchsorted(trig._table, t)
        t = (trig._table[upper - 1] + trig._table[upper]) / 2
    speed = torch.tensor([0.5, -0.3], dtype=torch.float64)
    cond = {k: (v.double() if v.is_floating_point() else v) for k, v in teacher.text.encode(["a red ball", "rain"]).items()}

    def at(step):
        return trig.velocity(trig.call(denoiser, x + step * direction, t + step * speed, cond), x + step * direction,
                             t + step * speed)

    with torch.no_grad():
        velocity, tangent = velocity_jvp(denoiser, trig, x, t, cond, direction, speed)
        difference = (at(1e-4) - at(-1e-4)) / 2e-4
        time_only = velocity_jvp(denoiser, trig, x, t, cond, torch.zeros_like(x), torch.ones_like(t))[1]
        time_difference = (trig.velocity(trig.call(denoiser, x, t + 1e-4, cond), x, t + 1e-4)
                           - trig.velocity(trig.call(denoiser, x, t - 1e-4, cond), x, t - 1e-4)) / 2e-4
    torch.testing.assert_close(velocity, at(0.0))
    assert float((tangent - difference).norm() / difference.norm()) < 3e-3
    # the time input itself carries a derivative (a timestep cast to an integer would drop it)
    assert float((time_only - time_difference).norm() / time_difference.norm()) < 3e-3
