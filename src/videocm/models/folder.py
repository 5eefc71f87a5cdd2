"""Model folders: what videocm saves and loads by path alone.

    DIR/videocm.json              what the folder is (kind, family, schedule, prediction type, shapes, text
                                  encoder, default guidance and steps)
    DIR/vae/                      diffusers AutoencoderKLCogVideoX (config.json + safetensors)
    DIR/transformer/ or DIR/unet/ diffusers WanTransformer3DModel / UNet3DConditionModel
    DIR/guidance_embedding/       a student's guidance embedding (students distilled over a guidance range)
    DIR/lora/                     a LoRA student's adapter alone, peft format (the network above has it merged)

A VAE-only folder holds ``videocm.json`` (kind ``vae``) and ``vae/``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..diffusion import FlowSchedule, Schedule, vp_schedule
from ..errors import VideoCMError
from .denoisers import DenoiserAdapter
from .vae import VideoVAE

MARKER = "videocm.json"
SUBFOLDERS = {"wan": "transformer", "unet3d": "unet", "cogvideox": "transformer", "hunyuan": "transformer"}
NETWORK_CLASSES = {"wan": "WanTransformer3DModel", "unet3d": "UNet3DConditionModel",
                   "cogvideox": "CogVideoXTransformer3DModel", "hunyuan": "HunyuanVideoTransformer3DModel"}
FORMAT_VERSION = 1


def schedule_to_config(schedule: Schedule, **vp_arguments) -> dict:
    if isinstance(schedule, FlowSchedule):
        return {"type": "flow", "shift": schedule.shift, "num_train_timesteps": schedule.num_train_timesteps}
    return {"type": "vp", "prediction_type": schedule.prediction_type,
            "timestep_spacing": schedule.timestep_spacing, **vp_arguments}


def schedule_from_config(config: dict) -> Schedule:
    config = dict(config)
    kind = config.pop("type", None)
    if kind == "flow":
        return FlowSchedule(shift=float(config.get("shift", 1.0)),
                            num_train_timesteps=int(config.get("num_train_timesteps", 1000)))
    if kind == "vp":
        return vp_schedule(**config)
    raise VideoCMError(f"schedule type {kind!r} is unknown: use 'flow' or 'vp'")


def read_info(folder: Path) -> dict:
    folder = Path(folder)
    if not folder.is_dir():
        raise VideoCMError(f"model folder {folder} does not exist")
    marker = folder / MARKER
    if not marker.is_file():
        raise VideoCMError(f"{folder} is not a videocm model folder: it has no {MARKER}")
    try:
        return json.loads(marker.read_text())
    except json.JSONDecodeError as error:
        raise VideoCMError(f"{marker} is not valid JSON ({error.msg}, line {error.lineno})") from error


def _require(folder: Path, part: str) -> Path:
    path = folder / part
    if not (path / "config.json").is_file():
        raise VideoCMError(f"{folder} is missing its {part}/ part (config.json and weights); re-save the model")
    return path


def load_vae(folder: str | Path, device: str | torch.device = "cpu") -> VideoVAE:
    """The VAE of a model folder (or of a VAE folder)."""
    from diffusers import AutoencoderKLCogVideoX

    folder = Path(folder)
    read_info(folder)
    vae = AutoencoderKLCogVideoX.from_pretrained(_require(folder, "vae"), torch_dtype=torch.float32)
    return VideoVAE(vae).to(device).eval().requires_grad_(False)


def save_vae(vae: VideoVAE, folder: str | Path, extra: dict | None = None) -> None:
    folder = Path(folder)
    vae.vae.save_pretrained(folder / "vae")
    info = {"format": "videocm", "version": FORMAT_VERSION, "kind": "vae", "family": "cogvideox-vae",
            "latent_channels": vae.latent_channels, "spatial_factor": vae.spatial_factor, **(extra or {})}
    (folder / MARKER).write_text(json.dumps(info, indent=2))


@dataclass
class VideoModel:
    """A loaded teacher or student: denoiser, VAE, schedule and what ``videocm.json`` says."""

    denoiser: DenoiserAdapter
    vae: VideoVAE
    schedule: Schedule
    info: dict
    path: Path
    experts: list | None = None  # a phased (DCM) student's networks, highest-noise segment first
    text: object | None = None  # a diffusers pipeline's text encoder (None: videocm's MiniLM)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.info["latent_shape"])

    @property
    def default_guidance(self) -> float:
        return float(self.info.get("default_guidance", 1.0))

    @property
    def default_steps(self) -> int:
        return int(self.info.get("default_steps", 50))

    @property
    def is_student(self) -> bool:
        return self.info.get("kind") == "student"


STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def cast_for_storage(network: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast weights for a smaller file (loading upcasts to float32 again), without diffusers' float32 warning."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return network.to(dtype)
    finally:
        diffusers_logging.set_verbosity(level)


def network_class(family: str):
    import diffusers

    if family not in NETWORK_CLASSES:
        raise VideoCMError(f"unknown model family {family!r}: videocm loads {', '.join(SUBFOLDERS)}")
    return getattr(diffusers, NETWORK_CLASSES[family])


def load_network(family: str, path: Path, dtype: torch.dtype = torch.float32):
    return network_class(family).from_pretrained(path, torch_dtype=dtype)


def load_model(folder: str | Path, device: str | torch.device = "cpu", video_shape: list[int] | None = None,
               max_sequence_length: int | None = None) -> VideoModel:
    """Load a model folder by path alone (see the module docstring for the layout), or a diffusers pipeline
    folder as a teacher (``video_shape`` ``[frames, height, width]`` and ``max_sequence_length`` override the
    pipeline's defaults; see :mod:`models.pipelines`)."""
    from .pipelines import is_pipeline_folder, load_pipeline_teacher, pipeline_parts

    folder = Path(folder)
    if is_pipeline_folder(folder) and not (folder / MARKER).is_file():
        return load_pipeline_teacher(folder, device, video_shape, max_sequence_length)
    info = read_info(folder)
    if info.get("kind") == "vae":
        raise VideoCMError(f"{folder} holds only a VAE; give a teacher or student folder")
    family = info.get("family")
    if family not in SUBFOLDERS:
        raise VideoCMError(f"{folder / MARKER} names family {family!r}; videocm loads {', '.join(SUBFOLDERS)}")
    network = load_network(family, _require(folder, SUBFOLDERS[family]))
    denoiser = DenoiserAdapter(family, network)
    if info.get("guidance", {}).get("mode") == "embedded":
        from .student import GUIDANCE_FOLDER, attach_guidance_embedding, load_guidance_embedding

        attach_guidance_embedding(denoiser, load_guidance_embedding(folder / GUIDANCE_FOLDER))
    denoiser = denoiser.to(device).eval().requires_grad_(False)
    denoiser.embedded_guidance = info.get("embedded_guidance")
    experts = _load_experts(folder, denoiser, info) if "phased" in info else None
    text = None
    if "pipeline" in info:  # a student of a pipeline teacher: text encoder and VAE stay in the teacher's folder
        pipeline = Path(info["pipeline"])
        if not pipeline.is_dir():
            raise VideoCMError(f"{folder} takes its text encoder and VAE from the pipeline {pipeline}, which is "
                               f"not there: put the teacher pipeline back or edit \"pipeline\" in {folder / MARKER}")
        _, vae, text = pipeline_parts(pipeline, family, device, int(info["max_sequence_length"]), True)
    else:
        vae = load_vae(folder, device)
    return VideoModel(denoiser, vae, schedule_from_config(info["schedule"]), info, folder, experts, text)


def _load_experts(folder: Path, denoiser: DenoiserAdapter, info: dict) -> list[DenoiserAdapter]:
    """The base network, then each LoRA expert found in ``experts/``; segments without one use the lowest found."""
    from .experts import EXPERTS_FOLDER, load_expert

    phases = int(info["phased"]["phases"])
    experts = [denoiser]
    for j in range(1, phases):
        path = folder / EXPERTS_FOLDER / f"expert-{j}"
        experts.append(load_expert(denoiser, path).eval() if path.is_dir() else experts[-1])
    return experts


def save_model(folder: str | Path, denoiser: DenoiserAdapter, vae: VideoVAE, info: dict) -> None:
    """Write a model folder: the network in diffusers format, the VAE, and ``videocm.json`` (models of a
    diffusers pipeline teacher keep no VAE copy: ``info["pipeline"]`` names the folder it comes from)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    denoiser.network.save_pretrained(folder / SUBFOLDERS[denoiser.family])
    if "pipeline" not in info:
        vae.vae.save_pretrained(folder / "vae")
    full = {"format": "videocm", "version": FORMAT_VERSION, "family": denoiser.family,
            "subfolder": SUBFOLDERS[denoiser.family], **info}
    (folder / MARKER).write_text(json.dumps(full, indent=2))
