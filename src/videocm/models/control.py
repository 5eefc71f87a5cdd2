"""The control branch: structure-conditioned generation in the ControlNet manner (Zhang et al. 2023).

A branch is a trainable copy of the early part of a denoiser that also reads a control video, encoded to latent
size by the model's own VAE. It computes residuals from ``(x_t, timestep, text states, control latents)`` alone,
with its own copies of the embeddings, and hands them to the frozen network through zero-initialised
projections, so a new branch changes nothing. Because the branch never reads the network's weights, the branch
trained on a teacher joins any network of the same architecture unchanged: the teacher, a consistency student,
each expert of a phased (DCM) student (VideoLCM's plug-and-play result).

* ``wan``: ``WanControlBranch`` (in :mod:`models.families.wan`), diffusers' Wan control blocks (``WanVACETransformerBlock``) initialised as
  copies of the first ``num_blocks`` transformer blocks; block 0 adds the control tokens through a zero-initialised
  ``proj_in``; each block's zero-initialised ``proj_out`` gives a residual added to the output of the frozen
  network's block of the same index (a forward hook, so LoRA-wrapped networks join too).
* ``unet3d``: ``UNet3DControlBranch`` (in :mod:`models.families.unet3d`), a copy of the UNet's input convolution, time embedding, down blocks and
  mid block; the control enters through diffusers' ``ControlNetConditioningEmbedding`` (zero-initialised output)
  after ``conv_in``; one zero-initialised 1x1 convolution per skip connection and one for the mid block give the
  residuals that ``UNet3DConditionModel`` takes as ``down_block_additional_residuals`` and
  ``mid_block_additional_residual``. diffusers has no ControlNet for ``UNet3DConditionModel`` (its
  ``ControlNetModel.from_unet`` takes 2D UNets), hence this class.

Control videos are grey silhouettes ``(B, 1, T, H, W)`` in [0, 1]; :func:`encode_control` turns them into latents
with the model's VAE (the grey value on all three channels).

Folder of a control model (``videocm train-control``): ``videocm.json`` (kind ``control``, family, the teacher it
was trained on, shapes) and ``control/`` (the branch, diffusers ``save_pretrained`` format).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import VideoCMError, reading_weights
from .control_branch import ControlBranch
from .denoisers import ControlledDenoiser
from .families import FAMILIES, get_family
from .info import INFO_FILE, ModelInfo

CONTROL_SUBFOLDER = "control"


def control_families() -> list[str]:
    """The families that have a control branch."""
    return [name for name, spec in FAMILIES.items() if spec.control_branch_class() is not None]


def new_control_branch(family: str, network: nn.Module, num_blocks: int, control_channels: int) -> ControlBranch:
    """A branch copied from ``network`` (``num_blocks``: transformer blocks copied; a UNet copies its whole down
    path)."""
    branch_class = get_family(family).control_branch_class()
    if branch_class is None:
        raise VideoCMError(f"control branches are built for {' and '.join(control_families())} networks; this "
                           f"teacher is {family}")
    return branch_class.from_network(network, num_blocks, control_channels)


def with_control(denoisers, branch: ControlBranch | None, scale: float = 1.0, where: str = "this model") -> list:
    """Each denoiser as a :class:`models.denoisers.ControlledDenoiser` with ``branch`` (checked to fit), which then
    takes ``control=`` latents; ``branch=None`` gives the denoisers back as they are."""
    if branch is None:
        return list(denoisers)
    for denoiser in denoisers:
        branch.check_fits(denoiser.family, denoiser.network, where)
    return [ControlledDenoiser(denoiser, branch, scale) for denoiser in denoisers]


# --- control videos ---

def control_tensor(controls: list[np.ndarray] | np.ndarray) -> torch.Tensor:
    """uint8 silhouettes ``(T, H, W, 1)`` (a list, or stacked ``(B, T, H, W, 1)``) -> ``(B, 1, T, H, W)`` in
    [0, 1]."""
    stacked = np.stack(list(controls)) if isinstance(controls, list) else np.asarray(controls)
    return torch.from_numpy(stacked).permute(0, 4, 1, 2, 3).float() / 255.0


@torch.no_grad()
def encode_control(vae, controls: torch.Tensor) -> torch.Tensor:
    """Control latents ``(B, C, T', h, w)`` of silhouettes ``(B, 1, T, H, W)`` in [0, 1], through the model's VAE
    (grey on all three channels, scaled to [-1, 1] as the VAE reads clips)."""
    device = next(vae.parameters()).device
    return vae.encode((controls * 2 - 1).repeat(1, 3, 1, 1, 1).to(device))


def read_control(path: str | Path, video_shape: tuple[int, int, int] | None = None) -> np.ndarray:
    """A control file as uint8 ``(T, H, W, 1)``: an ``.npy`` of that shape (uint8), or a video / GIF of the
    silhouette (colour is averaged to grey). ``video_shape`` ``(T, H, W)``: the shape the model makes."""
    path = Path(path)
    if not path.is_file():
        raise VideoCMError(f"control video {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            control = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise VideoCMError(f"control video {path} is not a readable .npy array ({error})") from error
        if control.dtype != np.uint8 or control.ndim != 4 or control.shape[-1] != 1:
            raise VideoCMError(f"control video {path} holds {control.dtype} {tuple(control.shape)}; it must be uint8 "
                               f"(T, H, W, 1), the silhouette as MovingDigits stores it")
    else:
        from ..data.video_io import read_video

        try:
            frames = read_video(path)
        except Exception as error:  # noqa: BLE001 - any decoder failure is the same user error
            raise VideoCMError(f"control video {path} could not be read as a video ({error})") from error
        control = np.rint(frames.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    if video_shape is not None and tuple(control.shape[:3]) != tuple(video_shape):
        raise VideoCMError(f"control video {path} is {'x'.join(map(str, control.shape[:3]))} (frames x height x "
                           f"width); this model makes {'x'.join(map(str, video_shape))} clips: give a control of "
                           f"that size")
    return control


# --- folders ---

def save_control(folder: str | Path, branch: ControlBranch, info: ModelInfo) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    branch.save_pretrained(folder / CONTROL_SUBFOLDER)
    info.replace(kind="control", family=branch.family).save(folder)


def read_control_info(folder: str | Path) -> ModelInfo:
    folder = Path(folder)
    if not (folder / INFO_FILE).is_file():
        raise VideoCMError(f"control model {folder} is not a videocm control model (it has no {INFO_FILE}); make "
                           f"one with videocm train-control")
    info = ModelInfo.load(folder)
    if info.kind != "control":
        raise VideoCMError(f"control model {folder} is a {info.kind} folder, not a control model; make one with "
                           f"videocm train-control")
    return info


def load_control(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ControlBranch, ModelInfo]:
    """The branch of a control folder (frozen, eval mode) and its description."""
    folder = Path(folder)
    info = read_control_info(folder)
    branch_class = get_family(info.family).control_branch_class() if info.family in FAMILIES else None
    if branch_class is None:
        raise VideoCMError(f"{folder / INFO_FILE} names family {info.family!r}; control branches exist for "
                           f"{', '.join(control_families())}")
    if not (folder / CONTROL_SUBFOLDER / "config.json").is_file():
        raise VideoCMError(f"{folder} is missing its {CONTROL_SUBFOLDER}/ part; re-save the control model")
    with reading_weights(folder / CONTROL_SUBFOLDER, "control branch weights"):
        branch = branch_class.from_pretrained(folder / CONTROL_SUBFOLDER, torch_dtype=torch.float32)
    return branch.to(device).eval().requires_grad_(False), info
