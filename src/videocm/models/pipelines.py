"""Teachers from diffusers pipeline folders: what ``videocm distill --teacher PIPELINE_DIR`` loads.

A pipeline folder is what ``DiffusionPipeline.save_pretrained`` writes (``model_index.json`` plus one subfolder per
component). The layout is recognised from ``model_index.json``'s ``_class_name``:

    TextToVideoSDPipeline  ModelScope-style text-to-video: UNet3D, image VAE per frame, CLIP text, VP (epsilon)
    CogVideoXPipeline      CogVideoX transformer (rotary embeddings), CogVideoX VAE, T5, VP v-prediction with
                           zero terminal SNR and CogVideoX's SNR shift
    WanPipeline            Wan transformer, Wan VAE (per-channel latent statistics), UMT5, flow matching + shift
    HunyuanVideoPipeline   HunyuanVideo transformer (guidance embedded, pooled CLIP states, attention mask),
                           HunyuanVideo VAE, Llama + CLIP, flow matching + shift
    LTXPipeline            LTX-Video transformer (packed tokens, rope scale), LTX VAE (statistics as weights,
                           timestep-conditioned decoder), T5 with its mask, flow matching + dynamic shift (mu fixed
                           at the clip's token count)

Wan 2.2's layouts are WanPipelines: A14B (``transformer_2`` + ``boundary_ratio``, two experts) and TI2V-5B
(``expand_timesteps``, text to video).

From the folder come the denoiser, the VAE with the pipeline's latent normalisation, the text encoder(s) with the
pipeline's own ``encode_prompt`` (so templates, padding and pooled states are exactly the pipeline's) and, from
the scheduler's config, the noise schedule and prediction type. Nothing is downloaded: a missing part is a
one-line error naming it.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import VideoCMError
from .families import FamilySpec, family_for_pipeline, get_family, pipeline_classes
from .info import ModelInfo, read_json_object, schedule_from_config
from .vae import VideoVAE
from .video_model import VideoModel

MODEL_INDEX = "model_index.json"
FLOW_SCHEDULERS = ("FlowMatchEulerDiscreteScheduler",)


def is_pipeline_folder(folder: str | Path) -> bool:
    return (Path(folder) / MODEL_INDEX).is_file()


def read_model_index(folder: str | Path) -> tuple[dict, FamilySpec]:
    """``model_index.json`` and the family whose pipeline it names; one-line errors for unknown pipeline classes
    and missing parts."""
    folder = Path(folder)
    path = folder / MODEL_INDEX
    if not path.is_file():
        raise VideoCMError(f"{folder} is not a diffusers pipeline folder: it has no {MODEL_INDEX}")
    index = read_json_object(path)
    name = index.get("_class_name")
    spec = family_for_pipeline(name)
    if spec is None:
        raise VideoCMError(f"{folder} holds a {name} pipeline; videocm distils {', '.join(pipeline_classes())}")
    for part in (spec.subfolder, "vae", "scheduler", *spec.layout(name).text_parts):
        entry = index.get(part)
        if not entry or entry[0] is None:
            raise VideoCMError(f"{folder}: {MODEL_INDEX} lists no {part}; a {name} needs one")
        subfolder = folder / part
        if not subfolder.is_dir() or not any(subfolder.iterdir()):
            raise VideoCMError(f"{folder} is missing its {part}/ part ({MODEL_INDEX} lists {entry[1]}); copy the "
                               f"complete pipeline folder (videocm never downloads)")
    spec.check_model_index(index, folder)
    return index, spec


def dynamic_shift_mu(config: dict, tokens: int) -> float:
    """A dynamically shifting flow scheduler's ``mu`` at a latent sequence of ``tokens``, as the pipeline computes
    it (``calculate_shift``: linear between ``base_shift`` at ``base_image_seq_len`` and ``max_shift`` at
    ``max_image_seq_len``)."""
    base_len, max_len = int(config.get("base_image_seq_len", 256)), int(config.get("max_image_seq_len", 4096))
    base, top = float(config.get("base_shift", 0.5)), float(config.get("max_shift", 1.15))
    slope = (top - base) / (max_len - base_len)
    return tokens * slope + base - slope * base_len


def schedule_config_from_scheduler(config: dict, tokens: int | None = None) -> dict:
    """videocm's schedule config (see :func:`models.folder.schedule_from_config`) from a diffusers scheduler's;
    ``tokens``: the latent sequence length a dynamically shifting scheduler (LTX-Video's) is fixed at."""
    name = config.get("_class_name", "")
    flow = (name in FLOW_SCHEDULERS or config.get("use_flow_sigmas") or config.get("prediction_type") ==
            "flow_prediction")
    if flow:
        if config.get("use_dynamic_shifting"):
            if tokens is None:
                raise VideoCMError(f"{name} with use_dynamic_shifting needs the clip shape to fix its shift; give "
                                   f"--frames, --height and --width")
            if config.get("time_shift_type", "exponential") != "exponential":
                raise VideoCMError(f"{name} with time_shift_type {config['time_shift_type']!r} is not supported: "
                                   f"videocm takes the exponential dynamic shift")
            return {"type": "flow", "shift": 1.0, "mu": dynamic_shift_mu(config, tokens),
                    "dynamic_shift_tokens": int(tokens),
                    "num_train_timesteps": int(config.get("num_train_timesteps", 1000))}
        shift = config.get("flow_shift") if config.get("use_flow_sigmas") else config.get("shift")
        return {"type": "flow", "shift": float(shift or 1.0),
                "num_train_timesteps": int(config.get("num_train_timesteps", 1000))}
    if config.get("trained_betas"):
        raise VideoCMError(f"{name} with trained_betas is not supported: use a beta_schedule")
    schedule = {"type": "vp", "beta_schedule": config.get("beta_schedule", "linear"),
                "beta_start": float(config.get("beta_start", 0.0001)),
                "beta_end": float(config.get("beta_end", 0.02)),
                "num_train_timesteps": int(config.get("num_train_timesteps", 1000)),
                "prediction_type": config.get("prediction_type", "epsilon"),
                "zero_terminal_snr": bool(config.get("rescale_betas_zero_snr", False)),
                "set_alpha_to_one": bool(config.get("set_alpha_to_one", True)),
                "timestep_spacing": config.get("timestep_spacing", "leading"),
                "steps_offset": int(config.get("steps_offset", 0))}
    if "snr_shift_scale" in config:
        schedule["snr_shift_scale"] = float(config["snr_shift_scale"])
    return schedule


class PipelineText:
    """A pipeline's text encoder(s) through the pipeline's own ``encode_prompt``, cached per prompt.

    ``encode(prompts)`` returns the keyword arguments of :class:`DenoiserAdapter`: ``encoder_hidden_states``
    ``(B, L, D)`` and, for HunyuanVideo, ``encoder_attention_mask`` ``(B, L)`` and ``pooled_projections``.
    """

    def __init__(self, pipeline, family: str, max_sequence_length: int, cache_size: int = 4096) -> None:
        self.pipeline, self.spec = pipeline, get_family(family)
        self.max_length = max_sequence_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.encoded_count = 0

    @property
    def device(self) -> torch.device:
        return next(self.pipeline.text_encoder.parameters()).device

    @torch.no_grad()
    def _encode_uncached(self, prompts: list[str]) -> dict[str, torch.Tensor]:
        return self.spec.encode_prompt(self.pipeline, prompts, self.device, self.max_length)

    def clear_cache(self) -> None:
        """Forget every encoded prompt (the next encode of each runs the encoder again)."""
        self._cache.clear()

    def encode(self, prompts: list[str] | str) -> dict[str, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            encoded = self._encode_uncached(missing)
            self.encoded_count += len(missing)
            for i, prompt in enumerate(missing):
                self._cache[prompt] = {k: v[i].float().clone() for k, v in encoded.items()}
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        rows = [self._cache[p] for p in prompts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return {key: torch.stack([row[key] for row in rows]) for key in rows[0]}


def component_dtype(device: str | torch.device) -> torch.dtype:
    """What a pipeline's text encoders and VAE (and, by default, its denoiser) load in: bfloat16 on a GPU,
    float32 on the CPU (where bfloat16 matmuls are slow and the small test models want exact sums)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def load_pipeline(folder: str | Path, device: str | torch.device = "cpu", without_denoiser: bool = False,
                  denoiser_dtype: torch.dtype | None = None):
    """The diffusers pipeline of ``folder`` (offline) and its family: components in :func:`component_dtype`,
    the denoiser in ``denoiser_dtype`` (default: the same)."""
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging

    index, spec = read_model_index(folder)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    denoisers = [spec.subfolder, *([spec.second_subfolder] if (index.get(spec.second_subfolder) or [None])[0]
                                   else [])]
    skip = {name: None for name in denoisers} if without_denoiser else {}
    from transformers.utils import logging as transformers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        dtypes = {"default": component_dtype(device),
                  **{name: denoiser_dtype or component_dtype(device) for name in denoisers}}
        pipeline = DiffusionPipeline.from_pretrained(folder, dtype=dtypes, local_files_only=True, **skip)
    except (OSError, ValueError, EnvironmentError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise VideoCMError(f"cannot load the pipeline in {folder}: {first}") from error
    finally:
        diffusers_logging.set_verbosity(level)
        diffusers_logging.enable_progress_bar()
    pipeline.set_progress_bar_config(disable=True)
    for name in ("vae", "text_encoder", "text_encoder_2", *denoisers):
        module = getattr(pipeline, name, None)
        if module is not None:
            module.to(device).eval().requires_grad_(False)
    return pipeline, spec


def pipeline_vae(pipeline, device: str | torch.device = "cpu") -> VideoVAE:
    """The pipeline's VAE, normalising latents as the pipeline does."""
    return VideoVAE(pipeline.vae, normalisation="config").to(device).eval().requires_grad_(False)


def pipeline_info(folder: Path, pipeline, spec: FamilySpec, vae: VideoVAE, video_shape: list[int] | None = None,
                  max_sequence_length: int | None = None) -> ModelInfo:
    """The description of a pipeline teacher at ``video_shape`` ``[frames, height, width]``."""
    name = type(pipeline).__name__
    layout = spec.layout(name)
    frames, height, width = video_shape or spec.default_video_shape(getattr(pipeline, spec.subfolder),
                                                                    vae.spatial_factor)
    if vae.temporal_factor > 1 and (frames - 1) % vae.temporal_factor:
        raise VideoCMError(f"{name} needs 4k+1 frames (its VAE compresses time {vae.temporal_factor}x); got "
                           f"{frames}: use e.g. {(frames - 1) // vae.temporal_factor * vae.temporal_factor + 1}")
    spec.check_video_shape(frames, vae, name)
    multiple = spec.size_multiple(vae.spatial_factor)
    if height % multiple or width % multiple:
        raise VideoCMError(f"height and width must be multiples of {multiple} for {name}, got {height}x{width}")
    latent_shape = vae.latent_shape(frames, height, width)
    schedule = schedule_config_from_scheduler(dict(pipeline.scheduler.config), math.prod(latent_shape[1:]))
    prediction = "flow" if schedule["type"] == "flow" else schedule["prediction_type"]
    info = ModelInfo(kind="teacher", family=spec.name, source="diffusers-pipeline",
                     pipeline=str(Path(folder).resolve()), pipeline_class=name, schedule=schedule,
                     prediction_type=prediction, latent_shape=list(vae.latent_shape(frames, height, width)),
                     video_shape=[frames, height, width], default_guidance=layout.guidance, default_steps=50,
                     max_sequence_length=int(max_sequence_length or layout.max_sequence_length),
                     boundary_ratio=(float(pipeline.config.boundary_ratio)
                                     if getattr(pipeline.config, "boundary_ratio", None) is not None else None),
                     image_condition=layout.image_condition or None)
    return info.replace(**spec.pipeline_info(layout, pipeline))


def pipeline_parts(folder: str | Path, family: str, device, max_sequence_length: int, without_denoiser: bool):
    """``(pipeline, VideoVAE, PipelineText)`` of a pipeline folder."""
    pipeline, spec = load_pipeline(folder, device, without_denoiser)
    if spec.name != family:
        raise VideoCMError(f"{folder} is a {spec.name} pipeline, this model is {family}")
    return pipeline, pipeline_vae(pipeline, device), PipelineText(pipeline, family, max_sequence_length)


def pipeline_denoiser(spec: FamilySpec, pipeline, embedded_guidance: float | None, options: dict | None = None):
    """The teacher denoiser of a loaded pipeline: its network, or with a second one (Wan 2.2's
    ``transformer_2``) both, switched at ``boundary_ratio`` times the training timesteps as the pipeline does."""
    from .denoisers import DenoiserAdapter, TwoStageDenoiser

    first = DenoiserAdapter(spec, getattr(pipeline, spec.subfolder), embedded_guidance, options)
    second = getattr(pipeline, spec.second_subfolder, None) if spec.second_subfolder else None
    if second is None:
        return first
    boundary = float(pipeline.config.boundary_ratio) * int(pipeline.scheduler.config.num_train_timesteps)
    return TwoStageDenoiser(first, first.of(second), boundary)


def load_pipeline_teacher(folder: str | Path, device: str | torch.device = "cpu",
                          video_shape: list[int] | None = None, max_sequence_length: int | None = None,
                          dtype: torch.dtype | None = None) -> VideoModel:
    """A :class:`models.video_model.VideoModel` teacher from a diffusers pipeline folder (its denoiser in
    ``dtype``; default: :func:`component_dtype`)."""
    folder = Path(folder)
    pipeline, spec = load_pipeline(folder, device, denoiser_dtype=dtype)
    vae = pipeline_vae(pipeline, device)
    info = pipeline_info(folder, pipeline, spec, vae, video_shape, max_sequence_length)
    denoiser = pipeline_denoiser(spec, pipeline, info.embedded_guidance, info.network_options)
    text = PipelineText(pipeline, spec.name, info.max_sequence_length)
    return VideoModel(denoiser.to(device).eval().requires_grad_(False), vae, schedule_from_config(info.schedule),
                      info, folder, text=text)


def two_stage_boundary(folder: str | Path) -> tuple[float, dict] | None:
    """``(boundary model timestep, scheduler config)`` of a Wan 2.2 two-expert pipeline folder, read without
    loading any weights; None for any other folder."""
    if not is_pipeline_folder(folder):
        return None
    index, spec = read_model_index(folder)
    if not (index.get(spec.second_subfolder or "") or [None])[0]:
        return None
    scheduler = read_json_object(Path(folder) / "scheduler" / "scheduler_config.json")
    return float(index["boundary_ratio"]) * int(scheduler.get("num_train_timesteps", 1000)), scheduler
