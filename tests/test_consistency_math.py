"""The consistency parameterisation, skipping grid and multistep sampler against diffusers' ``LCMScheduler``."""

from __future__ import annotations

import pytest
import torch
from diffusers import LCMScheduler

from videocm.diffusion import (FlowSchedule, boundary_scalings, consistency_function, consistency_times,
                               generator_noise, sample_consistency, seeded_noise, skipping_grid, vp_schedule)


def toy_denoiser(x: torch.Tensor, timestep: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """A smooth, timestep- and condition-dependent stand-in for a network."""
    scale = (timestep.float() / 1000).reshape(-1, *([1] * (x.ndim - 1)))
    return torch.tanh(x * (1 - 0.5 * scale)) + 0.1 * states.mean(dim=(1, 2)).reshape(-1, *([1] * (x.ndim - 1)))


@pytest.mark.parametrize("prediction", ["epsilon", "v_prediction", "sample"])
@pytest.mark.parametrize("zero_snr", [False, True])
@pytest.mark.parametrize("steps", [1, 2, 4, 8])
def test_vp_consistency_sampler_equals_lcm_scheduler(prediction, zero_snr, steps):
    schedule = vp_schedule("scaled_linear", prediction_type=prediction, zero_terminal_snr=zero_snr)
    reference = LCMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                             prediction_type=prediction, rescale_betas_zero_snr=zero_snr, original_inference_steps=50,
                             clip_sample=False, set_alpha_to_one=True, timestep_scaling=10.0)
    reference.set_timesteps(steps)
    grid = skipping_grid(schedule, 50)
    times = consistency_times(grid, steps)
    assert times.tolist() == reference.timesteps.tolist()
    noise = torch.randn(2, 3, 4, 5, 5, generator=torch.Generator().manual_seed(0))
    states = torch.randn(2, 6, 8, generator=torch.Generator().manual_seed(1))
    x, generator = noise.clone(), torch.Generator().manual_seed(7)
    for t in reference.timesteps:
        x, denoised = reference.step(toy_denoiser(x, t.expand(2), states), t, x, generator=generator,
                                     return_dict=False)
    ours = sample_consistency(toy_denoiser, noise, schedule, times, {"states": states},
                              generator_noise(torch.Generator().manual_seed(7)))
    torch.testing.assert_close(ours, denoised, atol=1e-5, rtol=1e-5)


def test_four_steps_of_fifty_are_those_of_videolcm():
    grid = skipping_grid(vp_schedule(zero_terminal_snr=True), 50)
    assert grid[:3].tolist() == [0, 19, 39] and grid[-1].item() == 999 and len(grid) == 51
    assert consistency_times(grid, 4).tolist() == [999, 759, 499, 259]
    assert consistency_times(grid, 1).tolist() == [999]


def test_boundary_condition_holds_at_the_clean_end():
    x = torch.randn(3, 4, 2, 3, 3)
    output = torch.randn_like(x)
    for schedule in (vp_schedule(prediction_type="v_prediction", zero_terminal_snr=True), FlowSchedule(shift=3.0)):
        clean = skipping_grid(schedule, 20)[0]
        torch.testing.assert_close(consistency_function(schedule, output, x, clean), x, atol=0, rtol=0)
    c_skip, c_out = boundary_scalings(torch.tensor([0.0, 999.0]))
    assert c_skip.tolist()[0] == 1.0 and c_out.tolist()[0] == 0.0
    assert c_skip[1] < 1e-6 and abs(c_out[1] - 1) < 1e-6  # far from the boundary f is the network's x0


def test_flow_consistency_function_is_the_x0_prediction_away_from_zero():
    schedule = FlowSchedule(shift=1.0)
    x, velocity = torch.randn(2, 4, 2, 3, 3), torch.randn(2, 4, 2, 3, 3)
    sigma = torch.tensor([0.5, 0.9])
    expected = x - sigma.reshape(2, 1, 1, 1, 1) * velocity
    torch.testing.assert_close(consistency_function(schedule, velocity, x, sigma), expected, atol=1e-5, rtol=1e-4)


def test_flow_grid_is_shifted_and_starts_at_zero():
    grid = skipping_grid(FlowSchedule(shift=3.0), 10)
    assert grid[0].item() == 0.0 and abs(grid[-1].item() - 1.0) < 1e-6
    assert torch.all(grid[1:] > grid[:-1])
    assert abs(grid[5].item() - 3 * 0.5 / (1 + 2 * 0.5)) < 1e-6


def test_seeded_noise_does_not_depend_on_the_batch():
    both = seeded_noise([3, 4])(2, (2, 4, 2, 3, 3))
    alone = seeded_noise([4])(2, (1, 4, 2, 3, 3))
    torch.testing.assert_close(both[1:], alone)
    assert not torch.equal(seeded_noise([4])(1, (1, 4, 2, 3, 3)), alone)


def test_bad_step_counts_are_rejected():
    grid = skipping_grid(vp_schedule(), 10)
    with pytest.raises(ValueError, match="between 1 and the grid size 10"):
        consistency_times(grid, 11)
    with pytest.raises(ValueError, match="between 1"):
        consistency_times(grid, 0)
