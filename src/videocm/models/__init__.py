"""Models: the text encoder (and, in later issues, the VAE, denoiser adapters, LoRA and expert wrappers)."""

from .text_encoder import HIDDEN_SIZE, TextEncoder, minilm_path

__all__ = ["HIDDEN_SIZE", "TextEncoder", "minilm_path"]
