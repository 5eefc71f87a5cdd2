"""What a student adds to its teacher's network: an optional guidance embedding and optional LoRA (peft).

* :class:`GuidanceEmbedding`: the guidance scale ``w`` -> sinusoidal features -> MLP, added to the network's
  timestep embedding (the family's ``time_embedding`` module) by
  :class:`models.denoisers.GuidanceEmbeddedDenoiser`, so the diffusers network itself is unchanged. The last layer starts at zero: a new student computes
  exactly what its teacher computes. One student then serves every ``w`` in its distilled range.
* LoRA through peft's ``inject_adapter_in_model`` on the attention and feed-forward projections; a saved student
  stores the merged network (it loads like a teacher) and, beside it, the adapter alone (``lora/``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import VideoCMError, reading_weights

GUIDANCE_FOLDER = "guidance_embedding"
LORA_FOLDER = "lora"


class GuidanceEmbedding(nn.Module):
    """``w`` ``(B,)`` -> ``(B, out_dim)``: sinusoidal features of ``w * scale``, Linear, SiLU, Linear (zero init)."""

    def __init__(self, out_dim: int, frequency_dim: int = 64, scale: float = 100.0) -> None:
        super().__init__()
        self.config = {"out_dim": out_dim, "frequency_dim": frequency_dim, "scale": scale}
        self.frequency_dim, self.scale = frequency_dim, scale
        self.linear_1 = nn.Linear(frequency_dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)
        nn.init.zeros_(self.linear_2.weight)
        nn.init.zeros_(self.linear_2.bias)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        half = self.frequency_dim // 2
        frequencies = torch.exp(-math.log(10000.0) * torch.arange(half, device=w.device, dtype=torch.float32) / half)
        angles = (w.float() * self.scale)[:, None] * frequencies[None]
        features = torch.cat([angles.cos(), angles.sin()], dim=-1).to(self.linear_1.weight.dtype)
        return self.linear_2(nn.functional.silu(self.linear_1(features)))


def new_guidance_embedding(denoiser) -> GuidanceEmbedding:
    """A zero-initialised embedding sized to the denoiser's timestep embedding."""
    out_dim = denoiser.spec.time_embedding(denoiser.network).linear_2.out_features
    return GuidanceEmbedding(out_dim)


def save_guidance_embedding(embedding: GuidanceEmbedding, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(embedding.config, indent=2))
    save_file({k: v.detach().float().cpu().contiguous() for k, v in embedding.state_dict().items()},
              str(folder / "model.safetensors"))


def load_guidance_embedding(folder: Path) -> GuidanceEmbedding:
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise VideoCMError(f"{folder} is missing (config.json and model.safetensors); re-save the student")
    embedding = GuidanceEmbedding(**json.loads((folder / "config.json").read_text()))
    with reading_weights(folder / "model.safetensors", "guidance embedding"):
        embedding.load_state_dict(load_file(str(folder / "model.safetensors")))
    return embedding


def without_dropout(module: nn.Module) -> nn.Module:
    """``module`` with every dropout layer's rate set to 0 (UNet3D's temporal convolutions have a fixed 0.1): a
    student's step is then a function of its batch alone, the same on any number of processes."""
    for layer in module.modules():
        if isinstance(layer, nn.modules.dropout._DropoutNd):
            layer.p = 0.0
    return module


def add_lora(spec, network: nn.Module, rank: int, alpha: float, targets: list[str] | None = None) -> None:
    """Inject LoRA adapters (peft) into ``network`` of family ``spec`` (default targets: the family's);
    afterwards only the adapters require gradients."""
    from peft import LoraConfig, inject_adapter_in_model

    family = spec.name
    targets = list(targets or spec.lora_targets)
    if not targets:
        raise VideoCMError(f"videocm has no default LoRA targets for {family} networks; name the modules to adapt "
                           f"(LCM config lora_targets)")
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, init_lora_weights=True)
    network.requires_grad_(False)
    try:
        inject_adapter_in_model(config, network)
    except ValueError as error:
        raise VideoCMError(f"LoRA targets {targets} do not match this {family} network: {error}") from error
    network.lora_config = config


def has_lora(network: nn.Module) -> bool:
    return hasattr(network, "lora_config")


def merged_network_state(network: nn.Module, dtype: torch.dtype | None = None) -> dict[str, torch.Tensor]:
    """The network's state with every LoRA delta merged into its base weight (in float32), under the plain
    diffusers names; the other weights are the network's own tensors (not copies). ``dtype``: every floating
    weight cast to it as it is made (a saved student: one layer at a time in float32, not the whole network)."""
    from peft.tuners.lora import LoraLayer

    state = {}
    lora_modules = {name: module for name, module in network.named_modules() if isinstance(module, LoraLayer)}
    for name, value in network.state_dict().items():
        if ".lora_" in name:
            continue
        owner = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
        plain = name.replace(".base_layer.", ".")
        if owner in lora_modules and name.endswith("base_layer.weight"):  # merged in float32
            state[plain] = _merged_weight(lora_modules[owner], value.detach(), dtype or torch.float32)
            continue
        value = value.detach()  # the unmerged weights are the network's own tensors, not copies
        state[plain] = value.to(dtype) if dtype is not None and value.is_floating_point() else value
    return state


MERGE_CHUNK_BYTES = 8 * 2**20


def _merged_weight(layer, base: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``base`` plus ``layer``'s LoRA delta, summed in float32 and stored in ``dtype``. A plain linear LoRA is
    merged a block of rows at a time into the result, so the float32 temporaries stay a few MB: whole-layer
    temporaries, freed between allocations that stay, left the CPU heap fragmented (a 1.3B student's merge took
    5.2 GiB of resident memory for 2.6 GiB of float16 weights)."""
    from peft.tuners.lora import Linear

    if not isinstance(layer, Linear) or layer.fan_in_fan_out or base.dim() != 2 or layer.use_dora.get("default"):
        return (base.float() + layer.get_delta_weight("default").float()).to(dtype)
    down, up = layer.lora_A["default"].weight.detach().float(), layer.lora_B["default"].weight.detach().float()
    scaling = layer.scaling["default"]
    merged = torch.empty(base.shape, dtype=dtype, device=base.device)
    rows = max(1, MERGE_CHUNK_BYTES // (4 * base.shape[1]))
    for start in range(0, base.shape[0], rows):
        block = slice(start, start + rows)
        merged[block] = (base[block].float() + (up[block] @ down) * scaling).to(dtype)
    return merged


def save_lora(network: nn.Module, folder: Path) -> None:
    """The adapter alone, in peft's format (``adapter_model.safetensors`` + ``adapter_config.json``)."""
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().float().cpu().contiguous() for k, v in get_peft_model_state_dict(network).items()}
    save_file(weights, str(folder / "adapter_model.safetensors"))
    network.lora_config.save_pretrained(str(folder))
