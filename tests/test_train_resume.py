"""Exact resume: a run stopped at step k and resumed gives the uninterrupted loss curve.

The stand-in pipeline (tests/train_fakes.py) isolates the loop's own bookkeeping: model,
optimizer, RNG and data position saved at the same step boundary. The same property over the
real Rust pipeline is in test_train_pipeline.py.
"""

from __future__ import annotations

import os
import signal
from functools import partial

import pytest
import torch

import lightclip
from lightclip.checkpoint import LATEST, load_checkpoint
from quiet_run import quiet_config
from train_fakes import FakePipeline

STEPS = 6  # 4 batches per epoch: the runs cross an epoch boundary


pytestmark = pytest.mark.usefixtures("one_torch_thread")


_config = partial(quiet_config, steps=STEPS, warmup=2)


def _losses(history: list[dict[str, float]]) -> list[tuple[int, float, float, float, float]]:
    return [(h["step"], h["loss"], h["loss_ins"], h["loss_tok"], h["loss_mlm"]) for h in history]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[tuple]:
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("straight")
    result = lightclip.train(_config(tmp), data=FakePipeline(num_samples=16, batch_size=4))
    assert result.step == STEPS and not result.interrupted
    return _losses(result.history)


def test_ctrl_c_saves_and_resume_latest_continues_exactly(tmp_path, uninterrupted) -> None:
    def press_ctrl_c(step: int, _metrics: dict) -> None:
        if step == 3:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, handled by the loop

    first = lightclip.train(
        _config(tmp_path), data=FakePipeline(num_samples=16, batch_size=4), on_step=press_ctrl_c
    )
    assert first.interrupted and first.step == 3
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / LATEST)
    assert saved["step"] == 3 and saved["data"] == [{"epoch": 0, "position": 3}]

    data = FakePipeline(num_samples=16, batch_size=4)
    second = lightclip.train(_config(tmp_path, resume="latest"), data=data)
    assert second.step == STEPS and not second.interrupted
    assert _losses(first.history + second.history) == uninterrupted
    # The resumed run read only what was left: 1 batch of epoch 0, 2 of epoch 1.
    assert data.batches_served == 3


def test_crash_resumes_from_the_last_periodic_checkpoint(tmp_path, uninterrupted) -> None:
    def crash(step: int, _metrics: dict) -> None:
        if step == 5:
            raise RuntimeError("simulated crash")

    config = _config(tmp_path, save_every_n_steps=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        lightclip.train(config, data=FakePipeline(num_samples=16, batch_size=4), on_step=crash)
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / LATEST)
    assert saved["step"] == 4 and saved["epoch"] == 1  # step 4 ended epoch 0's last batch

    resumed = lightclip.train(
        _config(tmp_path, resume="latest"), data=FakePipeline(num_samples=16, batch_size=4)
    )
    assert _losses(resumed.history) == uninterrupted[4:]


def test_resume_refuses_a_checkpoint_of_other_switches(tmp_path) -> None:
    lightclip.train(
        _config(tmp_path, recipe="clip", steps=1), data=FakePipeline(num_samples=16, batch_size=4)
    )
    path = tmp_path / "run" / "checkpoints" / LATEST
    with pytest.raises(lightclip.LightclipError, match="does not fit.*--token-loss"):
        lightclip.train(
            _config(tmp_path, name="other", resume=str(path), steps=2),
            data=FakePipeline(num_samples=16, batch_size=4),
        )
    with pytest.raises(lightclip.LightclipError, match="written by model 'lightclip-tiny-mnv2'"):
        lightclip.train(
            _config(tmp_path, name="other", model="clip-tiny-mnv2", resume=str(path), steps=2),
            data=FakePipeline(num_samples=16, batch_size=4),
        )
