"""Model folders: what videocm saves and loads by path alone.

    DIR/videocm.json              what the folder is (:class:`models.info.ModelInfo`)
    DIR/vae/                      diffusers AutoencoderKLCogVideoX (config.json + safetensors)
    DIR/transformer/ or DIR/unet/ the family's diffusers network (the family's ``subfolder``)
    DIR/guidance_embedding/       a student's guidance embedding (students distilled over a guidance range)
    DIR/lora/                     a LoRA student's adapter alone, peft format (the network above has it merged)
    DIR/experts/expert-J/         a phased (DCM) student's LoRA experts (:mod:`models.experts`)

A VAE-only folder holds ``videocm.json`` (kind ``vae``) and ``vae/``. A diffusers pipeline folder
(``model_index.json``) loads as a teacher through :mod:`models.pipelines`.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import VideoCMError, reading_weights
from .denoisers import DenoiserAdapter, GuidanceEmbeddedDenoiser, unwrapped
from .families import get_family
from .info import INFO_FILE, ModelInfo, is_model_folder, schedule_from_config
from .pipelines import is_pipeline_folder, load_pipeline_teacher, pipeline_parts
from .vae import VideoVAE
from .video_model import VideoModel

SHARD_SIZE = "1GB"  # the largest weight file of a saved network (diffusers' max_shard_size)
STORE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _require(folder: Path, part: str) -> Path:
    path = folder / part
    if not (path / "config.json").is_file():
        raise VideoCMError(f"{folder} is missing its {part}/ part (config.json and weights); re-save the model")
    if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
        raise VideoCMError(f"{path} has its config.json but no weights file (*.safetensors); the folder is "
                           f"incomplete: copy it again or re-save the model")
    return path


def load_vae(folder: str | Path, device: str | torch.device = "cpu") -> VideoVAE:
    """The VAE of a model folder (or of a VAE folder)."""
    from diffusers import AutoencoderKLCogVideoX

    folder = Path(folder)
    ModelInfo.load(folder)
    with reading_weights(folder / "vae", "VAE weights"):
        vae = AutoencoderKLCogVideoX.from_pretrained(_require(folder, "vae"), torch_dtype=torch.float32)
    return VideoVAE(vae).to(device).eval().requires_grad_(False)


def save_vae(vae: VideoVAE, folder: str | Path, extra: dict | None = None) -> None:
    folder = Path(folder)
    vae.vae.save_pretrained(folder / "vae")
    ModelInfo(kind="vae", family="cogvideox-vae", latent_channels=vae.latent_channels,
              spatial_factor=vae.spatial_factor, extra=dict(extra or {})).save(folder)


def cast_for_storage(network: torch.nn.Module, dtype: torch.dtype) -> torch.nn.Module:
    """Cast weights for a smaller file (loading upcasts to float32 again), without diffusers' float32 warning."""
    from diffusers.utils import logging as diffusers_logging

    level = diffusers_logging.get_verbosity()
    diffusers_logging.set_verbosity_error()
    try:
        return network.to(dtype)
    finally:
        diffusers_logging.set_verbosity(level)


def load_network(family: str, path: Path, dtype: torch.dtype = torch.float32):
    return get_family(family).load_network(path, dtype)


def load_model(folder: str | Path, device: str | torch.device = "cpu", video_shape: list[int] | None = None,
               max_sequence_length: int | None = None, dtype: torch.dtype | None = None) -> VideoModel:
    """Load a model folder by path alone (see the module docstring for the layout), or a diffusers pipeline
    folder as a teacher (``video_shape`` ``[frames, height, width]`` and ``max_sequence_length`` override the
    pipeline's defaults; see :mod:`models.pipelines`)."""
    folder = Path(folder)
    if is_pipeline_folder(folder) and not is_model_folder(folder):
        return load_pipeline_teacher(folder, device, video_shape, max_sequence_length, dtype)
    info = ModelInfo.load(folder)
    if info.kind == "control":
        raise VideoCMError(f"{folder} is a control branch, not a model that generates clips: pass it as "
                           f"--control-model (with --control VIDEO) beside a teacher or student --model")
    if info.kind not in ("teacher", "student"):
        raise VideoCMError(f"{folder} holds a {info.kind} model, not a network that generates clips; give a "
                           f"teacher or student folder")
    spec = get_family(info.family, Path(folder) / INFO_FILE)
    network = spec.load_network(_require(folder, spec.subfolder))
    base = DenoiserAdapter(spec, network, info.embedded_guidance, info.network_options).to(device).eval(
    ).requires_grad_(False)
    denoiser = base
    if info.guidance_embedded:
        from .student import GUIDANCE_FOLDER, load_guidance_embedding

        embedding = load_guidance_embedding(folder / GUIDANCE_FOLDER).to(device).eval().requires_grad_(False)
        denoiser = GuidanceEmbeddedDenoiser(base, embedding)
    experts = _load_experts(folder, base, info) if info.is_phased else None
    text = None
    if info.from_pipeline:  # a student of a pipeline teacher: text encoder and VAE stay in the teacher's folder
        pipeline = Path(info.pipeline)
        if not pipeline.is_dir():
            raise VideoCMError(f"{folder} takes its text encoder and VAE from the pipeline {pipeline}, which is "
                               f"not there: put the teacher pipeline back or edit \"pipeline\" in {folder / INFO_FILE}")
        _, vae, text = pipeline_parts(pipeline, spec.name, device, int(info.max_sequence_length), True)
    else:
        vae = load_vae(folder, device)
    return VideoModel(denoiser, vae, schedule_from_config(info.schedule), info, folder, experts, text)


def _load_experts(folder: Path, denoiser: DenoiserAdapter, info: ModelInfo) -> list[DenoiserAdapter]:
    """The base network, then each LoRA expert found in ``experts/``; segments without one use the lowest found."""
    from .experts import EXPERTS_FOLDER, load_expert

    experts = [denoiser]
    for j in range(1, int(info.phased.phases)):
        path = folder / EXPERTS_FOLDER / f"expert-{j}"
        experts.append(load_expert(denoiser, path).eval() if path.is_dir() else experts[-1])
    return experts


def save_model(folder: str | Path, denoiser, vae: VideoVAE, info: ModelInfo) -> None:
    """Write a model folder: the network in diffusers format, the VAE, and ``videocm.json`` (models of a
    diffusers pipeline teacher keep no VAE copy: ``info.pipeline`` names the folder it comes from)."""
    from .student import GUIDANCE_FOLDER, save_guidance_embedding

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = unwrapped(denoiser)
    # diffusers' sharded layout past 1 GB: serialising a shard holds a copy of it in memory, not of the network
    base.network.save_pretrained(folder / base.spec.subfolder, max_shard_size=SHARD_SIZE)
    if isinstance(denoiser, GuidanceEmbeddedDenoiser):
        save_guidance_embedding(denoiser.guidance_embedding, folder / GUIDANCE_FOLDER)
    if not info.from_pipeline:
        vae.vae.save_pretrained(folder / "vae")
    info.replace(family=base.family).save(folder, subfolder=base.spec.subfolder)
