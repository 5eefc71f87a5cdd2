"""The evaluation report: ``report.md`` and ``report.html`` with the table (95% bootstrap intervals over clips
in brackets), ``plot.png`` (fidelity and Fréchet
distance against steps, a line per model) and ``samples.gif`` (a row per model and step count, real clips in the
first row, rows and columns labelled in the image). Both pages open with the verdict."""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np

from ..data.video_io import labelled_grid, write_video
from ..errors import VideoCMError

COLUMNS = [
    ("model", "model", "{}"), ("steps", "steps", "{}"), ("nfe", "NFE", "{:g}"),
    ("fidelity_all", "fidelity (all)", "{:.3f}"), ("fidelity_digit", "digit", "{:.3f}"),
    ("fidelity_colour", "colour", "{:.3f}"), ("fidelity_direction", "direction", "{:.3f}"),
    ("diversity", "diversity", "{:.3f}"),
    ("frechet_distance", "Fréchet", "{:.2f}"), ("frechet_real_reference", "real-vs-real", "{:.2f}"),
    ("coherence", "coherence", "{:.3f}"), ("flicker", "flicker", "{:.2f}"), ("psnr_vs_teacher", "PSNR vs teacher", "{:.2f}"),
    ("ssim_vs_teacher", "SSIM vs teacher", "{:.3f}"), ("seconds_text", "s/clip text", "{:.4f}"),
    ("seconds_denoise", "s/clip denoise", "{:.4f}"), ("seconds_decode", "s/clip decode", "{:.4f}"),
    ("seconds_total", "s/clip total", "{:.4f}"), ("peak_memory_mb", "peak MB (RSS or CUDA)", "{:.0f}"),
]


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    present = [c for c in COLUMNS if any(c[0] in row for row in rows)]
    cells = [[cell(row, key, fmt) for key, _, fmt in present] for row in rows]
    return [title for _, title, _ in present], cells


def cell(row: dict, key: str, fmt: str) -> str:
    """A table cell: the value, and its 95% bootstrap interval ``[low, high]`` where the row has one."""
    if row.get(key) is None:
        return "—"  # not measured for this row (e.g. the teacher's agreement with itself)
    interval = row.get(f"{key}_ci")
    if interval is None:
        return fmt.format(row[key])
    return f"{fmt.format(row[key])} [{fmt.format(interval[0])}, {fmt.format(interval[1])}]"


def markdown_table(rows: list[dict]) -> str:
    header, cells = table_rows(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in cells]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for model in dict.fromkeys(row["model"] for row in rows):
        mine = sorted((r for r in rows if r["model"] == model), key=lambda r: r["steps"])
        steps = [r["steps"] for r in mine]
        left.plot(steps, [r["fidelity_all"] for r in mine], marker="o", label=model)
        right.plot(steps, [r["frechet_distance"] for r in mine], marker="o", label=model)
    all_steps = sorted({r["steps"] for r in rows})
    reference = float(np.mean([r["frechet_real_reference"] for r in rows]))
    right.axhline(reference, color="grey", linestyle="--", label="real vs real")
    for axis, title in ((left, "prompt fidelity (all three correct)"), (right, "Fréchet distance (judge features)")):
        axis.set_xscale("log", base=2)
        axis.set_xticks(all_steps, [str(s) for s in all_steps])
        axis.set_xlabel("sampling steps")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend()
    left.set_ylim(-0.02, 1.02)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def read_monitor_scores(run: str | Path) -> list[dict]:
    """The periodic sample scores of a training run (``RUN/samples/scores.jsonl``), in step order."""
    path = Path(run) / "samples" / "scores.jsonl"
    if not path.is_file():
        raise VideoCMError(f"{path}: no such file; a run writes it when trained with --sample-every N")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda row: row["step"])


def plot_learning_curves(runs: dict[str, list[dict]], path: str | Path,
                         references: dict[str, dict[str, float]] | None = None) -> None:
    """Fidelity and Fréchet distance of each run's periodic samples against optimiser updates (a line per run, and
    per way of sampling where its checks say how they sampled: DCM's semantic stage), with horizontal reference lines (``{label: {"fidelity_all": ..., "frechet_distance": ...}}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4))
    keys = (("fidelity_all", "prompt fidelity of the samples"), ("frechet_distance", "Fréchet distance"))
    for axis, (key, title) in zip(axes, keys):
        for label, rows in runs.items():
            mine = [r for r in rows if key in r]
            ways = list(dict.fromkeys(r.get("sampled_as") for r in mine))  # how each check sampled, in order
            for way in ways:
                part = [r for r in mine if r.get("sampled_as") == way]
                axis.plot([r["step"] for r in part], [r[key] for r in part], marker="o",
                          label=label if len(ways) == 1 and way is None else f"{label}: {way or 'the model alone'}")
        for number, (label, values) in enumerate((references or {}).items()):
            if key in values:
                axis.axhline(values[key], color=f"C{number + len(runs)}", linestyle="--", label=label)
        axis.set_xlabel("optimiser updates")
        axis.set_title(title)
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)


def embedded(path: Path, kind: str) -> str:
    """A file as a ``data:`` URI, so ``report.html`` shows its plot and grid when opened or sent alone."""
    import base64

    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode()}"


def write_report(result: dict, runs, real: list[np.ndarray], folder: str | Path, scale: int = 3) -> Path:
    """Write the report folder; returns the path of ``report.md``. Both pages open with the verdict
    (``result["verdict"]``), then the table, the plot and the labelled grid of samples."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rows = result["rows"]
    plot(rows, folder / "plot.png")
    labels = ["real"] + [f"{run.row['model']}, {run.row['steps']} step{'s' if run.row['steps'] != 1 else ''}"
                         for run in runs]
    write_video(folder / "samples.gif", labelled_grid([real] + [run.samples for run in runs], labels,
                                                      result["prompts_shown"], scale=scale))
    intro = (
        f"{result['n']} clips per row for test captions spread evenly over all 240 (seed {result['seed']}). "
        "Fidelity: share of clips whose judged digit, colour and direction match the caption. Fréchet: distance "
        "between judge features of the clips and of 960 real test clips, beside the same distance for real clips "
        "with the same captions (real-vs-real). Coherence: 1.0 when the digit keeps its shape across frames. "
        "Flicker: mean absolute difference (grey levels) of consecutive frames after undoing the motion, 0 for "
        "real clips. Brackets: 95% bootstrap intervals over clips."
    )
    if any("seconds_total" in row for row in rows):
        batch = result.get("batch_size")
        intro += (" Cost columns (s/clip): wall time per clip over all the row's clips"
                  + (f", generated {batch} at a time" if batch else "") + ", after one untimed warm-up clip at the "
                  "same step count (its time is seconds_warmup in the JSON); peak MB over the row.")
    if result.get("teacher"):
        intro += f" PSNR/SSIM against the teacher ({result['teacher']}, {result['teacher_steps']} steps), same seeds."
    verdict = result.get("verdict") or []
    verdict_md = "## Verdict\n\n" + "\n".join(f"- {line}" for line in verdict) + (
        "\n\nDifferences are the first row minus the second with 95% paired bootstrap intervals over clips; "
        "an interval containing 0 is a tie.\n\n" if verdict else "")
    markdown = (
        f"# videocm evaluation\n\n{verdict_md}## Scores\n\n{intro}\n\n{markdown_table(rows)}\n\n"
        f"![fidelity and Fréchet distance against steps](plot.png)\n\n## Samples\n\n![samples](samples.gif)\n\n"
        f"Rows are labelled in the image (model and steps, real clips on top); columns by their captions.\n"
    )
    (folder / "report.md").write_text(markdown)
    header, cells = table_rows(rows)
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in cells) + "</table>"
    verdict_html = ("<h2>Verdict</h2><ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in verdict)
                    + "</ul><p>Differences: first minus second, 95% paired bootstrap intervals over clips; an "
                    "interval containing 0 is a tie.</p>") if verdict else ""
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>videocm evaluation</title><style>"
        "body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}img{image-rendering:pixelated;max-width:100%}</style></head><body>"
        f"<h1>videocm evaluation</h1>{verdict_html}<h2>Scores</h2><p>{html.escape(intro)}</p>{table}"
        f"<p><img alt='fidelity and Fréchet distance against steps' src='{embedded(folder / 'plot.png', 'image/png')}'></p>"
        f"<h2>Samples</h2><img alt='samples' src='{embedded(folder / 'samples.gif', 'image/gif')}'></body></html>"
    )
    (folder / "report.html").write_text(page)
    return folder / "report.md"
