"""``videocm demo``: the main job on the built-in default, small enough for a 2-core CPU.

1. Renders MovingDigits test clips and their structure videos to GIFs and scores them with the judge.
2. Distils the shipped flow teacher (``models/teacher-flow``) with a short DCM schedule (by default 3 minutes for
   the semantic expert and 5 for the detail expert), into ``OUT/dcm-student``; a rerun reuses or resumes it.
3. Evaluates that student against the teacher (50 and 4 steps) and the shipped LCM student (``models/lcm-flow``)
   at 1, 2 and 4 steps, and writes the report (table, plot, GIF grid) to ``OUT/report``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from typing import Literal
from pathlib import Path

from .config import AtLeastTwo, Count, Natural, NonNegative, ReusedFolder, write_config
from .data import export_moving_digits, read_clip_folder, write_video
from .data.video_io import labelled_grid
from .data.clip_folder import clip_name
from .errors import VideoCMError
from .models.info import INFO_FILE, ModelInfo, is_model_folder
from .models import TextEncoder


@dataclass
class DemoConfig:
    out: ReusedFolder = "outputs/demo"  # output folder (clips, GIFs, the student, the report, summary.json); a second demo reuses its student
    n: AtLeastTwo = 24  # MovingDigits clips rendered and judged (2 or more: a Fréchet distance needs 2)
    seed: Natural = 0  # seed of the clips, the generated clips and the distillation
    split: str = "test"  # which split's sprites ("train" or "test")
    frames: Count = 8  # frames per clip
    size: Count = 32  # canvas side in pixels
    models_dir: str | None = None  # folder of the shipped models (default: $VIDEOCM_MODELS, else ./models)
    gif_scale: Count = 4  # GIFs enlarged this many times
    generate: Natural = 8  # clips each shipped teacher/student generates (0: none)
    few_steps: Count = 4  # the step count each model also generates at, besides its default
    # the DCM run and its evaluation
    distill: bool = True  # distil a DCM student and evaluate it (false: generate with every shipped model instead)
    teacher: str | None = None  # teacher to distil (default: the shipped teacher-flow in --models-dir)
    compare: str | None = None  # student evaluated beside it, if there (default: the shipped lcm-flow)
    semantic_minutes: NonNegative = 3.0  # wall-time cap of the semantic-expert stage
    detail_minutes: NonNegative = 5.0  # wall-time cap of the detail-expert stage
    semantic_steps: Count = 2000  # the semantic stage's schedule length in steps
    detail_steps: Natural = 1200  # the detail stage's schedule length in steps
    latent_pool: Count = 2048  # train clips encoded once for the distillation
    batch_size: Count = 16  # distillation batch
    eval_n: Count = 48  # clips per (model, steps) in the evaluation
    eval_steps: list[Count] = field(default_factory=lambda: [1, 2, 4])  # the students' step counts evaluated
    report_to: Literal["none", "tensorboard", "wandb"] = "tensorboard"  # the DCM run's dashboards (tensorboard --logdir OUT/dcm-student)


def find_models(models_dir: Path) -> list[Path]:
    """Generator model folders (those holding ``videocm.json``) under ``models_dir``."""
    return sorted(p.parent for p in Path(models_dir).glob(f"*/{INFO_FILE}"))


def generate_with_models(models: list[Path], prompts: list[str], config: DemoConfig, out: Path,
                         real: list) -> list[dict]:
    """Each teacher or student generates clips for ``prompts`` at its default steps and at ``few_steps``."""
    if not prompts:
        return []
    from .evaluation.evaluate import generate_with_cost, score_clips
    from .evaluation.judge import Judge
    from .pipeline import VideoPipeline

    judge = Judge.load()
    seeds = [config.seed + i for i in range(len(prompts))]
    rows, grid, labels = [], [list(real)], ["real"]
    for folder in models:
        if ModelInfo.load(folder).kind not in ("teacher", "student"):
            continue
        pipeline = VideoPipeline.from_folder(folder)
        for steps in sorted({pipeline.model.default_steps, config.few_steps}, reverse=True):
            clips, cost = generate_with_cost(pipeline, prompts, seeds, steps, None, len(prompts),
                                             f"{folder.name} {steps} steps")
            scores = score_clips(judge, clips, prompts)
            rows.append({"model": folder.name, "steps": steps, "n": len(prompts), "nfe": cost["nfe"],
                         "seconds_per_clip": cost["seconds_total"], "fidelity_all": scores["fidelity_all"]})
            grid.append(clips)
            labels.append(f"{folder.name}, {steps} step{'s' if steps != 1 else ''}")
    if rows:
        write_video(out / "generated.gif", labelled_grid(grid, labels, prompts, scale=config.gif_scale))
    return rows


def distil_and_evaluate(config: DemoConfig, out: Path) -> dict:
    """A short DCM run from the shipped flow teacher, then one evaluation beside the teacher and the LCM student."""
    from .distill.dcm import DCMConfig, distill_dcm
    from .evaluation.evaluate import evaluate_models, write_json
    from .evaluation.judge import Judge
    from .evaluation.report import markdown_table, write_report

    from .config import is_run_folder

    student = out / "dcm-student"
    finished = is_model_folder(student) and (student / "train_summary.json").is_file()
    if not finished:  # a killed demo's run is continued
        from .recipes import recipe_named

        # the MovingDigits recipe (the test bench's values), as `videocm distill` picks it for the built-in teacher
        bench = {name: entry.value for name, entry in recipe_named("moving-digits").values("dcm").items()}
        demo = dict(teacher=config.teacher, out=str(student), semantic_minutes=config.semantic_minutes,
                    detail_minutes=config.detail_minutes, semantic_steps=config.semantic_steps,
                    detail_steps=config.detail_steps, latent_pool=config.latent_pool, batch_size=config.batch_size,
                    sample_every=0, checkpoint_every=100, seed=config.seed, resume=is_run_folder(student),
                    report_to=config.report_to)
        distill_dcm(DCMConfig(**{**bench, "recipe": "moving-digits", **demo}))
    steps_for = {config.teacher: sorted({50, max(config.eval_steps)}, reverse=True)}
    specs = [str(student), config.compare, config.teacher] if Path(config.compare).is_dir() else [
        str(student), config.teacher]
    result, runs, real = evaluate_models(specs, list(config.eval_steps), Judge.load(),
                                         n=config.eval_n, seed=config.seed, teacher=config.teacher,
                                         teacher_steps=50, steps_for=steps_for)
    write_json(result, out / "report" / "results.json")
    report = write_report(result, runs, real, out / "report")
    return {"student": str(student), "report": str(report), "table": markdown_table(result["rows"]),
            "rows": result["rows"]}


def with_shipped_models(config: DemoConfig) -> DemoConfig:
    """``config`` with the shipped models' folders filled in (a missing teacher is an error only when distilling)."""
    import dataclasses

    from .locations import models_dir, shipped_model

    folder = models_dir(config.models_dir)
    if config.generate == 1:
        raise VideoCMError("--generate 1: each model's clips are judged, and a Fréchet distance needs at least 2; "
                           "give --generate 2 or more, or 0 for none")
    if not config.distill and config.generate and not find_models(folder):
        where = f"--models-dir {config.models_dir}" if config.models_dir else f"{folder} (the default)"
        raise VideoCMError(f"no model folders (a folder with videocm.json) in {where}, so --distill false has nothing "
                           f"to generate with; point --models-dir at the shipped models/ folder, or give --generate 0")
    teacher = config.teacher or str(shipped_model("teacher-flow", config.models_dir, "--teacher") if config.distill
                                    else folder / "teacher-flow")
    return dataclasses.replace(config, models_dir=str(folder), teacher=teacher,
                               compare=config.compare or str(folder / "lcm-flow"))


def run_demo(config: DemoConfig) -> dict:
    import numpy as np

    config = with_shipped_models(config)
    out = Path(config.out)
    write_config(config, out)
    clips_dir = out / "clips"
    if clips_dir.is_dir():  # rendered again, so that no clip of an earlier, longer demo is left beside these
        shutil.rmtree(clips_dir)
    prompts = export_moving_digits(clips_dir, config.split, config.n, config.seed, config.frames, config.size,
                                   cover_captions=False, progress=False)
    videos, _ = read_clip_folder(clips_dir)
    controls = [np.load(clips_dir / "control" / clip_name(i)) for i in range(len(videos))]
    columns = min(6, len(videos))
    rows = range(0, len(videos), columns)
    captions = [prompts[start:start + columns] for start in rows]
    names = [f"clips {start}-{min(start + columns, len(videos)) - 1}" for start in rows]
    write_video(out / "clips.gif", labelled_grid([videos[start:start + columns] for start in rows], names, captions,
                                                 scale=config.gif_scale))
    write_video(out / "controls.gif", labelled_grid([controls[start:start + columns] for start in rows],
                                                    [f"controls of {name}" for name in names], captions,
                                                    scale=config.gif_scale))

    encoder = TextEncoder()
    states = encoder.encode(prompts + [""])
    from .evaluation.evaluate import score_clips
    from .evaluation.judge import Judge

    scores = score_clips(Judge.load(), videos, prompts)
    models = find_models(Path(config.models_dir))
    generated = ([] if config.distill else
                 generate_with_models(models, prompts[:config.generate], config, out, videos[:config.generate]))
    distilled = distil_and_evaluate(config, out) if config.distill else None
    summary = {
        "clips": len(videos),
        "clip_shape": list(videos[0].shape),
        "text_states_shape": list(states["encoder_hidden_states"].shape),
        "judge_scores_of_real_clips": scores,
        "models": [str(m) for m in models],
        "generated": generated,
        "distilled": {k: v for k, v in (distilled or {}).items() if k != "table"},
        "outputs": [str(out / "clips.gif"), str(out / "controls.gif"), str(clips_dir)],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"rendered {len(videos)} MovingDigits clips {tuple(videos[0].shape)} to {clips_dir}")
    for i, prompt in enumerate(prompts[: min(6, len(prompts))]):
        print(f"  {clip_name(i)}  {prompt}")
    print(f"grid of clips:    {out / 'clips.gif'}")
    print(f"grid of controls: {out / 'controls.gif'}")
    print(f"text states: {tuple(states['encoder_hidden_states'].shape)} (MiniLM, offline; last row is the empty prompt)")
    print(f"judge on these real clips: fidelity {scores['fidelity_all']:.3f}, Fréchet distance "
          f"{scores['frechet_distance']:.2f} (real-vs-real {scores['frechet_real_reference']:.2f}), coherence "
          f"{scores['coherence']:.3f}")
    if models:
        print("models found: " + ", ".join(str(m) for m in models))
    for row in generated:
        print(f"  {row['model']} at {row['steps']} steps: fidelity {row['fidelity_all']:.3f} on "
              f"{row['n']} prompts, {row['seconds_per_clip']:.2f} s/clip, NFE {row['nfe']:.0f}")
    if generated:
        print(f"real clips (top row) and each model's clips for the same prompts: {out / 'generated.gif'}")
    if distilled:
        print(f"\nDCM student distilled from {config.teacher}: {distilled['student']}")
        print(distilled["table"])
        print(f"report (table, plot, GIF grid): {distilled['report']}")
    return summary
