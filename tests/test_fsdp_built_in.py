"""Two processes on the built-in teacher and data path (the shipped flow teacher, MovingDigits), launched as a user
on a machine without a GPU launches them (``torchrun``, no ``--cpu``): LCM, DCM's two stages and DMD under
``--parallel fsdp``, each equal to one process. (Before, accelerate took each such process for a run of its own:
FSDP failed on the second process and DDP trained two copies of one run into the same folder; the DDP case is
``tests/test_dcm.py``'s two-process test, also without ``--cpu``.)"""

from __future__ import annotations

import json

import pytest
import torch

from test_fsdp import ADAM_STRAYS, REPO, TOLERANCE, assert_same_weights, finish, launch, lcm_args, weights

BUILT_IN = {  # the built-in teacher and data (the shipped flow teacher, MovingDigits), each method on its default path
    "lcm": [],
    "dcm": ["--method", "dcm", "--steps", "0", "--semantic-steps", "2", "--detail-steps", "2", "--semantic-minutes", "0",
            "--detail-minutes", "0"],
    "dmd": ["--method", "dmd", "--fake-updates", "2"],
}


@pytest.mark.slow
@pytest.mark.parametrize("method,parallel", [("lcm", "fsdp"), ("dcm", "fsdp"), ("dmd", "fsdp")])
def test_two_processes_on_the_built_in_teacher_match_one_without_cpu_flag(tmp_path, method, parallel):
    """``torchrun --nproc_per_node 2 ... distill --teacher models/teacher-flow`` on a machine without a GPU and
    without ``--cpu``: two processes of one run (not two runs of one process each), equal to one process."""
    teacher = REPO / "models" / "teacher-flow"
    args = [*BUILT_IN[method], "--parallel", parallel]
    finish(launch(lcm_args(teacher, tmp_path / "two", 2, *args), 2, cpu_flag=False))
    finish(launch(lcm_args(teacher, tmp_path / "one", 2, *BUILT_IN[method]), 1, cpu_flag=False))
    summaries = sorted((tmp_path / "two").rglob("train_summary.json"))
    if method == "dcm":  # each stage's; the run's own summary gathers the stages
        summaries = [p for p in summaries if "stages" in p.parts]
    assert summaries and all(json.loads(p.read_text())["processes"] == 2 for p in summaries)
    assert all(json.loads(p.read_text())["parallel"] == parallel for p in summaries)
    assert_same_weights(tmp_path / "one", tmp_path / "two", adam_strays=ADAM_STRAYS, **TOLERANCE)
    trained, shipped = weights(tmp_path / "one"), weights(teacher)
    assert any(k in shipped and not torch.equal(trained[k], shipped[k]) for k in trained), "nothing trained"
