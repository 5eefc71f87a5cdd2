"""Models: what a folder is (:mod:`models.info`), the network families (:mod:`models.families`), denoisers and
their wrappers, the text encoder, the video VAE, student parts (LoRA, guidance embedding, experts), control
branches, model and pipeline folders, and export to diffusers."""

from .text_encoder import HIDDEN_SIZE, TextEncoder, minilm_path

__all__ = ["HIDDEN_SIZE", "TextEncoder", "minilm_path"]
