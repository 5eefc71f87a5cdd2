"""Shared fixtures: a tiny VAE and tiny teachers of both families, trained once per test session."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
MACHINE_THREADS = torch.get_num_threads()
if os.environ.get("PYTEST_XDIST_WORKER"):  # one torch thread per worker: the workers share the cores
    torch.set_num_threads(1)


@contextlib.contextmanager
def machine_threads():
    """Build a shared fixture with torch's own thread count, as a plain ``pytest`` process does: its weights then
    do not depend on how many workers run the suite (the FSDP-against-plain comparisons are calibrated on them;
    see test_fsdp's DCM case, where a LoRA weight's Adam step follows the sign of a near-zero gradient)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(MACHINE_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


from videocm.training.teacher import TeacherConfig, train_teacher  # noqa: E402
from videocm.training.vae import VAETrainConfig, train_vae  # noqa: E402
from videocm.evaluation.monitor import JudgeMonitor  # noqa: E402

TINY_NETWORKS = dict(wan_layers=1, wan_heads=2, wan_head_dim=12, wan_ffn_dim=32, unet_channels=[16, 16],
                     unet_head_dim=8)


@pytest.fixture(scope="session")
def tiny_vae(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vae")
    with machine_threads():
        train_vae(VAETrainConfig(out=str(out), steps=2, batch_size=2, block_out_channels=[8, 8, 8], eval_clips=8,
                                 stats_clips=8, sample_every=0, checkpoint_every=100), progress=False,
                  monitor=JudgeMonitor())
    return out


def tiny_teacher_config(out: Path, family: str, vae: Path, **changes) -> TeacherConfig:
    values = dict(out=str(out), family=family, vae=str(vae), steps=4, batch_size=2, warmup_steps=1,
                  checkpoint_every=2, sample_every=0, **TINY_NETWORKS)
    values.update(changes)
    return TeacherConfig(**values)


@pytest.fixture(scope="session")
def tiny_teachers(tmp_path_factory, tiny_vae) -> dict[str, Path]:
    folders = {}
    for family in ("wan", "unet3d"):
        out = tmp_path_factory.mktemp(family)
        with machine_threads():
            train_teacher(tiny_teacher_config(out, family, tiny_vae), progress=False)
        folders[family] = out
    return folders




def assert_spec_modules_exist(spec, network) -> None:
    """The LoRA targets, a DCM detail expert's own modules and the feature blocks ``spec`` names exist in
    ``network``."""
    names = [n for n, _ in network.named_modules()]
    for target in spec.lora_targets:
        assert any(n == target or n.endswith("." + target) for n in names), f"no module matches {target}"
    parts = names + [n for n, _ in network.named_parameters()]
    for own in spec.detail_own_modules:
        assert own in parts, f"{own} is neither a module nor a parameter of {type(network).__name__}"
    blocks = spec.feature_blocks(network)
    assert blocks and all(any(b is m for m in network.modules()) for b in blocks)
