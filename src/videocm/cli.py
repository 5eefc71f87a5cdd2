"""The ``videocm`` command: argument parsing only; each command calls one function."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .errors import VideoCMError


def _add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="YAML file of settings; any --key value after it overrides a setting")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="videocm", description="Consistency distillation of video diffusion models (VideoLCM, DCM)."
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command")

    data = commands.add_parser("data", help="built-in MovingDigits-v1 data").add_subparsers(dest="data_command")
    export = data.add_parser("export", help="render MovingDigits clips as DIR/0000.npy ... and DIR/prompts.txt")
    export.add_argument("--split", choices=["train", "test"], default="test")
    export.add_argument("--n", type=int, default=240, help="number of clips (default 240)")
    export.add_argument("--seed", type=int, default=0)
    export.add_argument("--out", required=True, help="output folder")
    export.add_argument("--frames", type=int, default=8, help="frames per clip (default 8)")
    export.add_argument("--size", type=int, default=32, help="canvas side in pixels (default 32)")
    export.add_argument("--cover-captions", action="store_true",
                        help="clip i gets caption i %% 240, so 240 clips cover every caption once")

    judge = commands.add_parser("train-judge", help="train the MovingDigits judge used by `videocm eval`")
    _add_config_arguments(judge)

    evaluate = commands.add_parser(
        "eval", help="score clips on disk (--clips) or generate and score with models (--model)",
        description="Score a clip folder (--clips DIR) or generate clips for test captions with one or more "
        "--model (a model folder, or the stand-ins 'real' / 'real-blurred') and compare them in one table.",
    )
    source = evaluate.add_mutually_exclusive_group(required=True)
    source.add_argument("--clips", help="clip folder: 0000.npy ... + prompts.txt (as `videocm data export` writes)")
    source.add_argument("--model", action="append", help="model folder or stand-in; repeat to compare; DIR@4,50 gives this model its own step counts")
    evaluate.add_argument("--steps", default="1,2,4,8", help="comma-separated step counts (default 1,2,4,8)")
    evaluate.add_argument("--guidance", type=float, default=None, help="guidance scale (default: the model's)")
    evaluate.add_argument("--n", type=int, default=240, help="clips per (model, steps) (default 240)")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument("--teacher-model", help="model whose many-step clips PSNR/SSIM are measured against")
    evaluate.add_argument("--teacher-steps", type=int, default=50)
    evaluate.add_argument("--batch-size", type=int, default=16)
    evaluate.add_argument("--json", help="write the scores as JSON here")
    evaluate.add_argument("--report", help="write report.md, report.html, plot.png, samples.gif into this folder")
    evaluate.add_argument("--judge", help="judge folder (default: the shipped models/judge)")

    check = commands.add_parser("judge-check", help="the judge's verdict on real and corrupted test clips")
    check.add_argument("--n", type=int, default=480)
    check.add_argument("--judge", help="judge folder (default: the shipped models/judge)")
    check.add_argument("--json", help="write the rows as JSON here")

    train_vae = commands.add_parser("train-vae", help="train the video VAE on MovingDigits")
    _add_config_arguments(train_vae)
    train_teacher = commands.add_parser("train-teacher", help="train a latent video diffusion teacher on MovingDigits")
    _add_config_arguments(train_teacher)

    distill = commands.add_parser(
        "distill", help="distil a teacher folder into a few-step student (--method lcm or dcm)",
        description="Distil --teacher DIR into a consistency student written to --out DIR. Any setting of the "
                    "method's config is a --key value flag (e.g. --steps 2000 --guidance 4 --student lora); "
                    "--resume continues a run from its newest checkpoint.")
    distill.add_argument("--method", default="lcm", help="lcm (VideoLCM) or dcm (dual-expert consistency model)")
    _add_config_arguments(distill)

    captions = commands.add_parser("encode-captions",
                                   help="precompute MiniLM states of all MovingDigits captions (and \"\")")
    captions.add_argument("--out", required=True, help="output .safetensors file")
    captions.add_argument("--max-length", type=int, default=16)

    encode = commands.add_parser(
        "encode", help="precompute a teacher's VAE latents and text states of your videos (a latent cache)",
        description="Encode every usable video of --data (a folder of .mp4/.webm/.gif with captions.jsonl, "
                    "metadata.csv or a NAME.txt beside each video) with --teacher's VAE and text encoder into --out "
                    "(safetensors shards + index.json). Unusable videos are reported by name and skipped; a "
                    "killed run is finished by running the same command again.")
    encode.add_argument("--teacher", required=True, help="teacher: a diffusers pipeline folder or videocm model folder")
    encode.add_argument("--data", required=True, help="folder of videos with captions")
    encode.add_argument("--out", required=True, help="cache folder to write")
    encode.add_argument("--frames", type=int, help="frames per clip (default: the teacher's)")
    encode.add_argument("--height", type=int, help="clip height in pixels (default: the teacher's)")
    encode.add_argument("--width", type=int, help="clip width in pixels (default: the teacher's)")
    encode.add_argument("--max-sequence-length", type=int, help="text tokens (default: the pipeline's)")
    encode.add_argument("--frame-stride", type=int, default=0,
                        help="take every N-th frame from the start (default 0: spread the frames over the video)")
    encode.add_argument("--batch-size", type=int, default=4)
    encode.add_argument("--shard-size", type=int, default=64, help="clips per safetensors shard")
    encode.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")

    export = commands.add_parser(
        "export", help="hand a student back to diffusers (pipeline folder, model folder or LoRA, plus scheduler)",
        description="Write --model (a student folder) to --out for diffusers: 'pipeline' (students of a diffusers "
                    "pipeline teacher; DiffusionPipeline.from_pretrained(OUT) loads it), 'model' (the denoiser "
                    "folder and scheduler alone) or 'lora' (pytorch_lora_weights.safetensors for load_lora_weights).")
    export.add_argument("--model", required=True, help="student folder (from `videocm distill`)")
    export.add_argument("--out", required=True, help="new folder to write")
    export.add_argument("--format", choices=["pipeline", "model", "lora"],
                        help="default: pipeline for students of diffusers pipelines, else model")
    export.add_argument("--copy", action="store_true", help="copy the teacher's other parts instead of linking them")
    export.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                        help="weights' storage dtype")

    sample = commands.add_parser("sample", help="generate clips from prompts with a model folder")
    sample.add_argument("--model", help="model folder (default: the shipped flow-matching teacher)")
    prompt = sample.add_mutually_exclusive_group(required=True)
    prompt.add_argument("--prompt", help="one prompt")
    prompt.add_argument("--prompts", help="text file, one prompt a line")
    sample.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    sample.add_argument("--timesteps", help="students: comma-separated sampling times, descending, instead of "
                        "--steps (VP: 999,759,...; flow: sigmas 1.0,0.75,...)")
    sample.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    sample.add_argument("--negative-prompt", default="", help="unconditional input for guidance (default empty)")
    sample.add_argument("--seed", type=int, default=0, help="clip i uses seed S+i")
    sample.add_argument("--batch-size", type=int, default=16)
    sample.add_argument("--out", required=True, help="output file, or folder with --prompts")
    sample.add_argument("--format", choices=["mp4", "gif", "npy", "png"], help="default: from --out's suffix")
    sample.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    sample.add_argument("--noise", choices=["diffusers", "videocm"], default="diffusers",
                        help="students' re-noising: 'diffusers' (default) continues clip i's generator, seeded S+i, "
                        "as a diffusers pipeline does, so an exported student gives the same clip there; 'videocm' "
                        "uses one seed per step, as `videocm eval` does")
    sample.add_argument("--frames", type=int, help="diffusers pipeline teachers: frames (4k+1 for CogVideoX, Wan, "
                        "HunyuanVideo; default the pipeline's)")
    sample.add_argument("--height", type=int, help="diffusers pipeline teachers: height in pixels")
    sample.add_argument("--width", type=int, help="diffusers pipeline teachers: width in pixels")
    sample.add_argument("--max-sequence-length", type=int, help="diffusers pipeline teachers: text tokens")
    sample.add_argument("--control-model", help="control branch folder (videocm train-control); works with the "
                        "teacher it was trained on and, unchanged, with any student of that teacher")
    sample.add_argument("--control", help="control video: .npy uint8 (T, H, W, 1) silhouette, or a video/GIF of it")
    sample.add_argument("--control-scale", type=float, default=1.0,
                        help="multiplies the control residuals (default 1; 0 switches the control off)")

    bench = commands.add_parser(
        "bench", help="time sampling and distillation against their limits (NFE limit, cost floor); table + JSON",
        description="Sampling: end-to-end seconds per clip of the teacher (50 guided steps) and its students (1, 2, "
                    "4, 8 steps) at batch 1 and 16, with speed-ups measured in the same run beside the NFE limit. "
                    "Distillation: seconds per step of LCM and each DCM stage and the ratio to the step's cost "
                    "floor. Every setting is a --key value flag (e.g. --family vp --repeats 5 --distillation "
                    "false).")
    _add_config_arguments(bench)

    train_control = commands.add_parser(
        "train-control", help="train a ControlNet-style control branch on a teacher (MovingDigits silhouettes)",
        description="Train a control branch (a trainable copy of the early blocks of --teacher's network joined "
                    "through zero-initialised projections) on MovingDigits clips with their silhouettes as control. "
                    "Any setting of the config is a --key value flag (e.g. --steps 3000 --control-blocks 4); "
                    "--resume continues from the newest checkpoint.")
    _add_config_arguments(train_control)

    eval_control = commands.add_parser(
        "eval-control", help="control fidelity (per-frame IoU with the silhouette, caption colour) of models with a "
                             "control branch",
        description="Generate clips for held-out MovingDigits clips' captions and silhouettes with each --model "
                    "(DIR@STEPS,STEPS: a teacher or a student) and the same --control-model, and score how well they "
                    "follow the control.")
    eval_control.add_argument("--control-model", required=True, help="control branch folder")
    eval_control.add_argument("--model", action="append", required=True,
                              help="model folder with its step counts, e.g. models/lcm-flow@1,2,4 (repeatable)")
    eval_control.add_argument("--n", type=int, default=96, help="clips per row")
    eval_control.add_argument("--seed", type=int, default=0)
    eval_control.add_argument("--batch-size", type=int, default=16)
    eval_control.add_argument("--guidance", type=float, help="teachers' guidance (default: the model's)")
    eval_control.add_argument("--judge", help="judge folder (default: the shipped models/judge)")
    eval_control.add_argument("--baseline", action="store_true",
                              help="add a row for the first model at its first step count without the control")
    eval_control.add_argument("--json", help="write the results as JSON here")
    eval_control.add_argument("--report", help="write a report folder (report.md, samples.gif) here")

    demo = commands.add_parser("demo", help="the main job on the built-in default (what `make demo` runs)")
    _add_config_arguments(demo)
    return parser


def _run(argv: list[str]) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if args.command == "data" and args.data_command == "export":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if args.n < 1:
            raise VideoCMError(f"--n must be at least 1, got {args.n}")
        from .data import export_moving_digits

        export_moving_digits(Path(args.out), args.split, args.n, args.seed, args.frames, args.size,
                             args.cover_captions)
        print(f"wrote {args.n} {args.split} clips to {args.out}")
        return 0
    if args.command == "train-judge":
        from .config import load_config, write_config
        from .evaluation.judge import JudgeConfig, train_judge

        config = load_config(JudgeConfig, args.config, extra)
        write_config(config, config.out)
        info = train_judge(config)
        accuracy = ", ".join(f"{k} {v:.4f}" for k, v in info["test_accuracy"].items())
        print(f"judge saved to {config.out}; test-split accuracy: {accuracy}")
        return 0
    if args.command == "eval":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        from .evaluation.cli import run_eval

        return run_eval(args)
    if args.command == "judge-check":
        from .evaluation.evaluate import write_json
        from .evaluation.judge import Judge
        from .evaluation.verdicts import corruption_verdicts, verdict_table

        rows = corruption_verdicts(Judge.load(args.judge), args.n)
        print(verdict_table(rows))
        if args.json:
            write_json(rows, args.json)
        return 0
    if args.command in ("train-vae", "train-teacher"):
        from .config import load_config

        if args.command == "train-vae":
            from .distill.vae_training import VAETrainConfig, train_vae

            summary = train_vae(load_config(VAETrainConfig, args.config, extra))
        else:
            from .distill.teacher import TeacherConfig, train_teacher

            summary = train_teacher(load_config(TeacherConfig, args.config, extra))
        print(json.dumps(summary, indent=2))
        return 0
    if args.command == "bench":
        from .config import load_config
        from .evaluation.bench import BenchConfig, run_bench

        run_bench(load_config(BenchConfig, args.config, extra))
        return 0
    if args.command == "train-control":
        from .config import load_config
        from .distill.control import ControlConfig, train_control

        print(json.dumps(train_control(load_config(ControlConfig, args.config, extra)), indent=2))
        return 0
    if args.command == "eval-control":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        from .evaluation.control_cli import run_eval_control

        return run_eval_control(args)
    if args.command == "distill":
        from .config import load_config
        from .distill.dcm import DCMConfig, distill_dcm
        from .distill.lcm import LCMConfig, distill

        methods = {"lcm": (LCMConfig, distill), "dcm": (DCMConfig, distill_dcm)}
        if args.method not in methods:
            raise VideoCMError(f"--method {args.method!r} is not known: use one of {', '.join(methods)}")
        config_class, run = methods[args.method]
        config = load_config(config_class, args.config, extra + ["--method", args.method])
        print(json.dumps(run(config), indent=2))
        return 0
    if args.command == "encode-captions":
        from .data.moving_digits import all_captions, caption_for
        from .models.text_encoder import TextEncoder, save_prompt_cache

        prompts = [caption_for(d, c, m) for d, c, m in all_captions()] + [""]
        path = save_prompt_cache(TextEncoder(max_length=args.max_length), prompts, args.out)
        print(f"wrote states of {len(prompts)} prompts to {path}")
        return 0
    if args.command == "export":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        from .models.export import USAGE_FILE, export_student

        out = export_student(args.model, args.out, args.format, args.copy, args.dtype)
        print(f"exported {args.model} to {out}; see {out / USAGE_FILE}")
        return 0
    if args.command == "encode":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        import torch

        from .distill.batches import encode_video_folder
        from .distill.lcm import teacher_text, video_shape_override
        from .models.folder import load_model

        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        teacher = load_model(args.teacher, device, video_shape_override(args), args.max_sequence_length)
        encode_video_folder(teacher, teacher_text(teacher, device=device), Path(args.data), Path(args.out),
                            args.frame_stride, args.batch_size,
                            args.shard_size, device)
        return 0
    if args.command == "sample":
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        from .sampling_cli import run_sample

        return run_sample(args)
    if args.command == "demo":
        from .config import load_config
        from .demo import DemoConfig, run_demo

        run_demo(load_config(DemoConfig, args.config, extra))
        return 0
    parser.print_help()
    return 2 if args.command is None and not argv else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _run(argv)
    except VideoCMError as error:
        print(f"videocm: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("videocm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
