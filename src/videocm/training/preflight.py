"""``videocm check``: a distillation run's teacher, data and settings checked before it starts, one line each.

What is checked, on the user's own teacher, data and settings (the same flags as ``videocm distill``, its
recipe included):

* **teacher samples**: two clips of the teacher at its own default steps and guidance, at the run's clip shape:
  finite, not one flat colour, not still pictures, not blown out (the collapse guard's measures,
  :mod:`videocm.distill.collapse`). A teacher whose own samples fail would only teach a student to fail;
* **clips**: a video folder's usable clips after the video checks (unreadable, too short, uncaptioned ones are
  named and skipped);
* **VAE round trip**: a few of the user's clips through the teacher's VAE, PSNR in dB (a VAE that does not
  reconstruct them cannot give their latents);
* **guidance and shift**: the guidance the run will use against the teacher's own, and the teacher folder's
  scheduler shift against its layout's reference (a recipe's ``teacher`` block);
* **memory**: ``videocm plan``'s peak for the run's mode against the device (a GPU's memory, or this machine's);
* **time**: the plan's seconds per step and for the run (GPU only; on the CPU not estimated).

A ``fail`` stops the run with a one-line refusal naming the fix; ``warn`` lines are said and the run goes on.
``videocm distill`` runs it first for a teacher a recipe of a real layout matched, on one process
(``--preflight auto``); ``--preflight true`` always, ``false`` never.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import VideoCMError

PSNR_FAIL, PSNR_WARN = 15.0, 22.0  # dB: a VAE that reconstructs the user's clips worse does not fit them
GUIDANCE_RATIO = 2.0  # the run's guidance this many times the teacher's own (or its inverse): said
SHIFT_TOLERANCE = 0.05  # relative difference of the scheduler's shift from the layout's reference


NOISE_CORRELATION = 0.2  # consecutive frames of a video are correlated; a denoiser that outputs noise makes none
WEAK_CORRELATION = 0.5  # below this (MovingDigits teachers: 0.70-0.74; random weights of a 1.3B Wan: 0.30): said


def frame_correlation(clips: list[np.ndarray]) -> float:
    """Mean Pearson correlation of consecutive frames' pixels over uint8 clips ``(T, H, W, C)``: near 1 for video
    (near 1 for still pictures too, which the collapse measures catch), near 0 for noise."""
    values = []
    for clip in clips:
        frames = np.asarray(clip, dtype=np.float64).reshape(len(clip), -1)
        for a, b in zip(frames[:-1], frames[1:]):
            a, b = a - a.mean(), b - b.mean()
            scale = math.sqrt(float((a * a).sum() * (b * b).sum()))
            values.append(float((a * b).sum()) / scale if scale > 0 else 1.0)
    return float(np.mean(values)) if values else 1.0


@dataclass(frozen=True)
class Finding:
    name: str
    verdict: str  # ok, warn, fail
    detail: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.verdict:4}  {self.name}: {self.detail}" + (f" ({self.fix})" if self.fix and
                                                                  self.verdict != "ok" else "")


def _teacher_samples(teacher, config, prompts: list[str]) -> Finding:
    from ..distill.collapse import clip_health, collapse_evidence
    from ..pipeline import VideoPipeline

    clips = VideoPipeline(teacher).generate(prompts, list(range(len(prompts))), teacher.default_steps,
                                            teacher.default_guidance)
    stack = np.stack([np.asarray(c) for c in clips])
    if not np.isfinite(stack.astype(np.float64)).all():
        return Finding("teacher samples", "fail", "not finite", "check the teacher's weights and dtype")
    health = clip_health(clips)
    evidence = collapse_evidence(health, None)
    correlation = frame_correlation(clips)
    if evidence is None and correlation < NOISE_CORRELATION:
        evidence = (f"consecutive frames are uncorrelated (correlation {correlation:.2f}): noise, not video")
    detail = (f"{len(clips)} clips at {teacher.default_steps} steps, guidance {teacher.default_guidance:g}: "
              f"motion {health['motion']:.2f} grey levels, frame correlation {correlation:.2f}, "
              f"{health['flat_share']:.0%} flat, {health['saturated_share']:.1%} blown out")
    if evidence:
        return Finding("teacher samples", "fail", f"{detail}: {evidence}",
                       "the teacher's own samples are broken: check its weights, scheduler config and --frames/"
                       "--height/--width before distilling it")
    if correlation < WEAK_CORRELATION:
        return Finding("teacher samples", "warn", f"{detail}: consecutive frames are weakly correlated",
                       "look at the teacher's samples (videocm sample) before a long run")
    return Finding("teacher samples", "ok", detail)


def _clips(config, frames: int) -> tuple[Finding, list]:
    from ..data.video_folder import scan_video_folder

    data = config.data
    if data is None:
        return Finding("clips", "ok", "MovingDigits (built in)"), []
    if str(data).startswith("prompts:"):
        return Finding("clips", "ok", f"a prompt list ({data[len('prompts:'):]}): teacher clips are generated"), []
    path = Path(data).expanduser()
    if (path / "index.json").is_file():
        return Finding("clips", "ok", f"a latent cache ({path})"), []
    try:
        report = scan_video_folder(path, frames)
    except VideoCMError as error:
        return Finding("clips", "fail", str(error), "fix the folder or give another --data"), []
    verdict = "warn" if report.skipped else "ok"
    return Finding("clips", verdict, report.summary(), "the skipped ones are named above"), report.usable


def _round_trip(teacher, items: list, frames: int, height: int, width: int, frame_stride: int) -> Finding | None:
    from ..data.video_folder import load_clip

    if not items:
        return None
    values = []
    for item in items[:2]:
        clip = load_clip(item.path, frames, height, width, frame_stride)
        video = torch.from_numpy(clip).permute(3, 0, 1, 2)[None].float() / 127.5 - 1
        device = teacher.vae.mean.device
        with torch.no_grad():
            decoded = teacher.vae.decode(teacher.vae.encode(video.to(device))).cpu()
        error = float(((decoded - video) ** 2).mean()) / 4  # on [0, 1]
        values.append(99.0 if error == 0 else 10 * math.log10(1 / error))
    psnr = float(np.mean(values))
    detail = f"PSNR {psnr:.1f} dB over {len(values)} of your clips"
    if psnr < PSNR_FAIL:
        return Finding("VAE round trip", "fail", detail, "the teacher's VAE does not reconstruct these clips: check "
                       "they are what the teacher was trained on, and --frames/--height/--width")
    if psnr < PSNR_WARN:
        return Finding("VAE round trip", "warn", detail, "low: the student learns from these latents")
    return Finding("VAE round trip", "ok", detail)


def _guidance_and_shift(teacher, config, recipe) -> Finding:
    own = teacher.default_guidance
    used = own if config.guidance is None else float(config.guidance)
    notes, verdict = [f"guidance {used:g} (the teacher's own: {own:g})"], "ok"
    if own > 1 and used > 0 and max(used / own, own / used) >= GUIDANCE_RATIO:
        verdict = "warn"
        notes.append(f"{max(used / own, own / used):.1f}x the teacher's; a reference that writes cond + w (cond - "
                     f"uncond) means w + 1 in diffusers' scale")
    shift = getattr(teacher.schedule, "shift", None)  # a flow teacher's, as its scheduler config sets it
    reference = recipe.teacher.get("flow_shift") if recipe is not None else None
    if shift is not None:
        notes.append(f"scheduler shift {shift:g}")
        if reference is not None and abs(shift - float(reference.value)) > SHIFT_TOLERANCE * float(reference.value):
            verdict = "warn"
            notes.append(f"the {recipe.name} layout's reference is {reference.value:g} ({reference.source})")
    return Finding("guidance and shift", verdict, "; ".join(notes), "give --guidance to set it")


def _machine_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory / 2**30
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) / 2**20
    return float("inf")


def _memory_and_time(config, device: torch.device) -> list[Finding]:
    from ..training.plan import PlanConfig, plan_cost, plan_rows

    processes = int(os.environ.get("WORLD_SIZE", "1"))
    memory = _machine_gib(device)
    plan = PlanConfig(teacher=str(config.teacher), frames=config.frames, height=config.height, width=config.width,
                      method="dcm" if config.method == "dcm" else "lcm", student=getattr(config, "student", "full"),
                      gpus=processes, gpu_memory=memory, batch_size=config.batch_size,
                      text_tokens=config.max_sequence_length, lora_rank=getattr(config, "lora_rank", 16),
                      device="cuda" if device.type == "cuda" else "cpu", reserve=2.0 if device.type == "cuda" else 1.0)
    try:
        cost = plan_cost(plan)[3]
    except Exception as error:  # noqa: BLE001 - a plan is advice; a layout it cannot build is said, not fatal
        return [Finding("memory", "warn", f"not planned ({type(error).__name__}: {error})")]
    mode = "ddp" if config.parallel == "ddp" else ("fsdp" if config.context_parallel == 1
                                                   else f"fsdp+cp{config.context_parallel}")
    rows = [r for r in plan_rows(cost, plan) if r["mode"] == mode and
            r["gradient_checkpointing"] == bool(config.gradient_checkpointing)]
    if not rows:
        return [Finding("memory", "warn", f"no plan row for --parallel {config.parallel}")]
    row = rows[0]
    peak = max(s["peak_gib"] or 0.0 for s in row["stages"])
    where = f"{processes} x {device.type}" + (f" ({memory:.0f} GiB each)" if math.isfinite(memory) else "")
    detail = f"planned peak {peak:.1f} GiB per process at batch {config.batch_size} ({mode}), on {where}"
    findings = []
    if peak > memory:
        others = [r for r in plan_rows(cost, plan) if r["fits"]]
        hint = (f"a mode that fits: --parallel {'ddp' if others[0]['mode'] == 'ddp' else 'fsdp'}"
                + (" --gradient-checkpointing true" if others[0]["gradient_checkpointing"] else "")
                if others else "more processes, --student lora or a smaller clip")
        findings.append(Finding("memory", "fail", detail, hint + " (videocm plan shows every mode)"))
    else:
        findings.append(Finding("memory", "ok", detail))
    seconds = row["seconds_per_step"]
    if device.type == "cuda" and seconds:
        findings.append(Finding("time", "ok", f"about {seconds:.1f} s a step, {seconds * config.steps / 3600:.1f} h "
                                f"for {config.steps} steps (an estimate: counted FLOPs at the plan's assumed "
                                f"throughput)"))
    else:
        findings.append(Finding("time", "ok", "not estimated on the CPU (benchmarks/real_size_cpu.py measures a run)"))
    return findings


def preflight(config, report=print) -> list[Finding]:
    """Every check of the module docstring on ``config`` (a distill config), each said through ``report`` as it
    is found; a one-line :class:`VideoCMError` for the first ``fail``."""
    from ..distill.core import load_teacher, training_device
    from ..recipes import recipe_for_teacher, recipe_named

    device = training_device(config, None)
    recipe = None
    if config.recipe not in ("auto", "none"):
        recipe = recipe_named(config.recipe)
    elif config.recipe == "auto":
        recipe = recipe_for_teacher(config.teacher)
    teacher = load_teacher(config, device)
    frames, height, width = teacher.info.video_shape[0], teacher.info.video_shape[1], teacher.info.video_shape[-1]
    findings: list[Finding] = []

    def say(finding: Finding | None) -> None:
        if finding is not None:
            findings.append(finding)
            report(finding.line())

    clips, usable = _clips(config, frames)
    captions = [item.caption for item in usable[:2]] or ["a red 3 moves left", "a blue 7 moves up"]
    say(_teacher_samples(teacher, config, captions if len(captions) == 2 else captions * 2))
    say(clips)
    say(_round_trip(teacher, usable, frames, height, width, config.frame_stride))
    say(_guidance_and_shift(teacher, config, recipe))
    del teacher
    for finding in _memory_and_time(config, device):
        say(finding)
    failed = [f for f in findings if f.verdict == "fail"]
    if failed:
        first = failed[0]
        raise VideoCMError(f"check: {first.name}: {first.detail}; {first.fix} (--preflight false skips the check)")
    return findings


def run_check(config, monitor=None) -> int:
    """``videocm check``: the recipe the run would start from, then the checks, one line each; exit 0 when none
    fails."""
    from ..recipes import recipe_lines

    for line in recipe_lines(config):
        print(line)
    findings = preflight(config)
    warned = sum(f.verdict == "warn" for f in findings)
    print(f"check: {len(findings)} checks, {warned} warning{'' if warned == 1 else 's'}, none failed")
    return 0
