"""Training the video VAE on MovingDigits (``videocm train-vae``): L1 + L2 reconstruction plus a small KL term,
then per-channel latent statistics so diffusion sees zero-mean, unit-variance latents, then the measured
reconstruction quality (PSNR, judge fidelity on test clips) written into the folder."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Count, Decay, NonNegative, Positive, RunFolder
from ..data.moving_digits import Geometry, clips_tensor, make_clip
from ..data.video_io import labelled_grid, write_video
from ..distill.trainer import Monitor, Step, TrainConfig, TrainTask, run_and_summarise
from ..models.folder import save_vae
from ..models.info import ModelInfo
from ..models.vae import VAEConfig, VideoVAE, build_vae, to_uint8_frames


@dataclass
class VAETrainConfig(TrainConfig):
    """``videocm train-vae``: the MovingDigits VAE, its clips and losses."""

    SECTION = "vae"

    out: RunFolder = "models/vae"  # output folder of the VAE
    frames: Count = 8  # frames per training clip
    size: Count = 32  # clip side in pixels
    block_out_channels: list[Count] = field(default_factory=lambda: [16, 32, 32])  # channels of each level (n levels: n - 1 spatial halvings)
    latent_channels: Count = 4  # latent channels
    kl_weight: NonNegative = 1e-5  # weight of the KL term
    ema_decay: Decay = 0.0  # EMA of the weights (0: none)
    lr: Positive = 1e-3  # peak AdamW learning rate
    eval_clips: Count = 480  # test-split clips of the final reconstruction scores
    stats_clips: Count = 512  # train clips measuring the latents' per-channel mean and std


class VAETask(TrainTask):
    def __init__(self, config: VAETrainConfig, monitor: Monitor | None = None) -> None:
        self.config, self.monitor = config, monitor
        self.geometry = Geometry(config.frames, config.size)
        torch.manual_seed(config.seed)  # the same seed gives the same initial weights
        self.model = VideoVAE(build_vae(VAEConfig(tuple(config.block_out_channels), config.latent_channels,
                                                  size=config.size)))

    def loss(self, model, step: Step):
        n, rows, rng, generator, device = step.batch_size, step.rows, step.rng, step.generator, step.device
        indices = rng.integers(2**62, size=n)[rows]
        clips = [make_clip(int(i), self.config.seed, "train", self.geometry) for i in indices]
        videos = clips_tensor(clips).to(device)
        posterior = model.vae.encode(videos).latent_dist
        noise = torch.randn((n, *posterior.mean.shape[1:]), generator=generator)[rows].to(device)
        latents = posterior.mean + posterior.std * noise
        recon = model.vae.decode(latents).sample
        l1 = (recon - videos).abs().mean()
        l2 = ((recon - videos) ** 2).mean()
        kl = posterior.kl().mean() / posterior.mean[0].numel()
        return l1 + l2 + self.config.kl_weight * kl, {"l1": l1.item(), "kl": kl.item()}

    @torch.no_grad()
    def save(self, model, out):
        model = model.eval()
        device = next(model.parameters()).device
        stats_clips = [make_clip(i, 777, "train", self.geometry) for i in range(self.config.stats_clips)]
        raw = torch.cat([model.vae.encode(clips_tensor(stats_clips[i:i + 64]).to(device)).latent_dist.mode()
                         for i in range(0, len(stats_clips), 64)])
        model.set_statistics(raw.mean(dim=(0, 2, 3, 4)).cpu(), raw.std(dim=(0, 2, 3, 4)).cpu())
        quality = reconstruction_quality(model, self.config.eval_clips, self.geometry, Path(out), self.monitor)
        save_vae(model.cpu(), out, {"reconstruction": quality, "video_shape": [self.config.frames,
                                                                               self.config.size, self.config.size]})


@torch.no_grad()
def reconstruction_quality(vae: VideoVAE, n: int, geometry: Geometry, out: Path | None = None,
                           monitor: Monitor | None = None) -> dict:
    """The monitor's scores (PSNR, the judge's fidelity) of VAE reconstructions of ``n`` test clips (all captions
    covered), and a GIF of 8 of them (different digits) beside their originals."""
    device = next(vae.parameters()).device
    clips = [make_clip(i, 60_000, "test", geometry, cover_captions=True) for i in range(n)]
    recon = []
    for i in range(0, n, 64):
        recon += to_uint8_frames(vae.decode(vae.encode(clips_tensor(clips[i:i + 64]).to(device))))
    quality = {"n": n}
    if out is not None:
        shown = sorted({min(n - 1, i * 30) for i in range(8)})  # every 30th caption: 8 different digits
        write_video(out / "reconstructions.gif", labelled_grid([[clips[i].video for i in shown],
                                                                [recon[i] for i in shown]], ["real", "through the VAE"],
                                                               [clips[i].caption for i in shown], scale=3))
    if monitor is not None:
        quality.update(monitor.reconstructions(recon, [c.video for c in clips], [c.caption for c in clips]))
    return quality


def train_vae(config: VAETrainConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    summary = run_and_summarise(config, lambda c: VAETask(c, monitor), progress, monitor)
    summary["reconstruction"] = ModelInfo.load(config.out).extra["reconstruction"]
    (Path(config.out) / "train_summary.json").write_text(json.dumps(summary, indent=2))
    return summary
