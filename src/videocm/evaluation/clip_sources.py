"""What ``videocm eval --model`` can generate with.

A clip source (a model folder's pipeline or a stand-in) turns prompts and seeds into uint8 clips ``(T, H, W, 3)``, recording its cost in a
:class:`~videocm.evaluation.cost.CostMeter`; the same seed must give the same initial noise, so a student and its
teacher can be compared clip for clip. Model folders (teachers and students) generate through
:class:`pipeline.VideoPipeline`; the stand-ins ``real`` and ``real-blurred`` render real test-split clips and
serve tests and demos before any model exists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from ..data.moving_digits import Geometry, draw_clip, parse_caption
from ..errors import VideoCMError
from ..models.info import INFO_FILE, ModelInfo, is_model_folder
from ..pipeline import VideoPipeline
from .corruptions import blurred
from .cost import CostMeter


class ClipSource(Protocol):
    name: str

    def generate(
        self, prompts: list[str], seeds: list[int], steps: int, guidance: float | None, meter: CostMeter
    ) -> list[np.ndarray]: ...


class RealClipSource:
    """Stand-in clip source made from real clips: for each prompt a real test-split clip with that caption, drawn
    from the seed. With ``blur_at_one_step`` the clip is blurred with sigma ``blur_at_one_step / steps``, a crude
    imitation of a few-step sampler that sharpens with more steps. Costs no network evaluations."""

    def __init__(self, blur_at_one_step: float = 0.0, geometry: Geometry = Geometry()) -> None:
        self.blur_at_one_step = blur_at_one_step
        self.geometry = geometry
        self.name = "real-blurred" if blur_at_one_step else "real"

    def generate(self, prompts, seeds, steps, guidance, meter):
        clips = []
        with meter.phase("denoise"):
            for prompt, seed in zip(prompts, seeds):
                digit, colour, direction = parse_caption(prompt)
                clip = draw_clip(np.random.default_rng([seed]), "test", self.geometry, digit, colour, direction)
                video = clip.video
                if self.blur_at_one_step:
                    video = blurred(video, self.blur_at_one_step / steps)
                clips.append(video)
        meter.clips += len(prompts)
        return clips


STAND_INS: dict[str, Callable[[], ClipSource]] = {
    "real": RealClipSource,
    "real-blurred": lambda: RealClipSource(blur_at_one_step=1.5),
}


DECODER_SUFFIXES = ("+tiny", "+full")  # DIR+tiny: that model with its tiny decoder (a row of its own)


STOCK_TIMES = "+stock-times"


def split_decoder(spec: str, decoder: str = "full") -> tuple[str, str]:
    """``DIR+tiny`` -> (``DIR``, ``tiny``); ``DIR`` -> (``DIR``, ``decoder``)."""
    for suffix in DECODER_SUFFIXES:
        if spec.endswith(suffix):
            return spec[: -len(suffix)], suffix[1:]
    return spec, decoder


def load_clip_source(spec: str, decoder: str = "full") -> ClipSource:
    """A stand-in by name, or a teacher or student folder decoding with ``decoder`` (``full``, ``tiny`` or a
    decoder folder; ``DIR+tiny`` / ``DIR+full`` choose it for one model). A model decoding with anything but
    its VAE is named ``NAME+DECODER``; ``DIR+stock-times`` (last) samples a flow student at the times diffusers'
    stock ``FlowMatchLCMScheduler`` gives, named ``NAME+stock-times``."""
    stock = spec.endswith(STOCK_TIMES)  # DIR+stock-times: a flow student at diffusers' FlowMatchLCMScheduler times
    spec = spec[: -len(STOCK_TIMES)] if stock else spec
    spec, decoder = split_decoder(spec, decoder)
    if spec in STAND_INS:
        return STAND_INS[spec]()
    folder = Path(spec)
    if not folder.is_dir():
        raise VideoCMError(
            f"--model {spec}: no such folder; give a model folder (with {INFO_FILE}) or one of {', '.join(STAND_INS)}"
        )
    if not is_model_folder(folder):
        raise VideoCMError(f"--model {spec}: {folder} is not a videocm model folder (no {INFO_FILE})")
    info = ModelInfo.load(folder)
    if info.kind == "control":
        raise VideoCMError(f"--model {spec}: {folder} is a control branch; score it with `videocm eval-control "
                           f"--control-model {folder} --model TEACHER_OR_STUDENT@STEPS`")
    if info.kind not in ("teacher", "student"):
        raise VideoCMError(f"--model {spec}: {folder} holds a {info.kind} model, which does not generate clips")
    generator = VideoPipeline.from_folder(folder, decoder=decoder)
    generator.name = folder.name if decoder == "full" else f"{folder.name}+{Path(decoder).name}"
    if stock:
        generator.use_times("stock")
        generator.name += STOCK_TIMES
    return generator
