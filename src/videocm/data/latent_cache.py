"""A latent cache: VAE latents and text-encoder states computed once (``videocm encode``), read by training.

Layout of a cache folder ``OUT``::

    OUT/shard-00000.safetensors   key ``latents`` (B, ...), ``text.NAME`` (B, ...) for each text tensor and, for
                                  an image-to-video teacher, ``condition.NAME`` (B, ...): each clip's first-frame
                                  condition (its image latents and image-encoder states)
    OUT/shard-00001.safetensors   ...
    OUT/index.json                written last: fingerprint, captions and source files per shard, skipped videos
    OUT/progress.json             only while writing: the same shape with ``"complete": false``

Every file is written under a temporary name and renamed, so a killed run leaves only whole shards and a
``progress.json`` naming them; running again with the same fingerprint resumes after the last finished shard.
The writer takes callables (load a video, encode videos, encode captions), so it knows nothing of model classes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from ..errors import VideoCMError
from .video_folder import VideoItem, report_skip

FORMAT = "videocm-latent-cache"
VERSION = 1
INDEX_FILE = "index.json"
PROGRESS_FILE = "progress.json"
LATENTS_KEY = "latents"
TEXT_PREFIX = "text."
CONDITION_PREFIX = "condition."


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.safetensors"


def write_latent_cache(
    out,
    items: list[VideoItem],
    load: Callable[[VideoItem], np.ndarray],
    encode_videos: Callable[[np.ndarray], torch.Tensor],
    encode_texts: Callable[[list[str]], dict[str, torch.Tensor]],
    fingerprint: dict,
    shard_size: int = 64,
    batch_size: int = 4,
    progress: bool = True,
) -> dict:
    """Encode ``items`` into a latent cache at ``out`` and return its index.

    ``load`` gives one video as uint8 ``(T, H, W, 3)``; ``encode_videos`` maps a uint8 ``(B, T, H, W, 3)`` batch to
    latents ``(B, ...)``, or to a dict of ``latents`` and per-video condition tensors; ``encode_texts`` maps ``B`` captions to tensors with the batch dimension first.
    ``fingerprint`` (JSON-serialisable: model, sizes, frames ...) says what the cache was made with; a rerun with
    the same fingerprint and items resumes, a different one raises ``VideoCMError``. A video whose ``load``
    raises an ``Exception`` is reported, recorded in ``skipped`` and left out; if none loads, ``VideoCMError``.
    """
    if shard_size < 1 or batch_size < 1:
        raise ValueError(f"shard_size and batch_size must be positive, got {shard_size} and {batch_size}")
    out = Path(out)
    fingerprint = json.loads(json.dumps(fingerprint))  # compare as it will read back (tuples become lists)
    digest = items_digest(items)
    state = resume_state(out, fingerprint, digest)
    if state is not None and state["complete"]:
        (out / PROGRESS_FILE).unlink(missing_ok=True)  # left if a run was killed between its last two steps
        return state
    if state is None:
        state = {"format": FORMAT, "version": VERSION, "fingerprint": fingerprint, "count": 0, "total": len(items),
                 "items_digest": digest, "tensors": {}, "shards": [], "skipped": [], "next_item": 0,
                 "complete": False}
    else:
        tqdm.write(f"videocm: resuming {out}: {state['count']} of {len(items)} videos already encoded",
                   file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    shard = ShardBuffer()
    batch: list[tuple[VideoItem, np.ndarray]] = []
    bar = tqdm(total=len(items), initial=state["next_item"], desc="encoding", unit="video", disable=not progress)
    for position in range(state["next_item"], len(items)):
        item = items[position]
        try:
            clip = load(item)
        except Exception as error:  # noqa: BLE001 - one bad video must not end a long run; KeyboardInterrupt does
            reason = next(iter(str(error).splitlines()), "") or type(error).__name__
            state["skipped"].append([str(item.path), reason])
            report_skip(str(item.path), reason)
            bar.update()
            continue
        batch.append((item, clip))
        if len(batch) == batch_size or len(shard) + len(batch) == shard_size:
            shard.add(batch, encode_videos, encode_texts, state["tensors"])
            batch = []
        if len(shard) == shard_size:
            finish_shard(out, shard, state, next_item=position + 1)
            shard = ShardBuffer()
        bar.update()
    bar.close()
    if batch:
        shard.add(batch, encode_videos, encode_texts, state["tensors"])
    if len(shard):
        finish_shard(out, shard, state, next_item=len(items))
    if state["count"] == 0:
        first = f" (first: {state['skipped'][0][0]}: {state['skipped'][0][1]})" if state["skipped"] else ""
        raise VideoCMError(f"no video could be encoded into {out}: {len(state['skipped'])} skipped{first}; fix or "
                           "remove those videos")
    index = {key: value for key, value in state.items() if key != "next_item"}
    index["complete"] = True
    write_json_atomically(out / INDEX_FILE, index)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    return index


class ShardBuffer:
    """Encoded batches waiting to become one shard."""

    def __init__(self) -> None:
        self.latents: list[torch.Tensor] = []
        self.texts: dict[str, list[torch.Tensor]] = {}
        self.conditions: dict[str, list[torch.Tensor]] = {}
        self.captions: list[str] = []
        self.sources: list[str] = []

    def __len__(self) -> int:
        return len(self.captions)

    def add(self, batch: list[tuple[VideoItem, np.ndarray]], encode_videos, encode_texts, tensors: dict) -> None:
        """Encode one batch; ``tensors`` holds the per-video shape and dtype every batch must match."""
        captions = [item.caption for item, _ in batch]
        with torch.no_grad():
            latents = encode_videos(np.stack([clip for _, clip in batch]))
            texts = encode_texts(captions)
        conditions = {}
        if isinstance(latents, dict):
            conditions = {k: v for k, v in latents.items() if k != LATENTS_KEY}
            latents = latents[LATENTS_KEY]
        encoded = {LATENTS_KEY: latents, **{TEXT_PREFIX + name: value for name, value in texts.items()},
                   **{CONDITION_PREFIX + name: value for name, value in conditions.items()}}
        for key, value in encoded.items():
            check_batch_tensor(key, value, len(batch), tensors)
        self.latents.append(to_storable(latents))
        for name, value in texts.items():
            self.texts.setdefault(name, []).append(to_storable(value))
        for name, value in conditions.items():
            self.conditions.setdefault(name, []).append(to_storable(value))
        self.captions += captions
        self.sources += [str(item.path) for item, _ in batch]

    def tensors(self) -> dict[str, torch.Tensor]:
        joined = {LATENTS_KEY: torch.cat(self.latents)}
        joined.update({TEXT_PREFIX + name: torch.cat(values) for name, values in self.texts.items()})
        joined.update({CONDITION_PREFIX + name: torch.cat(values) for name, values in self.conditions.items()})
        return joined


def check_batch_tensor(key: str, value, batch: int, tensors: dict) -> None:
    """Every encoded tensor has the batch first and the same per-video shape and dtype in every batch."""
    if not isinstance(value, torch.Tensor) or value.ndim == 0 or value.shape[0] != batch:
        shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
        raise ValueError(f"encoder output {key!r} must be a tensor with the batch ({batch}) first, got {shape}")
    spec = {"shape": list(value.shape[1:]), "dtype": str(value.dtype).removeprefix("torch.")}
    expected = tensors.setdefault(key, spec)
    if expected != spec:
        raise ValueError(f"encoder output {key!r} changed from {expected} to {spec} between batches; a cache needs "
                         "fixed shapes (pad text to a fixed length)")


def to_storable(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().to("cpu").contiguous()


def finish_shard(out: Path, shard: ShardBuffer, state: dict, next_item: int) -> None:
    """Write a shard under a temporary name, rename it, then record it in ``progress.json`` (also atomically)."""
    name = shard_name(len(state["shards"]))
    temporary = out / (name + ".tmp")
    save_file(shard.tensors(), str(temporary), metadata={"format": FORMAT})
    os.replace(temporary, out / name)
    state["shards"].append({"file": name, "count": len(shard), "captions": shard.captions, "sources": shard.sources})
    state["count"] += len(shard)
    state["next_item"] = next_item
    write_json_atomically(out / PROGRESS_FILE, state)


def write_json_atomically(path: Path, value: dict) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(value, indent=1))
    os.replace(temporary, path)


def items_digest(items: Sequence[VideoItem]) -> str:
    """A hash of the video list (paths and captions, in order), so a resume cannot mix two different lists."""
    hasher = hashlib.sha256()
    for item in items:
        hasher.update(json.dumps([str(item.path), item.caption]).encode())
    return hasher.hexdigest()


def read_json(path: Path) -> dict | None:
    """A JSON object from ``path``, or ``None`` if the file is unreadable or not an object."""
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def mismatch_message(out: Path, recorded, fingerprint: dict) -> str:
    recorded = recorded if isinstance(recorded, dict) else {}
    differing = sorted(key for key in set(recorded) | set(fingerprint) if recorded.get(key) != fingerprint.get(key))
    return (f"{out} holds a latent cache made with different settings ({', '.join(differing)} differ): "
            "use another --out or delete that folder")


def resume_state(out: Path, fingerprint: dict, digest: str) -> dict | None:
    """The recorded state to continue from (``None``: start afresh); raises if ``out`` cannot be reused."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise VideoCMError(f"{out} is a file, not a folder: pass a new or empty folder as --out")
    for file in (INDEX_FILE, PROGRESS_FILE):
        if not (out / file).exists():
            continue
        state = read_json(out / file)
        if state is None or state.get("format") != FORMAT or state.get("version") != VERSION:
            raise VideoCMError(f"{out / file} is not a readable version-{VERSION} latent cache record: use another "
                               "--out or delete that folder")
        if state.get("fingerprint") != fingerprint:
            raise VideoCMError(mismatch_message(out, state.get("fingerprint"), fingerprint))
        if state.get("items_digest") != digest:
            raise VideoCMError(f"{out} holds a latent cache of a different list of videos (the folder or its "
                               "captions changed): use another --out or delete that folder")
        if file == PROGRESS_FILE:
            state["skipped"] = [list(skip) for skip in state["skipped"]]
        return state
    leftovers = [p.name for p in out.iterdir() if not p.name.startswith("shard-")]
    if leftovers:
        raise VideoCMError(f"{out} exists and is not a latent cache (it holds {leftovers[0]}): pass a new or empty "
                           "folder as --out")
    return None  # only shards of a run killed before its first progress record: start again


def cache_status(path, fingerprint: dict) -> str:
    """``"missing"``, ``"complete"``, ``"partial"`` (a run was interrupted) or ``"mismatch"`` (other settings)."""
    path = Path(path)
    fingerprint = json.loads(json.dumps(fingerprint))
    for file, status in ((INDEX_FILE, "complete"), (PROGRESS_FILE, "partial")):
        if (path / file).exists():
            state = read_json(path / file)
            matches = state is not None and state.get("format") == FORMAT and state.get("fingerprint") == fingerprint
            return status if matches else "mismatch"
    return "missing"


class LatentCache:
    """A finished latent cache, read whole into memory (fine for datasets of thousands of short clips).

    ``latents`` is ``(N, ...)`` in the dtype it was written with; ``texts`` maps each text tensor's name to
    ``(N, ...)``; ``captions``, ``sources`` (the video files) and ``skipped`` come from the index.
    """

    def __init__(self, path) -> None:
        self.path = path = Path(path)
        if not (path / INDEX_FILE).exists():
            if (path / PROGRESS_FILE).exists():
                state = read_json(path / PROGRESS_FILE) or {}
                raise VideoCMError(
                    f"{path} is a half-written latent cache ({state.get('count', '?')} of {state.get('total', '?')} "
                    "videos): run `videocm encode` again with the same arguments to finish it"
                )
            if not path.exists():
                raise VideoCMError(f"latent cache {path} does not exist: make it with `videocm encode --out {path}`")
            raise VideoCMError(f"{path} is not a latent cache (no {INDEX_FILE}): make one with `videocm encode`")
        index = read_json(path / INDEX_FILE)
        if index is None or index.get("format") != FORMAT or not index.get("complete"):
            raise VideoCMError(f"{path / INDEX_FILE} is not a readable latent-cache index: delete {path} and run "
                               "`videocm encode` again")
        if index.get("version") != VERSION:
            raise VideoCMError(f"{path} is a version {index.get('version')} latent cache; this videocm reads version "
                               f"{VERSION}: run `videocm encode` again into a new folder")
        self.index = index
        self.fingerprint: dict = index["fingerprint"]
        self.captions: list[str] = [c for shard in index["shards"] for c in shard["captions"]]
        self.sources: list[str] = [s for shard in index["shards"] for s in shard["sources"]]
        self.skipped: list[tuple[str, str]] = [tuple(skip) for skip in index.get("skipped", [])]
        shards = [self.read_shard(shard) for shard in index["shards"]]
        self.latents = torch.cat([shard[LATENTS_KEY] for shard in shards])
        names = [key.removeprefix(TEXT_PREFIX) for key in shards[0] if key.startswith(TEXT_PREFIX)]
        self.texts = {name: torch.cat([shard[TEXT_PREFIX + name] for shard in shards]) for name in names}
        names = [key.removeprefix(CONDITION_PREFIX) for key in shards[0] if key.startswith(CONDITION_PREFIX)]
        # per-clip conditions (an image-to-video teacher's first frame), handed out with the text states
        self.conditions = {name: torch.cat([shard[CONDITION_PREFIX + name] for shard in shards]) for name in names}
        if len(self.latents) != len(self.captions) or len(self.captions) != index["count"]:
            raise VideoCMError(f"{path} is inconsistent ({len(self.latents)} latents, {index['count']} in the index): "
                               "delete it and run `videocm encode` again")

    def read_shard(self, shard: dict) -> dict[str, torch.Tensor]:
        file = self.path / shard["file"]
        try:
            tensors = load_file(str(file))
        except (OSError, SafetensorError) as error:
            raise VideoCMError(f"latent cache shard {file} is missing or unreadable ({error}): delete {self.path} and "
                               "run `videocm encode` again") from error
        if LATENTS_KEY not in tensors or len(tensors[LATENTS_KEY]) != shard["count"]:
            raise VideoCMError(f"latent cache shard {file} does not match the index: delete {self.path} and run "
                               "`videocm encode` again")
        return tensors

    def __len__(self) -> int:
        return len(self.captions)

    def get(self, indices) -> tuple[torch.Tensor, dict[str, torch.Tensor], list[str]]:
        """A batch by position: latents ``(B, ...)``, text tensors ``(B, ...)`` by name, and the ``B`` captions.

        ``indices`` is an int, a sequence of ints or an integer tensor; an int gives a batch of one.
        """
        positions = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        inputs = {name: value[positions] for name, value in {**self.texts, **self.conditions}.items()}
        return self.latents[positions], inputs, [self.captions[i] for i in positions.tolist()]
