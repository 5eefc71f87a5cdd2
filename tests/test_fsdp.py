"""``--parallel fsdp`` (FSDP2 over gloo on this CPU): 2-process sharded runs against a 1-process plain run, for
LCM (a full Wan student), both DCM stages (Wan and UNet3D teachers: full semantic experts, LoRA detail experts
with their own modules) and DMD (its fake score and GAN head replicated), and exact resume of a SIGKILLed
sharded run on 2 and on 1 process.

Context parallelism (``--context-parallel 2``, diffusers' Ulysses attention over gloo) rides on the Wan runs: the
2 processes split every clip's tokens and must train what one process trains, which needs their forwards (the
student's, the teacher's, the target's, and in the DCM detail stage the teacher's gathered block features) and
backwards to equal one process's. UNet3D has no context-parallel plan in diffusers (a one-line error); ring
attention needs a log-sum-exp backend that only GPUs have, so on the CPU it is refused in one line and the GPU
check (``scripts/gpu_check.py``) covers it."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from videocm.distill.parallel import gather_full, make_engine
from videocm.errors import VideoCMError

REPO = Path(__file__).resolve().parents[1]
# a sum over 2 shards and the reduce-scatter's order differ from one process's sum in the last float32 bits
TOLERANCE = dict(atol=1e-5, rtol=1e-4)
ADAM_STRAYS = 2 * 2 * 1e-4  # 2 Adam steps of at most about the detail expert's learning rate (1e-4), either way


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], processes: int, cpu_flag: bool = True) -> subprocess.Popen:
    """``videocm ARGS`` on ``processes`` gloo processes (torchrun), or plainly for one; ``cpu_flag=False``: without
    ``--cpu`` (what a user types on a machine without a GPU)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1"}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
                 "--master_port", str(free_port())] if processes > 1 else [sys.executable])
    cpu = ["--cpu"] if args[0] == "distill" and cpu_flag else []
    return subprocess.Popen([*launcher, "-m", "videocm.cli", *args, *cpu], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(run: subprocess.Popen) -> str:
    output = run.communicate(timeout=900)[0]
    assert run.returncode == 0, output[-4000:]
    return output


def lcm_args(teacher: Path, out: Path, steps: int = 4, *extra: str) -> list[str]:
    return ["distill", "--teacher", str(teacher), "--out", str(out), "--steps", str(steps), "--batch-size", "4",
            "--latent-pool", "16", "--sample-every", "0", "--checkpoint-every", "2", "--warmup-steps", "1",
            "--store-dtype", "float32", *extra]


def weights(folder: Path) -> dict[str, torch.Tensor]:
    files = sorted(folder.rglob("*.safetensors"))
    assert files, f"no weights under {folder}"
    merged = {}
    for file in files:
        if "checkpoints" in file.parts or "vae" in file.parts:
            continue
        merged.update({f"{file.relative_to(folder)}:{k}": v for k, v in load_file(file).items()})
    return merged


def assert_same_weights(a: Path, b: Path, adam_strays: float = 0.0, strays_in: str = ".lora_B.",
                        **tolerance) -> None:
    """Every weight of ``a`` and ``b`` equal within ``tolerance``; ``adam_strays`` > 0: except, in a weight whose
    name holds ``strays_in`` (a LoRA ``B`` matrix, zero at the start; "": any), up to 1% of its elements by at most
    ``adam_strays``. Adam's first steps move an element by about the learning rate whatever its gradient's size,
    so a gradient within float32 noise of zero (summed over two shards or one) may move it either way; a sharding
    error moves far more than 1%."""
    first, second = weights(a), weights(b)
    assert first.keys() == second.keys()
    for key in first:
        if adam_strays and strays_in in key:
            close = torch.isclose(second[key], first[key], **tolerance)
            gap = (second[key] - first[key]).abs().max().item()
            assert close.float().mean() >= 0.99 and gap <= adam_strays, f"{key}: {int((~close).sum())} differ, by {gap}"
            continue
        torch.testing.assert_close(second[key], first[key], msg=key, **tolerance)


@pytest.mark.slow
@pytest.mark.parametrize("family,student,sharding", [
    ("wan", "full", ["--context-parallel", "2"])])  # both processes split each clip's tokens
# a full UNet3D student is sharded in the DCM test's semantic stage below, and a LoRA student under FSDP in its
# detail stage (the detail expert is a peft LoRA with its own modules), so no separate LoRA LCM run is kept here
def test_two_sharded_processes_match_one_plain_process(tiny_teachers, tmp_path, family, student, sharding):
    extra = ["--student", student]
    sharded = launch(lcm_args(tiny_teachers[family], tmp_path / "fsdp", 4, *extra, "--parallel", "fsdp",
                              *sharding), 2)
    finish(sharded)
    summary = json.loads((tmp_path / "fsdp" / "train_summary.json").read_text())
    assert summary["processes"] == 2 and summary["parallel"] == "fsdp"
    assert summary["context_parallel"] == (2 if "--context-parallel" in sharding else 1)
    # the checkpoints are sharded DCP folders
    assert (tmp_path / "fsdp" / "checkpoints" / "step-4" / ".metadata").is_file()
    finish(launch(lcm_args(tiny_teachers[family], tmp_path / "plain", 4, *extra), 1))
    assert_same_weights(tmp_path / "plain", tmp_path / "fsdp", **TOLERANCE)
    teacher = weights(tiny_teachers[family])
    trained = weights(tmp_path / "plain")
    moved = [k for k in trained if k in teacher and not torch.equal(trained[k], teacher[k])]
    assert moved, "training moved no weight, so the match would be trivial"
    if family == "wan" and student == "full":
        # the last sharded checkpoint, gathered on one process by `videocm export`, is the saved student exactly
        checkpoint = tmp_path / "fsdp" / "checkpoints" / "step-4"
        output = finish(launch(["export", "--model", str(checkpoint), "--out", str(tmp_path / "exported"),
                                "--format", "model", "--gathered", str(tmp_path / "gathered")], 1))
        assert "gathered" in output and (tmp_path / "exported").is_dir()
        assert_same_weights(tmp_path / "fsdp", tmp_path / "gathered", atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("family,sharding", [
    # Wan with context parallelism: tests/test_fsdp_built_in.py on the shipped Wan teacher
    ("unet3d", ["--teacher-offload", "true"])])  # the teacher's shards in CPU memory (trivial on a CPU)
def test_sharded_dcm_stages_match_one_plain_process(tiny_teachers, tmp_path, family, sharding):
    args = ["--method", "dcm", "--steps", "0", "--semantic-steps", "2", "--detail-steps", "2", "--semantic-minutes", "0",
            "--detail-minutes", "0", "--disc-every", "1"]
    finish(launch(lcm_args(tiny_teachers[family], tmp_path / "fsdp", 2, *args, "--parallel", "fsdp", *sharding), 2))
    finish(launch(lcm_args(tiny_teachers[family], tmp_path / "plain", 2, *args), 1))
    detail = tmp_path / "fsdp" / "stages" / "expert-1-detail" / "train_log.csv"
    assert "gan_discriminator" in detail.read_text().splitlines()[0]
    # the semantic network, the detail expert's LoRA and own modules, and each stage's saved expert
    assert_same_weights(tmp_path / "plain", tmp_path / "fsdp", adam_strays=ADAM_STRAYS, **TOLERANCE)


# DMD's sharded run (its fake score and GAN head replicated): tests/test_fsdp_built_in.py


KILL_STEPS = 12


@pytest.fixture(scope="module")
def uninterrupted(tiny_teachers, tmp_path_factory) -> Path:
    """A sharded 2-process run that nobody kills (shared by both resume tests)."""
    out = tmp_path_factory.mktemp("fsdp-clean") / "run"
    finish(launch(lcm_args(tiny_teachers["wan"], out, KILL_STEPS, "--parallel", "fsdp"), 2))
    return out


@pytest.fixture(scope="module")
def killed(tiny_teachers, tmp_path_factory) -> Path:
    """A sharded 2-process run SIGKILLed after its step-4 checkpoint (each resume test resumes a copy)."""
    out = tmp_path_factory.mktemp("fsdp-killed") / "run"
    run = launch(lcm_args(tiny_teachers["wan"], out, KILL_STEPS, "--parallel", "fsdp"), 2)
    checkpoint = out / "checkpoints" / "step-4" / "complete.json"
    deadline = time.time() + 600
    while not checkpoint.exists() and time.time() < deadline and run.poll() is None:
        time.sleep(0.02)
    _kill_tree(run)
    assert not (out / "videocm.json").exists(), "the run finished before it could be killed"
    return out


@pytest.mark.slow
@pytest.mark.parametrize("resume_processes", [2, 1])
def test_sigkilled_sharded_run_resumes_on_two_or_one_process(tiny_teachers, uninterrupted, killed, tmp_path,
                                                             resume_processes):
    copy = tmp_path / "killed"
    shutil.copytree(killed, copy)
    output = finish(launch(lcm_args(tiny_teachers["wan"], copy, KILL_STEPS, "--parallel", "fsdp", "--resume"),
                           resume_processes))
    assert "resuming from" in output
    # same process count: the same sums in the same order; one process: the shards' sums in another order
    tolerance = dict(atol=0, rtol=0) if resume_processes == 2 else TOLERANCE
    assert_same_weights(uninterrupted, copy, **tolerance)


def _kill_tree(run: subprocess.Popen) -> None:
    """SIGKILL the launcher and every worker it started."""
    children = subprocess.run(["pgrep", "-P", str(run.pid)], capture_output=True, text=True).stdout.split()
    os.kill(run.pid, signal.SIGKILL)
    for child in children:
        try:
            os.kill(int(child), signal.SIGKILL)
        except ProcessLookupError:
            pass
    run.wait()


def test_gather_full_leaves_plain_state_whole_and_on_the_cpu():
    state = {"a": torch.ones(2), "b": [torch.zeros(1), 3], "c": "text"}
    gathered = gather_full(state)
    assert torch.equal(gathered["a"], state["a"]) and gathered["b"][1] == 3 and gathered["c"] == "text"


def test_gathering_a_plain_folder_is_one_line_error(tmp_path):
    from videocm.training.gather import gather_checkpoint

    with pytest.raises(VideoCMError, match="is not a complete checkpoint"):
        gather_checkpoint(tmp_path, tmp_path / "out")


def test_a_plain_checkpoint_exports_as_the_student_its_run_saved_and_an_unfinished_run_names_it(tmp_path, capsys):
    from videocm.cli import main

    teacher = Path(__file__).resolve().parents[1] / "models" / "teacher-flow"
    run = tmp_path / "run"
    assert main(["distill", "--teacher", str(teacher), "--out", str(run), "--steps", "2", "--batch-size", "2",
                 "--latent-pool", "8", "--checkpoint-every", "1", "--sample-every", "0"]) == 0
    checkpoint = run / "checkpoints" / "step-2"
    assert not (checkpoint / ".metadata").exists()  # a plain (unsharded) checkpoint
    assert main(["export", "--model", str(checkpoint), "--out", str(tmp_path / "exported"), "--format", "model",
                 "--gathered", str(tmp_path / "gathered")]) == 0
    assert (tmp_path / "exported" / "scheduler").is_dir()
    assert_same_weights(run, tmp_path / "gathered", atol=0, rtol=0)  # the EMA weights the run saved at step 2
    (run / "videocm.json").unlink()  # as while the run still trains: no student written yet
    capsys.readouterr()
    assert main(["export", "--model", str(run), "--out", str(tmp_path / "again")]) == 2
    err = capsys.readouterr().err.strip()
    assert "is a run that has not finished" in err and f"--model {checkpoint}" in err and "\n" not in err


def test_unknown_parallel_mode_is_one_line_error():
    from videocm.config import load_config
    from videocm.distill.lcm import LCMConfig

    with pytest.raises(VideoCMError, match="--parallel 'zero3': use one of ddp, fsdp"):
        load_config(LCMConfig, overrides=["--parallel", "zero3"])


def test_context_parallel_errors_are_one_line():
    from accelerate import Accelerator

    from videocm.distill.parallel import _check_context_parallel
    from videocm.models.families import get_family

    unet = get_family("unet3d").build_network(4, 16, 8, {"unet_channels": [16, 16], "unet_head_dim": 8})
    with pytest.raises(VideoCMError, match="no context-parallel plan for UNet3DConditionModel"):
        _check_context_parallel(unet, 2, "ulysses", None)
    wan = get_family("wan").build_network(4, 16, 8, {"wan_layers": 1, "wan_heads": 3, "wan_head_dim": 8})
    with pytest.raises(VideoCMError, match="splits the 3 heads"):
        _check_context_parallel(wan, 2, "ulysses", None)
    with pytest.raises(VideoCMError, match="a clip of 9 tokens does not split over 2"):
        _check_context_parallel(wan, 2, "ring", (4, 1, 6, 6))

    class Config:
        parallel, context_parallel, context_parallel_kind = "fsdp", 2, "ring"

    with pytest.raises(VideoCMError, match="on the CPU use --context-parallel-kind ulysses"):
        make_engine(Config(), Accelerator(cpu=True))
    Config.context_parallel_kind = "ulysses"
    with pytest.raises(VideoCMError, match="--context-parallel 2 does not divide the 1 processes"):
        make_engine(Config(), Accelerator(cpu=True))
    Config.parallel = "ddp"
    with pytest.raises(VideoCMError, match="--context-parallel needs --parallel fsdp"):
        make_engine(Config(), Accelerator(cpu=True))
