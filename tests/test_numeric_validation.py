"""No NaN model with exit 0: every numeric flag is checked up front, and a
run whose loss becomes non-finite stops at once, naming the step and the loss part, with the
last good checkpoint kept and nothing saved or exported after the bad step."""

from __future__ import annotations

import importlib
import math
import typing
from functools import partial

import pytest
import torch

import lightclip
from lightclip.checkpoint import LATEST, load_checkpoint, model_state
from lightclip.cli import main
from lightclip.config import TrainConfig
from lightclip.errors import InvalidInputError, LightclipError, NonFiniteLossError
from lightclip.losses import LightCLIPLoss
from quiet_run import quiet_config
from train_fakes import FakePipeline

NAN, INF = math.nan, math.inf

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# `lightclip.train` is the function; the loop's module is patched where it looks names up.
train_module = importlib.import_module("lightclip.train")


def _float_fields() -> list[str]:
    hints = typing.get_type_hints(TrainConfig)
    return [name for name, hint in hints.items() if float in (hint, *typing.get_args(hint))]


def test_the_float_fields_are_the_ones_this_file_expects() -> None:
    # A new float flag must be covered by the checks below (they run over every float field).
    assert set(_float_fields()) >= {"lr", "wd", "beta1", "beta2", "eps", "grad_clip_norm"}
    assert set(_float_fields()) >= {"eda_prob", "w_ins", "w_tok", "w_mlm", "alpha", "r1", "r2"}
    assert "label_ramp_width" in _float_fields()


@pytest.mark.parametrize("value", [NAN, INF, -INF])
@pytest.mark.parametrize("name", _float_fields())
def test_every_float_flag_refuses_nan_and_infinity(name: str, value: float) -> None:
    flag = "--" + name.replace("_", "-")
    with pytest.raises(InvalidInputError, match=f"^{flag} .*{value}"):
        TrainConfig(**{name: value})


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        (dict(beta1=1.0), "--beta1"),
        (dict(beta1=-0.1), "--beta1"),
        (dict(beta2=2.0), "--beta2"),
        (dict(beta2=1.0), "--beta2"),
        (dict(eps=-1.0), "--eps"),
        (dict(eps=0.0), "--eps"),
        (dict(w_ins=-1.0), "--w-ins"),
        (dict(grad_clip_norm=0.0), "--grad-clip-norm"),
        (dict(lr="fast"), "--lr"),
        (dict(wd=True), "--wd"),
    ],
)
def test_out_of_range_optimizer_values_name_their_flag(overrides: dict, flag: str) -> None:
    with pytest.raises(InvalidInputError, match=f"^{flag} "):
        TrainConfig(**overrides)


def test_the_edges_that_are_fine_stay_fine() -> None:
    c = TrainConfig(beta1=0.0, beta2=0.0, eps=1e-12, wd=0.0, w_tok=0.0, eda_prob=None)
    assert (c.beta1, c.beta2, c.eps, c.wd, c.w_tok, c.eda_prob) == (0.0, 0.0, 1e-12, 0.0, 0.0, None)
    assert TrainConfig(lr=1, eda_prob=1).lr == 1  # ints are numbers too


@pytest.mark.parametrize(
    "argv",
    [["--lr", "inf"], ["--wd", "nan"], ["--w-ins", "nan"], ["--beta1", "nan"], ["--beta2", "2"]]
    + [["--eps", "-1"], ["--grad-clip-norm", "inf"]],
)
def test_the_command_line_refuses_them_in_one_line(argv: list[str], tmp_path, capsys) -> None:
    code = main(["train", "--steps", "1", "--logs", str(tmp_path), "--no-progress", *argv])
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith(f"lightclip: error: {argv[0]} "), err
    assert list(tmp_path.iterdir()) == []  # refused before anything was written


# --- a loss that becomes non-finite during the run --------------------------------------------

# 4 batches per epoch; a log row only every 10 steps, so the loop reads its metrics off the
# device at the saves (every 2 steps) and the end: the bad step is found without an extra read.
_config = partial(
    quiet_config, steps=6, warmup=1, log_every_n_steps=10, save_every_n_steps=2, export=True
)


def _poison_loss_at(monkeypatch, bad_step: int, part: str = "ins") -> None:
    """Step `bad_step`'s `part` loss (the forward of that step) becomes NaN; the backward then
    makes the weights NaN, as a real blow-up does."""
    real = LightCLIPLoss.parts
    calls = []

    def parts(self, *args, **kwargs):
        parts = real(self, *args, **kwargs)
        calls.append(1)
        if len(calls) == bad_step:
            parts[part] = parts[part] * torch.tensor(NAN)
        return parts

    monkeypatch.setattr(LightCLIPLoss, "parts", parts)


def _assert_stopped_with_step_2_kept(result_dir) -> None:
    saved = load_checkpoint(result_dir / "checkpoints" / LATEST)
    assert saved["step"] == 2
    assert all(
        torch.isfinite(v).all() for v in model_state(saved).values() if v.is_floating_point()
    )
    assert not [p for p in result_dir.iterdir() if p.name.startswith("inference_model")]


@pytest.mark.parametrize(("recipe", "part"), [("clip", "ins"), ("lightclip", "tok")])
def test_a_nan_loss_stops_the_run_naming_the_step_and_part(recipe, part, tmp_path, monkeypatch):
    # The full recipe's matcher sees the NaN weights in step 4's forward, before the loop has
    # read step 3's loss: the error must still be about the loss, not the matcher's cost.
    _poison_loss_at(monkeypatch, 3, part)
    with pytest.raises(NonFiniteLossError) as info:
        lightclip.train(_config(tmp_path, recipe=recipe), data=FakePipeline(16, 4))
    message = str(info.value)
    assert "step 3" in message and f"loss_{part}" in message and "\n" not in message
    assert "cost" not in message
    assert isinstance(info.value, LightclipError)
    _assert_stopped_with_step_2_kept(tmp_path / "run")


def test_the_hook_sees_no_step_after_the_bad_one(tmp_path, monkeypatch) -> None:
    _poison_loss_at(monkeypatch, 2, "mlm")
    seen: list[int] = []
    with pytest.raises(NonFiniteLossError, match="step 2.*loss_mlm"):
        lightclip.train(
            _config(tmp_path, save_every_n_steps=1),
            data=FakePipeline(16, 4),
            on_step=lambda step, _m: seen.append(step),
        )
    assert seen == [1]
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / LATEST)["step"] == 1


def test_weights_made_nan_by_an_update_are_named_too(tmp_path, monkeypatch) -> None:
    # The loss of step 3 is finite, its update is not: step 4's forward is the first to see it
    # (in the full recipe, the matcher does).
    real = train_module.clamp_logit_scale
    calls = []

    def clamp(model) -> None:
        real(model)
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(NAN)

    monkeypatch.setattr(train_module, "clamp_logit_scale", clamp)
    with pytest.raises(NonFiniteLossError, match="step 3") as info:
        lightclip.train(_config(tmp_path), data=FakePipeline(16, 4))
    assert "cost" not in str(info.value)
    _assert_stopped_with_step_2_kept(tmp_path / "run")


def test_the_command_line_exits_non_zero_in_one_line(tmp_path, monkeypatch, capsys) -> None:
    _poison_loss_at(monkeypatch, 1)
    argv = ["train", "--steps", "2", "--batch-size", "4", "--no-progress", "--workers", "1"]
    argv += ["--train-num-samples", "16", "--logs", str(tmp_path), "--name", "nan"]
    code = main(argv)
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert code == 2 and "Traceback" not in err, err
    assert last.startswith("lightclip: error: ") and "step 1" in last and "loss_ins" in last
    assert not (tmp_path / "nan" / "checkpoints" / LATEST).exists()
    assert not [p for p in (tmp_path / "nan").iterdir() if p.name.startswith("inference_model")]
