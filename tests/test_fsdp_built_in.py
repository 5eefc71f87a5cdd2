"""Two processes on the built-in teacher and data path (the shipped flow teacher, MovingDigits), launched as a user
on a machine without a GPU launches them (``torchrun``, no ``--cpu``): LCM, DCM's two stages, DMD and rCM under
``--parallel fsdp``, each equal to one process (DCM with its clips' tokens split over both processes, DMD with
its GAN head, rCM with sCM's forward-mode JVP through the sharded student: the tiny-pipeline versions of DCM and
DMD were folded in here). (Before, accelerate took each such process for a run of its own: FSDP failed on the
second process and DDP trained two copies of one run into the same folder; the DDP case is
``tests/test_dcm.py``'s two-process test, also without ``--cpu``.)"""

from __future__ import annotations

import json

import pytest
import torch

from test_fsdp import ADAM_STRAYS, REPO, TOLERANCE, assert_same_weights, finish, launch, lcm_args, weights

BUILT_IN = {  # the built-in teacher and data (the shipped flow teacher, MovingDigits), each method on its default path
    "lcm": [],
    "dcm": ["--method", "dcm", "--steps", "0", "--semantic-steps", "2", "--detail-steps", "2", "--semantic-minutes", "0",
            "--detail-minutes", "0", "--disc-every", "1"],
    "dmd": ["--method", "dmd", "--fake-updates", "2", "--dmd-gan-weight", "0.05"],
    # rCM (sCM's JVP through the sharded student, then the matching term and fake score) past its tangent warm-up,
    # with sCM's learned weighting (a module of its own, which joins the run on every process)
    "rcm": ["--method", "rcm", "--tangent-warmup", "1", "--fake-updates", "2", "--adaptive-weighting", "true"],
}
# on two processes only: DCM also splits each clip's tokens over both (Ulysses context parallelism on the shipped
# Wan transformer, its teacher's gathered block features included); DMD's fake score and GAN head are replicated
SHARDED_ONLY = {"lcm": [], "dcm": ["--context-parallel", "2"], "dmd": [], "rcm": []}


def last_logged(log, column: str) -> float:
    header, *rows = log.read_text().splitlines()
    return float(rows[-1].split(",")[header.split(",").index(column)])


@pytest.mark.slow
@pytest.mark.parametrize("method,parallel", [("lcm", "fsdp"), ("dcm", "fsdp"), ("dmd", "fsdp"), ("rcm", "fsdp")])
def test_two_processes_on_the_built_in_teacher_match_one_without_cpu_flag(tmp_path, method, parallel):
    """``torchrun --nproc_per_node 2 ... distill --teacher models/teacher-flow`` on a machine without a GPU and
    without ``--cpu``: two processes of one run (not two runs of one process each), equal to one process."""
    teacher = REPO / "models" / "teacher-flow"
    args = [*BUILT_IN[method], "--parallel", parallel, *SHARDED_ONLY[method]]
    finish(launch(lcm_args(teacher, tmp_path / "two", 2, *args), 2, cpu_flag=False))
    finish(launch(lcm_args(teacher, tmp_path / "one", 2, *BUILT_IN[method]), 1, cpu_flag=False))
    summaries = sorted((tmp_path / "two").rglob("train_summary.json"))
    if method == "dcm":  # each stage's; the run's own summary gathers the stages
        summaries = [p for p in summaries if "stages" in p.parts]
    assert summaries and all(json.loads(p.read_text())["processes"] == 2 for p in summaries)
    assert all(json.loads(p.read_text())["parallel"] == parallel for p in summaries)
    if method == "dcm":
        detail = tmp_path / "two" / "stages" / "expert-1-detail" / "train_log.csv"
        assert "gan_discriminator" in detail.read_text().splitlines()[0]
        assert json.loads(summaries[0].read_text())["context_parallel"] == 2
    if method in ("dmd", "rcm"):
        header, *rows = (tmp_path / "two" / "train_log.csv").read_text().splitlines()
        header = header.split(",")
    if method == "dmd":
        assert {"dmd", "fake_score", "gan_generator", "gan_classifier"} <= set(header)
    if method == "rcm":  # the JVP ran (its tangent's norm logged) on every step, then the matching term
        assert {"tangent_norm", "dmd", "fake_score"} <= set(header) and rows
        assert all(float(r.split(",")[header.index("tangent_norm")]) > 0 for r in rows)
        # the learned weighting, stepped on both processes' clips: as one process's (not on half the clips each)
        two, one = (last_logged(tmp_path / run / "train_log.csv", "adaptive_weight") for run in ("two", "one"))
        assert two == pytest.approx(one, abs=1e-7) and two != 0.0  # (it moved from its zero start)
    # DMD: the generator's and fake score's Adam steps on near-zero gradients anywhere in the network (2 steps of
    # at most about lr 5e-5 each way); rCM trains the whole network at 1e-4, so its may be anywhere too
    strays = ({"adam_strays": 4 * 5e-5, "strays_in": ""} if method == "dmd" else
              {"adam_strays": ADAM_STRAYS, "strays_in": ""} if method == "rcm" else
              {"adam_strays": ADAM_STRAYS})
    assert_same_weights(tmp_path / "one", tmp_path / "two", **strays, **TOLERANCE)
    trained, shipped = weights(tmp_path / "one"), weights(teacher)
    assert any(k in shipped and not torch.equal(trained[k], shipped[k]) for k in trained), "nothing trained"
