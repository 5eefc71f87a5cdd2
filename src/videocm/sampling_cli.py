"""``videocm sample``: prompts in, clips out (mp4, gif, npy or png), with any model folder."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .data.clip_folder import write_clip_folder
from .data.video_io import write_video
from .errors import VideoCMError

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "teacher-flow"
FORMATS = ("mp4", "gif", "npy", "png")


def write_clip(path: Path, clip: np.ndarray, fmt: str) -> Path:
    path = path.with_suffix(f".{fmt}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "npy":
        np.save(path, clip)
    elif fmt == "png":
        import imageio.v3 as iio

        iio.imwrite(path, np.concatenate(list(clip.repeat(4, 1).repeat(4, 2)), axis=1))  # frames side by side
    else:
        write_video(path, clip, scale=4 if clip.shape[1] < 128 else 1)  # small clips enlarged to be seen
    return path


def run_sample(args: argparse.Namespace) -> int:
    from .pipeline import VideoPipeline

    if args.steps is not None and args.steps < 1:
        raise VideoCMError(f"--steps must be at least 1, got {args.steps}")
    if args.batch_size < 1:
        raise VideoCMError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out)
    fmt = args.format
    if fmt is None:
        fmt = out.suffix.lstrip(".").lower() if args.prompt else "npy"
        if fmt not in FORMATS:
            raise VideoCMError(f"cannot tell the format of {out}: end it in .mp4, .gif, .npy or .png, or pass --format")
    if args.prompts:
        prompts_file = Path(args.prompts)
        if not prompts_file.is_file():
            raise VideoCMError(f"--prompts {prompts_file} does not exist")
        prompts = [line.strip() for line in prompts_file.read_text().splitlines() if line.strip()]
        if not prompts:
            raise VideoCMError(f"--prompts {prompts_file} holds no prompts")
    else:
        prompts = [args.prompt]
    timesteps = None
    if getattr(args, "timesteps", None):
        try:
            timesteps = [float(t) for t in args.timesteps.split(",") if t.strip()]
        except ValueError:
            raise VideoCMError(f"--timesteps {args.timesteps!r}: give comma-separated numbers, e.g. 999,759,499,259")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    from .models.folder import load_model

    shape = [getattr(args, key, None) for key in ("frames", "height", "width")]
    if any(v is not None for v in shape) and not all(v is not None for v in shape):
        raise VideoCMError("give --frames, --height and --width together (they size a diffusers pipeline's clips)")
    model = load_model(Path(args.model) if args.model else DEFAULT_MODEL, device,
                       video_shape=shape if all(v is not None for v in shape) else None,
                       max_sequence_length=getattr(args, "max_sequence_length", None))
    pipeline = VideoPipeline(model, device)
    controls = None
    if getattr(args, "control_model", None) or getattr(args, "control", None):
        if not (args.control_model and args.control):
            raise VideoCMError("give --control-model and --control together (the branch and the control video)")
        from .models.control import load_control, read_control

        branch, _ = load_control(args.control_model, device)
        pipeline.use_control(branch, args.control_scale)
        control = read_control(args.control, tuple(model.info["video_shape"]))
        controls = [control] * len(prompts)
    seeds = [args.seed + i for i in range(len(prompts))]
    clips: list[np.ndarray] = []
    for start in tqdm(range(0, len(prompts), args.batch_size), desc="sampling", disable=len(prompts) <= 1):
        clips += pipeline.generate(prompts[start:start + args.batch_size], seeds[start:start + args.batch_size],
                                   args.steps, args.guidance, negative_prompt=args.negative_prompt,
                                   progress=len(prompts) == 1, timesteps=timesteps,
                                   noise=getattr(args, "noise", "diffusers"),
                                   controls=None if controls is None else controls[start:start + args.batch_size])
    if args.prompt:
        print(f"wrote {write_clip(out, clips[0], fmt)}")
        return 0
    if fmt == "npy":
        write_clip_folder(out, clips, prompts)
    else:
        for i, clip in enumerate(clips):
            write_clip(out / f"{i:04d}", clip, fmt)
        shutil.copyfile(prompts_file, out / "prompts.txt")
    print(f"wrote {len(clips)} clips to {out}")
    return 0
