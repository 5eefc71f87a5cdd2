"""Cost of generation: network evaluations (NFE), wall time per phase, and peak memory."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from typing import Callable, Iterator

import torch

PHASES = ("text", "denoise", "decode")


class CostMeter:
    """Accumulates wall time per phase (``text``, ``denoise``, ``decode``, ...) and network rows.

    NFE per clip counts conditional and unconditional passes: a guided step that runs the network on a batch of
    ``2B`` rows for ``B`` clips costs 2 evaluations per clip.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.network_rows = 0
        self.clips = 0

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        try:
            yield
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.seconds[name] += time.perf_counter() - start

    def counted(self, denoiser: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
        """Wrap a denoiser so every call adds its batch rows to the count."""

        def wrapped(x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
            self.network_rows += int(x.shape[0])
            return denoiser(x, *args, **kwargs)

        return wrapped

    def summary(self) -> dict[str, float]:
        clips = max(self.clips, 1)
        result = {f"seconds_{name}": self.seconds.get(name, 0.0) / clips for name in PHASES}
        result["seconds_total"] = sum(self.seconds.values()) / clips
        result["nfe"] = self.network_rows / clips
        return result


class PeakMemory:
    """Peak memory while the block runs: CUDA's allocator peak on a GPU, else the process's resident set size
    sampled every 5 ms (``peak_mb``, and ``above_start_mb`` over what the process held when the block began)."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self.above_start_mb = 0.0
        self._stop = threading.Event()

    def __enter__(self) -> "PeakMemory":
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
            self._start = torch.cuda.memory_allocated()
            return self
        import psutil

        self._process = psutil.Process()
        self._start = self._process.memory_info().rss
        self._peak = self._start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._process.memory_info().rss)
            self._stop.wait(self.interval)

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, self._process.memory_info().rss)
        self.peak_mb = peak / 2**20
        self.above_start_mb = (peak - self._start) / 2**20
