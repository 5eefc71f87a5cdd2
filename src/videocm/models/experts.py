"""Experts of a phased (DCM) student, and reading a network's intermediate features.

* :func:`tied_expert`: a LoRA expert on a frozen base network. Its network is a copy whose parameters *are* the
  base network's (shared tensors, no extra memory), except the expert's own trainable copies of the timestep and
  condition embedding and the output norm and projection (the family's ``detail_own_modules``); peft LoRA is injected into the
  copy only, so the base network (DCM's semantic expert) is unchanged and still callable on its own.
* Folder layout of a phased student: the base network as usual (``transformer/`` or ``unet/``, it loads like a
  teacher) and, per LoRA expert, ``experts/expert-J/`` with peft's ``adapter_model.safetensors`` and
  ``adapter_config.json`` plus ``own_modules.safetensors``.
* :class:`FeatureTap`: forward hooks on every s-th block of a network, returning each block's output as a
  video-shaped feature map ``(B, D, T', H', W')`` whatever the latent shape.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from ..errors import VideoCMError, reading_weights
from .denoisers import DenoiserAdapter

EXPERTS_FOLDER = "experts"
DETAIL_LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


def _is_own(name: str, own) -> bool:
    return any(name == prefix or name.startswith(prefix + ".") for prefix in own)


def tied_expert(base: DenoiserAdapter, rank: int, alpha: float, targets: list[str] | None = None
                ) -> DenoiserAdapter:
    """A LoRA expert sharing ``base``'s frozen weights, with its own trainable copies of the family's
    ``detail_own_modules``."""
    from peft import LoraConfig, inject_adapter_in_model

    own = base.spec.detail_own_modules
    # deepcopy with every shared parameter pre-registered in the memo: those are reused, not copied
    memo = {id(p): p for name, p in base.network.named_parameters() if not _is_own(name, own)}
    network = copy.deepcopy(base.network, memo)
    base.network.requires_grad_(False)
    targets = list(targets or DETAIL_LORA_TARGETS)
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=targets, lora_dropout=0.0, init_lora_weights=True)
    try:
        inject_adapter_in_model(config, network)
    except ValueError as error:
        raise VideoCMError(f"LoRA targets {targets} do not match this {base.family} network: {error}") from error
    network.lora_config = config
    for name, parameter in network.named_parameters():
        parameter.requires_grad_(".lora_" in name or _is_own(name, own))
    return base.of(network)


def own_state(expert: DenoiserAdapter) -> dict[str, torch.Tensor]:
    own = expert.spec.detail_own_modules
    return {name: value for name, value in expert.network.state_dict().items() if _is_own(name, own)}


def save_expert(expert: DenoiserAdapter, folder: Path, dtype: torch.dtype = torch.float16) -> None:
    """The expert's LoRA (peft format) and its own modules (the shared base is saved once, elsewhere); a full
    expert (a two-expert teacher's, with no LoRA) as its whole network in ``FOLDER/<subfolder>``."""
    from peft import get_peft_model_state_dict

    folder.mkdir(parents=True, exist_ok=True)
    if getattr(expert.network, "lora_config", None) is None:
        network = copy.deepcopy(expert.network).to(dtype)
        network.save_pretrained(str(folder / expert.spec.subfolder))
        return
    lora = {k: v.detach().to(dtype).cpu().contiguous() for k, v in get_peft_model_state_dict(expert.network).items()}
    save_file(lora, str(folder / "adapter_model.safetensors"))
    expert.network.lora_config.save_pretrained(str(folder))
    save_file({k: v.detach().to(dtype).cpu().contiguous() for k, v in own_state(expert).items()},
              str(folder / "own_modules.safetensors"))


def load_expert(base: DenoiserAdapter, folder: Path) -> DenoiserAdapter:
    """Rebuild an expert saved by :func:`save_expert` on top of ``base`` (the loaded base network)."""
    from peft import LoraConfig, set_peft_model_state_dict

    if (folder / base.spec.subfolder).is_dir():  # a full expert
        network = base.spec.load_network(folder / base.spec.subfolder)
        device = next(base.network.parameters()).device
        return base.of(network).to(device).requires_grad_(False)
    needed = ["adapter_config.json", "adapter_model.safetensors", "own_modules.safetensors"]
    missing = [name for name in needed if not (folder / name).is_file()]
    if missing:
        raise VideoCMError(f"{folder} is missing {', '.join(missing)}; re-save the student")
    settings = json.loads((folder / "adapter_config.json").read_text())
    config = LoraConfig(**{k: v for k, v in settings.items() if k in ("r", "lora_alpha", "target_modules")})
    expert = tied_expert(base, config.r, config.lora_alpha, sorted(config.target_modules))
    dtype = next(expert.network.parameters()).dtype
    with reading_weights(folder / "adapter_model.safetensors", "expert's LoRA weights"):
        lora = {k: v.to(dtype) for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    result = set_peft_model_state_dict(expert.network, lora)
    if getattr(result, "unexpected_keys", None):
        raise VideoCMError(f"{folder}: adapter weights do not fit this network ({result.unexpected_keys[:3]} ...)")
    with reading_weights(folder / "own_modules.safetensors", "expert's own weights"):
        own = {k: v.to(dtype) for k, v in load_file(str(folder / "own_modules.safetensors")).items()}
    missing, unexpected = expert.network.load_state_dict(own, strict=False)
    if unexpected or set(own_state(expert)) - set(own):
        raise VideoCMError(f"{folder}: own modules do not fit this network; re-save the student")
    return expert.requires_grad_(False)


def feature_blocks(denoiser: DenoiserAdapter, every: int) -> list[nn.Module]:
    """Every ``every``-th block of the network (the family's feature blocks), starting with block ``every - 1`` so
    that ``every = 1`` reads them all."""
    blocks = denoiser.spec.feature_blocks(denoiser.network)
    if every < 1:
        raise VideoCMError(f"the discriminator reads every n-th block: n must be at least 1, got {every}")
    chosen = blocks[every - 1::every]
    if not chosen:
        raise VideoCMError(f"reading every {every}-th block selects none of the network's {len(blocks)} blocks")
    return chosen


class FeatureTap:
    """Collects the outputs of ``blocks`` during forwards inside ``with tap(latent_shape):``, as
    ``(B, D, T', H', W')`` maps (the family's ``features_as_video``), and with ``project`` each one also through the
    network's own output layer (``projections``, flattened ``(B, N)``; DCM's feature matching), where the family
    has one (:meth:`FamilySpec.output_projection`; ``projects`` says whether it does)."""

    def __init__(self, denoiser: DenoiserAdapter, blocks: list[nn.Module], project: bool = False) -> None:
        self.denoiser, self.blocks = denoiser, blocks
        self.features: list[torch.Tensor] = []
        self.projections: list[torch.Tensor] = []
        self._projection = denoiser.spec.output_projection(denoiser.network) if project else None
        self._handles: list = []
        self._shape: tuple[int, ...] = ()

    @property
    def projects(self) -> bool:
        return self._projection is not None

    def __call__(self, latent_shape: tuple[int, ...]) -> "FeatureTap":
        self._shape = tuple(latent_shape)
        return self

    def __enter__(self) -> "FeatureTap":
        self.features, self.projections = [], []
        self._handles = [block.register_forward_hook(self._hook) for block in self.blocks]
        if self._projection is not None:
            self._handles += self._projection.hooks()
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, module, args, output) -> None:
        hidden = output[0] if isinstance(output, tuple) else output
        whole = _whole_sequence(self.denoiser.network, hidden)
        self.features.append(self._as_video(whole))
        if self._projection is not None:
            self.projections.append(self._projection(whole).flatten(1))

    def _as_video(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.denoiser.spec.features_as_video(self.denoiser.network, hidden, self._shape)


def _whole_sequence(network: nn.Module, hidden: torch.Tensor) -> torch.Tensor:
    """A block's tokens ``(B, L, D)``; under diffusers' context parallelism (``--context-parallel``) each rank
    holds a slice of them, gathered here (differentiably: a rank's backward keeps its own slice's gradient)."""
    parallel = getattr(network, "_parallel_config", None)
    context = getattr(parallel, "context_parallel_config", None)
    if context is None or hidden.ndim != 3:
        return hidden
    from diffusers.hooks.context_parallel import EquipartitionSharder

    return EquipartitionSharder.unshard(hidden, 1, context._flattened_mesh)
