"""A tiny decoder: latents to frames at a fraction of the VAE decoder's cost, distilled from it
(``videocm distill-decoder``), in the spirit of TAESD/TAEHV.

The network is diffusers' ``AutoencoderTiny`` (its decoder: convolutions, nearest upsampling, no attention, no
normalisation) applied to each latent frame; a VAE that compresses time by ``k`` is matched by giving the decoder
``3 * k`` output channels, read as ``k`` frames (the first latent frame of a causal VAE, which stands for one
frame, keeps the last of its ``k``). Its encoder is left untrained and unused: encode with the full VAE.

A decoder folder::

    DIR/videocm.json   kind "decoder": latent channels, spatial and temporal factors, the fingerprint of the VAE
                       it was distilled from, its measured quality and speed
    DIR/decoder/       the AutoencoderTiny (config.json, diffusion_pytorch_model.safetensors)

It decodes the normalised latents a :class:`models.vae.VideoVAE` makes; frames come out ``(B, 3, T, H, W)`` in
[-1, 1], as from ``VideoVAE.decode``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ..errors import VideoCMError, reading_weights
from .info import ModelInfo, is_model_folder

DECODER_PART = "decoder"
SHIPPED = "tiny-decoder"  # the shipped decoder for the MovingDigits VAE, under the models folder


def vae_fingerprint(vae) -> str:
    """The first 16 hex digits of the SHA-256 of a VAE's weights (as float32, in name order): which VAE a tiny
    decoder was distilled from, whatever file or precision it was loaded from. ``vae``: a ``VideoVAE``."""
    digest = hashlib.sha256()
    for name, tensor in sorted(vae.vae.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def default_blocks(levels: int) -> tuple[int, ...]:
    """Residual blocks per level, coarsest first: two at the latent resolution, one at each level between, none
    at the output resolution (only the final convolution there, where a block would cost the most)."""
    return (2,) if levels == 1 else (2,) + (1,) * (levels - 2) + (0,)


def build_tiny_decoder(latent_channels: int, spatial_factor: int, temporal_factor: int = 1, channels: int = 32,
                       blocks: tuple[int, ...] | None = None):
    """A fresh ``AutoencoderTiny`` whose decoder upsamples ``spatial_factor`` (a power of 2) times in steps of 2
    with ``channels`` channels and ``blocks`` residual blocks a level (default :func:`default_blocks`), and
    writes ``3 * temporal_factor`` channels."""
    from diffusers import AutoencoderTiny

    levels = spatial_factor.bit_length()  # 1 + log2(factor): one upsampling between levels
    if spatial_factor < 1 or 2 ** (levels - 1) != spatial_factor:
        raise VideoCMError(f"a tiny decoder upsamples by powers of 2; the VAE's spatial factor is {spatial_factor}")
    blocks = tuple(blocks) if blocks else default_blocks(levels)
    if len(blocks) != levels:
        raise VideoCMError(f"--blocks gives {len(blocks)} levels; a {spatial_factor}x decoder has {levels} (one per "
                           f"upsampling by 2, plus the latent resolution)")
    return AutoencoderTiny(
        in_channels=3, out_channels=3 * temporal_factor, latent_channels=latent_channels,
        decoder_block_out_channels=(channels,) * levels, num_decoder_blocks=blocks,
        encoder_block_out_channels=(8,) * levels, num_encoder_blocks=(1,) * levels)


class TinyDecoder(torch.nn.Module):
    """``decode(latents)``: normalised latents ``(B, C, T', h, w)`` -> frames ``(B, 3, T, H, W)`` in [-1, 1],
    ``T = (T' - 1) * temporal_factor + 1`` for a causal VAE that compresses time, else ``T'``."""

    def __init__(self, autoencoder, temporal_factor: int = 1) -> None:
        super().__init__()
        self.autoencoder, self.temporal_factor = autoencoder, temporal_factor

    @property
    def decoder(self) -> torch.nn.Module:
        return self.autoencoder.decoder

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        batch, frames = latents.shape[0], latents.shape[2]
        flat = latents.transpose(1, 2).flatten(0, 1).to(self.autoencoder.dtype)
        images = self.autoencoder.decoder(flat)  # (B*T', 3k, H, W); the decoder's own tanh clamp takes the latents
        k = self.temporal_factor
        video = images.unflatten(0, (batch, frames)).unflatten(2, (k, 3))  # (B, T', k, 3, H, W)
        video = video.flatten(1, 2)[:, k - 1:]  # (B, T, 3, H, W): a causal first latent frame keeps its last
        return video.transpose(1, 2).float().clamp(-1, 1)


def save_tiny_decoder(decoder: TinyDecoder, folder: str | Path, source_vae: str, fingerprint: str,
                      latent_channels: int, spatial_factor: int, extra: dict | None = None) -> None:
    folder = Path(folder)
    decoder.autoencoder.save_pretrained(folder / DECODER_PART)
    ModelInfo(kind="decoder", family="autoencoder-tiny", latent_channels=latent_channels,
              spatial_factor=spatial_factor, vae_from=source_vae,
              extra={"temporal_factor": decoder.temporal_factor, "vae_fingerprint": fingerprint,
                     **(extra or {})}).save(folder)


def load_tiny_decoder(folder: str | Path, device: str | torch.device = "cpu") -> tuple[TinyDecoder, ModelInfo]:
    """The decoder of a decoder folder and its description; one-line errors for anything else."""
    from diffusers import AutoencoderTiny

    from .folder import _require

    folder = Path(folder)
    info = ModelInfo.load(folder)
    if info.kind != "decoder":
        raise VideoCMError(f"{folder} is a {info.kind} folder, not a tiny decoder: give a folder written by "
                           f"`videocm distill-decoder`")
    with reading_weights(folder / DECODER_PART, "tiny decoder weights"):
        autoencoder = AutoencoderTiny.from_pretrained(_require(folder, DECODER_PART), torch_dtype=torch.float32)
    decoder = TinyDecoder(autoencoder, int(info.extra.get("temporal_factor", 1)))
    return decoder.to(device).eval().requires_grad_(False), info


def resolve_decoder(choice: str, model, models_dir: str | None = None, device: str | torch.device = "cpu"):
    """The decoder ``--decoder`` names for a loaded model (``VideoModel``): ``full`` is the model's VAE,
    ``tiny`` a decoder distilled from that VAE (the model folder's own ``tiny-decoder/``, else one beside the
    model folder, else the shipped one),
    anything else a decoder folder. Refused in one line when the decoder was made for another VAE."""
    if choice == "full":
        return model.vae
    from ..locations import models_dir as shipped_models

    if choice == "tiny":
        here = Path(model.path) if getattr(model, "path", None) else None
        candidates = ([here / SHIPPED, here.parent / SHIPPED] if here else []) + [shipped_models(models_dir) / SHIPPED]
        candidates = list(dict.fromkeys(candidates))
        folder = next((path for path in candidates if is_model_folder(path)), None)
        if folder is None:
            raise VideoCMError(f"no tiny decoder found (looked in {', '.join(map(str, candidates))}): train one with "
                               f"`videocm distill-decoder --teacher MODEL --out DIR` and pass --decoder DIR")
    else:
        folder = Path(choice)
    decoder, info = load_tiny_decoder(folder, device)
    vae = model.vae
    if (info.latent_channels, info.spatial_factor, decoder.temporal_factor) != (
            vae.latent_channels, vae.spatial_factor, vae.temporal_factor):
        raise VideoCMError(
            f"{folder} decodes {info.latent_channels}-channel latents at {info.spatial_factor}x{decoder.temporal_factor}"
            f" (space x time); this model's VAE makes {vae.latent_channels} channels at {vae.spatial_factor}x"
            f"{vae.temporal_factor}: distil a decoder for it with `videocm distill-decoder`")
    made_for = info.extra.get("vae_fingerprint")
    if made_for and made_for != vae_fingerprint(vae):
        raise VideoCMError(f"{folder} was distilled from another VAE (fingerprint {made_for}, this model's is "
                           f"{vae_fingerprint(vae)}): distil one from this model with `videocm distill-decoder "
                           f"--teacher MODEL`, or use --decoder full")
    return decoder
