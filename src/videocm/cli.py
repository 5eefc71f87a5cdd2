"""The ``videocm`` command: argument parsing only; each command calls one function."""

from __future__ import annotations

import argparse
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
