"""Image to video: the inputs a first frame gives an image-to-video network, made as its pipeline makes them.

``PipelineLayout.image_condition`` names the kind (``ModelInfo.image_condition`` keeps it for the teacher and its
students); the denoiser takes the result as keyword arguments (``image_latents``, ``image_states``):

* ``"channels"`` (``CogVideoXImageToVideoPipeline``): the image's VAE latents as a one-frame video (the posterior
  sampled with the clip's generator when one is given, as the pipeline does; its mode otherwise), zero beyond the
  first latent frame; concatenated to the noisy latents on channels.
* ``"first-frame"`` (``WanImageToVideoPipeline`` with ``expand_timesteps``, Wan 2.2 TI2V-5B): the image's VAE
  latents (mode) replace the first latent frame, whose tokens get timestep 0; the family's ``run`` makes the
  network's output there carry the noisy frame to the image, and the sampled clip's first frame is the image's.
* ``"mask-channels"`` (``WanImageToVideoPipeline``): a mask (one channel per frame the VAE folds into a latent
  frame: ones on the first latent frame, zeros after) and the VAE latents (mode) of the video [image, zeros ...];
  both concatenated to the noisy latents on channels. With an image encoder (Wan 2.1 I2V) also its states of the
  image (``image_states``, the pipeline's ``encode_image``).

Training takes each clip's first frame: the latent cache keeps these inputs per clip (``condition.NAME``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import VideoCMError

KINDS = ("channels", "mask-channels", "first-frame")
INPUT_KEYS = ("image_latents", "image_states", "first_frame_latents")  # the denoiser's keyword arguments


def _pixels(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 frames ``(H, W, 3)`` as ``(B, 3, H, W)`` in [-1, 1], as the pipelines' video processor makes them."""
    return torch.stack([torch.from_numpy(np.ascontiguousarray(i)).permute(2, 0, 1) for i in images]).float().div(
        127.5).sub(1)


@torch.no_grad()
def image_inputs(model, images: list[np.ndarray], generators: list[torch.Generator] | None = None,
                 device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """The denoiser's keyword arguments for first frames ``images`` (uint8 ``(H, W, 3)``, one per clip) of an
    image-to-video ``model`` (a :class:`models.video_model.VideoModel`)."""
    kind = model.info.image_condition
    if kind not in KINDS:
        raise VideoCMError(f"{model.path} names image condition {kind!r}; videocm knows {', '.join(KINDS)}")
    vae = model.vae
    pixels = _pixels(images).to(device)
    channels, latent_frames, height, width = model.latent_shape
    if kind == "channels":
        rows = []
        for i in range(len(images)):
            generator = generators[i] if generators is not None else None
            rows.append(vae.encode(pixels[i:i + 1, :, None], sample=generator is not None, generator=generator))
        first = torch.cat(rows)
        padding = first.new_zeros(first.shape[0], first.shape[1], latent_frames - 1, *first.shape[3:])
        return {"image_latents": torch.cat([first, padding], dim=2).to(device)}
    if kind == "first-frame":
        return {"first_frame_latents": torch.cat([vae.encode(pixels[i:i + 1, :, None]) for i in range(len(images))])
                .to(device)}
    frames = int(model.info.video_shape[0])
    video = torch.cat([pixels[:, :, None], pixels.new_zeros(pixels.shape[0], 3, frames - 1, *pixels.shape[2:])], 2)
    latents = torch.cat([vae.encode(video[i:i + 1]) for i in range(len(images))])
    mask = latents.new_zeros(latents.shape[0], vae.temporal_factor, latent_frames, height, width)
    mask[:, :, 0] = 1
    inputs = {"image_latents": torch.cat([mask, latents], dim=1).to(device)}
    pipeline = getattr(model.text, "pipeline", None)
    encoder = getattr(pipeline, "image_encoder", None)
    if encoder is not None and model.denoiser.network.config.get("image_dim") is not None:
        from PIL import Image

        states = pipeline.encode_image([Image.fromarray(np.asarray(i)) for i in images], encoder.device)
        inputs["image_states"] = states.float().to(device)
    return inputs


def with_first_frame(latents: torch.Tensor, inputs: dict) -> torch.Tensor:
    """Sampled latents with a ``"first-frame"`` model's image latents as the first frame (as its pipeline ends)."""
    first = inputs.get("first_frame_latents")
    if first is None:
        return latents
    return torch.cat([first.to(latents.dtype), latents[:, :, 1:]], dim=2)


def clip_first_frame_inputs(latents: torch.Tensor) -> dict[str, torch.Tensor]:
    """``"channels"`` inputs from clip latents ``(B, C, T, h, w)`` when the cache has none: the first latent frame
    (a causal video VAE encodes the first frame alone) and zeros after it."""
    condition = torch.zeros_like(latents)
    condition[:, :, :1] = latents[:, :, :1]
    return {"image_latents": condition}
