"""torchrun DDP on CPU (gloo): a 2-rank run equals a 1-rank run with the same global batch.

Both runs see the same samples with the same augmentation and masking (the pipeline keys
every sample's randomness on its place in the epoch, not on the rank), the contrastive loss
all-gathers features with gradients, and the MLM loss is normalised by the global masked
count, so the first steps' losses must agree up to float summation order. With an online
teacher the same holds: the distillation loss all-gathers the teacher's features with the
student's (``losses/distillation.py``, ``pair_logits``), and feature distillation is a mean
over rows, which the ranks' average makes the global one. The towers are a small Swin
(LayerNorm only): BatchNorm towers normalise with per-rank statistics under DDP, as in plain
PyTorch, so they differ by design.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

TINY_SWIN = dict(
    name="test-tiny-swin",
    image_tower="swin",
    image_size=64,
    embed_dim=64,
    swin_embed_dim=16,
    swin_depths=[1, 1, 1, 1],
    swin_heads=[1, 2, 2, 4],
    window_size=2,
    context_length=32,
    text_width=64,
    text_heads=2,
    text_layers=4,
    d_tok=32,
    fusion_heads=2,
)
STEPS = 3
LOSSES = ("loss", "loss_ins", "loss_tok", "loss_mlm")  # metrics.csv columns
# Minutes on a quiet machine; generous for one busy with other work (`make test` beside a
# training run). The ranks' own gloo timeout is torch's default of 30 minutes.
RUN_TIMEOUT_S = 20 * 60


def _run(cmd: list[str], tmp: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    # A session of its own, so that a run past the deadline (or a Ctrl-C of the tests) takes
    # the ranks torchrun started down with it, not only torchrun.
    with subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp,
        start_new_session=True,
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT_S)
        except BaseException as e:
            os.killpg(proc.pid, signal.SIGKILL)
            stdout, stderr = proc.communicate()
            if not isinstance(e, subprocess.TimeoutExpired):
                raise
            pytest.fail(
                f"{Path(cmd[0]).name} did not finish in {RUN_TIMEOUT_S} s: {stderr[-3000:]}"
            )
    assert proc.returncode == 0, stderr[-3000:]
    return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)


def _losses(run_dir: Path, keys: tuple[str, ...]) -> list[dict[str, float]]:
    with (run_dir / "metrics.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["kind"] == "train"]
    return [{k: float(r[k]) for k in ("step", *keys)} for r in rows]


def _one_and_two_ranks(
    tmp: Path, keys: tuple[str, ...], *extra: str
) -> tuple[list[dict[str, float]], list[dict[str, float]], subprocess.CompletedProcess]:
    """Trains the tiny Swin for STEPS steps with ``extra`` flags, as 1 rank with batch 8 and
    under torchrun as 2 ranks with batch 4; returns both runs' losses ``keys`` per step and the
    2-rank run's process."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    assert torchrun is not None
    model = tmp / "tiny-swin.json"
    model.write_text(json.dumps(TINY_SWIN))
    common = [
        "--model",
        str(model),
        "--train-data",
        "synthetic:train",
        "--train-num-samples",
        "64",
        "--steps",
        str(STEPS),
        "--logs-dir",
        str(tmp / "logs"),
        "--no-progress",
        "--log-every-n-steps",
        "1",
        "--workers",
        "1",
        "--no-export",
        "--lr",
        "1e-3",
        # gloo on the CPU wherever it runs: "auto" would take the GPU on a GPU machine, and
        # two ranks need two of them.
        "--device",
        "cpu",
        *extra,
    ]
    _run(
        [sys.executable, "-m", "lightclip.train", *common, "--batch-size", "8", "--name", "one"],
        tmp,
    )
    ddp = _run(
        [
            torchrun,
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "lightclip",
            "train",
            *common,
            "--batch-size",
            "4",
            "--name",
            "two",
        ],
        tmp,
    )
    assert "2x cpu" in ddp.stderr  # it really ran as two ranks
    one, two = _losses(tmp / "logs" / "one", keys), _losses(tmp / "logs" / "two", keys)
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1.0, 2.0, 3.0]
    return one, two, ddp


def _assert_losses_agree(
    one: list[dict[str, float]], two: list[dict[str, float]], keys: tuple[str, ...]
) -> None:
    for a, b in zip(one, two, strict=True):
        for key in keys:
            assert b[key] == pytest.approx(a[key], rel=2e-4, abs=1e-5), (a["step"], key)


@pytest.mark.slow
def test_two_ranks_equal_one_rank_with_the_same_global_batch(tmp_path: Path) -> None:
    one, two, ddp = _one_and_two_ranks(tmp_path, LOSSES)
    # The README's launch line: `-m lightclip.train` would make every rank print runpy's
    # "found in sys.modules" RuntimeWarning, since the package imports its train module.
    assert "RuntimeWarning" not in ddp.stderr
    _assert_losses_agree(one, two, LOSSES)
    # The loss moved, so the later steps compare trained weights, not just the initial ones.
    assert one[0]["loss"] != one[-1]["loss"]
    # Only rank 0 wrote the run folder's files.
    assert sorted(p.name for p in (tmp_path / "logs" / "two").iterdir()) == [
        "checkpoints",
        "config.json",
        "metrics.csv",
    ]


def _export_teacher(tmp: Path) -> Path:
    """A lightclip export of a teacher unlike the student: its own seed and a narrower joint
    space, so feature distillation's projection is no square identity."""
    import torch

    from lightclip.models import LightCLIP, resolve_model_config
    from lightclip.openclip_export import export_openclip

    config = tmp / "tiny-swin-teacher.json"
    teacher = dict(TINY_SWIN, name="test-tiny-swin-teacher", embed_dim=48)
    config.write_text(json.dumps(teacher))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        model = LightCLIP(resolve_model_config(str(config)))
    return export_openclip(model, tmp / "teacher")


@pytest.mark.slow
def test_distillation_on_two_ranks_equals_one_rank_with_the_same_global_batch(
    tmp_path: Path,
) -> None:
    keys = (*LOSSES, "loss_distill", "loss_distill_feature")
    teacher = f"local-dir:{_export_teacher(tmp_path)}"
    one, two, _ = _one_and_two_ranks(
        tmp_path, keys, "--distill-model", teacher, "--w-distill-feature", "1"
    )
    _assert_losses_agree(one, two, keys)
    assert one[0]["loss"] != one[-1]["loss"]
    # Both distillation losses moved too: the later steps compare them on trained weights.
    assert one[0]["loss_distill"] != one[-1]["loss_distill"]
    assert one[0]["loss_distill_feature"] != one[-1]["loss_distill_feature"]
