"""Distilling a tiny decoder from a VAE's decoder (``videocm distill-decoder``).

Each step takes latents (MovingDigits clips encoded by the VAE, or a latent cache of the user's videos), adds a
little Gaussian noise (a student's latents are not exact encodings of any clip, and the decoder must follow the
full decoder there too), decodes them with the frozen full decoder as the target, and trains the tiny decoder
(:mod:`models.tiny_decoder`) on

    L1 + L2 of the frames  +  feature_weight * L1(encoder(tiny frames) - latents)

where the feature term runs the VAE's own frozen encoder on the tiny decoder's frames: it asks for frames that the
VAE reads back as the latents they came from, which a pixel loss alone lets blur. The saved folder records the
VAE's fingerprint, and the measured quality (PSNR against the full decoder, the judge's scores) and speed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Count, Decay, Natural, NonNegative, Positive, RunFolder
from ..data.moving_digits import Geometry, clips_tensor, make_clip
from ..data.video_io import labelled_grid, write_video
from ..distill.trainer import Monitor, Step, TrainConfig, TrainTask, run_and_summarise
from ..errors import VideoCMError
from ..models.info import ModelInfo
from ..models.tiny_decoder import TinyDecoder, build_tiny_decoder, save_tiny_decoder, vae_fingerprint
from ..models.vae import to_uint8_frames


@dataclass
class DecoderConfig(TrainConfig):
    """``videocm distill-decoder``: a tiny decoder distilled from a VAE's decoder."""

    SECTION = "decoder"

    out: RunFolder = "outputs/tiny-decoder"  # output folder: a decoder folder (loads by path with --decoder DIR)
    vae: str | None = None  # a videocm VAE folder or model folder whose VAE to distil (default: the shipped MovingDigits VAE)
    teacher: str | None = None  # instead of --vae: a teacher (diffusers pipeline folder or videocm model folder) whose VAE to distil
    models_dir: str | None = None  # folder of the shipped models (default: $VIDEOCM_MODELS, else ./models)
    cache: str | None = None  # train on this latent cache (`videocm encode` of your videos) instead of MovingDigits clips
    frames: Count | None = None  # MovingDigits clip frames (default: the VAE folder's clip shape, else 8)
    size: Count | None = None  # MovingDigits clip side in pixels (default: the VAE folder's clip shape, else 32)
    channels: Count = 32  # channels of every level of the tiny decoder
    blocks: list[Natural] = field(default_factory=list)  # residual blocks a level, coarsest first (default: 2, then 1 a level, none at the output resolution)
    feature_weight: NonNegative = 0.1  # weight of the feature term (the frozen VAE encoder's latents of the tiny decoder's frames against the decoded latents)
    latent_noise: NonNegative = 0.1  # std of the Gaussian noise added to the training latents
    eval_clips: Count = 240  # test clips of the final quality and speed figures (MovingDigits, or the cache's first)
    steps: Count = 1500
    batch_size: Count = 16
    lr: Positive = 2e-3
    warmup_steps: Natural = 50
    ema_decay: Decay = 0.99
    checkpoint_every: Count = 250
    sample_every: Natural = 0


def load_source_vae(config: DecoderConfig, device: str):
    """The frozen VAE to distil, the folder it came from and its MovingDigits clip shape ``(frames, size)``."""
    from ..locations import shipped_model
    from ..models.folder import load_model, load_vae

    if config.vae is not None and config.teacher is not None:
        raise VideoCMError("give --vae DIR or --teacher DIR, not both")
    if config.teacher is not None:
        model = load_model(config.teacher, device)
        vae, source, shape = model.vae, config.teacher, model.info.video_shape
    else:
        source = config.vae or str(shipped_model("vae", config.models_dir, "--vae"))
        info = ModelInfo.load(source)
        if info.kind not in ("vae", "teacher", "student"):
            raise VideoCMError(f"--vae {source} is a {info.kind} folder: give a VAE folder (videocm train-vae) or a "
                               f"model folder with a vae/ part")
        vae, shape = load_vae(source, device), info.video_shape
    frames = config.frames or (shape[0] if shape else 8)
    size = config.size or (shape[1] if shape else 32)
    return vae.eval().requires_grad_(False), source, (frames, size)


class DecoderTask(TrainTask):
    """The trainer's task: the tiny decoder is the model; the VAE is frozen beside it."""

    def __init__(self, config: DecoderConfig, monitor: Monitor | None = None) -> None:
        self.config, self.monitor = config, monitor
        self.device = "cuda" if torch.cuda.is_available() and not config.cpu else "cpu"
        self.vae, self.source, (frames, size) = load_source_vae(config, self.device)
        self.geometry = Geometry(frames, size)
        self.cache = None
        if config.cache is not None:
            from ..data.latent_cache import LatentCache

            self.cache = LatentCache(config.cache)
            if self.cache.latents.shape[1] != self.vae.latent_channels:
                raise VideoCMError(f"--cache {config.cache} holds {self.cache.latents.shape[1]}-channel latents; "
                                   f"the VAE makes {self.vae.latent_channels}: encode the videos with this VAE's teacher")
        torch.manual_seed(config.seed)  # the same seed gives the same initial weights
        autoencoder = build_tiny_decoder(self.vae.latent_channels, self.vae.spatial_factor, self.vae.temporal_factor,
                                         config.channels, tuple(config.blocks) or None)
        autoencoder.encoder.requires_grad_(False)  # unused: encoding stays with the full VAE
        self.model = TinyDecoder(autoencoder, self.vae.temporal_factor)

    def latents(self, indices: np.ndarray, split: str = "train", seed: int | None = None) -> torch.Tensor:
        """Normalised latents of cache rows ``indices``, or of MovingDigits clips drawn from them."""
        if self.cache is not None:
            return self.cache.get(torch.as_tensor(indices % len(self.cache)))[0].float().to(self.device)
        seed = self.config.seed if seed is None else seed
        clips = [make_clip(int(i), seed, split, self.geometry) for i in indices]
        with torch.no_grad():
            return self.vae.encode(clips_tensor(clips).to(self.device))

    def loss(self, model, step: Step):
        n, rows, rng, generator, device = step.batch_size, step.rows, step.rng, step.generator, step.device
        latents = self.latents(rng.integers(2**62, size=n)[rows])
        noise = torch.randn((n, *latents.shape[1:]), generator=generator)[rows].to(latents.device)
        latents = latents + self.config.latent_noise * noise
        with torch.no_grad():
            target = self.vae.decode(latents)
        frames = model.decode(latents.to(device))
        target = target.to(frames.device)
        l1, l2 = (frames - target).abs().mean(), ((frames - target) ** 2).mean()
        loss, logs = l1 + l2, {"l1": l1.item()}
        if self.config.feature_weight > 0:
            feature = (self.vae.encode(frames.to(self.device)) - latents).abs().mean()
            loss = loss + self.config.feature_weight * feature.to(loss.device)
            logs["feature"] = feature.item()
        return loss, logs

    @torch.no_grad()
    def save(self, model, out):
        model = model.eval().to(self.device)
        quality = self.measure(model, Path(out))
        save_tiny_decoder(model.cpu(), out, self.source, vae_fingerprint(self.vae), self.vae.latent_channels,
                          self.vae.spatial_factor, {"quality": quality, "video_shape": [
                              self.geometry.frames, self.geometry.size, self.geometry.size], "data": (
                              f"latent cache {self.config.cache}" if self.cache is not None else "MovingDigits-v1")})

    @torch.no_grad()
    def measure(self, model: TinyDecoder, out: Path) -> dict:
        """PSNR of the tiny decoder's frames against the full decoder's (and both against the clips when they are
        MovingDigits clips), the judge's scores of both, their decode seconds per clip at batch 16, and a grid."""
        n = self.config.eval_clips
        if self.cache is None:
            clips = [make_clip(i, 60_000, "test", self.geometry, cover_captions=True) for i in range(n)]
            latents = torch.cat([self.vae.encode(clips_tensor(clips[i:i + 16]).to(self.device))
                                 for i in range(0, n, 16)])
        else:
            clips, latents = None, self.latents(np.arange(min(n, len(self.cache))))
        full, tiny = [], []
        for i in range(0, len(latents), 16):
            full += to_uint8_frames(self.vae.decode(latents[i:i + 16]))
            tiny += to_uint8_frames(model.decode(latents[i:i + 16]))
        quality = {"n": len(latents), "psnr_vs_full_decoder": float(np.mean([psnr(t, f) for t, f in zip(tiny, full)]))}
        quality["seconds_per_clip_full"], quality["seconds_per_clip_tiny"] = (
            decode_seconds(self.vae, latents[:16]), decode_seconds(model, latents[:16]))
        if clips is not None:
            originals, captions = [c.video for c in clips], [c.caption for c in clips]
            if self.monitor is not None:
                quality["full"] = self.monitor.reconstructions(full, originals, captions)
                quality["tiny"] = self.monitor.reconstructions(tiny, originals, captions)
            shown = sorted({min(n - 1, i * 30) for i in range(8)})
            write_video(out / "decoded.gif", labelled_grid(
                [[originals[i] for i in shown], [full[i] for i in shown], [tiny[i] for i in shown]],
                ["real", "full decoder", "tiny decoder"], [captions[i] for i in shown], scale=3))
        return quality


def psnr(clip: np.ndarray, reference: np.ndarray) -> float:
    """PSNR in dB of uint8 ``clip`` against ``reference`` (capped at 100 for identical clips)."""
    mse = float(np.mean((clip.astype(np.float64) - reference.astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def decode_seconds(decoder, latents: torch.Tensor, repeats: int = 3) -> float:
    """Median seconds per clip of ``decoder.decode(latents)`` over ``repeats`` runs after a warm-up."""
    times = []
    for repeat in range(repeats + 1):
        if latents.is_cuda:
            torch.cuda.synchronize()
        began = time.perf_counter()
        decoder.decode(latents)
        if latents.is_cuda:
            torch.cuda.synchronize()
        if repeat:
            times.append((time.perf_counter() - began) / len(latents))
    return float(np.median(times))


def distill_decoder(config: DecoderConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    summary = run_and_summarise(config, lambda c: DecoderTask(c, monitor), progress, monitor)
    summary["quality"] = ModelInfo.load(config.out).extra["quality"]
    (Path(config.out) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
