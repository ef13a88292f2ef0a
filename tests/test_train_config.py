"""The training configuration, its command line, and the schedules (pure functions)."""

from __future__ import annotations

import argparse
import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lightclip.config import TrainConfig, add_arguments, config_from_args, parse_args
from lightclip.errors import InvalidInputError
from lightclip.schedules import default_warmup, lr_at, progress_at


def test_recipes_fill_only_the_switches_left_unset() -> None:
    light = TrainConfig()
    assert (light.soft_labels, light.token_loss, light.mlm, light.fusion) == (True,) * 4
    assert (light.w_ins, light.w_tok, light.w_mlm) == (0.8, 0.1, 0.1)  # SPEC §2 total loss
    clip = TrainConfig(recipe="clip")
    assert (clip.soft_labels, clip.token_loss, clip.mlm, clip.fusion) == (False,) * 4
    assert clip.w_ins == 1.0
    # Every ablation row is the baseline plus one explicit switch.
    row = TrainConfig(recipe="clip", token_loss=True)
    assert (row.soft_labels, row.token_loss, row.mlm) == (False, True, False)
    row = TrainConfig(recipe="lightclip", mlm=True, fusion=False)
    assert (row.mlm, row.fusion) == (True, False)
    row = TrainConfig(recipe="lightclip", mlm=False)  # fusion follows MLM unless given
    assert (row.mlm, row.fusion) == (False, False)


@pytest.mark.parametrize(
    ("overrides", "flag"),
    [
        (dict(batch_size=0), "--batch-size"),
        (dict(lr=0.0), "--lr"),
        (dict(alpha=1.0), "--alpha"),
        (dict(r1=0.7, r2=0.5), "--r1"),
        (dict(precision="fp8"), "--precision"),
        (dict(recipe="openai"), "--recipe"),
        (dict(recipe="clip", fusion=True), "--fusion"),  # fusion needs MLM
        (dict(report_to="csv,mlflow"), "--report-to"),  # csv, tensorboard, wandb only
        (dict(steps=0), "--steps"),
        (dict(eda_prob=1.5), "--eda-prob"),
        (dict(tok_start=1.0), "--tok-start"),
        (dict(tok_start=-0.1), "--tok-start"),
    ],
)
def test_bad_values_name_their_flag(overrides: dict, flag: str) -> None:
    with pytest.raises(InvalidInputError, match=flag):
        TrainConfig(**overrides)


def test_every_field_has_a_flag_and_flags_round_trip() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(TrainConfig)}
    config = parse_args(
        [
            "--train-data",
            "a/{0..1}.tar",
            "--batch-size",
            "8",
            "--steps",
            "30",
            "--recipe",
            "clip",
            "--soft-labels",
            "--no-progress",
            "--grad-clip-norm",
            "1.5",
            "--warmup",
            "3",
            "--precision",
            "amp_bf16",
            "--report-to",
            "csv,tensorboard",
            "--resume",
            "latest",
        ]
    )
    assert config == TrainConfig(
        train_data="a/{0..1}.tar",
        batch_size=8,
        steps=30,
        recipe="clip",
        soft_labels=True,
        progress=False,
        grad_clip_norm=1.5,
        warmup=3,
        precision="amp_bf16",
        report_to="csv,tensorboard",
        resume="latest",
    )
    # Flags not given keep the dataclass defaults; the dict form round-trips.
    assert config_from_args(parser.parse_args([])) == TrainConfig()
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(InvalidInputError, match="bogus"):
        TrainConfig.from_dict({"bogus": 1})


def test_unknown_flag_is_an_argparse_error() -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(["--bogus-flag", "1"])
    assert exc.value.code == 2


def _open_clip_cosine(step: int, base_lr: float, warmup: int, total: int) -> float:
    # open_clip's cosine_lr (training/scheduler.py), written out here independently.
    if step < warmup:
        return base_lr * (step + 1) / warmup
    e, es = step - warmup, total - warmup
    return 0.5 * (1 + math.cos(math.pi * e / es)) * base_lr


@settings(deadline=None, max_examples=60)
@given(total=st.integers(2, 2000), warmup_frac=st.floats(0.0, 0.5), base=st.floats(1e-5, 1.0))
def test_lr_matches_open_clip_and_has_the_right_shape(total, warmup_frac, base) -> None:
    warmup = min(int(warmup_frac * total), total - 1)
    lrs = [lr_at(s, base_lr=base, warmup_steps=warmup, total_steps=total) for s in range(total)]
    for s, lr in enumerate(lrs):
        assert lr == pytest.approx(_open_clip_cosine(s, base, warmup, total), rel=1e-12)
    assert max(lrs) == pytest.approx(base)
    assert all(a <= b + 1e-15 for a, b in zip(lrs[:warmup], lrs[1 : warmup + 1], strict=True))
    assert all(a >= b - 1e-15 for a, b in zip(lrs[warmup:], lrs[warmup + 1 :], strict=False))
    assert all(0 <= lr <= base * (1 + 1e-12) for lr in lrs)


def test_lr_edges() -> None:
    assert lr_at(0, base_lr=1.0, warmup_steps=0, total_steps=10) == 1.0
    assert lr_at(10, base_lr=1.0, warmup_steps=2, total_steps=10) == pytest.approx(0.0)
    assert lr_at(99, base_lr=1.0, warmup_steps=2, total_steps=10, min_lr=0.1) == pytest.approx(0.1)
    assert lr_at(0, base_lr=2.0, warmup_steps=4, total_steps=4) == 0.5
    for bad in (dict(step=-1), dict(total_steps=0), dict(warmup_steps=11)):
        kwargs = dict(step=0, base_lr=1.0, warmup_steps=1, total_steps=10) | bad
        with pytest.raises(ValueError):
            lr_at(**kwargs)
    assert default_warmup(1000) == 50 and default_warmup(10) == 0


def test_progress_is_step_over_total_clipped() -> None:
    assert progress_at(0, 10) == 0.0
    assert progress_at(5, 10) == 0.5
    assert progress_at(12, 10) == 1.0
    with pytest.raises(ValueError):
        progress_at(1, 0)
