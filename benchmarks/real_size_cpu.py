"""A real-size teacher through ``videocm distill`` on this CPU: the Wan2.1-T2V-1.3B transformer config with random
weights (``benchmarks/configs/wan2.1-t2v-1.3b.json``, a WanPipeline folder built by ``scripts/gpu_check.py``'s
``build_pipeline``, with a tiny VAE and text encoder), a few distillation steps on a small video folder, measured
from outside: peak resident memory of the run (the process and its children), seconds per step (the run's own
log), the newest checkpoint's size, whether the student folder was written, and what ``videocm plan`` says for the
same run on the CPU.

    python benchmarks/real_size_cpu.py --student lora --frames 5 --height 64 --width 64 [--steps 4] [--json F]

The pipeline folder is built once under ``--work`` (about 3 GB, bfloat16) and reused.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "benchmarks" / "configs" / "wan2.1-t2v-1.3b.json"


def resident_gib(pid: int) -> float:
    """Resident memory of a process and its children (GiB), from /proc."""
    total = 0
    for task in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{task}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return round(total / 2**20, 2)


def children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return found + [g for c in found for g in children(c)]


def floor(run: Path) -> dict:
    """``videocm bench``'s cost floor of one step of the run's task (3 timed repeats of each pass)."""
    import dataclasses

    from videocm.config import config_from_dict
    from videocm.distill.lcm import LCMConfig, LCMTask
    from videocm.evaluation.bench import cost_floor
    from videocm.runs import run_values

    config = config_from_dict(LCMConfig, run_values(run))  # the run's own settings, not resuming it
    task = LCMTask(dataclasses.replace(config, cpu=True))
    return cost_floor(task, 3)


def planned_peak(plan_json: Path, student: str) -> float | None:
    """The plan's peak for the mode the run used (ddp, no checkpointing), or None."""
    if not plan_json.is_file():
        return None
    rows = json.loads(plan_json.read_text())["rows"]
    row = next(r for r in rows if r["mode"] == "ddp" and not r["gradient_checkpointing"])
    return round(row["stages"][0]["peak_gib"], 2)


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/real-size")
    parser.add_argument("--student", choices=["lora", "full"], default="lora")
    parser.add_argument("--frames", type=int, default=5)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--extra", default="", help="more distill flags, space-separated")
    parser.add_argument("--floor", action="store_true",
                        help="also time the step's cost floor (student forward+backward, guided teacher forward, "
                             "target forward) on the run's task, in this process after the run")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args()
    work = Path(args.work)
    sys.path.insert(0, str(REPO / "scripts"))
    from gpu_check import build_pipeline, write_videos

    began = time.time()
    pipeline = build_pipeline(work / "pipeline", json.loads(CONFIG.read_text()), tiny=True)
    videos = write_videos(work / f"videos-{args.frames}x{args.height}x{args.width}", args.frames, args.height,
                          args.width)
    built = time.time() - began
    run = work / f"run-{args.student}-{args.frames}x{args.height}x{args.width}"
    command = [sys.executable, "-m", "videocm.cli", "distill", "--method", "lcm", "--teacher", str(pipeline),
               "--data", str(videos), "--student", args.student, "--frames", str(args.frames), "--height",
               str(args.height), "--width", str(args.width), "--max-sequence-length", "16", "--steps", str(args.steps),
               "--batch-size", "1", "--warmup-steps", "1", "--sample-every", "0", "--checkpoint-every",
               str(args.steps), "--out", str(run), "--overwrite",
               "--recipe", "none",  # the figures in docs/performance.md were measured with the built-in defaults
               *args.extra.split()]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    started = time.time()
    child = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline = []  # (seconds, resident GiB) every 0.25 s
    reader = threading.Thread(target=lambda: setattr(child, "captured", child.communicate()), daemon=True)
    reader.start()
    while child.poll() is None:
        timeline.append((round(time.time() - started, 2), resident_gib(child.pid)))
        time.sleep(0.25)
    reader.join()
    out, err = child.captured
    finished = subprocess.CompletedProcess(command, child.returncode, out, err)
    wall = time.time() - started
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # kB -> GiB
    step_times = [float(m) for m in re.findall(r"([0-9.]+)s/it", err)]  # tqdm's seconds per step, as it goes
    windows = {}
    for second, gib in timeline:  # the largest resident size in each 5 s of the run
        windows[int(second // 5) * 5] = max(windows.get(int(second // 5) * 5, 0.0), gib)
    log = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()] if \
        (run / "train_log.jsonl").is_file() else []
    times = [row.get("seconds") for row in log if row.get("seconds") is not None]
    checkpoints = sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
    plan_json = work / f"plan-{args.student}.json"
    plan = subprocess.run([sys.executable, "-m", "videocm.cli", "plan", "--teacher", str(pipeline), "--frames",
                           str(args.frames), "--height", str(args.height), "--width", str(args.width), "--device",
                           "cpu", "--batch-size", "1", "--gpus", "1", "--student", args.student, "--text-tokens", "16",
                           "--json", str(plan_json), "--overwrite"],
                          env=env, capture_output=True, text=True)
    result = {
        "command": " ".join(command[1:]),
        "machine": f"{os.cpu_count()} CPU cores",
        "returncode": finished.returncode,
        "error_tail": finished.stderr[-1500:] if finished.returncode else None,
        "seconds_to_build_pipeline": round(built, 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_gib": round(peak_gib, 2),
        "log_rows": log[-1:] if log else None,
        "seconds_per_step_logged": times,
        "tqdm_seconds_per_step": step_times,
        "resident_gib_per_5s": windows,
        "peak_at_second": max(timeline, key=lambda row: row[1])[0] if timeline else None,
        "output_tail": out[-1500:],
        "checkpoint": checkpoints[-1].name if checkpoints else None,
        "checkpoint_bytes": folder_bytes(checkpoints[-1]) if checkpoints else None,
        "checkpoint_files": {p.name: p.stat().st_size for p in checkpoints[-1].iterdir()} if checkpoints else None,
        "student_written": (run / "videocm.json").is_file(),
        "student_bytes": folder_bytes(run / "transformer") if (run / "transformer").is_dir() else None,
        "summary": json.loads((run / "train_summary.json").read_text()) if (run / "train_summary.json").is_file()
        else None,
        "plan_returncode": plan.returncode,
        "planned_peak_gib": planned_peak(plan_json, args.student),
        "plan": json.loads(plan_json.read_text()) if plan_json.is_file() else plan.stderr[-800:],
    }
    if args.floor and finished.returncode == 0:
        result["floor"] = floor(run)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
