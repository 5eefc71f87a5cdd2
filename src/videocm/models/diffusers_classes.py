"""What a diffusers pipeline loads from an exported student (``videocm export``), as diffusers classes:

* :class:`FlowConsistencyScheduler`: the multistep consistency sampler of a flow-matching student as a
  ``SchedulerMixin`` (``set_timesteps`` / ``step``), for ``WanPipeline`` and ``HunyuanVideoPipeline``. VP students
  use diffusers' own ``LCMScheduler``; VP DCM students :class:`VPPhasedConsistencyScheduler`.
* :class:`TrigFlowConsistencyScheduler`: the sCM sampler of a continuous-time (sCM, rCM) student, VP or flow.
* :class:`ExpertSwitchingModel`: a DCM student's experts behind one ``ModelMixin`` that runs, at each call, the
  expert owning the timestep; saved and loaded with ``save_pretrained`` / ``from_pretrained``.

Both are importable as ``videocm.FlowConsistencyScheduler`` / ``videocm.ExpertSwitchingModel``, so a pipeline's
``model_index.json`` can name them as ``["videocm", "..."]``. The math is :mod:`videocm.diffusion`'s, so a pipeline
with these gives the clips ``videocm sample`` gives.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from diffusers import ConfigMixin, ModelMixin, SchedulerMixin
from diffusers.configuration_utils import FrozenDict, register_to_config
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from torch import nn

from ..diffusion import FlowSchedule, consistency_function, consistency_times, skipping_grid
from ..diffusion.phased import owning_expert, phased_times, segment_bounds
from ..diffusion.solvers import ode_step


@dataclass
class FlowConsistencySchedulerOutput(BaseOutput):
    prev_sample: torch.Tensor
    denoised: torch.Tensor


class FlowConsistencyScheduler(SchedulerMixin, ConfigMixin):
    """Multistep consistency sampling of a flow-matching student (LCM's sampler on the flow ODE).

    ``set_timesteps(n)`` picks ``n`` of the student's ``original_inference_steps`` grid sigmas as ``LCMScheduler``
    picks timesteps; ``step`` maps ``(x, sigma)`` to the clean estimate ``c_skip x + c_out (x - sigma v)`` and, unless
    it is the last step, re-noises it to the next sigma with noise from ``generator`` (or :attr:`generator`, for
    pipelines such as ``WanPipeline`` that do not pass theirs: set ``pipe.scheduler.generator = generator``).

    ``mu``: the exponential shift of a dynamically shifting teacher (LTX-Video), fixed at the clip shape the student
    was distilled at; the ``mu`` such a pipeline passes to ``set_timesteps`` for other shapes is not used.

    ``phase_boundaries`` (grid indices; DCM): the phased sampler of :func:`videocm.diffusion.phased.sample_phased`:
    steps split between the segments, an ODE jump to the next sigma in segments that do not end at 0, and the
    consistency step above in the last one.
    """

    order = 1
    _compatibles: list = []

    @register_to_config
    def __init__(self, num_train_timesteps: int = 1000, shift: float = 1.0, original_inference_steps: int = 50,
                 sigma_data: float = 0.5, timestep_scaling: float = 10.0, use_given_sigmas: bool = False,
                 phase_boundaries: list[int] | None = None, mu: float | None = None) -> None:
        self._start(FlowSchedule(shift=shift, num_train_timesteps=num_train_timesteps, mu=mu),
                    original_inference_steps, phase_boundaries)

    def _start(self, schedule, original_inference_steps: int, phase_boundaries: list[int] | None) -> None:
        """The sampler's state for ``schedule`` (flow or VP): its skipping grid, the experts' segments, 4 steps."""
        self.schedule = schedule
        self.grid = skipping_grid(self.schedule, original_inference_steps)
        self.segments = segment_bounds(phase_boundaries or [], original_inference_steps)
        self.init_noise_sigma = 1.0
        self.generator: torch.Generator | None = None
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self.set_timesteps(min(4, original_inference_steps))

    @property
    def step_index(self) -> int | None:
        return self._step_index

    @property
    def begin_index(self) -> int | None:
        return self._begin_index

    def set_begin_index(self, begin_index: int = 0) -> None:
        self._begin_index = begin_index

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, **unused) -> None:
        """``num_inference_steps`` of the student's grid sigmas (descending).

        Pipelines such as ``HunyuanVideoPipeline`` always pass their own ``sigmas`` (a spacing for many-step
        samplers): by default only their number is used; ``use_given_sigmas=True`` samples at them as given."""
        if sigmas is not None and self.config.get("use_given_sigmas", False):
            chosen = torch.as_tensor(sigmas, dtype=torch.float32)
        else:
            count = num_inference_steps if num_inference_steps is not None else (
                len(sigmas) if sigmas is not None else None)
            if count is None:
                raise ValueError("give num_inference_steps or sigmas")
            chosen = (phased_times(self.grid, self.segments, int(count)) if len(self.segments) > 1
                      else consistency_times(self.grid, int(count))).to(torch.float32)
        self.num_inference_steps = len(chosen)
        self.sigmas = torch.cat([chosen, chosen.new_zeros(1)]).to(device)
        self.timesteps = self.schedule.model_timestep(chosen).to(device)
        self._step_index = None
        self._begin_index = None

    def scale_model_input(self, sample: torch.Tensor, timestep=None) -> torch.Tensor:
        return sample

    def _begin_step(self, timestep) -> int:
        """The index of the step ``timestep`` starts (found on the first step)."""
        if self.num_inference_steps is None:
            raise ValueError("call set_timesteps before step")
        if self._step_index is None:
            self._step_index = self._index_for(timestep)
        return self._step_index

    def _index_for(self, timestep) -> int:
        if self._begin_index is not None:
            return self._begin_index
        matches = (self.timesteps.to(torch.as_tensor(timestep).device) == timestep).nonzero()
        return int(matches[0]) if len(matches) else 0

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True):
        i = self._begin_step(timestep)
        sigma = self.sigmas[i].cpu()
        segment_end = self.grid[self.segments[owning_expert(sigma, self.grid, self.segments)][0]]
        if float(segment_end) > 0:  # a DCM segment above the clean end: one deterministic ODE jump
            following = self.sigmas[i + 1].cpu() if i + 1 < self.num_inference_steps else self.schedule.terminal
            prev_sample = ode_step(self.schedule, model_output.float(), sample.float(), sigma, following)
            prev_sample = prev_sample.to(sample.dtype)
            self._step_index += 1
            return (prev_sample, prev_sample) if not return_dict else FlowConsistencySchedulerOutput(
                prev_sample=prev_sample, denoised=prev_sample)
        denoised = consistency_function(self.schedule, model_output.float(), sample.float(), sigma,
                                        self.config.sigma_data, self.config.timestep_scaling).to(sample.dtype)
        return self._advance(denoised, generator, return_dict,
                             lambda noise: self.schedule.add_noise(denoised, noise, self.sigmas[i + 1].cpu()))

    def _advance(self, denoised: torch.Tensor, generator, return_dict: bool, renoise):
        """The step's end: unless it is the last step, ``renoise(noise)`` with fresh noise from ``generator`` (or
        :attr:`generator`) is the next sample, else the clean estimate itself."""
        if self._step_index + 1 < self.num_inference_steps:
            noise = randn_tensor(denoised.shape, generator=generator or self.generator, device=denoised.device,
                                 dtype=denoised.dtype)
            prev_sample = renoise(noise)
        else:
            prev_sample = denoised
        self._step_index += 1
        if not return_dict:
            return prev_sample, denoised
        return FlowConsistencySchedulerOutput(prev_sample=prev_sample, denoised=denoised)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                  ) -> torch.Tensor:
        return self.schedule.add_noise(original_samples, noise, timesteps.float() / self.config.num_train_timesteps)

    def __len__(self) -> int:
        return self.config.num_train_timesteps


class VPPhasedConsistencyScheduler(FlowConsistencyScheduler):
    """The phased consistency sampler of a VP (DDIM-schedule) DCM student, which diffusers' ``LCMScheduler`` cannot
    run: steps split between the experts' segments, a DDIM jump to the next time in segments above the clean end,
    LCM's consistency step and re-noising in the last one. ``schedule``: the student's VP schedule, as the
    arguments of diffusers' ``DDIMScheduler`` (``videocm.json``'s ``schedule`` section without ``type``);
    ``timesteps`` and the times ``step`` takes are the network's integer timesteps."""

    @register_to_config
    def __init__(self, schedule: dict | None = None, original_inference_steps: int = 50, sigma_data: float = 0.5,
                 timestep_scaling: float = 10.0, phase_boundaries: list[int] | None = None) -> None:
        from .info import schedule_from_config

        self._start(schedule_from_config({**(schedule or {}), "type": "vp"}), original_inference_steps,
                    phase_boundaries)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                  ) -> torch.Tensor:
        return self.schedule.add_noise(original_samples, noise, timesteps)

    def __len__(self) -> int:
        return self.schedule.num_train_timesteps


class ExpertSwitchingModel(ModelMixin, ConfigMixin):
    """Experts of one diffusers class; a call runs the expert owning its timestep.

    ``boundary_timesteps`` (descending, in the network's timestep units): expert ``j`` runs for timesteps above
    ``boundary_timesteps[j]`` (and at or below the one before); the last expert below all of them, as DCM's
    phased sampler assigns them. The experts' own config keys read through (``model.config.patch_size``), so a
    pipeline treats this model as its usual denoiser.
    """

    @register_to_config
    def __init__(self, expert_class: str = "WanTransformer3DModel", expert_config: dict | None = None,
                 boundary_timesteps: list[float] | None = None) -> None:
        super().__init__()
        import diffusers

        network_class = getattr(diffusers, expert_class)
        count = len(boundary_timesteps or []) + 1
        self.experts = nn.ModuleList([network_class.from_config(dict(expert_config or {})) for _ in range(count)])

    @property
    def config(self) -> FrozenDict:
        own = self._internal_dict
        return FrozenDict({**(own.get("expert_config") or {}), **own})

    def expert_index(self, timestep) -> int:
        value = float(torch.as_tensor(timestep).flatten()[0])
        for index, boundary in enumerate(self.config.boundary_timesteps or []):
            if value > float(boundary):
                return index
        return len(self.experts) - 1

    def forward(self, *args, **kwargs):
        timestep = kwargs["timestep"] if "timestep" in kwargs else args[1]
        return self.experts[self.expert_index(timestep)](*args, **kwargs)

    @contextlib.contextmanager
    def cache_context(self, name: str, **kwargs):
        """Pipelines open a cache context per call; the experts cache nothing across calls here."""
        yield


class TrigFlowConsistencyScheduler(FlowConsistencyScheduler):
    """The sCM multistep sampler of a continuous-time (``--method scm`` / ``rcm``) student, in the network's own
    units, as a ``SchedulerMixin``: ``set_timesteps(n)`` gives the TrigFlow times of
    :func:`videocm.diffusion.trigflow.scm_times` (from ``atan(sigma_max / trigflow_sigma_data)`` through
    ``mid_times``) as the network's timesteps (``1000 s`` for flow; a continuous timestep for VP); ``step`` takes the
    network's clean estimate and, unless it is the last step, re-noises it to the next time with noise from
    ``generator`` (or :attr:`generator`). ``schedule``: the student's ``videocm.json`` schedule section. The start
    is the pipeline's own ``noise``, as ``videocm sample`` starts, so the clips are the same.

    Why not diffusers' ``SCMScheduler``: it takes TrigFlow inputs and a TrigFlow output (``x`` scaled by
    ``sigma_data``, the time in radians), while these networks keep their teacher's inputs and prediction (a Wan
    transformer: the flow velocity at ``1000 s``), so a stock pipeline cannot feed it."""

    @register_to_config
    def __init__(self, schedule: dict | None = None, trigflow_sigma_data: float = 1.0, sigma_max: float = 80.0,
                 mid_times: list[float] | None = None) -> None:
        from ..diffusion.trigflow import RCM_MID_TIMES, TrigFlow
        from .info import schedule_from_config

        self.schedule = schedule_from_config(schedule or {"type": "flow"})
        self.trigflow = TrigFlow(self.schedule, trigflow_sigma_data)
        self.mid_times = list(mid_times if mid_times is not None else RCM_MID_TIMES)
        self.init_noise_sigma = 1.0
        self.generator: torch.Generator | None = None
        self.num_inference_steps: int | None = None
        self._step_index: int | None = None
        self._begin_index: int | None = None
        self.set_timesteps(min(4, len(self.mid_times) + 1))

    def set_timesteps(self, num_inference_steps: int | None = None, device: str | torch.device | None = None,
                      sigmas: list[float] | None = None, **unused) -> None:
        """``num_inference_steps`` (1 to ``len(mid_times) + 1``) of the student's sampler times (a pipeline's own
        ``sigmas`` count as their number only)."""
        from ..diffusion.trigflow import scm_times

        count = num_inference_steps if num_inference_steps is not None else (len(sigmas) if sigmas else None)
        if count is None:
            raise ValueError("give num_inference_steps")
        self.times = scm_times(self.trigflow, int(count), self.config.sigma_max, self.mid_times)
        self.num_inference_steps = len(self.times) - 1
        point = self.trigflow.native(self.times)
        self.native = point
        self.sigmas = point.sigma.to(torch.float32).to(device)
        self.timesteps = point.timestep[:-1].to(torch.float32).to(device)
        self._step_index = None
        self._begin_index = None

    def step(self, model_output: torch.Tensor, timestep, sample: torch.Tensor,
             generator: torch.Generator | None = None, return_dict: bool = True):
        from ..diffusion.predictions import predicted_x0

        i = self._begin_step(timestep)
        alpha, sigma = (float(v[i]) for v in (self.native.alpha, self.native.sigma))
        denoised = predicted_x0(model_output.float(), sample.float(), torch.tensor(alpha), torch.tensor(sigma),
                                self.schedule.prediction_type).to(sample.dtype)
        alpha, sigma = (float(v[min(i + 1, self.num_inference_steps)]) for v in (self.native.alpha, self.native.sigma))
        return self._advance(denoised, generator, return_dict, lambda noise: alpha * denoised + sigma * noise)

    def add_noise(self, original_samples: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor
                  ) -> torch.Tensor:
        raise NotImplementedError("a continuous-time student's sampler starts from noise; it does not add noise "
                                  "to a clip (no image-to-image strength)")

    def __len__(self) -> int:
        return self.schedule.num_train_timesteps
