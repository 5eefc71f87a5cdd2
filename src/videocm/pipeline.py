"""Text to video with a loaded model: prompts -> text states -> noise -> denoiser steps -> VAE decode -> clips.

Clip ``i`` starts from noise drawn with seed ``seeds[i]`` alone, so results do not depend on the batch size and
a student and its teacher can start from the same noise. A student's re-noising noise comes, with
``noise="videocm"`` (evaluations), from one seed per (clip, step); with ``noise="diffusers"`` (``videocm
sample``), from clip ``i``'s generator continued after its starting noise, as a diffusers pipeline called with
``generator=torch.Generator().manual_seed(seeds[i])`` draws it, so an exported student gives the same clip there.
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .diffusion import consistency_times, guidance_at, sample_consistency, sample_teacher, seeded_noise, skipping_grid
from .diffusion.consistency import NoiseSource
from .diffusion.phased import phased_times, sample_phased, segment_bounds, split_steps
from .diffusion.sampling import concat_conditioning, guided_output
from .diffusion.trigflow import TrigFlow, sample_trigflow, scm_times
from .errors import VideoCMError
from .models.control import control_tensor, encode_control, with_control
from .models.families import family_for_pipeline
from .models.folder import load_model
from .models.image_condition import with_first_frame
from .models.text_encoder import TextEncoder
from .models.vae import to_uint8_frames
from .models.video_model import VideoModel

_TEXT_ENCODERS: dict[tuple[int, str], TextEncoder] = {}


def shared_text_encoder(max_length: int, device: str | torch.device = "cpu") -> TextEncoder:
    """One cached MiniLM per (max_length, device), so prompts are encoded once per process."""
    key = (max_length, str(device))
    if key not in _TEXT_ENCODERS:
        _TEXT_ENCODERS[key] = TextEncoder(max_length=max_length, device=device)
    return _TEXT_ENCODERS[key]


def initial_noise(seeds: list[int], shape: tuple[int, ...], device: str | torch.device = "cpu") -> torch.Tensor:
    """``(B, *shape)`` standard normal noise, clip ``i`` drawn from seed ``seeds[i]`` alone."""
    return torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]).to(
        device)


NOISE_MODES = ("videocm", "diffusers")


def drawn_in_order(shape: tuple[int, ...], order: str, generator: torch.Generator) -> torch.Tensor:
    """Standard normal noise of one clip ``shape`` ``(C, T, h, w)``, drawn from ``generator`` as a tensor whose axes
    are in ``order`` (e.g. ``"ThwC"``: a pipeline's packed ``(tokens, channels)``) and returned as ``(C, T, h, w)``."""
    axes = dict(zip("CThw", shape))
    drawn = torch.randn([axes[a] for a in order], generator=generator)
    return drawn.permute([order.index(a) for a in "CThw"])


def sampling_noise(seeds: list[int], shape: tuple[int, ...], mode: str, device: str | torch.device = "cpu",
                   pipeline_class: str | None = None, generators: list[torch.Generator] | None = None
                   ) -> tuple[torch.Tensor, NoiseSource]:
    """Starting noise ``(B, *shape)`` and the re-noising source of a student (see the module docstring);
    ``pipeline_class``: the diffusers pipeline whose drawing order ``noise="diffusers"`` follows; ``generators``:
    clip ``i``'s generator, already drawn from (an image-to-video pipeline samples the image's latents first)."""
    if mode == "videocm":
        return initial_noise(seeds, shape, device), seeded_noise(seeds, device)
    if mode != "diffusers":
        raise VideoCMError(f"noise mode {mode!r}: use one of {', '.join(NOISE_MODES)}")
    generators = generators or [torch.Generator().manual_seed(int(s)) for s in seeds]
    spec = family_for_pipeline(pipeline_class)
    # the pipeline's drawing order per clip (the axes of the tensor it draws; see PipelineLayout.noise_orders)
    initial_order, renoise_order = spec.layout(pipeline_class).noise_orders if spec else ("CThw", "CThw")

    def drawer(order: str) -> NoiseSource:
        def draw(step: int, step_shape: tuple[int, ...]) -> torch.Tensor:
            return torch.stack([drawn_in_order(step_shape[1:], order, g) for g in generators]).to(device)
        return draw

    return drawer(initial_order)(0, (len(seeds), *shape)), drawer(renoise_order)


class _Uncounted:
    """What :meth:`VideoPipeline.generate` records into without a meter: nothing."""

    clips = 0

    def phase(self, name: str):
        return contextlib.nullcontext()

    def counted(self, denoiser):
        return denoiser


class VideoPipeline:
    """Generates uint8 clips ``(T, H, W, 3)`` from prompts with a teacher (many-step ODE sampler) or a student
    (multistep consistency, expert-switching for a phased student).

    ``meter`` (e.g. :class:`evaluation.cost.CostMeter`): anything with ``phase(name)`` (a context timing a phase),
    ``counted(denoiser)`` (a denoiser that counts its batch rows) and a ``clips`` count."""

    def __init__(self, model: VideoModel, device: str | torch.device = "cpu", text=None) -> None:
        self.model = model
        self.device = torch.device(device)
        self.text = text or model.text or shared_text_encoder(model.info.text_length, device)
        self.name = model.path.name
        self.controlled = False
        self._denoiser, self._experts = model.denoiser, model.experts
        self.decoder = model.vae  # what turns latents into frames: the VAE, or a tiny decoder (use_decoder)
        self.decoder_name = "full"
        self._finisher = None  # (network, guidance or None, steps): what samples below the first segment
        self.sampled_as: str | None = None  # how the clips are made, when not by the model alone (monitoring)
        self.times = "own"  # a flow student's sampling times: its grid's ("own") or diffusers' FlowMatchLCMScheduler's

    def finish_with(self, network, guidance: float | None = None, steps: int = 0, label: str | None = None
                    ) -> "VideoPipeline":
        """A phased student's first (semantic) expert samples to its boundary, and ``network`` below it: a teacher
        (``guidance`` not None: its guided ODE solver over ``steps`` evenly spread grid points below the boundary)
        or a consistency student (``guidance`` None: its share of the steps, as an expert would). DCM's sample
        checks during the semantic stage; ``label`` says so in what is recorded of them."""
        if self._experts is None:
            raise VideoCMError(f"{self.name} is not a phased student: there is no boundary to hand off at")
        self._finisher = (network, guidance, steps)
        self.sampled_as = label
        return self

    @classmethod
    def from_folder(cls, folder, device: str | torch.device = "cpu", decoder: str = "full",
                    models_dir: str | None = None) -> "VideoPipeline":
        return cls(load_model(folder, device), device).use_decoder(decoder, models_dir)

    def use_times(self, times: str = "own") -> "VideoPipeline":
        """Sample a student at its own times (its grid's, as it was distilled) or, for a flow student with one
        network, at the times diffusers' stock ``FlowMatchLCMScheduler`` gives (what an export that needs no
        videocm samples with; :func:`models.export.stock_times`)."""
        if times not in ("own", "stock"):
            raise VideoCMError(f"times {times!r}: use own or stock")
        if times == "stock":
            from .models.export import stock_flow_scheduler

            if not self.model.is_student:
                raise VideoCMError(f"{self.name} is a teacher: stock times are a student's")
            stock_flow_scheduler(self.model.info)  # refused here for a student it cannot express
        self.times = times
        return self

    def use_decoder(self, choice: str = "full", models_dir: str | None = None) -> "VideoPipeline":
        """Decode with the model's VAE (``full``), a tiny decoder distilled from it (``tiny``: the model folder's
        own ``tiny-decoder/``, else the shipped one) or a decoder folder (:func:`models.tiny_decoder.resolve_decoder`)."""
        from .models.tiny_decoder import resolve_decoder

        self.decoder = resolve_decoder(choice, self.model, models_dir, self.device)
        self.decoder_name = choice
        return self

    def compile(self) -> "VideoPipeline":
        """``torch.compile`` every network of the model and the decoder in use, in place (``nn.Module.compile``).
        The first call with a new batch size pays the compilation (tens of seconds here); later calls run faster."""
        for network in {id(d.network): d.network for d in self.model.denoisers}.values():
            network.compile()
        (self.decoder.decoder if hasattr(self.decoder, "decoder") else self.decoder.vae.decoder).compile()
        return self

    def use_control(self, branch, scale: float = 1.0) -> "VideoPipeline":
        """Sample through a control branch (:mod:`models.control`) joined to every network of the model (the
        networks are unchanged); afterwards :meth:`generate` takes ``controls``. ``branch=None`` removes it."""
        where = f"model {self.name}"
        self._denoiser = with_control([self.model.denoiser], branch, scale, where)[0]
        self._experts = with_control(self.model.experts, branch, scale, where) if self.model.experts else None
        self.controlled = branch is not None
        return self

    def image_inputs(self, images: list[np.ndarray] | None, count: int,
                     generators: list[torch.Generator] | None = None) -> dict[str, torch.Tensor]:
        """An image-to-video model's first-frame inputs (:mod:`models.image_condition`) of uint8 frames
        ``(H, W, 3)``, one per clip (the posterior sampled with clip i's generator where the pipeline does so);
        nothing for a model that takes no image."""
        from .models.image_condition import image_inputs

        if not self.model.info.image_condition:
            if images is not None:
                raise VideoCMError(f"{self.name} is a text-to-video model: it takes no image; leave --image out")
            return {}
        if images is None:
            raise VideoCMError(f"{self.name} is an image-to-video model: give the first frame (--image FILE)")
        if len(images) != count:
            raise VideoCMError(f"{len(images)} images for {count} prompts: give one per prompt")
        _, height, width = self.model.info.video_shape
        for image in images:
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.shape != (height, width, 3):
                raise VideoCMError(f"the first frame must be uint8 of shape ({height}, {width}, 3) for {self.name}, "
                                   f"got {image.dtype} {tuple(image.shape)}")
        return image_inputs(self.model, list(images), generators, self.device)

    def _conditioning(self, prompts: list[str], controls) -> dict[str, torch.Tensor]:
        """Text states of ``prompts`` and, with ``controls`` (uint8 silhouettes ``(T, H, W, 1)``, one per
        prompt), their control latents."""
        cond = {k: v.to(self.device) for k, v in self.text.encode(prompts).items()}
        if controls is not None:
            if not self.controlled:
                raise VideoCMError("controls given to a pipeline without a control model (use_control)")
            if len(controls) != len(prompts):
                raise VideoCMError(f"{len(controls)} controls for {len(prompts)} prompts: give one per prompt")
            cond["control"] = encode_control(self.model.vae, control_tensor(list(controls))).to(self.device)
        return cond

    @torch.inference_mode()
    def generate(self, prompts: list[str], seeds: list[int], steps: int | None = None,
                 guidance: float | None = None, meter=None, negative_prompt: str = "",
                 progress: bool = False, timesteps: list[float] | None = None, noise: str = "videocm",
                 controls: list[np.ndarray] | None = None, guidance_2: float | None = None,
                 images: list[np.ndarray] | None = None) -> list[np.ndarray]:
        """``timesteps``: explicit sampling times for a student (descending, the schedule's time), instead of
        ``steps`` spread over its grid. ``noise``: a student's re-noising convention (module docstring).
        ``controls``: one uint8 silhouette ``(T, H, W, 1)`` per prompt, for a pipeline with a control branch.
        ``guidance_2``: a Wan 2.2 two-expert teacher's guidance at the low-noise expert's steps (WanPipeline's
        ``guidance_scale_2``; None: ``guidance`` at every step). ``images``: an image-to-video model's first frame
        of each clip, uint8 ``(H, W, 3)``."""
        meter = meter or _Uncounted()
        steps = steps or self.model.default_steps
        boundary = getattr(self.model.denoiser, "boundary", None)
        if guidance_2 is not None and (self.model.is_student or boundary is None):
            raise VideoCMError(f"--guidance-2 is the low-noise expert's guidance of a Wan 2.2 two-expert teacher; "
                               f"{self.name} is {'a student (its guidance is folded in)' if self.model.is_student else 'not one'}: leave it out")
        if self.model.is_student:
            if negative_prompt:
                raise VideoCMError("a student makes no unconditional pass (its guidance is folded in or embedded), so "
                                   "a negative prompt would change nothing: leave --negative-prompt out")
            return self._generate_student(prompts, seeds, steps, guidance, meter, progress, timesteps, noise,
                                          controls, images)
        if timesteps is not None:
            raise VideoCMError("explicit timesteps are for students; give a teacher --steps")
        most = getattr(self.model.schedule, "num_train_timesteps", None)
        if getattr(self.model.schedule, "kind", "") == "vp" and most is not None and not 1 <= steps <= most:
            raise VideoCMError(f"steps must be between 1 and {most} for this teacher (a schedule of {most} discrete "
                               f"timesteps), got {steps}")
        guidance = self.model.default_guidance if guidance is None else guidance
        at = self.model.schedule.model_timestep(self.model.schedule.sampling_times(steps)[:-1])
        scales = guidance_at(at, guidance, guidance_2, boundary)
        guided = any(g != 1.0 for g in ([scales] if isinstance(scales, (int, float)) else scales))
        if negative_prompt and not guided:
            raise VideoCMError("at guidance 1 the teacher makes no unconditional pass, so a negative prompt would "
                               "change nothing: give --guidance above 1 or leave --negative-prompt out")
        with meter.phase("text"):
            cond = self._conditioning(prompts, controls)
            shared_inputs = self.image_inputs(images, len(prompts))
            cond.update(shared_inputs)
            uncond = None
            if guided:
                uncond = {k: v.to(self.device) for k, v in self.text.encode([negative_prompt] * len(prompts)).items()}
                for shared in ("control", *shared_inputs):  # both halves of guidance see them, as the pipelines do
                    if shared in cond:
                        uncond[shared] = cond[shared]
        with meter.phase("denoise"):
            noise = initial_noise(seeds, self.model.latent_shape, self.device)
            latents = sample_teacher(meter.counted(self._denoiser), noise, self.model.schedule, steps, cond,
                                     uncond, scales, progress=progress)
        return self._decoded(latents, cond, meter, len(prompts))

    def _student_conditioning(self, prompts, seeds, noise_mode, controls, images, meter):
        """A student's conditioning (text, control, first-frame inputs) and the per-clip generators diffusers'
        noise mode draws an image-to-video clip's inputs with (None otherwise)."""
        generators = ([torch.Generator().manual_seed(int(s)) for s in seeds] if noise_mode == "diffusers" and
                      self.model.info.image_condition else None)
        with meter.phase("text"):
            cond = self._conditioning(prompts, controls)
            cond.update(self.image_inputs(images, len(prompts), generators))
        return cond, generators

    def _decoded(self, latents, cond, meter, count: int) -> list[np.ndarray]:
        """The clips of sampled ``latents`` (an image-to-video clip's first frame put back), counted."""
        latents = with_first_frame(latents, cond)
        with meter.phase("decode"):
            clips = to_uint8_frames(self.decoder.decode(latents))
        meter.clips += count
        return clips

    def _generate_student(self, prompts, seeds, steps, guidance, meter, progress, timesteps=None,
                          noise_mode: str = "videocm", controls=None, images=None) -> list[np.ndarray]:
        """Multistep consistency sampling (expert-switching for a phased student): one network evaluation per
        step, guidance folded in or embedded."""
        info = self.model.info
        consistency = info.consistency
        if consistency.parameterization == "trigflow":
            return self._generate_trigflow(prompts, seeds, steps, guidance, meter, progress, timesteps, noise_mode,
                                           controls, images)
        grid = skipping_grid(self.model.schedule, int(consistency.grid_points))
        if not 1 <= steps <= len(grid) - 1:
            raise VideoCMError(f"steps must be between 1 and {len(grid) - 1} for this student (its grid), got {steps}")
        experts = self._experts
        segments = (segment_bounds(info.phased.boundaries, int(consistency.grid_points))
                    if experts is not None else None)
        if timesteps is None and self.times == "stock":
            from .models.export import stock_times

            timesteps = stock_times(info, steps)
        if timesteps is not None:
            times = torch.as_tensor(timesteps, dtype=grid.dtype)
            values = [float(t) for t in times]
            if not values or any(a <= b for a, b in zip(values, values[1:])) or not 0 < values[-1] <= values[0] <= float(
                    grid[-1]):
                raise VideoCMError(f"--timesteps {values}: give strictly descending times in (0, {float(grid[-1])}]")
        elif experts is not None:
            try:
                times = phased_times(grid, segments, steps)
            except ValueError as error:
                raise VideoCMError(str(error)) from error
        else:
            times = consistency_times(grid, steps)
        solvers = None
        if self._finisher is not None and experts is not None:
            network, teacher_guidance, below = self._finisher
            experts = [experts[0], *[network] * (len(experts) - 1)]
            if teacher_guidance is not None:  # the semantic expert's share of the steps, then the teacher's solver
                solvers = [False] + [True] * (len(experts) - 1)
                low = segments[0][0]
                below = max(1, min(int(below), low))
                times = torch.cat([phased_times(grid, segments[:1], split_steps(steps, segments)[0]),
                                   phased_times(grid, [(0, low)], below)])
        cond, generators = self._student_conditioning(prompts, seeds, noise_mode, controls, images, meter)
        if info.guidance_embedded:
            low, high = info.guidance.range
            w = float(info.guidance.default if guidance is None else guidance)
            if not low <= w <= high:
                raise VideoCMError(f"guidance {w} is outside this student's distilled range [{low}, {high}]")
            cond["guidance"] = torch.full((len(prompts),), w, device=self.device)
        else:
            check_folded_guidance(info, guidance)
        with meter.phase("denoise"):
            noise, renoise = sampling_noise(seeds, self.model.latent_shape, noise_mode, self.device,
                                            info.pipeline_class, generators)
            scalings = (float(consistency.sigma_data), float(consistency.timestep_scaling))
            if experts is not None:
                counted = [meter.counted(e) for e in experts]
                if solvers is not None:  # the teacher below the boundary, guided as its own sampling is
                    uncond = {k: v.to(self.device) for k, v in self.text.encode([""] * len(prompts)).items()}
                    uncond.update({k: v for k, v in cond.items() if k not in uncond})
                    scale, paired = float(self._finisher[1]), concat_conditioning(uncond, cond)
                    teacher = counted[1]
                    counted[1:] = [lambda x, t, **c: guided_output(teacher, x, t, c, uncond, scale, paired)] * (
                        len(counted) - 1)
                latents = sample_phased(counted, noise, self.model.schedule, grid, segments, times, cond, renoise,
                                        *scalings, progress=progress, solvers=solvers)
            else:
                latents = sample_consistency(meter.counted(self._denoiser), noise, self.model.schedule, times,
                                             cond, renoise, *scalings, progress=progress)
        return self._decoded(latents, cond, meter, len(prompts))

    def _generate_trigflow(self, prompts, seeds, steps, guidance, meter, progress, timesteps=None,
                           noise_mode: str = "videocm", controls=None, images=None) -> list[np.ndarray]:
        """An sCM student: the multistep sampler in TrigFlow time (one network evaluation per step), from
        ``atan(sigma_max / sd)`` through the folder's intermediate times (or ``timesteps``, TrigFlow times)."""
        info = self.model.info
        consistency = info.consistency
        trigflow = TrigFlow(self.model.schedule, float(consistency.trigflow_sigma_data))
        most = len(consistency.mid_times) + 1
        if timesteps is not None:
            values = [float(t) for t in timesteps]
            if not values or any(a <= b for a, b in zip(values, values[1:])) or not 0 < values[-1] <= values[0] <= (
                    trigflow.t_top + 1e-6):
                raise VideoCMError(f"--timesteps {values}: give strictly descending TrigFlow times in (0, "
                                   f"{trigflow.t_top:.4f}] for this sCM student")
            times = torch.tensor([*values, 0.0], dtype=torch.float64)
        else:
            if not 1 <= steps <= most:
                raise VideoCMError(f"steps must be between 1 and {most} for this sCM student (its {most - 1} "
                                   f"intermediate times), got {steps}")
            times = scm_times(trigflow, steps, float(consistency.sigma_max), list(consistency.mid_times))
        if self.times == "stock":
            raise VideoCMError("this sCM student samples at its own TrigFlow times; leave --times out")
        cond, generators = self._student_conditioning(prompts, seeds, noise_mode, controls, images, meter)
        check_folded_guidance(info, guidance)
        with meter.phase("denoise"):
            noise, renoise = sampling_noise(seeds, self.model.latent_shape, noise_mode, self.device,
                                            info.pipeline_class, generators)
            latents = sample_trigflow(meter.counted(self._denoiser), noise, trigflow, times, cond, renoise,
                                      progress=progress)
        return self._decoded(latents, cond, meter, len(prompts))


def check_folded_guidance(info, guidance) -> None:
    """A one-line error when sampling asks a student with its guidance folded in for another scale."""
    if guidance is not None and float(guidance) != float(info.guidance.scale):
        raise VideoCMError(f"this student has guidance {info.guidance.scale} folded into its weights; "
                           f"leave --guidance out (or distil with --guidance-range to choose it when sampling)")
