"""The control branch: structure-conditioned generation in the ControlNet manner (Zhang et al. 2023).

A branch is a trainable copy of the early part of a denoiser that also reads a control video, encoded to latent
size by the model's own VAE. It computes residuals from ``(x_t, timestep, text states, control latents)`` alone,
with its own copies of the embeddings, and hands them to the frozen network through zero-initialised
projections, so a new branch changes nothing. Because the branch never reads the network's weights, the branch
trained on a teacher joins any network of the same architecture unchanged: the teacher, a consistency student,
each expert of a phased (DCM) student (VideoLCM's plug-and-play result).

* ``wan``: :class:`WanControlBranch`, diffusers' Wan control blocks (``WanVACETransformerBlock``) initialised as
  copies of the first ``num_blocks`` transformer blocks; block 0 adds the control tokens through a zero-initialised
  ``proj_in``; each block's zero-initialised ``proj_out`` gives a residual added to the output of the frozen
  network's block of the same index (a forward hook, so LoRA-wrapped networks join too).
* ``unet3d``: :class:`UNet3DControlBranch`, a copy of the UNet's input convolution, time embedding, down blocks and
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

import contextlib
import json
from pathlib import Path

import numpy as np
import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from ..errors import VideoCMError

CONTROL_FAMILIES = ("wan", "unet3d")
CONTROL_SUBFOLDER = "control"
MARKER = "videocm.json"


def network_config(network: nn.Module) -> dict:
    """The architecture of a diffusers network as a plain dict (its config without diffusers' private keys)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(network.config).items()
            if not k.startswith("_")}


def _zero(module: nn.Module) -> nn.Module:
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


class ControlBranch(ModelMixin, ConfigMixin):
    """What both branch families share: compatibility checks and joining their residuals to a network."""

    family: str

    def check_fits(self, family: str, network: nn.Module, where: str = "this model") -> None:
        """A one-line error unless ``network`` has the architecture this branch was trained for."""
        if family != self.family:
            raise VideoCMError(f"the control model was trained for a {self.family} network; {where} is {family}")
        mine, theirs = self.config.network_config, network_config(network)
        differing = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if differing:
            shown = ", ".join(f"{k} {mine.get(k)} vs {theirs.get(k)}" for k in differing[:3])
            raise VideoCMError(f"the control model does not fit {where}: its network differs in {shown}; train a "
                               f"control model on this model's teacher (videocm train-control --teacher DIR)")


class WanControlBranch(ControlBranch):
    """Control branch of a ``WanTransformer3DModel``: ``forward`` returns one residual ``(B, L, D)`` per copied
    block, to be added to the output of the network's block of the same index."""

    family = "wan"

    @register_to_config
    def __init__(self, network_config: dict, num_blocks: int = 4, control_channels: int = 4) -> None:
        super().__init__()
        from diffusers import WanTransformer3DModel
        from diffusers.models.transformers.transformer_wan_vace import WanVACETransformerBlock

        if not 1 <= num_blocks <= int(network_config["num_layers"]):
            raise VideoCMError(f"--control-blocks must be between 1 and the network's {network_config['num_layers']} "
                               f"blocks, got {num_blocks}")
        trunk = WanTransformer3DModel(**{**network_config, "num_layers": 0})
        self.rope, self.patch_embedding, self.condition_embedder = (trunk.rope, trunk.patch_embedding,
                                                                    trunk.condition_embedder)
        dim = int(network_config["num_attention_heads"]) * int(network_config["attention_head_dim"])
        patch = tuple(network_config["patch_size"])
        self.control_embedding = nn.Conv3d(control_channels, dim, kernel_size=patch, stride=patch)
        self.blocks = nn.ModuleList(
            WanVACETransformerBlock(dim, int(network_config["ffn_dim"]), int(network_config["num_attention_heads"]),
                                    network_config.get("qk_norm"), bool(network_config.get("cross_attn_norm")),
                                    float(network_config.get("eps", 1e-6)), network_config.get("added_kv_proj_dim"),
                                    apply_input_projection=i == 0, apply_output_projection=True)
            for i in range(num_blocks))
        _zero(self.blocks[0].proj_in)
        for block in self.blocks:
            _zero(block.proj_out)

    @classmethod
    def from_network(cls, network: nn.Module, num_blocks: int, control_channels: int) -> "WanControlBranch":
        """A branch whose embeddings and blocks start as copies of ``network``'s."""
        branch = cls(network_config(network), num_blocks, control_channels)
        state = network.state_dict()
        for name in ("patch_embedding", "condition_embedder"):
            getattr(branch, name).load_state_dict({k[len(name) + 1:]: v for k, v in state.items()
                                                   if k.startswith(name + ".")})
        for i, block in enumerate(branch.blocks):
            prefix = f"blocks.{i}."
            missing, unexpected = block.load_state_dict(
                {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, strict=False)
            if unexpected or any(not k.startswith(("proj_in.", "proj_out.")) for k in missing):
                raise VideoCMError(f"block {i} of this Wan network does not fit a Wan control block "
                                   f"({(unexpected or missing)[:3]})")
        return branch

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                control: torch.Tensor) -> list[torch.Tensor]:
        """``x`` ``(B, C, T, h, w)`` latents, ``timestep`` ``(B,)``, text states ``(B, L, D)``, ``control`` latents
        ``(B, C', T, h, w)`` -> residuals ``[(B, tokens, dim)] * num_blocks``."""
        dtype = self.patch_embedding.weight.dtype
        x, control = x.to(dtype), control.to(dtype)
        rotary = self.rope(x)
        hidden = self.patch_embedding(x).flatten(2).transpose(1, 2)
        control_hidden = self.control_embedding(control).flatten(2).transpose(1, 2)
        _, projection, text, _ = self.condition_embedder(timestep, encoder_hidden_states.to(dtype), None)
        projection = projection.unflatten(1, (6, -1))
        residuals = []
        for block in self.blocks:
            residual, control_hidden = block(hidden, text, control_hidden, projection, rotary)
            residuals.append(residual)
        return residuals

    @contextlib.contextmanager
    def joined(self, network: nn.Module, residuals: list[torch.Tensor], scale: float = 1.0):
        """Inside the block, ``network``'s first blocks add the residuals to their outputs; yields no extra
        keyword arguments for the network's call."""
        def adder(residual):
            return lambda module, args, output: output + scale * residual.to(output.dtype)

        handles = [block.register_forward_hook(adder(r)) for block, r in zip(network.blocks, residuals)]
        try:
            yield {}
        finally:
            for handle in handles:
                handle.remove()


class UNet3DControlBranch(ControlBranch):
    """Control branch of a ``UNet3DConditionModel``: ``forward`` returns ``(down residuals, mid residual)`` in the
    layout ``UNet3DConditionModel.forward`` adds them (frames stacked into the batch)."""

    family = "unet3d"

    @register_to_config
    def __init__(self, network_config: dict, num_blocks: int = 0, control_channels: int = 4,
                 conditioning_channels: int = 32) -> None:
        super().__init__()
        from diffusers import UNet3DConditionModel
        from diffusers.models.controlnets.controlnet import ControlNetConditioningEmbedding

        unet = UNet3DConditionModel(**network_config)
        self.time_proj, self.time_embedding = unet.time_proj, unet.time_embedding
        self.conv_in, self.transformer_in = unet.conv_in, unet.transformer_in
        self.down_blocks, self.mid_block = unet.down_blocks, unet.mid_block
        channels = list(network_config["block_out_channels"])
        self.control_embedding = ControlNetConditioningEmbedding(channels[0], control_channels,
                                                                 (conditioning_channels,))
        skips = [channels[0]]
        for i, block in enumerate(self.down_blocks):
            skips += [channels[i]] * len(block.resnets) + ([channels[i]] if block.downsamplers else [])
        self.skip_projections = nn.ModuleList(_zero(nn.Conv2d(c, c, 1)) for c in skips)
        self.mid_projection = _zero(nn.Conv2d(channels[-1], channels[-1], 1))

    @classmethod
    def from_network(cls, network: nn.Module, num_blocks: int, control_channels: int) -> "UNet3DControlBranch":
        branch = cls(network_config(network), 0, control_channels)
        own = set(branch.state_dict())
        copied = {k: v for k, v in network.state_dict().items() if k in own}
        missing, _ = branch.load_state_dict(copied, strict=False)
        if any(not k.startswith(("control_embedding.", "skip_projections.", "mid_projection.")) for k in missing):
            raise VideoCMError(f"this UNet3D network does not fit its control branch ({missing[:3]})")
        return branch

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states: torch.Tensor,
                control: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``x`` ``(B, C, T, h, w)``, ``timestep`` ``(B,)``, text ``(B, L, D)``, ``control`` ``(B, C', T, h, w)``."""
        dtype = self.conv_in.weight.dtype
        batch, _, frames = x.shape[:3]
        timesteps = timestep.expand(batch) if timestep.dim() else timestep[None].expand(batch)
        emb = self.time_embedding(self.time_proj(timesteps).to(dtype)).repeat_interleave(frames, dim=0)
        text = encoder_hidden_states.to(dtype).repeat_interleave(frames, dim=0)

        def frames_as_batch(video: torch.Tensor) -> torch.Tensor:
            return video.to(dtype).transpose(1, 2).flatten(0, 1)

        sample = self.conv_in(frames_as_batch(x)) + self.control_embedding(frames_as_batch(control))
        sample = self.transformer_in(sample, num_frames=frames, return_dict=False)[0]
        skips = [sample]
        for block in self.down_blocks:
            if getattr(block, "has_cross_attention", False):
                sample, outputs = block(hidden_states=sample, temb=emb, encoder_hidden_states=text, num_frames=frames)
            else:
                sample, outputs = block(hidden_states=sample, temb=emb, num_frames=frames)
            skips += list(outputs)
        sample = self.mid_block(sample, emb, encoder_hidden_states=text, num_frames=frames)
        return ([projection(s) for projection, s in zip(self.skip_projections, skips)],
                self.mid_projection(sample))

    @contextlib.contextmanager
    def joined(self, network: nn.Module, residuals, scale: float = 1.0):
        down, mid = residuals
        yield {"down_block_additional_residuals": [scale * r for r in down],
               "mid_block_additional_residual": scale * mid}


BRANCH_CLASSES = {"wan": WanControlBranch, "unet3d": UNet3DControlBranch}


def new_control_branch(family: str, network: nn.Module, num_blocks: int, control_channels: int) -> ControlBranch:
    """A branch copied from ``network`` (``num_blocks``: Wan blocks copied; the UNet copies its whole down path)."""
    if family not in BRANCH_CLASSES:
        raise VideoCMError(f"control branches are built for {' and '.join(CONTROL_FAMILIES)} networks; "
                           f"this teacher is {family}")
    return BRANCH_CLASSES[family].from_network(network, num_blocks, control_channels)


def attach_control(denoisers, branch: ControlBranch | None, scale: float = 1.0, where: str = "this model") -> None:
    """Give each :class:`DenoiserAdapter` the branch (checked to fit); afterwards they take ``control=`` latents.
    ``branch=None`` detaches."""
    for denoiser in denoisers:
        if branch is not None:
            branch.check_fits(denoiser.family, denoiser.network, where)
        denoiser.control_branch, denoiser.control_scale = branch, float(scale)


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
        raise VideoCMError(f"--control {path} does not exist")
    if path.suffix.lower() == ".npy":
        try:
            control = np.load(path, allow_pickle=False)
        except ValueError as error:
            raise VideoCMError(f"--control {path} is not a readable .npy array ({error})") from error
        if control.dtype != np.uint8 or control.ndim != 4 or control.shape[-1] != 1:
            raise VideoCMError(f"--control {path} holds {control.dtype} {tuple(control.shape)}; it must be uint8 "
                               f"(T, H, W, 1), the silhouette as MovingDigits stores it")
    else:
        from ..data.video_io import read_video

        try:
            frames = read_video(path)
        except Exception as error:  # noqa: BLE001 - any decoder failure is the same user error
            raise VideoCMError(f"--control {path} could not be read as a video ({error})") from error
        control = np.rint(frames.astype(np.float32).mean(axis=-1, keepdims=True)).astype(np.uint8)
    if video_shape is not None and tuple(control.shape[:3]) != tuple(video_shape):
        raise VideoCMError(f"--control {path} is {'x'.join(map(str, control.shape[:3]))} (frames x height x "
                           f"width); this model makes {'x'.join(map(str, video_shape))} clips: give a control of "
                           f"that size")
    return control


# --- folders ---

def save_control(folder: str | Path, branch: ControlBranch, info: dict) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    branch.save_pretrained(folder / CONTROL_SUBFOLDER)
    full = {"format": "videocm", "version": 1, "kind": "control", "family": branch.family, **info}
    (folder / MARKER).write_text(json.dumps(full, indent=2))


def read_control_info(folder: str | Path) -> dict:
    folder = Path(folder)
    marker = folder / MARKER
    if not marker.is_file():
        raise VideoCMError(f"--control-model {folder} is not a videocm control model (it has no {MARKER}); "
                           f"make one with videocm train-control")
    info = json.loads(marker.read_text())
    if info.get("kind") != "control":
        raise VideoCMError(f"--control-model {folder} is a {info.get('kind')} folder, not a control model; make one "
                           f"with videocm train-control")
    return info


def load_control(folder: str | Path, device: str | torch.device = "cpu") -> tuple[ControlBranch, dict]:
    """The branch of a control folder (frozen, eval mode) and its ``videocm.json``."""
    folder = Path(folder)
    info = read_control_info(folder)
    family = info.get("family")
    if family not in BRANCH_CLASSES:
        raise VideoCMError(f"{folder / MARKER} names family {family!r}; control branches exist for "
                           f"{', '.join(CONTROL_FAMILIES)}")
    if not (folder / CONTROL_SUBFOLDER / "config.json").is_file():
        raise VideoCMError(f"{folder} is missing its {CONTROL_SUBFOLDER}/ part; re-save the control model")
    branch = BRANCH_CLASSES[family].from_pretrained(folder / CONTROL_SUBFOLDER, torch_dtype=torch.float32)
    return branch.to(device).eval().requires_grad_(False), info
