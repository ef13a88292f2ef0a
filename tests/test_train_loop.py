"""The loop's bookkeeping: accumulation, clipping, precision, schedule, logit-scale clamp."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import pytest

import lightclip
from lightclip.schedules import lr_at
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


_config = partial(quiet_config, steps=3)


def test_accumulation_clipping_bf16_autocast_and_lr(tmp_path: Path) -> None:
    data = FakePipeline(num_samples=32, batch_size=4)
    result = lightclip.train(
        _config(
            tmp_path, accum_freq=2, grad_clip_norm=0.5, precision="amp_bf16", warmup=1, lr=2e-3
        ),
        data=data,
    )
    assert result.step == 3 and data.batches_served == 6  # two micro-batches per step
    for h in result.history:
        assert math.isfinite(h["loss"]) and h["grad_norm"] > 0
        # The logged total is the weighted sum of the logged parts.
        expected = 0.8 * h["loss_ins"] + 0.1 * h["loss_tok"] + 0.1 * h["loss_mlm"]
        assert h["loss"] == pytest.approx(expected, rel=1e-4)
    assert [h["lr"] for h in result.history] == [
        lr_at(s, base_lr=2e-3, warmup_steps=1, total_steps=3) for s in range(3)
    ]


def test_a_run_without_name_gets_one_and_leaves_the_config_as_it_was(tmp_path: Path) -> None:
    from lightclip.checkpoint import load_checkpoint

    config = _config(tmp_path, recipe="clip", steps=1, name=None)
    result = lightclip.train(config, data=FakePipeline(num_samples=8, batch_size=4))
    assert config.name is None  # a second train(config) gets a folder of its own
    assert result.run_dir.parent == tmp_path
    assert result.run_dir.name.endswith("-lightclip-tiny-mnv2-clip")
    saved = load_checkpoint(result.checkpoint)
    assert saved["name"] == saved["config"]["name"] == result.run_dir.name


def test_clip_recipe_has_only_the_contrastive_loss(tmp_path: Path) -> None:
    result = lightclip.train(
        _config(tmp_path, recipe="clip", steps=1), data=FakePipeline(num_samples=8, batch_size=4)
    )
    (row,) = result.history
    assert {k for k in row if k.startswith("loss_")} == {"loss_ins"}
    assert row["loss"] == pytest.approx(row["loss_ins"])  # w_ins = 1 for plain CLIP


def test_logit_scale_stays_clamped_at_ln_100(tmp_path: Path, monkeypatch) -> None:
    # Start the temperature at the bound with a large lr: the step pushes it over, the clamp
    # brings it back.
    from lightclip.models import LightCLIPConfig

    original = LightCLIPConfig.replace

    def start_at_bound(self, **kw):
        return original(self, **kw, init_logit_scale=math.log(100.0))

    monkeypatch.setattr(LightCLIPConfig, "replace", start_at_bound)
    result = lightclip.train(
        _config(tmp_path, recipe="clip", steps=2, lr=0.5),
        data=FakePipeline(num_samples=8, batch_size=4),
    )
    assert all(h["logit_scale"] <= 100.0 + 1e-3 for h in result.history)


def test_metrics_read_in_windows_equal_metrics_read_every_step(tmp_path: Path) -> None:
    # Without a hook the loop reads its metrics off the device only at log steps, epoch ends
    # and the end (step_metrics.py). The rows must be the ones a read every step gives: every
    # step, the same losses, with the window's mean step time. 7 steps of 4 batches per epoch
    # cross an epoch end (step 4) and end off a log step (7).
    def run(name: str, every: int, on_step=None) -> lightclip.TrainResult:
        return lightclip.train(
            _config(tmp_path, name=name, steps=7, log_every_n_steps=every, grad_clip_norm=1.0),
            data=FakePipeline(num_samples=16, batch_size=4),
            on_step=on_step,
        )

    seen: list[int] = []
    each = run("each", every=1)
    windows = run("windows", every=3)
    hooked = run("hooked", every=3, on_step=lambda step, _m: seen.append(step))
    assert seen == list(range(1, 8))  # a hook still sees every step, as it happens
    steps = [h["step"] for h in each.history]
    assert steps == [h["step"] for h in windows.history] == list(range(1, 8))
    for a, b, c in zip(each.history, windows.history, hooked.history, strict=True):
        for key in ("loss", "loss_ins", "loss_tok", "loss_mlm", "grad_norm", "logit_scale"):
            assert a[key] == b[key] == c[key], (a["step"], key)
        assert a["lr"] == b["lr"] and a["epoch"] == b["epoch"]
    # Read together: steps 1-3 (log step), 4 (epoch end), 5-6 (log step), 7 (the end).
    times = [h["step_time"] for h in windows.history]
    assert times[0] == times[1] == times[2] != times[3]
    assert times[4] == times[5] != times[6]
    rows = (tmp_path / "windows" / "metrics.csv").read_text().splitlines()
    assert [r.split(",")[0] for r in rows[1:]] == ["3", "6"]
