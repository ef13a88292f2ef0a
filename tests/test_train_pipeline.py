"""Training over the real Rust pipeline (bundled synthetic data): exact resume, epochs,
logs, export."""

from __future__ import annotations

import csv
import os
import signal
from functools import partial
from pathlib import Path

import pytest
import torch

import lightclip
from lightclip.checkpoint import LATEST, load_checkpoint, model_from_checkpoint
from quiet_run import quiet_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_config = partial(
    quiet_config, train_data="synthetic:train", train_num_samples=20, steps=7, workers=1, warmup=2
)


def _curve(history):
    return [
        (h["step"], h["epoch"], h["loss"], h["loss_ins"], h["loss_tok"], h["loss_mlm"])
        for h in history
    ]


def test_killed_mid_epoch_and_resumed_gives_the_same_loss_curve(tmp_path: Path) -> None:
    # 5 batches per epoch, 7 steps: stop at step 3 (mid epoch 0), resume, cross into epoch 1.
    straight = lightclip.train(_config(tmp_path / "a"))
    assert [h["epoch"] for h in straight.history] == [0, 0, 0, 0, 0, 1, 1]

    def ctrl_c(step: int, _metrics: dict) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)

    first = lightclip.train(_config(tmp_path / "b"), on_step=ctrl_c)
    assert first.interrupted and first.step == 3
    data_state = load_checkpoint(tmp_path / "b" / "run" / "checkpoints" / LATEST)["data"]
    assert data_state[0]["epoch"] == 0 and data_state[0]["consumed"] > 0
    second = lightclip.train(_config(tmp_path / "b", resume="latest"))
    assert _curve(first.history + second.history) == _curve(straight.history)
    # The resumed run's CSV holds the whole curve once, in order.
    with (tmp_path / "b" / "run" / "metrics.csv").open() as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r["kind"] == "train"]
    assert steps == list(range(1, 8))


def test_epochs_checkpoints_eval_and_export(tmp_path: Path) -> None:
    result = lightclip.train(
        _config(
            tmp_path,
            steps=None,
            epochs=2,
            train_num_samples=8,
            export=True,
            val_data="synthetic:heldout",
            val_num_samples=16,
            val_frequency=2,
        )
    )
    assert result.total_steps == 4 and result.step == 4 and result.epoch == 2
    names = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert names == ["epoch_1.pt", "epoch_2.pt", "epoch_latest.pt"]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "epoch_1.pt")["step"] == 2
    for key in ("image_retrieval_recall@1", "text_retrieval_recall@5", "zeroshot_acc1"):
        assert 0.0 <= result.eval_metrics[key] <= 1.0
    # The export is safetensors and JSON only (an open_clip folder), nothing to unpickle ...
    assert result.export_path == tmp_path / "run" / "inference_model"
    assert sorted(p.name for p in result.export_path.iterdir()) == [
        "clip-tiny-mnv2.json",
        "lightclip_config.json",
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    # ... drops the training-only heads and embeds exactly like the trained model.
    trained = model_from_checkpoint(result.checkpoint).eval()
    exported = model_from_checkpoint(result.export_path).eval()
    assert exported.config.token_head is False and exported.config.mlm is False
    images = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(exported.encode_image(images), trained.encode_image(images))
