"""The MovingDigits judge: a small 3D CNN with three heads (digit, colour, direction) and a feature vector.

Each head has one extra *none* class, trained on clips that show no such thing: pure or smooth noise and blank
clips (no digit, no colour, no direction), frozen or frame-shuffled clips (no direction), and heavily blurred
clips (no readable digit). So a generator cannot score by emitting blur, stills or noise, and fidelity is the
share of clips whose predicted class equals the caption's. The pooled features (``feature_dim``) feed the
Fréchet distance.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from ..config import Count, Natural, NonNegative, ReusedFolder, Positive
from ..data.moving_digits import COLOUR_NAMES, DIGITS, DIRECTIONS, Geometry, draw_clip, make_clip
from ..errors import VideoCMError, reading_weights
from . import corruptions

HEADS = {"digit": len(DIGITS), "colour": len(COLOUR_NAMES), "direction": len(DIRECTIONS)}
NONE = {head: n for head, n in HEADS.items()}  # the index of each head's "none" class
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
# The judge is part of the evaluation, so it ships inside the package (models/judge links to it);
# $VIDEOCM_JUDGE points at another one.
PACKAGED_JUDGE = Path(__file__).with_name("judge_model")


def default_judge_folder() -> Path:
    if os.environ.get("VIDEOCM_JUDGE"):
        return Path(os.environ["VIDEOCM_JUDGE"])
    return PACKAGED_JUDGE


def _block(cin: int, cout: int, kernel, stride) -> nn.Sequential:
    padding = tuple(k // 2 for k in kernel)
    return nn.Sequential(nn.Conv3d(cin, cout, kernel, stride, padding), nn.GroupNorm(8, cout), nn.SiLU())


class JudgeNet(nn.Module):
    """``(B, 3, T, H, W)`` in [-1, 1] -> features ``(B, feature_dim)`` and logits per head (classes + none)."""

    def __init__(self, width: int = 16, feature_dim: int = 128) -> None:
        super().__init__()
        w = width
        self.trunk = nn.Sequential(
            _block(3, w, (1, 3, 3), (1, 1, 1)),
            _block(w, 2 * w, (3, 3, 3), (1, 2, 2)),
            _block(2 * w, 4 * w, (3, 3, 3), (1, 2, 2)),
            _block(4 * w, 6 * w, (3, 3, 3), (2, 2, 2)),
            _block(6 * w, feature_dim, (3, 3, 3), (1, 1, 1)),
        )
        self.heads = nn.ModuleDict({head: nn.Linear(feature_dim, n + 1) for head, n in HEADS.items()})

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x).mean(dim=(2, 3, 4))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.features(x)
        return features, {head: layer(features) for head, layer in self.heads.items()}


def to_input(videos: np.ndarray | list[np.ndarray]) -> torch.Tensor:
    """uint8 ``(N, T, H, W, 3)`` -> float ``(N, 3, T, H, W)`` in [-1, 1]."""
    array = np.stack(videos) if isinstance(videos, list) else videos
    return torch.from_numpy(np.ascontiguousarray(array)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0


@dataclass
class JudgeConfig:
    out: ReusedFolder = "models/judge"  # folder to write the judge to (model.safetensors, config.json); resumes from it
    steps: Count = 3000  # optimiser steps
    batch_size: Count = 64  # clips per step, generated on the fly
    lr: Positive = 2e-3  # peak AdamW learning rate (one-cycle schedule)
    weight_decay: NonNegative = 1e-4  # AdamW weight decay
    width: Count = 16  # channels of the first 3D conv block (later blocks are multiples)
    feature_dim: Count = 128  # pooled features (the Fréchet distance's space)
    seed: Natural = 0  # seed of the initial weights and the training clips
    frames: Count = 8  # frames of the clips it judges
    size: Count = 32  # side in pixels of the clips it judges
    eval_clips: Count = 960  # test-split clips of the final accuracy
    checkpoint_every: Count = 250  # steps between checkpoints


class Judge:
    """A trained :class:`JudgeNet` with its config; ``predict`` and ``features`` take uint8 clips."""

    def __init__(self, net: JudgeNet, info: dict) -> None:
        self.net = net.eval()
        self.info = info
        self.frames, self.size = info["frames"], info["size"]

    @classmethod
    def load(cls, folder: str | Path | None = None) -> "Judge":
        folder = Path(folder) if folder is not None else default_judge_folder()
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / CONFIG_FILE).is_file():
            raise VideoCMError(
                f"no judge in {folder} (needs {CONFIG_FILE} and {WEIGHTS_FILE}): train one with "
                f"`videocm train-judge --out {folder}`"
            )
        info = json.loads((folder / CONFIG_FILE).read_text())
        net = JudgeNet(info["width"], info["feature_dim"])
        with reading_weights(folder / WEIGHTS_FILE, "judge weights"):
            net.load_state_dict(load_file(folder / WEIGHTS_FILE))
        return cls(net, info)

    def _check(self, videos: np.ndarray) -> None:
        if videos.ndim != 5 or videos.shape[-1] != 3 or videos.dtype != np.uint8:
            raise VideoCMError(f"the judge takes uint8 clips (N, T, H, W, 3), got {videos.dtype} {videos.shape}")
        if videos.shape[1:4] != (self.frames, self.size, self.size):
            raise VideoCMError(
                f"the judge was trained on {self.frames}x{self.size}x{self.size} clips, got "
                f"{videos.shape[1]}x{videos.shape[2]}x{videos.shape[3]}: generate at the benchmark's default shape"
            )

    @torch.no_grad()
    def run(self, videos: np.ndarray | list[np.ndarray], batch_size: int = 256) -> dict[str, np.ndarray]:
        """Features ``(N, feature_dim)`` and predicted class per head ``(N,)`` (``NONE[head]`` means none)."""
        videos = np.stack(videos) if isinstance(videos, list) else np.asarray(videos)
        self._check(videos)
        features, predictions = [], {head: [] for head in HEADS}
        for start in range(0, len(videos), batch_size):
            f, logits = self.net(to_input(videos[start : start + batch_size]))
            features.append(f)
            for head in HEADS:
                predictions[head].append(logits[head].argmax(-1))
        result = {head: torch.cat(p).numpy() for head, p in predictions.items()}
        result["features"] = torch.cat(features).double().numpy()
        return result


def training_batch(rng: np.random.Generator, batch_size: int, geometry: Geometry) -> tuple[np.ndarray, dict]:
    """A batch of train-split clips, most real with mild generator-like augmentation, some corrupted and labelled
    with the none classes. Returns uint8 ``(B, T, H, W, 3)`` and int labels per head."""
    videos, labels = [], {head: [] for head in HEADS}
    for _ in range(batch_size):
        clip = draw_clip(rng, "train", geometry)
        video = clip.video
        label = {"digit": clip.digit, "colour": COLOUR_NAMES.index(clip.colour),
                 "direction": DIRECTIONS.index(clip.direction)}
        kind = rng.random()
        if kind < 0.60:  # real, mildly degraded the way decoders and few-step samplers degrade clips
            video = video.astype(np.float32) / 255.0
            if rng.random() < 0.5:
                video = corruptions.gaussian_filter(video, sigma=(0, *(2 * [rng.uniform(0.2, 0.9)]), 0))
            video = video * rng.uniform(0.75, 1.05)
            if rng.random() < 0.5:
                video = video + rng.normal(0, rng.uniform(0.0, 0.05), video.shape)
            if rng.random() < 0.3:
                video = video + corruptions.smooth_noise(video.shape, rng).astype(np.float32) / 255.0 * 0.3
            video = corruptions.to_uint8(video)
        elif kind < 0.70:
            video = corruptions.frozen(video, int(rng.integers(video.shape[0])))
            label["direction"] = NONE["direction"]
        elif kind < 0.80:
            video = corruptions.shuffled(video, rng)
            label["direction"] = NONE["direction"]
        elif kind < 0.88:
            video = corruptions.blurred(video, float(rng.uniform(1.6, 3.0)))
            label["digit"] = NONE["digit"]
        else:
            choice = rng.random()
            if choice < 0.34:
                video = corruptions.pure_noise(video.shape, rng)
            elif choice < 0.67:
                video = corruptions.smooth_noise(video.shape, rng)
            else:
                video = corruptions.to_uint8(np.abs(rng.normal(0, rng.uniform(0, 0.05), video.shape)))
            label = {head: NONE[head] for head in HEADS}
        videos.append(video)
        for head in HEADS:
            labels[head].append(label[head])
    return np.stack(videos), {head: np.asarray(v) for head, v in labels.items()}


def head_accuracy(judge: Judge, split: str, n: int, seed: int, geometry: Geometry) -> dict[str, float]:
    """Per-head accuracy (and all-three) on ``n`` real clips of ``split``."""
    clips = [make_clip(i, seed, split, geometry, cover_captions=True) for i in range(n)]
    predicted = judge.run([c.video for c in clips])
    truth = {"digit": [c.digit for c in clips], "colour": [COLOUR_NAMES.index(c.colour) for c in clips],
             "direction": [DIRECTIONS.index(c.direction) for c in clips]}
    correct = {head: predicted[head] == np.asarray(truth[head]) for head in HEADS}
    result = {head: float(c.mean()) for head, c in correct.items()}
    result["all"] = float(np.logical_and.reduce(list(correct.values())).mean())
    return result


def train_judge(config: JudgeConfig, progress: bool = True) -> dict:
    """Train the judge; checkpoints every ``checkpoint_every`` steps to ``out/checkpoint.pt`` and resumes from it."""
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    geometry = Geometry(config.frames, config.size)
    net = JudgeNet(config.width, config.feature_dim)
    optimizer = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, config.lr, total_steps=config.steps, pct_start=0.05)
    checkpoint_path = out / "checkpoint.pt"
    start = 0
    if checkpoint_path.is_file():
        state = torch.load(checkpoint_path, weights_only=False)
        net.load_state_dict(state["net"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        start = state["step"]
        print(f"resuming judge training from step {start}")
    loss_fn = nn.CrossEntropyLoss()
    began = time.time()
    bar = tqdm(range(start, config.steps), desc="judge", disable=not progress, initial=start, total=config.steps)
    for step in bar:
        # A generator per step makes a resumed run draw the same batches as an uninterrupted one.
        rng = np.random.default_rng([config.seed, step])
        videos, labels = training_batch(rng, config.batch_size, geometry)
        net.train()
        _, logits = net(to_input(videos))
        loss = sum(loss_fn(logits[h], torch.from_numpy(labels[h])) for h in HEADS)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
            state = {"net": net.state_dict(), "optimizer": optimizer.state_dict(),
                     "schedule": schedule.state_dict(), "step": step + 1}
            torch.save(state, checkpoint_path.with_suffix(".tmp"))
            checkpoint_path.with_suffix(".tmp").replace(checkpoint_path)
    net.eval()
    info = {**asdict(config), "heads": {h: n + 1 for h, n in HEADS.items()}, "none_class": NONE}
    judge = Judge(net, info)
    test = head_accuracy(judge, "test", config.eval_clips, seed=10_000, geometry=geometry)
    info["test_accuracy"] = test
    info["train_seconds_this_run"] = round(time.time() - began, 1)
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, out / WEIGHTS_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(info, indent=2))
    checkpoint_path.unlink(missing_ok=True)
    return info
