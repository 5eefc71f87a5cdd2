"""``VideoModel``: a loaded teacher or student, what sampling and distillation work with."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..diffusion import Schedule
from .denoisers import DenoiserAdapter
from .info import ModelInfo
from .vae import VideoVAE


@dataclass
class VideoModel:
    """Denoiser, VAE, schedule and the folder's :class:`ModelInfo`."""

    denoiser: DenoiserAdapter
    vae: VideoVAE
    schedule: Schedule
    info: ModelInfo
    path: Path
    experts: list | None = None  # a phased (DCM) student's networks, highest-noise segment first
    text: object | None = None  # a diffusers pipeline's text encoder (None: videocm's MiniLM)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.info.latent_shape)

    @property
    def default_guidance(self) -> float:
        return float(1.0 if self.info.default_guidance is None else self.info.default_guidance)

    @property
    def default_steps(self) -> int:
        return int(self.info.default_steps or 50)

    @property
    def is_student(self) -> bool:
        return self.info.is_student

    @property
    def denoisers(self) -> list:
        """Every network the model samples with: the denoiser and, for a phased student, each expert."""
        return [self.denoiser, *(self.experts or [])]
