"""Training batches of MovingDigits latents and caption states, drawn globally and sharded per process.

Every random choice of a step (which clips, which captions are dropped) is drawn for the whole global batch from
the step's generator, and each process keeps its own rows, so the data do not depend on the process count.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from ..data.moving_digits import Geometry, clips_tensor, make_clip
from ..models.vae import VideoVAE
from .trainer import shard_rows


class LatentBatches:
    """Latents of train-split clips (encoded on the fly, or once into a pool of ``pool_size``) and text states.

    ``text`` is a :class:`TextEncoder` or :class:`PromptCache`; captions are replaced by ``""`` with probability
    ``caption_dropout``. With ``control`` the clips' silhouettes are encoded too (:func:`models.control.
    encode_control`) and :meth:`draw_with_control` hands them out beside the latents.
    """

    def __init__(self, vae: VideoVAE, geometry: Geometry, text, seed: int, caption_dropout: float = 0.0,
                 pool_size: int = 0, device: torch.device | str = "cpu", control: bool = False) -> None:
        self.vae, self.geometry, self.text = vae, geometry, text
        self.seed, self.caption_dropout, self.control = seed, caption_dropout, control
        self.pool: tuple[torch.Tensor, list[str], torch.Tensor | None] | None = None
        if pool_size > 0:
            self.pool = self._encode_pool(pool_size, device)

    def sample_prompts(self) -> list[str] | None:
        """Captions for monitoring samples (None: the MovingDigits test captions)."""
        return None

    def _encode(self, clips, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        from ..models.control import control_tensor, encode_control

        self.vae.to(device)
        latents = self.vae.encode(clips_tensor(clips).to(device))
        controls = encode_control(self.vae, control_tensor([c.control for c in clips])) if self.control else None
        return latents, controls

    @torch.no_grad()
    def _encode_pool(self, n: int, device) -> tuple[torch.Tensor, list[str], torch.Tensor | None]:
        """Latents of ``n`` train clips (drawn with seed ``seed + 1``), encoded once on ``device``."""
        latents, controls, captions = [], [], []
        for start in range(0, n, 256):
            clips = [make_clip(i, self.seed + 1, "train", self.geometry) for i in range(start, min(n, start + 256))]
            encoded = self._encode(clips, device)
            latents.append(encoded[0])
            controls.append(encoded[1])
            captions += [c.caption for c in clips]
        return torch.cat(latents), captions, torch.cat(controls) if self.control else None

    def draw(self, n: int, rng: np.random.Generator, shard: tuple[int, int],
             device: torch.device | str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """This process's rows of a global batch of ``n``: latents ``(n / processes, C, T, h, w)``, text states
        and the (possibly dropped) captions."""
        latents, _, text, captions = self._draw(n, rng, shard, device)
        return latents, text, captions

    def draw_with_control(self, n: int, rng: np.random.Generator, shard: tuple[int, int], device: torch.device | str
                          ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """As :meth:`draw`, with the control latents of the same clips second."""
        if not self.control:
            raise ValueError("these batches were made without control=True")
        return self._draw(n, rng, shard, device)

    @torch.no_grad()
    def _draw(self, n, rng, shard, device):
        rows = shard_rows(n, shard)
        controls = None
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
            chosen = torch.from_numpy(picks[rows]).to(self.pool[0].device)
            latents = self.pool[0][chosen].to(device)
            if self.control:
                controls = self.pool[2][chosen].to(device)
        else:
            latents, controls = self._encode(clips, device)
        text = {k: v.to(device) for k, v in self.text.encode(captions).items()}
        return latents, controls, text, captions


def cache_fingerprint(teacher, data: Path, frame_stride: int) -> dict:
    """What a latent cache depends on: the teacher (path, clip shape, text length) and the video folder."""
    info = teacher.info
    length = info.max_sequence_length if info.max_sequence_length is not None else info.text_max_length
    return {"teacher": str(Path(info.pipeline or teacher.path).resolve()),
            "video_shape": list(info.video_shape), "latent_shape": list(info.latent_shape),
            "max_sequence_length": length,
            "data": str(Path(data).resolve()), "frame_stride": int(frame_stride)}


def encode_video_folder(teacher, text, data: Path, out: Path, frame_stride: int = 0, batch_size: int = 4,
                        shard_size: int = 64, device: torch.device | str = "cpu", progress: bool = True) -> dict:
    """``videocm encode``: the teacher's VAE latents and text states of every usable video of ``data``, written
    once into a latent cache at ``out`` (resumed if a killed run left it half-written). Returns its index."""
    from ..data.latent_cache import write_latent_cache
    from ..data.video_folder import load_clip, scan_video_folder

    frames, height, width = (int(v) for v in teacher.info.video_shape)
    report = scan_video_folder(data, frames)
    print(report.summary())
    vae = teacher.vae.to(device)

    @torch.no_grad()
    def encode_videos(videos: np.ndarray) -> torch.Tensor | dict[str, torch.Tensor]:
        pixels = torch.from_numpy(videos).permute(0, 4, 1, 2, 3).float().div(127.5).sub(1).to(device)
        latents = vae.encode(pixels).cpu()
        if not teacher.info.image_condition:
            return latents
        from ..models.image_condition import (
            image_inputs,  # each clip's first frame, as its own condition
        )

        conditions = image_inputs(teacher, list(videos[:, 0]), device=device)
        return {"latents": latents, **{k: v.cpu() for k, v in conditions.items()}}

    def encode_texts(captions: list[str]) -> dict[str, torch.Tensor]:
        return {k: v.cpu() for k, v in text.encode(captions).items()}

    index = write_latent_cache(out, report.usable, lambda item: load_clip(item.path, frames, height, width,
                                                                          frame_stride),
                               encode_videos, encode_texts, cache_fingerprint(teacher, data, frame_stride),
                               shard_size=shard_size, batch_size=batch_size, progress=progress)
    skipped = len(report.skipped) + len(index.get("skipped", []))
    print(f"latent cache {out}: {index['count']} clips encoded, {skipped} videos skipped")
    return index


def ensure_latent_cache(teacher, text, data: Path, cache: str, frame_stride: int, device):
    """``data`` as a :class:`LatentCache`: a finished cache is used as it is; a video folder is encoded into
    ``cache`` first (or the half-written cache there finished)."""
    from ..data.latent_cache import LatentCache, cache_status
    from ..errors import VideoCMError

    data = Path(data)
    if (data / "index.json").is_file() or (data / "progress.json").is_file():
        loaded = LatentCache(data)
        expected = cache_fingerprint(teacher, Path(loaded.fingerprint.get("data", data)), frame_stride)
        for key in ("teacher", "latent_shape", "max_sequence_length"):
            if loaded.fingerprint.get(key) != expected[key]:
                raise VideoCMError(f"latent cache {data} was encoded with {key} {loaded.fingerprint.get(key)}, this "
                                   f"run needs {expected[key]}: encode again with `videocm encode`")
        return loaded
    if not data.is_dir():
        raise VideoCMError(f"--data {data} does not exist: give a folder of videos with captions or a latent cache")
    status = cache_status(cache, cache_fingerprint(teacher, data, frame_stride))
    if status != "complete":
        encode_video_folder(teacher, text, data, Path(cache), frame_stride, device=device)
    return LatentCache(cache)


class CachedLatentBatches:
    """Training batches from a :class:`data.latent_cache.LatentCache`: latents and the text states stored with
    them; a dropped caption gets the empty prompt's states (from ``text``)."""

    def __init__(self, cache, text, caption_dropout: float = 0.0) -> None:
        self.cache, self.caption_dropout = cache, caption_dropout
        self.empty = text.encode([""]) if caption_dropout > 0 else None

    def sample_prompts(self) -> list[str]:
        return list(dict.fromkeys(self.cache.captions))[:16]

    @functools.cached_property
    def _first_frames(self) -> list[np.ndarray]:
        from ..data.video_folder import load_clip

        frames, height, width = self.cache.fingerprint["video_shape"]
        stride = int(self.cache.fingerprint.get("frame_stride", 0))
        first = {caption: i for i, caption in reversed(list(enumerate(self.cache.captions)))}
        return [load_clip(Path(self.cache.sources[first[c]]), frames, height, width, stride)[0]
                for c in self.sample_prompts()]

    def sample_first_frames(self) -> list[np.ndarray]:
        """The first frame of the video of each of :meth:`sample_prompts`, as the cache took its frames (what an
        image-to-video student's monitoring samples start from); read from the source videos once."""
        return self._first_frames

    @torch.no_grad()
    def draw(self, n: int, rng: np.random.Generator, shard: tuple[int, int],
             device: torch.device | str) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        rows = shard_rows(n, shard)
        picks = rng.integers(len(self.cache), size=n)
        dropped = rng.random(n) < self.caption_dropout
        latents, text, captions = self.cache.get(picks[rows].tolist())
        keep = torch.from_numpy(~dropped[rows])
        if self.empty is not None and not keep.all():
            for key, value in text.items():
                if key not in self.empty:  # a clip's own condition (its first frame) stays with a dropped caption
                    continue
                empty = self.empty[key].to(value.dtype).expand_as(value)
                text[key] = torch.where(keep.view(-1, *([1] * (value.dim() - 1))), value, empty)
            captions = [c if k else "" for c, k in zip(captions, keep.tolist())]
        return latents.float().to(device), {k: v.to(device) for k, v in text.items()}, captions


# ---- distillation from prompts alone (--data prompts:FILE) ----------------------------------------------------------

def read_prompts(path: Path) -> list[str]:
    """The prompts of a prompt list: one per line, blank lines skipped; a one-line error when there are none."""
    from ..errors import VideoCMError

    path = Path(path)
    if not path.is_file():
        raise VideoCMError(f"--data prompts:{path}: no such file; give a text file with one prompt per line")
    try:
        prompts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as error:
        raise VideoCMError(f"--data prompts:{path} cannot be read as UTF-8 text ({error})") from error
    if not prompts:
        raise VideoCMError(f"--data prompts:{path} holds no prompts; write one prompt per line")
    return prompts


class PromptBatches:
    """Text states of prompts drawn uniformly from a list, no clips (what distribution matching needs);
    ``draw`` returns ``None`` in place of latents."""

    def __init__(self, prompts: list[str], text, caption_dropout: float = 0.0) -> None:
        self.prompts, self.text, self.caption_dropout = list(prompts), text, caption_dropout

    def sample_prompts(self) -> list[str]:
        return list(dict.fromkeys(self.prompts))[:16]

    @torch.no_grad()
    def draw(self, n: int, rng: np.random.Generator, shard: tuple[int, int],
             device: torch.device | str) -> tuple[None, dict[str, torch.Tensor], list[str]]:
        rows = shard_rows(n, shard)
        picks = rng.integers(len(self.prompts), size=n)
        dropped = rng.random(n) < self.caption_dropout
        captions = ["" if drop else self.prompts[p] for p, drop in zip(picks, dropped)][rows]
        return None, {k: v.to(device) for k, v in self.text.encode(captions).items()}, captions


def prompt_cache_fingerprint(teacher, prompts_file: Path, samples: int, steps: int, guidance: float,
                             guidance_2: float | None, negative_prompt: str, seed: int) -> dict:
    """What a cache of teacher-generated latents depends on: the teacher, the prompt list and how it sampled."""
    return {**cache_fingerprint(teacher, Path(f"prompts:{Path(prompts_file).resolve()}"), 0),
            "data": f"prompts:{Path(prompts_file).resolve()}", "generated_by": "teacher",
            "teacher_steps": int(steps), "guidance": float(guidance),
            "guidance_2": None if guidance_2 is None else float(guidance_2), "negative_prompt": negative_prompt,
            "samples_per_prompt": int(samples), "seed": int(seed)}


def generate_prompt_cache(teacher, denoiser, text, prompts_file: Path, out: Path, samples: int, steps: int,
                          guidance: float, guidance_2: float | None = None, negative_prompt: str = "",
                          seed: int = 0, device: torch.device | str = "cpu", batch_size: int = 16,
                          progress: bool = True) -> dict:
    """The teacher's own training latents for a prompt list: ``samples`` clips per prompt, each sampled with
    ``steps`` guided ODE steps (DDIM or Euler) from noise of seed ``(seed, clip)``, written once into a latent cache
    at ``out`` (the layout `videocm encode` writes; a killed run is finished where it stopped). ``denoiser``: the
    teacher's network as distillation guides it (guidance embedded where the network takes it). Returns the index."""
    from ..data.latent_cache import write_latent_cache
    from ..data.video_folder import VideoItem
    from ..diffusion.sampling import guidance_at, sample_teacher
    from ..pipeline import initial_noise

    prompts = read_prompts(prompts_file)
    items = [VideoItem(Path(f"prompts:{Path(prompts_file).resolve()}#{p}.{s}"), prompt)
             for p, prompt in enumerate(prompts) for s in range(samples)]
    position = {str(item.path): i for i, item in enumerate(items)}
    schedule, shape = teacher.schedule, tuple(int(v) for v in teacher.info.latent_shape)
    scales: float | list[float] = 1.0 if getattr(denoiser, "embeds_guidance", False) else float(guidance)
    if guidance_2 is not None:
        at = schedule.model_timestep(schedule.sampling_times(steps)[:-1])
        scales = guidance_at(at, float(guidance), guidance_2, denoiser.boundary)
    guided = any(g != 1.0 for g in ([scales] if isinstance(scales, float) else scales))

    def states(captions: list[str]) -> dict[str, torch.Tensor]:
        return {k: v.to(device) for k, v in text.encode(captions).items()}

    @torch.no_grad()
    def generate(indices: np.ndarray) -> torch.Tensor:
        chosen = [int(i) for i in indices[:, 0]]
        noise = initial_noise([seed * 1_000_003 + i for i in chosen], shape, device)
        cond = states([items[i].caption for i in chosen])
        uncond = states([negative_prompt] * len(chosen)) if guided else None
        return sample_teacher(denoiser, noise, schedule, steps, cond, uncond, scales).float().cpu()

    fingerprint = prompt_cache_fingerprint(teacher, prompts_file, samples, steps, guidance, guidance_2,
                                           negative_prompt, seed)
    index = write_latent_cache(out, items, lambda item: np.array([position[str(item.path)]]), generate,
                               lambda captions: {k: v.cpu() for k, v in text.encode(captions).items()}, fingerprint,
                               shard_size=256, batch_size=batch_size, progress=progress)
    print(f"latent cache {out}: {index['count']} clips generated by the teacher ({steps} steps, guidance "
          f"{guidance:g}) for {len(prompts)} prompts")
    return index
