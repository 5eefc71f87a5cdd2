"""``videocm sample``: prompts in, clips out (mp4, gif, npy or png), with any model folder."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from tqdm.auto import tqdm

from .config import Count, DeviceName, Natural, NonNegative, OutputPath, VideoShape
from .data.clip_folder import ClipWriter, write_clip_folder
from .errors import VideoCMError, read_user_text
from .locations import shipped_model

DEFAULT_MODEL = "teacher-flow"  # under --models-dir
FORMATS = ("mp4", "gif", "npy", "png")


@dataclass
class ControlInput:
    """A control branch and the silhouette video it follows (both or neither)."""

    control_model: str | None = None  # control branch folder (videocm train-control), for its teacher or any student of it
    control: str | None = None  # control video: .npy uint8 (T, H, W, 1) silhouette, or a video/GIF of it
    control_scale: NonNegative = 1.0  # multiplies the control residuals (0 switches the control off)


@dataclass
class SampleConfig:
    """``videocm sample``: generate clips from prompts with a model folder."""

    out: OutputPath  # output file, or folder with --prompts
    prompt: str | None = None  # one prompt (give this or --prompts)
    prompts: str | None = None  # text file, one prompt a line (give this or --prompt)
    model: str | None = None  # model folder (default: the shipped teacher-flow in --models-dir)
    models_dir: str | None = None  # folder of the shipped models (default: $VIDEOCM_MODELS, else ./models)
    steps: Count | None = None  # sampling steps (default: the model's)
    timesteps: list[float] = field(default_factory=list)  # students: descending times instead of --steps (VP 999,759,..; flow 1.0,0.75,..)
    guidance: NonNegative | None = None  # guidance scale (default: the model's)
    image: str | None = None  # image-to-video models: the first frame of every clip (.png/.jpg, .npy, or a video's first frame)
    guidance_2: NonNegative | None = None  # Wan 2.2 two-expert teachers: the low-noise transformer's guidance (WanPipeline's guidance_scale_2; default: --guidance)
    negative_prompt: str = ""  # unconditional input for guidance
    seed: Natural = 0  # clip i uses seed S+i
    batch_size: Count = 16  # clips generated together
    format: Literal["mp4", "gif", "npy", "png"] | None = None  # default: from --out's suffix (npy with --prompts)
    device: DeviceName | None = None  # cpu or cuda (default: cuda when available)
    times: Literal["own", "stock"] = "own"  # flow students: their own sampling times, or those of diffusers' stock FlowMatchLCMScheduler (what an export without videocm samples at)
    noise: Literal["diffusers", "videocm"] = "diffusers"  # students' re-noising: clip i's generator as in diffusers, or a seed per step as in eval
    shape: VideoShape = field(default_factory=VideoShape)  # diffusers pipeline teachers' clip shape
    control_input: ControlInput = field(default_factory=ControlInput)  # optional control branch
    decoder: str = "full"  # full (the model's VAE), tiny (a distilled tiny decoder: the model folder's tiny-decoder/, else the shipped one) or a decoder folder
    compile: bool = False  # torch.compile the networks and the decoder (pays off over many batches)
    overlap_writes: Literal["auto", "on", "off"] = "auto"  # write each batch's files on a thread while the next batch is generated (auto: when a core is spare beside torch's threads)
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)

    def __post_init__(self) -> None:
        if (self.prompt is None) == (self.prompts is None):
            raise VideoCMError("give exactly one of --prompt TEXT and --prompts FILE (one prompt a line)")
        if self.steps is not None and self.timesteps:
            raise VideoCMError(f"give --steps or --timesteps, not both (--timesteps {','.join(map(str, self.timesteps))} "
                               f"is {len(self.timesteps)} steps)")


def refuse_shape_flags(shape, folder: Path, does: str = "generates") -> None:
    """The shape flags (``--frames``/``--height``/``--width``/``--max-sequence-length``) size a diffusers pipeline
    teacher's clips; a videocm model folder has its own shape, so giving them there is refused, not ignored."""
    from .models.info import is_model_folder

    sized = [flag for flag, value in (("--frames", shape.frames), ("--height", shape.height), ("--width", shape.width),
                                      ("--max-sequence-length", shape.max_sequence_length)) if value is not None]
    if sized and is_model_folder(folder):  # (a folder that does not exist is refused by the load, by name)
        raise VideoCMError(f"{', '.join(sized)} size a diffusers pipeline teacher's clips; {folder} is a videocm "
                           f"model folder, which {does} the shape it was made for: leave {sized[0]} out")


def run_sample(config: SampleConfig) -> int:
    from .models.folder import load_model
    from .pipeline import VideoPipeline

    if config.steps is not None and config.steps < 1:
        raise VideoCMError(f"--steps must be at least 1, got {config.steps}")
    if config.batch_size < 1:
        raise VideoCMError(f"--batch-size must be at least 1, got {config.batch_size}")
    out = Path(config.out)
    fmt = config.format
    if fmt is None:
        fmt = out.suffix.lstrip(".").lower() if config.prompt is not None else "npy"
        if fmt not in FORMATS:
            raise VideoCMError(f"cannot tell the format of {out}: end it in .mp4, .gif, .npy or .png, or pass --format")
    if config.prompts is not None:
        prompts_file = Path(config.prompts)
        if not prompts_file.is_file():
            raise VideoCMError(f"--prompts {prompts_file} does not exist")
        prompts = [line.strip() for line in read_user_text(prompts_file, '--prompts').splitlines() if line.strip()]
        if not prompts:
            raise VideoCMError(f"--prompts {prompts_file} holds no prompts")
    else:
        prompts = [config.prompt]
    control = config.control_input
    if (control.control_model is None) != (control.control is None):
        raise VideoCMError("give --control-model and --control together (the branch and the control video)")
    video_shape = config.shape.override()
    model_folder = Path(config.model) if config.model else shipped_model(DEFAULT_MODEL, config.models_dir)
    refuse_shape_flags(config.shape, model_folder)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    model = load_model(model_folder, device, video_shape=video_shape,
                       max_sequence_length=config.shape.max_sequence_length)
    pipeline = VideoPipeline(model, device).use_decoder(config.decoder, config.models_dir)
    if config.times != "own":
        if config.timesteps:
            raise VideoCMError("give --times or --timesteps, not both")
        pipeline.use_times(config.times)
    if config.compile:
        pipeline.compile()
    controls = None
    if control.control_model is not None:
        from .models.control import load_control, read_control

        branch, _ = load_control(control.control_model, device)
        pipeline.use_control(branch, control.control_scale)
        controls = [read_control(control.control, tuple(model.info.video_shape))] * len(prompts)
    images = None
    if config.image is not None:
        from .data.video_io import read_first_frame

        images = [read_first_frame(config.image)] * len(prompts)
    seeds = [config.seed + i for i in range(len(prompts))]
    batch = config.batch_size
    overlap = {"auto": None, "on": True, "off": False}[config.overlap_writes]
    with ClipWriter(out, fmt, single=config.prompt is not None, overlap=overlap) as writer:
        for start in tqdm(range(0, len(prompts), batch), desc="sampling", disable=len(prompts) <= 1):
            # with overlap, the writer thread writes this batch's files while the next batch is generated
            writer.add(pipeline.generate(prompts[start:start + batch], seeds[start:start + batch],
                                         config.steps, config.guidance, negative_prompt=config.negative_prompt,
                                         progress=len(prompts) == 1, timesteps=config.timesteps or None,
                                         noise=config.noise, guidance_2=config.guidance_2,
                                         images=None if images is None else images[start:start + batch],
                                         controls=None if controls is None else controls[start:start + batch]))
    if config.prompt is not None:
        print(f"wrote {writer.written[0]}")
        return 0
    if fmt == "npy":
        write_clip_folder(out, writer.clips, prompts)
    else:
        # the prompts used, one a line, so that line i is clip i's (blank lines of --prompts are not clips)
        (out / "prompts.txt").write_text("".join(p + "\n" for p in prompts))
    print(f"wrote {len(writer.clips)} clips to {out}")
    return 0
