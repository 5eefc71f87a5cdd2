"""``videocm eval-control``: control fidelity of teachers and students sharing one control branch.

Rows, each over the same held-out clips (captions as prompts, silhouettes as controls, one seed per clip):

* ``real clips through the VAE``: the test clips encoded and decoded, the ceiling for any latent model;
* with ``--baseline``: the first model at its first step count *without* the control, the chance level of a
  model that only reads the caption;
* every ``--model DIR@STEPS,...`` with the control branch, at each step count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..config import Count, Natural, NonNegative, OutputPath, ReportFolder
from ..data.moving_digits import Geometry
from ..errors import VideoCMError
from .cli import parse_model_spec, print_and_save
from .control import control_eval_set, control_scores
from .evaluate import generate_with_cost, shown_indices

@dataclass
class EvalControlConfig:
    """``videocm eval-control``: control fidelity of models sharing one control branch."""

    control_model: str  # control branch folder
    model: list[str] = field(metadata={"repeat": True})  # model folder with its step counts, e.g. models/lcm-flow@1,2,4
    n: Count = 96  # clips per row
    seed: Natural = 0  # seed of the held-out clips and of the noise
    batch_size: Count = 16  # clips generated together
    guidance: NonNegative | None = None  # teachers' guidance (default: the model's)
    judge: str | None = None  # judge folder (default: the one packaged with videocm, or $VIDEOCM_JUDGE)
    baseline: bool = False  # add a row for the first model at its first step count without the control
    json: OutputPath | None = None  # write the results as JSON here
    report: ReportFolder | None = None  # write a report folder (report.md, samples.gif) here
    overwrite: bool = False  # replace what an output path already holds (without it, one that exists is refused)


COLUMNS = [("model", "model"), ("steps", "steps"), ("control", "control"), ("nfe", "NFE"), ("iou", "IoU"),
           ("iou_worst_frame", "IoU worst frame"), ("iou_mismatched", "IoU other clip's control"),
           ("colour", "colour"), ("digit", "digit"), ("direction", "direction"), ("fidelity_all", "all three"),
           ("seconds_per_clip", "s/clip")]


def control_table(rows: list[dict]) -> str:
    def cell(value) -> str:
        if value is None:
            return "-"
        return f"{value:.3f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(title for _, title in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(cell(row.get(key)) for key, _ in COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def _generate(pipeline, prompts, seeds, controls, steps, guidance, batch_size, desc):
    clips, cost = generate_with_cost(pipeline, prompts, seeds, steps, guidance, batch_size, desc, controls)
    return clips, {"nfe": round(cost["nfe"]), "seconds_per_clip": cost["seconds_total"],
                   "peak_memory_mb": cost["peak_memory_mb"]}


def evaluate_control(control_folder: str, specs: list[str], n: int = 96, seed: int = 0, batch_size: int = 16,
                     guidance: float | None = None, judge=None, baseline: bool = False, keep: int = 8
                     ) -> tuple[dict, list[tuple[str, list[np.ndarray]]]]:
    """Scores per row (see the module docstring) and the first ``keep`` clips of each row, for a report."""
    from ..models.control import load_control
    from ..models.folder import load_model
    from ..models.vae import to_uint8_frames
    from ..pipeline import VideoPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    branch, info = load_control(control_folder, device)
    frames, height, width = info.video_shape
    if height != width:
        raise VideoCMError(f"{control_folder} was trained on {height}x{width} clips; MovingDigits clips are square")
    prompts, controls, seeds, real = control_eval_set(n, seed, Geometry(frames, height))
    shown = shown_indices(prompts, keep)
    rows: list[dict] = []
    samples: list[tuple[str, list[np.ndarray]]] = [
        ("control", [np.repeat(controls[i], 3, axis=-1) for i in shown]), ("real", [real[i] for i in shown])]
    parsed = [parse_model_spec(spec) for spec in specs]
    pipelines = []
    for path, steps in parsed:
        model = load_model(path, device)
        pipelines.append((VideoPipeline(model, device), steps or [model.default_steps]))
    # the ceiling: real clips through the VAE the models decode with
    vae = pipelines[0][0].model.vae
    with torch.no_grad():
        videos = torch.from_numpy(np.stack(real)).permute(0, 4, 1, 2, 3).float() / 127.5 - 1
        reconstructed = []
        for start in range(0, n, batch_size):
            reconstructed += to_uint8_frames(vae.decode(vae.encode(videos[start:start + batch_size].to(device))))
    rows.append({"model": "real clips through the VAE", "steps": None, "control": "-",
                 **control_scores(reconstructed, controls, prompts, judge)})
    if baseline:
        pipeline, steps = pipelines[0]
        clips, cost = _generate(pipeline, prompts, seeds, None, steps[0], guidance, batch_size,
                                f"{pipeline.name} {steps[0]} steps, no control")
        rows.append({"model": pipeline.name, "path": str(parsed[0][0]), "steps": steps[0], "control": "none",
                     **control_scores(clips, controls, prompts, judge), **cost})
        samples.append((f"{pipeline.name}, {steps[0]} steps, no control", [clips[i] for i in shown]))
    for (path, _), (pipeline, steps) in zip(parsed, pipelines):
        pipeline.use_control(branch, 1.0)
        for count in steps:
            clips, cost = _generate(pipeline, prompts, seeds, controls, count, guidance, batch_size,
                                    f"{pipeline.name} {count} steps")
            rows.append({"model": pipeline.name, "path": str(path), "steps": count, "control": "branch",
                         **control_scores(clips, controls, prompts, judge), **cost})
            samples.append((f"{pipeline.name}, {count} step{'s' if count != 1 else ''}", [clips[i] for i in shown]))
    result = {"n": n, "seed": seed, "control_model": str(control_folder), "control_info": info.to_dict(),
              "foreground_threshold": 64, "prompts_shown": [prompts[i] for i in shown], "rows": rows}
    return result, samples


def write_control_report(result: dict, samples, folder: str | Path, scale: int = 3) -> Path:
    from ..data.video_io import labelled_grid, write_video

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / "samples.gif", labelled_grid([row for _, row in samples], [label for label, _ in samples],
                                                      result["prompts_shown"], scale=scale))
    frames = len(result["rows"][0]["iou_per_frame"])
    per_frame = "\n".join(
        ["| model | steps | control | " + " | ".join(f"frame {t}" for t in range(frames)) + " |",
         "|" + "---|" * (frames + 3)] +
        [f"| {row['model']} | {row.get('steps') or '-'} | {row['control']} | " +
         " | ".join(f"{v:.3f}" for v in row["iou_per_frame"]) + " |" for row in result["rows"]])
    prompts = ", ".join(f"`{p}`" for p in result["prompts_shown"])
    markdown = (
        f"# Control fidelity\n\n{result['n']} held-out MovingDigits clips (test-split sprites), their captions as "
        f"prompts and their silhouettes as the control, control branch `{result['control_model']}`. IoU: "
        f"intersection over union of the generated foreground (brightest channel >= 64 of 255) with the "
        f"silhouette's, per frame, averaged; worst frame: each clip's lowest frame IoU, averaged; other clip's "
        f"control: the same clips scored against the next clip's silhouette (chance level). Colour, digit, "
        f"direction: the judge's heads against the caption.\n\n{control_table(result['rows'])}\n\n"
        f"## IoU per frame\n\n{per_frame}\n\n"
        f"## Samples\n\n![samples](samples.gif)\n\nRows (labelled in the image) are the control, the real clip and each "
        f"model; columns are labelled by their captions: {prompts}\n")
    (folder / "report.md").write_text(markdown)
    return folder / "report.md"


def run_eval_control(config: EvalControlConfig) -> int:
    from .judge import Judge

    if config.n < 2:
        raise VideoCMError(f"--n must be at least 2 (the mismatched-control score pairs clips), got {config.n}")
    result, samples = evaluate_control(config.control_model, config.model, config.n, config.seed, config.batch_size,
                                       config.guidance, Judge.load(config.judge), config.baseline)
    return print_and_save(control_table(result["rows"]), result, config.json,
                          (lambda: write_control_report(result, samples, config.report)) if config.report else None)
