"""The ``videocm`` command: a table of commands, each a typed config class and the function that runs it.

Every command reads its config the same way (:mod:`videocm.config`): defaults, then ``--config FILE.yaml``, then
``--key value`` flags; ``videocm COMMAND --help`` lists each setting with its type, default and doc.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from .config import (CONFIG_FLAG, TRUE_WORDS, Count, DeviceName, Natural, OneOf, OutputPath, ReusedFolder,
                     VideoShape, config_help, flag_value, load_config, read_yaml, resolve)
from .errors import VideoCMError
from .runs import clear_outputs, run_values

PROG = "videocm"
DESCRIPTION = "Consistency distillation of video diffusion models (VideoLCM, DCM)."


# --- the configs of the commands that have no module of their own ---

@dataclass
class DataExportConfig:
    """``videocm data export``: MovingDigits-v1 clips as a clip folder."""

    out: OutputPath  # output folder: 0000.npy ... and prompts.txt
    split: Literal["train", "test"] = "test"  # which split's sprites
    n: Count = 240  # number of clips
    seed: Natural = 0  # clips are drawn from (seed, i)
    frames: Count = 8  # frames per clip
    size: Count = 32  # canvas side in pixels
    cover_captions: bool = False  # clip i gets caption i % 240, so 240 clips cover every caption once
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


@dataclass
class EncodeCaptionsConfig:
    """``videocm encode-captions``: MiniLM states of every MovingDigits caption and of ""."""

    out: OutputPath  # output .safetensors file
    max_length: Count = 16  # text tokens per caption
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


@dataclass
class EncodeConfig:
    """``videocm encode``: a teacher's VAE latents and text states of your videos (a latent cache)."""

    teacher: str  # teacher: a diffusers pipeline folder or videocm model folder
    data: str  # folder of videos with captions (captions.jsonl, metadata.csv or NAME.txt beside each video)
    out: ReusedFolder  # cache folder to write (safetensors shards + index.json); the same command again finishes a killed run
    frame_stride: Natural = 0  # take every N-th frame from the start (0: spread the frames over the video)
    batch_size: Count = 4  # videos encoded together
    shard_size: Count = 64  # clips per safetensors shard
    device: DeviceName | None = None  # cpu or cuda (default: cuda when available)
    shape: VideoShape = field(default_factory=VideoShape)  # clip shape (default: the teacher's)


@dataclass
class ExportConfig:
    """``videocm export``: a student handed back to diffusers."""

    model: str  # student folder (from `videocm distill`), or a sharded checkpoint RUN/checkpoints/step-N
    out: OutputPath  # new folder to write
    format: Literal["pipeline", "model", "lora", "lora-original"] | None = None  # default: pipeline for students of diffusers pipelines, else model
    copy: bool = False  # copy the teacher's other parts instead of linking them
    dtype: Literal["float32", "float16", "bfloat16"] = "float32"  # weights' storage dtype
    gathered: OutputPath | None = None  # an LCM checkpoint's student folder is written here (default: RUN/gathered-step-N)
    decoder: str | None = None  # also export a tiny decoder as tiny_decoder/: tiny (the model's or the shipped one) or a decoder folder
    scheduler: Literal["auto", "own", "stock"] = "own"  # flow LCM students: own = videocm's FlowConsistencyScheduler (the student's own times, needs videocm), stock = diffusers' FlowMatchLCMScheduler (no videocm needed; its times, docs/reports/stock-times), auto: stock where it can sample the student
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


@dataclass
class RecipesConfig:
    """``videocm recipes``: the distillation recipes, what each matches, and the source of each value."""

    name: str | None = None  # one recipe in full, with the source of every value (default: all, briefly)
    teacher: str | None = None  # instead: the recipe `distill --recipe auto` picks for this teacher folder


# --- run functions of those, and of commands whose library function needs a word around it ---

def run_recipes(config: RecipesConfig) -> int:
    from .recipes import recipe_for_teacher, recipe_named, recipes_table

    if config.teacher is not None:
        recipe = recipe_for_teacher(config.teacher)
        print(f"{config.teacher}: " + (f"recipe {recipe.name} ({recipe.title})" if recipe else
                                       "no recipe matches (the built-in defaults, tuned on MovingDigits, are used)"))
        return 0
    if config.name is None:
        print(recipes_table())
        return 0
    recipe = recipe_named(config.name)
    print(f"{recipe.name}: {recipe.title}")
    for key, value in recipe.teacher.items():
        print(f"  teacher {key}: {value.value}  ({value.source})")
    for method, values in recipe.methods.items():
        print(f"  {method}:")
        for key, value in values.items():
            print(f"    --{key.replace('_', '-')} {value.value}  ({value.source})")
    if recipe.notes:
        print(f"  note: {' '.join(recipe.notes.split())}")
    return 0


def run_data_export(config: DataExportConfig) -> int:
    from .data import export_moving_digits

    if config.n < 1:
        raise VideoCMError(f"--n must be at least 1, got {config.n}")
    export_moving_digits(Path(config.out), config.split, config.n, config.seed, config.frames, config.size,
                         config.cover_captions)
    print(f"wrote {config.n} {config.split} clips to {config.out}")
    return 0


def run_train_judge(config) -> int:
    from .config import write_config
    from .evaluation.judge import train_judge

    write_config(config, config.out)
    info = train_judge(config)
    accuracy = ", ".join(f"{k} {v:.4f}" for k, v in info["test_accuracy"].items())
    print(f"judge saved to {config.out}; test-split accuracy: {accuracy}")
    return 0


def run_encode_captions(config: EncodeCaptionsConfig) -> int:
    from .data.moving_digits import all_captions, caption_for
    from .models.text_encoder import TextEncoder, save_prompt_cache

    prompts = [caption_for(d, c, m) for d, c, m in all_captions()] + [""]
    path = save_prompt_cache(TextEncoder(max_length=config.max_length), prompts, config.out)
    print(f"wrote states of {len(prompts)} prompts to {path}")
    return 0


def run_encode(config: EncodeConfig) -> int:
    import torch

    from .distill.batches import encode_video_folder
    from .distill.core import teacher_text
    from .models.folder import load_model
    from .sampling_cli import refuse_shape_flags

    refuse_shape_flags(config.shape, Path(config.teacher), does="encodes at")
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    teacher = load_model(config.teacher, device, config.shape.override(), config.shape.max_sequence_length)
    encode_video_folder(teacher, teacher_text(teacher, device=device), Path(config.data), Path(config.out),
                        config.frame_stride, config.batch_size, config.shard_size, device)
    return 0


def run_export(config: ExportConfig) -> int:
    from .models.export import USAGE_FILE

    out = export_model(Path(config.model), Path(config.out), config.format, config.copy, config.dtype,
                       config.decoder, config.scheduler, config.gathered)
    print(f"exported {config.model} to {out}; see {out / USAGE_FILE}")
    return 0


def export_model(model: Path, out: Path, fmt: str | None = None, copy: bool = False, dtype: str = "float32",
                 decoder: str | None = None, scheduler: str = "own", gathered: str | None = None) -> Path:
    """``videocm export`` (and ``videocm.export``): a student folder, or an LCM run's complete checkpoint gathered
    into one first; an unfinished run's folder is refused naming its newest checkpoint."""
    from .config import is_run_folder
    from .distill.checkpoints import latest_checkpoint
    from .models.export import export_student
    from .models.info import is_model_folder
    from .training.gather import gather_checkpoint, is_checkpoint

    if is_checkpoint(model):  # RUN/checkpoints/step-N (sharded or not): gathered into a student folder first
        folder = Path(gathered or model.parent.parent / f"gathered-{model.name}")
        gather_checkpoint(model, folder)
        print(f"gathered {model} into {folder}")
        model = folder
    elif is_run_folder(model) and not is_model_folder(model):
        method = run_values(model).get("method", "lcm")
        if method != "lcm":
            raise VideoCMError(f"{model} is a --method {method} run that has not finished: its student folder is "
                               f"written when the run ends; wait for it, or continue it with the same command and "
                               f"--resume if it stopped")
        newest = latest_checkpoint(model)
        fix = (f"export its newest checkpoint with --model {newest}, or wait for the run to end" if newest else
               "it has no complete checkpoint yet either: wait for one (--checkpoint-every) or for the run to end")
        raise VideoCMError(f"{model} is a run that has not finished (no student written there yet); {fix}")
    return export_student(model, out, fmt, copy, dtype, decoder, scheduler)


# --- the table ---

@dataclass(frozen=True)
class Command:
    """A command's config class and run function, as ``"module:name"`` under ``videocm`` (imported only when the
    command runs: the training modules take seconds to import, which ``videocm --help`` should not pay)."""

    config: str
    run: str  # called with the config; returns the exit code, or with print_result a summary printed as JSON
    help: str  # one line, in ``videocm --help``
    description: str = ""  # more, in ``videocm COMMAND --help``
    print_result: bool = False
    monitored: bool = False  # a training run: its periodic samples are scored by the judge's monitor
    starts_from: str = ""  # "module:function": values under the YAML file and flags (distill: the recipe's)
    writes: bool = True  # False: the command writes nothing, so its config's output paths are not checked


COMMANDS: dict[str, Command] = {
    "data export": Command(
        "cli:DataExportConfig", "cli:run_data_export",
        "render MovingDigits clips as DIR/0000.npy ... and DIR/prompts.txt"),
    "train-judge": Command(
        "evaluation.judge:JudgeConfig", "cli:run_train_judge",
        "train the MovingDigits judge used by `videocm eval` (one ships inside the package)"),
    "eval": Command(
        "evaluation.cli:EvalConfig", "evaluation.cli:run_eval",
        "score clips on disk (--clips) or generate and score with models (--model)",
        "Score a clip folder (--clips DIR) or generate clips for test captions with one or more --model (a model "
        "folder, or the stand-ins 'real' / 'real-blurred') and compare them in one table."),
    "compare": Command(
        "evaluation.cli:CompareConfig", "evaluation.cli:run_compare",
        "paired bootstrap comparison of two rows saved by `videocm eval --clip-scores`",
        "Compare two (model, steps) rows scored on the same captions and seeds (the same --n and --seed), each given "
        "as FILE.npz#model@steps: the difference of every score with its 95% paired bootstrap interval over clips, "
        "and whether the first row is better, worse or tied (the interval holds 0)."),
    "curves": Command(
        "evaluation.cli:CurvesConfig", "evaluation.cli:run_curves",
        "plot training runs' periodic sample scores (fidelity, Fréchet) against updates",
        "Read RUN/samples/scores.jsonl of each --run (LABEL=DIR to name it) and plot fidelity and Fréchet distance "
        "against optimiser updates into --out, with rows of `videocm eval --json` files as dashed reference lines "
        "(--reference LABEL=EVAL.json#model@steps)."),
    "plan": Command(
        "training.plan:PlanConfig", "training.plan:run_plan",
        "memory and time per GPU of a distillation run in each parallel mode, before it runs",
        "Build --teacher's denoiser on the meta device, count one clip's FLOPs and saved activations, and print per "
        "GPU and per mode (DDP, FSDP, FSDP + context parallel; with and without gradient checkpointing) the memory "
        "of weights, gradients, optimiser, EMA target, teacher and activations, the largest batch that fits and "
        "the time per step; then the fastest mode that fits."),
    "judge-check": Command(
        "evaluation.verdicts:JudgeCheckConfig", "evaluation.verdicts:run_judge_check",
        "the judge's verdict on real and corrupted test clips"),
    "train-vae": Command(
        "training.vae:VAETrainConfig", "training.vae:train_vae",
        "train the video VAE on MovingDigits", print_result=True, monitored=True),
    "distill-decoder": Command(
        "training.decoder:DecoderConfig", "training.decoder:distill_decoder",
        "distil a tiny decoder from a VAE's decoder (sample, eval, bench and serve take it with --decoder)",
        "Train a small convolutional decoder (diffusers' AutoencoderTiny, frame by frame) to reproduce --vae's (or "
        "--teacher's) decoder on latents of MovingDigits clips or of a latent cache (--cache), then measure its PSNR "
        "against the full decoder, the judge's scores and its decode time. --out is a decoder folder: --decoder DIR "
        "loads it; a model folder's tiny-decoder/ or the shipped one is --decoder tiny.",
        print_result=True, monitored=True),
    "train-teacher": Command(
        "training.teacher:TeacherConfig", "training.teacher:train_teacher",
        "train a latent video diffusion teacher on MovingDigits", print_result=True, monitored=True),
    "distill": Command(
        "distill.methods:DISTILL_CONFIG", "distill.methods:run_distill",
        "distil a teacher folder into a few-step student (--method lcm, dcm or dmd)",
        "Distil --teacher DIR into a few-step student written to --out DIR: consistency distillation (lcm, dcm) or "
        "distribution matching (dmd; --dmd-weight W adds its term to lcm and dcm). Any setting of the method's "
        "config is a --key value flag (e.g. --steps 2000 --guidance 4 --student lora); --data prompts:FILE "
        "distils from a prompt list alone; --resume continues a run from its newest checkpoint. The run starts from "
        "the recipe for the teacher's layout (--recipe auto; printed with the source of each value; videocm "
        "recipes lists them); the YAML file and flags override it.",
        print_result=True, monitored=True, starts_from="recipes:recipe_layer"),
    "check": Command(
        "distill.methods:DISTILL_CONFIG", "training.preflight:run_check",
        "check a distillation run's teacher, data and settings before it starts (the distill flags)",
        "With the same flags as videocm distill (its recipe included): the teacher's own samples (finite, not flat, "
        "not still, not blown out), the usable clips of a video folder, a VAE round trip of a few of them (PSNR), "
        "the guidance and scheduler shift against the teacher's, the planned memory against the device and the "
        "time per step. One line each; a failure is a one-line refusal with the fix. distill runs it first for a "
        "teacher a real layout's recipe matched (--preflight auto|true|false).",
        starts_from="recipes:recipe_layer", writes=False),
    "recipes": Command(
        "cli:RecipesConfig", "cli:run_recipes",
        "the distillation recipes per teacher layout and method, with the source of every value"),
    "encode-captions": Command(
        "cli:EncodeCaptionsConfig", "cli:run_encode_captions",
        "precompute MiniLM states of all MovingDigits captions (and \"\")"),
    "encode": Command(
        "cli:EncodeConfig", "cli:run_encode",
        "precompute a teacher's VAE latents and text states of your videos (a latent cache)",
        "Encode every usable video of --data (a folder of .mp4/.webm/.gif with captions.jsonl, metadata.csv or a "
        "NAME.txt beside each video) with --teacher's VAE and text encoder into --out (safetensors shards + "
        "index.json). Unusable videos are reported by name and skipped; a killed run is finished by running the "
        "same command again."),
    "export": Command(
        "cli:ExportConfig", "cli:run_export",
        "hand a student back to diffusers (pipeline folder, model folder or LoRA, plus scheduler)",
        "Write --model (a student folder) to --out for diffusers: 'pipeline' (students of a diffusers pipeline "
        "teacher; DiffusionPipeline.from_pretrained(OUT) loads it), 'model' (the denoiser folder and scheduler "
        "alone) or 'lora' (pytorch_lora_weights.safetensors for load_lora_weights)."),
    "sample": Command(
        "sampling_cli:SampleConfig", "sampling_cli:run_sample",
        "generate clips from prompts with a model folder",
        "Without --model, the shipped flow-matching teacher (teacher-flow) in --models-dir, $VIDEOCM_MODELS or "
        "./models. Students' --noise diffusers continues clip i's generator, seeded S+i, as a diffusers pipeline "
        "does, so an exported student gives the same clip there."),
    "bench": Command(
        "evaluation.bench:BenchConfig", "evaluation.bench:run_bench",
        "time sampling and distillation against their limits (NFE limit, cost floor); table + JSON",
        "Sampling: end-to-end seconds per clip of the teacher (50 guided steps) and its students (1, 2, 4, 8 steps) "
        "at batch 1 and 16, with speed-ups measured in the same run beside the NFE limit. Distillation: seconds per "
        "step of LCM and each DCM stage and the ratio to the step's cost floor. Every setting is a --key value flag "
        "(e.g. --family vp --repeats 5 --distillation false)."),
    "train-control": Command(
        "training.control:ControlConfig", "training.control:train_control",
        "train a ControlNet-style control branch on a teacher (MovingDigits silhouettes)",
        "Train a control branch (a trainable copy of the early blocks of --teacher's network joined through "
        "zero-initialised projections) on MovingDigits clips with their silhouettes as control. Any setting of the "
        "config is a --key value flag (e.g. --steps 3000 --control-blocks 4); --resume continues from the newest "
        "checkpoint.", print_result=True, monitored=True),
    "eval-control": Command(
        "evaluation.control_cli:EvalControlConfig", "evaluation.control_cli:run_eval_control",
        "control fidelity (per-frame IoU with the silhouette, caption colour) of models with a control branch",
        "Generate clips for held-out MovingDigits clips' captions and silhouettes with each --model (DIR@STEPS,STEPS: "
        "a teacher or a student) and the same --control-model, and score how well they follow the control."),
    "serve": Command(
        "serve:ServeConfig", "serve:run_serve",
        "a web page for trying models: teacher and student side by side (Gradio, offline)",
        "Start a Gradio page on --host:--port with the shipped teacher and students (or each --model DIR): a "
        "prompt, the teacher's and the student's steps, guidance and seed, the student's decoder, an optional "
        "control video; both clips play side by side with their seconds, network evaluations and the speed-up. "
        "Models stay loaded between requests."),
    "demo": Command(
        "demo:DemoConfig", "demo:run_demo", "the main job on the built-in default (what `make demo` runs)"),
}
GROUPS = {"data": "built-in MovingDigits-v1 data"}  # two-word commands: "data export"


def _config_class(command: Command, tokens: list[str], config_path: str | None, run: dict | None = None) -> type:
    """The command's config class (of a :class:`OneOf`, the one its setting names)."""
    config = resolve(command.config)
    if isinstance(config, OneOf):
        return config.choose(tokens, read_yaml(config_path) if config_path is not None else None, run)
    return config


def _resumed_run(tokens: list[str], config_path: str | None) -> dict | None:
    """With ``--resume`` and an ``--out`` that holds a run: the run's own resolved settings, which the command
    starts from (a flag given anew is then compared with them: :func:`videocm.runs.resume_changes`)."""
    values = read_yaml(config_path) if config_path is not None else {}
    def given(name: str) -> bool:
        return f"--{name}" in tokens or str(flag_value(tokens, name) or values.get(name, "")).lower() in TRUE_WORDS

    out = flag_value(tokens, "out") or values.get("out")
    # with --overwrite too, the config's own check refuses the pair
    return run_values(out) if given("resume") and not given("overwrite") and out else None


def _wrap(text: str) -> str:
    return textwrap.fill(text, min(120, shutil.get_terminal_size((100, 20)).columns), break_on_hyphens=False)


def overview() -> str:
    """``videocm --help``."""
    width = max(len(name) for name in COMMANDS) + 4
    lines = [f"usage: {PROG} [--version] COMMAND [--{CONFIG_FLAG} FILE.yaml] [--key value ...]", "", DESCRIPTION, "",
             "commands:"]
    lines += [f"  {name.ljust(width)}{command.help}" for name, command in COMMANDS.items()]
    lines += ["", f"`{PROG} COMMAND --help` lists a command's settings: each is a --key value flag and a key of "
              f"--{CONFIG_FLAG} FILE.yaml."]
    return "\n".join(lines)


def group_help(group: str) -> str:
    names = [name for name in COMMANDS if name.startswith(group + " ")]
    width = max(len(name) for name in names) + 4
    return "\n".join([f"usage: {PROG} {group} {{{','.join(n.split(' ', 1)[1] for n in names)}}} ...", "",
                      GROUPS[group], ""] + [f"  {n.ljust(width)}{COMMANDS[n].help}" for n in names])


def command_help(name: str, command: Command, config: type) -> str:
    """``videocm COMMAND --help``: what it does and every setting of ``config``."""
    lines = [f"usage: {PROG} {name} [--{CONFIG_FLAG} FILE.yaml] [--key value ...]", "", _wrap(command.help)]
    if command.description:
        lines += ["", _wrap(command.description)]
    family = resolve(command.config)
    if isinstance(family, OneOf):
        flag, current = f"--{family.setting.replace('_', '-')}", getattr(config, family.setting)
        others = "|".join(c for c in family.choices() if c != current)
        lines += ["", _wrap(f"These are the settings of {flag} {current}; `{PROG} {name} {flag} {others} --help` "
                            f"lists the others'.")]
    return "\n".join(lines + ["", config_help(config)])


def _split_command(argv: list[str]) -> tuple[str, list[str]]:
    """(command name, its tokens)."""
    first = argv[0]
    if first in GROUPS:
        if f"{first} {argv[1]}" in COMMANDS:
            return f"{first} {argv[1]}", argv[2:]
        known = ", ".join(n.split(" ", 1)[1] for n in COMMANDS if n.startswith(first + " "))
        raise VideoCMError(f"unknown command '{first} {argv[1]}': use one of {known}")
    if first not in COMMANDS:
        raise VideoCMError(f"unknown command {first!r}: use one of {', '.join(COMMANDS)} (or --help)")
    return first, argv[1:]


def _without_config_flag(tokens: list[str]) -> tuple[str | None, list[str]]:
    """(the ``--config`` file, the other tokens)."""
    path, rest, i = None, [], 0
    while i < len(tokens):
        if tokens[i] == f"--{CONFIG_FLAG}":
            if i + 1 >= len(tokens) or tokens[i + 1].startswith("--"):
                raise VideoCMError(f"--{CONFIG_FLAG} needs a value: --{CONFIG_FLAG} FILE.yaml")
            path, i = tokens[i + 1], i + 2
        elif tokens[i].startswith(f"--{CONFIG_FLAG}="):
            path, i = tokens[i].split("=", 1)[1], i + 1
        else:
            rest.append(tokens[i])
            i += 1
    return path, rest


def parse_command(argv: list[str]) -> tuple[Command, Any, Any]:
    """``["sample", "--prompt", "a red 3", ...]`` -> (its table entry, run function, config): defaults, then
    ``--config FILE.yaml``, then the flags."""
    name, tokens = _split_command(argv)
    command = COMMANDS[name]
    config_path, tokens = _without_config_flag(tokens)
    resumed = _resumed_run(tokens, config_path) if command.monitored else None
    config_class = _config_class(command, tokens, config_path, resumed)
    if resumed is not None:  # a run written before a setting existed keeps what it used then
        resumed = {**getattr(config_class, "OLDER_RUNS", {}), **resumed}
    base = resumed
    if command.starts_from and resumed is None:  # a resumed run keeps what it started from
        base = resolve(command.starts_from)(config_class, tokens, read_yaml(config_path) if config_path else {})
    return command, resolve(command.run), load_config(config_class, config_path, tokens, base=base,
                                                      writes=command.writes)


def _run(argv: list[str]) -> int:
    if not argv:
        print(overview())
        return 2
    if argv[0] == "--version":
        from . import __version__

        print(__version__)
        return 0
    if argv[0] in ("-h", "--help"):
        print(overview())
        return 0
    if argv[0] in GROUPS and (len(argv) == 1 or argv[1] in ("-h", "--help")):
        print(group_help(argv[0]))
        return 1 if len(argv) == 1 else 0
    if "-h" in argv or "--help" in argv:
        name, tokens = _split_command(argv)
        config_path, tokens = _without_config_flag([t for t in tokens if t not in ("-h", "--help")])
        print(command_help(name, COMMANDS[name], _config_class(COMMANDS[name], tokens, config_path)))
        return 0
    from .models.lazy_imports import defer_package_inits

    defer_package_inits()  # a model folder imports its own diffusers classes, not every class of their package
    command, run, config = parse_command(argv)
    if command.writes and os.environ.get("RANK", "0") == "0":  # one process clears what --overwrite replaces
        for cleared in clear_outputs(config):
            print(f"{PROG}: --overwrite: deleted {cleared}", file=sys.stderr)
    if command.monitored:  # a training run: the judge scores its periodic samples
        from .evaluation.monitor import JudgeMonitor

        result = run(config, monitor=JudgeMonitor())
    else:
        result = run(config)
    if command.print_result:
        print(json.dumps(result, indent=2))
        return 0
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return _run(argv)
    except VideoCMError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
