"""``videocm bench``: what sampling and distillation cost, against what they could cost, measured in one run.

Sampling (per model, step count and batch size): end-to-end seconds per clip, split into text encoding, denoising,
VAE decoding and writing the files (mp4, as ``videocm sample`` writes them), with the text cache emptied before
each repeat so every repeat encodes its prompts (the empty negative prompt stays encoded, which favours the
teacher); network evaluations (NFE) per clip; peak memory. Each student row
carries its speed-up over the guided teacher measured in the same run, end to end and for the denoising loop alone,
beside the NFE limit (teacher NFE / student NFE): the speed-up the step count alone would give. The median of
``repeats`` runs after one warm-up run is reported.

Distillation (LCM, sCM, rCM and each DCM stage): seconds per optimiser step of the real trainer (after warm-up steps) and
peak memory (on the CPU the process's resident set, whole and above what it held when the run began: ``run
MB``), and the ratio of one step to its cost floor measured on the same batch: one student forward and
backward, one guided teacher forward (conditional and unconditional in one batch) and one target forward (sCM: the
student's forward-mode JVP in its place, with its cost in plain forwards; rCM: plus the distribution-matching
term's fake-score updates and passes). A ratio near 1 means the step does nothing beyond the network passes it
cannot avoid.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from ..config import Count, DeviceName, Natural, OutputPath
from ..errors import VideoCMError
from .cost import CostMeter, PeakMemory

OVERLAP = {"auto": None, "on": True, "off": False}
FAMILY_MODELS = {  # shipped teacher and students of each family, folder names under --models-dir
    "flow": ("teacher-flow", ["lcm-flow", "dcm-flow"]),
    "vp": ("teacher-vp", ["lcm-vp", "dcm-vp"]),
}


@dataclass
class BenchConfig:
    """``videocm bench``: every field is a ``--key value`` flag."""

    family: str = "flow"  # which shipped teacher and students ("flow" or "vp"); --teacher/--students override
    models_dir: str | None = None  # folder of the shipped models (default: $VIDEOCM_MODELS, else ./models)
    teacher: str | None = None  # teacher folder (default: the family's shipped teacher)
    students: list[str] = field(default_factory=list)  # student folders (default: the family's shipped LCM and DCM)
    batch_sizes: list[Count] = field(default_factory=lambda: [1, 16])  # sampling batch sizes
    teacher_steps: Count = 50  # the teacher's (guided) sampling steps
    student_steps: list[Count] = field(default_factory=lambda: [1, 2, 4, 8])  # students' step counts
    repeats: Count = 3  # timed runs per row after one warm-up run (the median is reported)
    sampling: bool = True  # time sampling
    distillation: bool = True  # time distillation steps (LCM and both DCM stages)
    distill_batch_size: Count = 16  # distillation batch
    distill_warmup_steps: Natural = 3  # distillation steps before the timed ones
    distill_timed_steps: Count = 10  # distillation steps timed
    floor_repeats: Count = 5  # timed repeats of each cost-floor pass
    disc_every: Count = 2  # DCM detail stage: discriminator heads on every n-th teacher block (as distill's default)
    device: DeviceName | None = None  # cpu or cuda (default: cuda when available)
    threads: Natural = 0  # torch threads (0: torch's default)
    compile: bool = False  # torch.compile the networks and the VAE decoder (the warm-up run pays the compilation)
    decoders: list[str] = field(default_factory=lambda: ["full"])  # what the students decode with, each its own rows: full (their VAE), tiny, or a decoder folder (the teacher always uses its VAE)
    batches: Count = 1  # batches per timed run, written as `videocm sample` writes them
    overlap_writes: Literal["auto", "on", "off"] = "auto"  # as sample's: write on a thread while the next batch is generated (auto: when a core is spare)
    quality_clips: Natural = 0  # with a decoder besides full: score each student at --quality-steps with every decoder on this many test clips (paired intervals)
    quality_steps: Count = 4  # the students' step count of the decoder quality check
    out: OutputPath = "benchmarks/results/bench.json"  # JSON file of the results
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


def machine() -> dict:
    """What the figures were measured on."""
    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "processor": platform.processor() or platform.machine()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _median(values: list[float]) -> float:
    return float(statistics.median(values))


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- sampling ---

def time_sampling(pipeline, prompts: list[str], seeds: list[int], steps: int, guidance: float | None,
                  repeats: int, folder: Path, batches: int = 1, overlap: bool | None = None) -> dict:
    """Median end-to-end seconds per clip (and per phase) over ``repeats`` runs after a warm-up run. A run
    generates ``prompts`` in ``batches`` equal batches (each its own prompts, so none is encoded twice) and writes their mp4 files as ``videocm sample`` does (with
    ``overlap``, on a thread while the next batch is generated; None: when a core is spare); ``seconds_write``
    is the time the writing added (the run's wall time beyond text, denoising and decoding)."""
    from ..data.clip_folder import ClipWriter

    runs = []
    for repeat in range(repeats + 1):
        if hasattr(pipeline.text, "clear_cache"):
            pipeline.text.clear_cache()  # every repeat encodes its prompts, as a fresh request would;
            pipeline.text.encode([""])  # the negative prompt stays encoded, as a serving pipeline keeps it
        meter = CostMeter()
        with PeakMemory() as memory:
            _sync()
            began = time.perf_counter()
            with ClipWriter(folder, "mp4", single=False, overlap=overlap) as writer:
                for start in range(0, len(prompts), len(prompts) // batches):
                    part = slice(start, start + len(prompts) // batches)
                    writer.add(pipeline.generate(prompts[part], seeds[part], steps, guidance, meter))
            total = time.perf_counter() - began
        if repeat == 0:
            warmup = total  # allocator, lazy imports, first-call kernels (and torch.compile's compilation)
            continue
        n = len(prompts)
        phases = {f"seconds_{k}": v / n for k, v in meter.seconds.items()}
        phases["seconds_write"] = max(0.0, total / n - sum(phases.values()))
        runs.append({"seconds_per_clip": total / n, "nfe": meter.network_rows / n, **phases,
                     "peak_memory_mb": memory.peak_mb, "memory_above_start_mb": memory.above_start_mb})
    keys = runs[0].keys()
    return {**{k: _median([r[k] for r in runs]) for k in keys}, "warmup_seconds": warmup}


def bench_sampling(config: BenchConfig, device: str, progress=print) -> list[dict]:
    from ..evaluation.evaluate import eval_prompts

    teacher_path, student_paths = _models(config)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as scratch:
        for batch in config.batch_sizes:
            prompts, seeds = eval_prompts(batch * config.batches)
            teacher = _pipeline(teacher_path, device, config.compile)
            row = {"model": teacher.name, "kind": "teacher", "steps": config.teacher_steps, "batch": batch,
                   "guidance": teacher.model.default_guidance, "decoder": "full",
                   **time_sampling(teacher, prompts, seeds, config.teacher_steps, None, config.repeats,
                                   Path(scratch), config.batches, OVERLAP[config.overlap_writes])}
            rows.append(row)
            progress(_sampling_line(row))
            base = row
            del teacher
            for path, decoder in ((path, decoder) for path in student_paths for decoder in config.decoders):
                student = _pipeline(path, device, config.compile, decoder, config.models_dir)
                for steps in config.student_steps:
                    measured = time_sampling(student, prompts, seeds, steps, None, config.repeats, Path(scratch),
                                             config.batches, OVERLAP[config.overlap_writes])
                    row = {"model": student.name, "kind": "student", "steps": steps, "batch": batch,
                           "decoder": decoder, **measured}
                    row["speedup"] = base["seconds_per_clip"] / row["seconds_per_clip"]
                    row["denoise_speedup"] = base["seconds_denoise"] / row["seconds_denoise"]
                    row["nfe_limit"] = base["nfe"] / row["nfe"]
                    row["denoise_share_of_limit"] = row["denoise_speedup"] / row["nfe_limit"]
                    rows.append(row)
                    progress(_sampling_line(row))
                del student
    return rows


def _pipeline(path: str, device: str, compile_networks: bool, decoder: str = "full", models_dir: str | None = None):
    from ..pipeline import VideoPipeline

    pipeline = VideoPipeline.from_folder(path, device, decoder, models_dir)
    return pipeline.compile() if compile_networks else pipeline


def _sampling_line(row: dict) -> str:
    extra = (f"  speed-up {row['speedup']:.1f}x (denoise {row['denoise_speedup']:.1f}x, NFE limit "
             f"{row['nfe_limit']:.1f}x)" if "speedup" in row else "")
    decoder = "" if row.get("decoder", "full") == "full" else f" ({row['decoder']} decoder)"
    return (f"{row['model']:>14}{decoder} {row['steps']:>3} steps batch {row['batch']:>2}: "
            f"{row['seconds_per_clip']:.4f} s/clip{extra}")


def bench_decoder_quality(config: BenchConfig) -> list[dict]:
    """Each student at ``quality_steps`` with every decoder of ``decoders``, scored on ``quality_clips`` test
    clips with the same captions and seeds: the rows and the paired comparisons of each decoder with the full one."""
    from .evaluate import evaluate_models
    from .judge import Judge

    _, student_paths = _models(config)
    judge, found = Judge.load(), []
    for path in student_paths:
        specs = [path if decoder == "full" else f"{path}+{decoder}" for decoder in config.decoders]
        if "full" not in config.decoders:
            specs.insert(0, path)
        result, _, _ = evaluate_models(specs, [config.quality_steps], judge, n=config.quality_clips,
                                       batch_size=16, decoder="full")
        found.append({"student": path, "rows": result["rows"], "comparisons": result["comparisons"]})
    return found


def _models(config: BenchConfig) -> tuple[str, list[str]]:
    if config.family not in FAMILY_MODELS:
        raise VideoCMError(f"--family {config.family!r}: use one of {', '.join(FAMILY_MODELS)}")
    from ..locations import shipped_model

    teacher, students = FAMILY_MODELS[config.family]
    return (config.teacher or str(shipped_model(teacher, config.models_dir, "--teacher")),
            list(config.students) or [str(shipped_model(name, config.models_dir, "--students")) for name in students])


# --- distillation ---

def _timed(function, repeats: int) -> float:
    function()  # warm-up
    times = []
    for _ in range(repeats):
        _sync()
        began = time.perf_counter()
        function()
        _sync()
        times.append(time.perf_counter() - began)
    return _median(times)


def cost_floor(task, repeats: int) -> dict:
    """Seconds of the three passes a consistency distillation step cannot avoid, on one batch of the task."""
    from ..diffusion.sampling import guided_output

    distillation = task.teacher_context
    device = next(task.model.parameters()).device
    n = task.config.batch_size
    rng = np.random.default_rng(0)
    latents, text, _ = distillation.batches.draw(n, rng, (0, 1), device)
    grid = distillation.grid
    timestep = torch.full((n,), float(distillation.schedule.model_timestep(grid[len(grid) // 2])), device=device)
    x = torch.randn_like(latents)
    extra = {"guidance": torch.full((n,), 4.0, device=device)} if task.guidance_range() else {}
    w = distillation.guidance_weights(n, rng).to(device)
    uncond = {k: v.expand(n, *v.shape[1:]) for k, v in distillation.negative.items()}
    model = task.model

    def student_pass():
        output = model(x, timestep, **text, **extra)
        output.float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def teacher_pass():
        with torch.inference_mode():
            guided_output(distillation.teacher, x, timestep, text, uncond, w)

    def target_pass():
        with torch.no_grad():
            task.target_network(model)(x, timestep, **text, **extra)

    if getattr(task, "trigflow", None) is not None:
        return result_with_matching(task, continuous_time_floor(task, x, text, uncond, w, repeats), x, text,
                                    uncond, w, repeats)
    parts = {"student_forward_backward": _timed(student_pass, repeats),
             "teacher_guided_forward": _timed(teacher_pass, repeats),
             "target_forward": _timed(target_pass, repeats)}
    result = {**parts, "floor": sum(parts.values())}
    if getattr(task, "heads", None) is not None:
        # DCM's detail stage adds what its GAN and feature-matching terms need: one teacher forward over real and
        # fake (2B rows) with the features tapped, and the backward through it to the fake half
        def adversarial_pass():
            both = torch.cat([x, x.detach().clone().requires_grad_(True)])
            with task.tap(tuple(both.shape)) as tap:
                distillation.teacher(both, torch.cat([timestep, timestep]), **{k: torch.cat([v, v]) for k, v in text.items()})
            sum(f[n:].float().square().mean() for f in tap.features).backward()

        result["teacher_features_forward_backward"] = _timed(adversarial_pass, repeats)
        result["floor_with_adversarial"] = result["floor"] + result["teacher_features_forward_backward"]
    return result


def continuous_time_floor(task, x, text: dict, uncond: dict, w, repeats: int) -> dict:
    """An sCM step's floor: the student's forward and backward, the guided teacher's forward, and the student's
    forward-mode pass (its F and dF/dt in one JVP); and that JVP's cost in plain (no-gradient) forwards."""
    from ..diffusion.sampling import guided_output
    from ..diffusion.trigflow import velocity_jvp

    trig, model = task.trigflow, task.model
    t = torch.full((len(x),), 1.0, device=x.device)
    point = trig.native(t)

    def student_pass():
        trig.call(model, x, t, text).float().square().mean().backward()
        model.zero_grad(set_to_none=True)

    def teacher_pass():
        with torch.inference_mode():
            guided_output(task.teacher_context.teacher, x, point.timestep, text, uncond, w)

    def forward_pass():
        with torch.no_grad():
            trig.call(model, x, t, text)

    def jvp_pass():
        with torch.no_grad():
            velocity_jvp(model, trig, x, t, text, torch.ones_like(x), torch.ones_like(t))

    parts = {"student_forward_backward": _timed(student_pass, repeats),
             "teacher_guided_forward": _timed(teacher_pass, repeats),
             "student_jvp": _timed(jvp_pass, repeats)}
    forward = _timed(forward_pass, repeats)
    return {**parts, "student_forward": forward, "jvp_to_forward": parts["student_jvp"] / forward,
            "floor": sum(parts.values())}


def result_with_matching(task, result: dict, x, text: dict, uncond: dict, w, repeats: int) -> dict:
    """rCM's floor adds the distribution-matching term's passes: ``--fake-updates`` fake-score forwards and
    backwards, the guided teacher's and the fake score's forward on the re-noised sample, and the student's
    forward and backward on its simulated sample (its no-gradient simulation steps left out)."""
    matching = getattr(task, "matching", None)
    if matching is None:
        return result
    from ..diffusion.sampling import guided_output

    timestep = task.trigflow.native(torch.full((len(x),), 1.0, device=x.device)).timestep

    def fake_update():
        matching.fake(x, timestep, **text).float().square().mean().backward()
        matching.fake.zero_grad(set_to_none=True)

    def term_pass():
        with torch.no_grad():
            guided_output(task.teacher_context.teacher, x, timestep, text, uncond, w)
            matching.fake(x, timestep, **text)

    extra = (task.config.fake_updates * _timed(fake_update, repeats) + _timed(term_pass, repeats)
             + result["student_forward_backward"])
    return {**result, "matching_passes": extra, "floor": result["floor"] + extra}


def time_training(task, config, warmup: int, timed: int, make_plain_task=None) -> dict:
    """Seconds per optimiser step of the shared trainer on ``task`` (steps after ``warmup``), and peak memory
    (``make_plain_task``: the trainer's, for ``--parallel fsdp``)."""
    from ..distill.trainer import train

    marks: dict[int, float] = {}

    def on_step(step: int) -> None:
        _sync()
        marks[step] = time.perf_counter()

    Path(config.out).mkdir(parents=True, exist_ok=True)
    with PeakMemory() as memory:
        train(task, config, progress=False, on_step=on_step, make_plain_task=make_plain_task)
    seconds = (marks[warmup + timed] - marks[warmup]) / timed
    return {"seconds_per_step": seconds, "steps_per_second": 1 / seconds, "peak_memory_mb": memory.peak_mb,
            "memory_above_start_mb": memory.above_start_mb}


def bench_distillation(config: BenchConfig, device: str, progress=print) -> list[dict]:
    import dataclasses

    from ..distill.dcm import DCMConfig, DCMStageTask, stage_config
    from ..distill.lcm import LCMConfig, LCMTask

    teacher, _ = _models(config)
    steps = config.distill_warmup_steps + config.distill_timed_steps
    common = dict(teacher=teacher, batch_size=config.distill_batch_size, steps=steps, sample_every=0,
                  checkpoint_every=10**9, latent_pool=max(256, config.distill_batch_size), warmup_steps=1,
                  cpu=device == "cpu")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        lcm = LCMConfig(out=str(Path(scratch) / "lcm"), ema_decay=0.0, **common)
        task = LCMTask(lcm, device)
        rows.append({"method": "lcm", "stage": "-", "batch": lcm.batch_size,
                     **time_training(task, lcm, config.distill_warmup_steps, config.distill_timed_steps)})
        rows[-1].update(cost_floor(task, config.floor_repeats))
        progress(_distill_line(rows[-1]))
        from ..distill.scm import RCMConfig, RCMTask, SCMConfig, SCMTask

        for method, config_class, task_class in (("scm", SCMConfig, SCMTask), ("rcm", RCMConfig, RCMTask)):
            # rCM's term from the first step (no tangent warm-up), so the timed steps are its full steps
            continuous = config_class(out=str(Path(scratch) / method), tangent_warmup=0, **common)
            task = task_class(continuous, device)
            rows.append({"method": method, "stage": "-", "batch": continuous.batch_size,
                         **time_training(task, continuous, config.distill_warmup_steps, config.distill_timed_steps)})
            rows[-1].update(cost_floor(task, config.floor_repeats))
            progress(_distill_line(rows[-1]))
        from ..recipes import recipe_for_teacher

        # the recipe `videocm distill` picks for this teacher (MovingDigits: the test bench's), so the step timed
        # is the step a run takes
        recipe = recipe_for_teacher(teacher)
        picked = ({n: e.value for n, e in recipe.values("dcm").items()} if recipe and "dcm" in recipe.methods
                  else {})
        dcm = DCMConfig(**{**picked, "out": str(Path(scratch) / "dcm"), "disc_every": config.disc_every, **common})
        semantic = None
        for expert, name in ((0, "semantic"), (1, "detail")):
            stage = dataclasses.replace(stage_config(dcm, expert), steps=steps, checkpoint_every=10**9)
            task = DCMStageTask(stage, expert, semantic, None, device)
            rows.append({"method": "dcm", "stage": name, "batch": stage.batch_size,
                         **time_training(task, stage, config.distill_warmup_steps, config.distill_timed_steps)})
            rows[-1].update(cost_floor(task, config.floor_repeats))
            progress(_distill_line(rows[-1]))
            if expert == 0:
                semantic = task.model.eval().requires_grad_(False)
    for row in rows:
        row["ratio_to_floor"] = row["seconds_per_step"] / row["floor"]
        if "floor_with_adversarial" in row:
            row["ratio_to_floor_with_adversarial"] = row["seconds_per_step"] / row["floor_with_adversarial"]
    return rows


def _distill_line(row: dict) -> str:
    return (f"{row['method']} {row['stage']:>8}: {row['seconds_per_step']:.3f} s/step, floor {row['floor']:.3f} s "
            f"({row['seconds_per_step'] / row['floor']:.2f}x)")


# --- tables ---

def decoder_quality_table(found: list[dict]) -> str:
    """The decoder quality check: each row's fidelity and Fréchet distance, and each decoder against the full one."""
    from .evaluate import turned_round

    lines = ["| model | decoder | steps | fidelity | Fréchet | difference to full: fidelity | Fréchet |",
             "|" + "---|" * 7]
    for student in found:
        full = next(row for row in student["rows"] if row["decoder"] == "full")
        label = f"{full['model']}@{full['steps']}"
        for row in student["rows"]:
            versus = next((turned_round(c) for c in student["comparisons"] if c["first"] == label
                           and c["second"] == f"{row['model']}@{row['steps']}"), None)  # this decoder minus full
            difference = "- | -" if versus is None else " | ".join(
                f"{versus[key]['difference']:+.{digits}f} [{versus[key]['ci'][0]:+.{digits}f}, "
                f"{versus[key]['ci'][1]:+.{digits}f}]" for key, digits in (("fidelity_all", 3),
                                                                         ("frechet_distance", 2)))
            lines.append(f"| {row['model']} | {row['decoder']} | {row['steps']} | {row['fidelity_all']:.3f} | "
                         f"{row['frechet_distance']:.2f} | {difference} |")
    return "\n".join(lines)


def sampling_table(rows: list[dict]) -> str:
    lines = ["| model | decoder | steps | batch | NFE | s/clip | text | denoise | decode | write | peak MB | run MB | "
             "speed-up | denoise speed-up | NFE limit | denoise / limit |", "|" + "---|" * 16]
    for r in rows:
        def f(key, fmt):
            return format(r[key], fmt) if key in r else "-"
        lines.append(f"| {r['model']} | {r.get('decoder', 'full')} | {r['steps']} | {r['batch']} | {r['nfe']:.0f} | "
                     f"{r['seconds_per_clip']:.4f} | "
                     f"{f('seconds_text', '.4f')} | {f('seconds_denoise', '.4f')} | {f('seconds_decode', '.4f')} | "
                     f"{f('seconds_write', '.4f')} | {r['peak_memory_mb']:.0f} | {f('memory_above_start_mb', '.0f')} | "
                     f"{f('speedup', '.1f')} | "
                     f"{f('denoise_speedup', '.1f')} | {f('nfe_limit', '.1f')} | {f('denoise_share_of_limit', '.2f')} |")
    return "\n".join(lines)


def distillation_table(rows: list[dict]) -> str:
    lines = ["| method | stage | batch | s/step | steps/s | peak MB | run MB | student fwd+bwd | teacher guided fwd | "
             "target fwd (sCM: student JVP) | floor | step / floor | + GAN teacher pass (rCM: matching passes) | "
             "step / floor with it |", "|" + "---|" * 14]
    for r in rows:
        gan = (f"{r['teacher_features_forward_backward']:.3f} | {r['ratio_to_floor_with_adversarial']:.2f}"
               if "floor_with_adversarial" in r else
               f"{r['matching_passes']:.3f} (in the floor) | -" if "matching_passes" in r else "- | -")
        third = (f"{r['student_jvp']:.3f} (JVP {r['jvp_to_forward']:.2f}x a forward)" if "student_jvp" in r
                 else f"{r['target_forward']:.3f}")
        lines.append(f"| {r['method']} | {r['stage']} | {r['batch']} | {r['seconds_per_step']:.3f} | "
                     f"{r['steps_per_second']:.2f} | {r['peak_memory_mb']:.0f} | {r['memory_above_start_mb']:.0f} | "
                     f"{r['student_forward_backward']:.3f} | "
                     f"{r['teacher_guided_forward']:.3f} | {third} | {r['floor']:.3f} | "
                     f"{r['ratio_to_floor']:.2f} | {gan} |")
    return "\n".join(lines)


def run_bench(config: BenchConfig) -> dict:
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    device = config.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if min(config.batch_sizes, default=0) < 1 or config.repeats < 1:
        raise VideoCMError("--batch-sizes and --repeats must be at least 1")
    result = {"machine": machine(), "device": device, "config": asdict(config)}
    if config.sampling:
        result["sampling"] = bench_sampling(config, device)
        print(sampling_table(result["sampling"]))
    if config.quality_clips > 0 and any(decoder != "full" for decoder in config.decoders):
        result["decoder_quality"] = bench_decoder_quality(config)
        print(decoder_quality_table(result["decoder_quality"]))
    if config.distillation:
        result["distillation"] = bench_distillation(config, device)
        print(distillation_table(result["distillation"]))
    out = Path(config.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result
