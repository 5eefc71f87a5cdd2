"""The diffusion math against diffusers' schedulers, on the same inputs and timesteps, to 1e-5."""

import itertools

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, FlowMatchEulerDiscreteScheduler

from videocm.diffusion import (
    FlowSchedule,
    broadcast_to,
    guided_output,
    network_evaluations,
    ode_step,
    predicted_noise,
    predicted_x0,
    prediction_target,
    sample_teacher,
    vp_schedule,
)

ATOL = 1e-5
BETAS = {"linear": (0.0001, 0.02), "scaled_linear": (0.00085, 0.012), "squaredcos_cap_v2": (0.0001, 0.02)}
VP_CASES = [
    (schedule, prediction, zero_snr)
    for schedule, prediction, zero_snr in itertools.product(BETAS, ["epsilon", "v_prediction", "sample"], [False, True])
    # With zero terminal SNR an epsilon network cannot recover x0 at t=999 (alpha = 0); diffusers pairs it with v.
    if not (zero_snr and prediction == "epsilon")
]


def diffusers_ddim(schedule: str, prediction: str, zero_snr: bool, spacing: str = "leading") -> DDIMScheduler:
    start, end = BETAS[schedule]
    return DDIMScheduler(
        beta_schedule=schedule, beta_start=start, beta_end=end, prediction_type=prediction,
        rescale_betas_zero_snr=zero_snr, clip_sample=False, timestep_spacing=spacing,
    )


def ours_vp(schedule: str, prediction: str, zero_snr: bool, spacing: str = "leading"):
    start, end = BETAS[schedule]
    return vp_schedule(schedule, start, end, prediction_type=prediction, zero_terminal_snr=zero_snr,
                       timestep_spacing=spacing)


def toy_denoiser(x: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """A deterministic stand-in network whose output depends on x, the timestep and the conditioning."""
    scale = 1.0 / (1.0 + timestep.float() / 1000.0)
    return torch.tanh(x * broadcast_to(scale, x)) * 0.7 + states.mean(dim=(1, 2)).view(-1, 1, 1, 1, 1)


@pytest.mark.parametrize("schedule,prediction,zero_snr", VP_CASES)
def test_vp_alphas_match_diffusers(schedule, prediction, zero_snr):
    theirs = diffusers_ddim(schedule, prediction, zero_snr)
    ours = ours_vp(schedule, prediction, zero_snr)
    torch.testing.assert_close(ours.alphas_cumprod, theirs.alphas_cumprod, atol=0, rtol=0)
    assert ours.zero_terminal_snr == zero_snr


@pytest.mark.parametrize("spacing", ["leading", "trailing", "linspace"])
@pytest.mark.parametrize("num_steps", [1, 4, 7, 50])
def test_vp_sampling_times_match_diffusers(spacing, num_steps):
    theirs = diffusers_ddim("scaled_linear", "epsilon", False, spacing)
    theirs.set_timesteps(num_steps)
    times = ours_vp("scaled_linear", "epsilon", False, spacing).sampling_times(num_steps)
    assert times[:-1].tolist() == theirs.timesteps.tolist()
    assert times[-1].item() == -1


@pytest.mark.parametrize("schedule,prediction,zero_snr", VP_CASES)
def test_ddim_step_matches_diffusers(schedule, prediction, zero_snr):
    num_steps = 10
    theirs = diffusers_ddim(schedule, prediction, zero_snr)
    theirs.set_timesteps(num_steps)
    ours = ours_vp(schedule, prediction, zero_snr)
    generator = torch.Generator().manual_seed(0)
    for t in theirs.timesteps.tolist():
        x = torch.randn(2, 4, 3, 5, 6, generator=generator)
        output = torch.randn(x.shape, generator=generator)
        expected = theirs.step(output, t, x, eta=0.0).prev_sample
        s = t - 1000 // num_steps  # diffusers' rule for the previous timestep
        got = ode_step(ours, output, x, t, s)
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)
        # The same step taken per sample with a (B,) time tensor.
        got_batched = ode_step(ours, output, x, torch.tensor([t, t]), torch.tensor([s, s]))
        torch.testing.assert_close(got_batched, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("schedule,prediction,zero_snr", VP_CASES)
def test_vp_add_noise_and_conversions_match_diffusers(schedule, prediction, zero_snr):
    theirs = diffusers_ddim(schedule, prediction, zero_snr)
    ours = ours_vp(schedule, prediction, zero_snr)
    generator = torch.Generator().manual_seed(1)
    x0 = torch.randn(3, 4, 2, 4, 4, generator=generator)
    noise = torch.randn(x0.shape, generator=generator)
    t = torch.tensor([0, 500, 998])
    x = ours.add_noise(x0, noise, t)
    torch.testing.assert_close(x, theirs.add_noise(x0, noise, t), atol=ATOL, rtol=0)
    alpha, sigma = (broadcast_to(v, x) for v in ours.alpha_sigma(t))
    target = prediction_target(x0, noise, alpha, sigma, prediction)
    if prediction == "v_prediction":
        torch.testing.assert_close(target, DDPMScheduler(beta_schedule=schedule, beta_start=BETAS[schedule][0],
                                   beta_end=BETAS[schedule][1], rescale_betas_zero_snr=zero_snr)
                                   .get_velocity(x0, noise, t), atol=ATOL, rtol=0)
    torch.testing.assert_close(predicted_x0(target, x, alpha, sigma, prediction), x0, atol=1e-4, rtol=0)
    torch.testing.assert_close(predicted_noise(target, x, alpha, sigma, prediction), noise, atol=1e-3, rtol=0)


@pytest.mark.parametrize("spacing", ["leading", "trailing"])
@pytest.mark.parametrize("guidance", [1.0, 4.5])
def test_ddim_teacher_sampler_matches_diffusers_loop(spacing, guidance):
    num_steps = 10
    prediction = "v_prediction"
    theirs = diffusers_ddim("scaled_linear", prediction, True, spacing)
    theirs.set_timesteps(num_steps)
    ours = ours_vp("scaled_linear", prediction, True, spacing)
    generator = torch.Generator().manual_seed(2)
    noise = torch.randn(2, 4, 3, 4, 4, generator=generator)
    cond = {"states": torch.randn(2, 5, 8, generator=generator)}
    uncond = {"states": torch.zeros(2, 5, 8)}

    x = noise.clone()
    for t in theirs.timesteps:
        timestep = t.expand(2)
        out_c = toy_denoiser(x, timestep, **cond)
        out_u = toy_denoiser(x, timestep, **uncond)
        out = out_u + guidance * (out_c - out_u) if guidance != 1.0 else out_c
        x = theirs.step(out, t, x, eta=0.0).prev_sample

    got = sample_teacher(toy_denoiser, noise, ours, num_steps, cond, uncond, guidance)
    torch.testing.assert_close(got, x, atol=ATOL, rtol=0)


FLOW_SHIFTS = [1.0, 3.0, 5.0, 7.0]


@pytest.mark.parametrize("shift", FLOW_SHIFTS)
@pytest.mark.parametrize("num_steps", [1, 4, 8, 50])
def test_flow_sampling_times_match_diffusers(shift, num_steps):
    theirs = FlowMatchEulerDiscreteScheduler(shift=shift)
    theirs.set_timesteps(num_steps)
    ours = FlowSchedule(shift=shift)
    times = ours.sampling_times(num_steps)
    torch.testing.assert_close(times, theirs.sigmas, atol=ATOL, rtol=0)
    torch.testing.assert_close(ours.model_timestep(times[:-1]), theirs.timesteps, atol=1e-3, rtol=0)


def test_flow_dynamic_shift_matches_diffusers():
    theirs = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True)
    theirs.set_timesteps(8, mu=0.8)
    torch.testing.assert_close(FlowSchedule(mu=0.8).sampling_times(8), theirs.sigmas, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shift", FLOW_SHIFTS)
def test_euler_step_matches_diffusers(shift):
    num_steps = 8
    theirs = FlowMatchEulerDiscreteScheduler(shift=shift)
    theirs.set_timesteps(num_steps)
    ours = FlowSchedule(shift=shift)
    generator = torch.Generator().manual_seed(3)
    for i, t in enumerate(theirs.timesteps):
        x = torch.randn(2, 4, 3, 5, 6, generator=generator)
        output = torch.randn(x.shape, generator=generator)
        expected = theirs.step(output, t, x).prev_sample
        got = ode_step(ours, output, x, theirs.sigmas[i], theirs.sigmas[i + 1])
        torch.testing.assert_close(got, expected, atol=ATOL, rtol=0)


@pytest.mark.parametrize("shift", [1.0, 5.0])
def test_flow_teacher_sampler_and_noising_match_diffusers(shift):
    num_steps, guidance = 12, 3.0
    theirs = FlowMatchEulerDiscreteScheduler(shift=shift)
    theirs.set_timesteps(num_steps)
    ours = FlowSchedule(shift=shift)
    generator = torch.Generator().manual_seed(4)
    noise = torch.randn(2, 4, 3, 4, 4, generator=generator)
    cond = {"states": torch.randn(2, 5, 8, generator=generator)}
    uncond = {"states": torch.zeros(2, 5, 8)}
    x = noise.clone()
    for t in theirs.timesteps:
        timestep = t.expand(2)
        out_u, out_c = toy_denoiser(x, timestep, **uncond), toy_denoiser(x, timestep, **cond)
        x = theirs.step(out_u + guidance * (out_c - out_u), t, x).prev_sample
    torch.testing.assert_close(sample_teacher(toy_denoiser, noise, ours, num_steps, cond, uncond, guidance),
                               x, atol=ATOL, rtol=0)

    x0 = torch.randn(noise.shape, generator=generator)
    sigma = theirs.sigmas[3]
    torch.testing.assert_close(ours.add_noise(x0, noise, sigma),
                               theirs.scale_noise(x0, theirs.timesteps[3:4], noise), atol=ATOL, rtol=0)
    x = ours.add_noise(x0, noise, sigma)
    velocity = prediction_target(x0, noise, *ours.alpha_sigma(sigma), "flow")
    torch.testing.assert_close(velocity, noise - x0)
    torch.testing.assert_close(predicted_x0(velocity, x, *ours.alpha_sigma(sigma), "flow"), x0, atol=ATOL, rtol=0)
    torch.testing.assert_close(predicted_noise(velocity, x, *ours.alpha_sigma(sigma), "flow"), noise,
                               atol=ATOL, rtol=0)


def test_flow_euler_step_equals_ddim_on_the_flow_path():
    """An Euler step on the velocity is the DDIM step of the flow path (x0, noise held fixed)."""
    ours = FlowSchedule(shift=3.0)
    generator = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(2, 3, 2, 4, 4, generator=generator), torch.randn(2, 3, 2, 4, 4, generator=generator)
    t, s = torch.tensor(0.8), torch.tensor(0.3)
    x_t = ours.add_noise(x0, noise, t)
    torch.testing.assert_close(ode_step(ours, noise - x0, x_t, t, s), ours.add_noise(x0, noise, s), atol=ATOL, rtol=0)


def test_guidance_is_one_batched_forward():
    calls = []

    def counting(x, timestep, states):
        calls.append(x.shape[0])
        return toy_denoiser(x, timestep, states)

    x = torch.randn(3, 2, 2, 4, 4)
    timestep = torch.full((3,), 500)
    cond, uncond = {"states": torch.randn(3, 4, 8)}, {"states": torch.zeros(3, 4, 8)}
    out = guided_output(counting, x, timestep, cond, uncond, 7.5)
    assert calls == [6]
    expected_u, expected_c = toy_denoiser(x, timestep, **uncond), toy_denoiser(x, timestep, **cond)
    torch.testing.assert_close(out, expected_u + 7.5 * (expected_c - expected_u))
    calls.clear()
    guided_output(counting, x, timestep, cond, uncond, 1.0)
    assert calls == [3]
    assert network_evaluations(4, 7.5, True) == 8 and network_evaluations(4, 1.0, True) == 4


def test_bad_arguments_are_rejected_with_clear_messages():
    with pytest.raises(ValueError, match="prediction_type"):
        vp_schedule(prediction_type="x0")
    with pytest.raises(ValueError, match="beta_schedule"):
        vp_schedule(beta_schedule="cosine")
    with pytest.raises(ValueError, match="num_steps"):
        vp_schedule().sampling_times(0)
    with pytest.raises(ValueError, match="shift"):
        FlowSchedule(shift=0.0)
