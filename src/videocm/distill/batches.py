"""Training batches of MovingDigits latents and caption states, drawn globally and sharded per process.

Every random choice of a step (which clips, which captions are dropped) is drawn for the whole global batch from
the step's generator, and each process keeps its own rows, so the data do not depend on the process count.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.moving_digits import Geometry, make_clip
from ..models.vae import VideoVAE
from .trainer import shard_rows
from .vae_training import clips_tensor


class LatentBatches:
    """Latents of train-split clips (encoded on the fly, or once into a pool of ``pool_size``) and text states.

    ``text`` is a :class:`TextEncoder` or :class:`PromptCache`; captions are replaced by ``""`` with probability
    ``caption_dropout``.
    """

    def __init__(self, vae: VideoVAE, geometry: Geometry, text, seed: int, caption_dropout: float = 0.0,
                 pool_size: int = 0, device: torch.device | str = "cpu") -> None:
        self.vae, self.geometry, self.text = vae, geometry, text
        self.seed, self.caption_dropout = seed, caption_dropout
        self.pool: tuple[torch.Tensor, list[str]] | None = None
        if pool_size > 0:
            self.pool = self._encode_pool(pool_size, device)

    @torch.no_grad()
    def _encode_pool(self, n: int, device) -> tuple[torch.Tensor, list[str]]:
        """Latents of ``n`` train clips (drawn with seed ``seed + 1``), encoded once on ``device``."""
        self.vae.to(device)
        latents, captions = [], []
        for start in range(0, n, 256):
            clips = [make_clip(i, self.seed + 1, "train", self.geometry) for i in range(start, min(n, start + 256))]
            latents.append(self.vae.encode(clips_tensor(clips).to(device)))
            captions += [c.caption for c in clips]
        return torch.cat(latents), captions

    @torch.no_grad()
    def draw(self, n: int, rng: np.random.Generator, shard: tuple[int, int],
             device: torch.device | str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """This process's rows of a global batch of ``n``: latents ``(n / processes, C, T, h, w)``, text states
        and the (possibly dropped) captions."""
        rows = shard_rows(n, shard)
        if self.pool is not None:
            picks = rng.integers(len(self.pool[1]), size=n)
            captions = [self.pool[1][r] for r in picks]
        else:
            indices = rng.integers(2**62, size=n)
            clips = [make_clip(int(i), self.seed, "train", self.geometry) for i in indices[rows]]
            captions = [""] * n
            captions[rows] = [c.caption for c in clips]
        dropped = rng.random(n) < self.caption_dropout
        captions = ["" if drop else caption for drop, caption in zip(dropped, captions)][rows]
        if self.pool is not None:
            latents = self.pool[0][torch.from_numpy(picks[rows]).to(self.pool[0].device)].to(device)
        else:
            self.vae.to(device)
            latents = self.vae.encode(clips_tensor(clips).to(device))
        text = {k: v.to(device) for k, v in self.text.encode(captions).items()}
        return latents, text, captions
