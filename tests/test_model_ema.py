"""--model-ema: the weight average against a few lines of arithmetic, in a run (what it
evaluates, exports and saves), and across a resume."""

from __future__ import annotations

from functools import partial

import pytest
import torch

import lightclip
from lightclip import run_evaluation
from lightclip.checkpoint import LATEST, load_checkpoint, model_from_checkpoint
from lightclip.config import parse_args
from lightclip.eval_cli import load_eval_model
from lightclip.model_ema import ModelEma
from lightclip.weight_sources import read_weights
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

STEPS = 6
_config = partial(quiet_config, steps=STEPS, warmup=2, recipe="clip", model_ema=True)


def _reference_average(start: dict, snapshots: list[dict], decay: float, updates: int = 0) -> dict:
    """e <- d e + (1 - d) w for each snapshot w, d = min(decay, (1 + t) / (10 + t)) after t
    updates, from ``start``; entries that are not floating point take the last snapshot's."""
    average = {k: v.clone().double() for k, v in start.items() if v.is_floating_point()}
    for t, weights in enumerate(snapshots, start=updates):
        d = min(decay, (1 + t) / (10 + t))
        for name in average:
            average[name] = d * average[name] + (1 - d) * weights[name].double()
    return {**snapshots[-1], **average}


class _WithMask(torch.nn.Module):
    """A Linear, a BatchNorm (float statistics and an integer batch count) and a -inf mask
    outside the state dict, as the text tower's causal mask is."""

    def __init__(self) -> None:
        super().__init__()
        self.linear, self.norm = torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4)
        self.register_buffer("mask", torch.full((2, 2), float("-inf")).triu(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.linear(x))


@pytest.mark.parametrize("decay", [0.5, 0.9998])
def test_average_follows_the_warmed_up_formula_for_weights_and_batch_norm_statistics(
    decay,
) -> None:
    torch.manual_seed(0)
    model = _WithMask()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    ema = ModelEma(model, decay)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    snapshots = []
    for _ in range(30):
        (model(torch.randn(8, 3)) * torch.randn(8, 4)).sum().backward()  # BN statistics move too
        optimizer.step()
        optimizer.zero_grad()
        ema.update(model)
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
    expected = _reference_average(start, snapshots, decay)
    averaged = ema.module.state_dict()
    assert set(averaged) == set(expected)
    for name, value in expected.items():
        torch.testing.assert_close(averaged[name].to(value.dtype), value, rtol=1e-5, atol=1e-6)
    assert int(averaged["norm.num_batches_tracked"]) == 30  # copied, not averaged
    assert ema.updates == 30
    # After 30 updates the weights and their average differ (the warm-up's d is 0.78).
    assert not torch.allclose(averaged["linear.weight"], model.state_dict()["linear.weight"])
    assert not any(p.requires_grad for p in ema.module.parameters())
    # The mask is a constant: averaging -inf with -inf would make it NaN.
    assert torch.equal(ema.module.mask, model.mask)


def test_the_average_of_a_model_encodes_as_a_model() -> None:
    torch.manual_seed(0)
    model = lightclip.create_model("clip-tiny-mnv2")
    ema = ModelEma(model, 0.9998)
    for _ in range(3):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.01 * torch.randn_like(p))
        ema.update(model)
    tokens = lightclip.get_tokenizer("clip-tiny-mnv2")(["a dog runs", "two people"])
    features = ema.module.encode_text(tokens)
    assert torch.isfinite(features).all()


def test_a_run_trains_as_without_it_and_evaluates_exports_and_saves_the_average(
    tmp_path, monkeypatch
) -> None:
    plain = lightclip.train(
        _config(tmp_path / "plain", model_ema=False),
        data=FakePipeline(num_samples=16, batch_size=4),
    )
    evaluated = []
    monkeypatch.setattr(
        run_evaluation,
        "held_out_metrics",
        lambda model, *args: evaluated.append(model) or {"val_probe": 1.0},
    )
    result = lightclip.train(
        _config(tmp_path / "ema", export=True, val_data="unused: the metric is replaced"),
        data=FakePipeline(num_samples=16, batch_size=4),
    )
    # The average only watches: the same losses, step for step.
    assert [h["loss"] for h in result.history] == [h["loss"] for h in plain.history]
    saved = load_checkpoint(tmp_path / "ema" / "run" / "checkpoints" / LATEST)
    assert saved["ema_updates"] == STEPS
    trained, average = saved["state_dict"], saved["state_dict_ema"]
    assert set(trained) == set(average)
    assert not torch.equal(trained["visual.head.proj.weight"], average["visual.head.proj.weight"])
    # What the run evaluated and exported is the average.
    assert len(evaluated) == 1
    assert torch.equal(
        evaluated[0].state_dict()["visual.head.proj.weight"], average["visual.head.proj.weight"]
    )
    exported = model_from_checkpoint(result.export_path).state_dict()
    for name, value in exported.items():
        assert torch.equal(value, average[name]), name
    # Reading the training checkpoint's weights gives the average too: as a model, in
    # `lightclip eval --checkpoint` and as --pretrained weights; average=False the trained ones.
    name = "visual.head.proj.weight"
    path = tmp_path / "ema" / "run" / "checkpoints" / LATEST
    assert torch.equal(model_from_checkpoint(saved).state_dict()[name], average[name])
    assert torch.equal(load_eval_model(None, str(path), "cpu")[0].state_dict()[name], average[name])
    source = read_weights(path, lightclip.create_model("lightclip-tiny-mnv2"))
    assert torch.equal(source.state[name], average[name])
    trained_model = model_from_checkpoint(saved, average=False)
    assert torch.equal(trained_model.state_dict()[name], trained[name])


def test_resume_continues_the_average_exactly(tmp_path) -> None:
    straight = lightclip.train(
        _config(tmp_path / "straight"), data=FakePipeline(num_samples=16, batch_size=4)
    )
    assert straight.step == STEPS

    def stop_at_3(step: int, _metrics: dict) -> bool:
        return step == 3

    first = lightclip.train(
        _config(tmp_path / "split"),
        data=FakePipeline(num_samples=16, batch_size=4),
        on_step=stop_at_3,
    )
    assert first.interrupted and first.step == 3
    lightclip.train(
        _config(tmp_path / "split", resume="latest"),
        data=FakePipeline(num_samples=16, batch_size=4),
    )
    a = load_checkpoint(tmp_path / "straight" / "run" / "checkpoints" / LATEST)
    b = load_checkpoint(tmp_path / "split" / "run" / "checkpoints" / LATEST)
    assert a["ema_updates"] == b["ema_updates"] == STEPS
    for name, value in a["state_dict_ema"].items():
        assert torch.equal(value, b["state_dict_ema"][name]), name


def test_resuming_a_run_saved_without_it_starts_the_average_there(
    tmp_path, capsys, monkeypatch
) -> None:
    def stop_at_3(step: int, _metrics: dict) -> bool:
        return step == 3

    lightclip.train(
        _config(tmp_path, model_ema=False),
        data=FakePipeline(num_samples=16, batch_size=4),
        on_step=stop_at_3,
    )
    resumed_from = load_checkpoint(tmp_path / "run" / "checkpoints" / LATEST)["state_dict"]
    snapshots = []
    update = ModelEma.update

    def recording_update(self, model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        update(self, model)

    monkeypatch.setattr(ModelEma, "update", recording_update)
    lightclip.train(
        _config(tmp_path, resume="latest"), data=FakePipeline(num_samples=16, batch_size=4)
    )
    assert "holds no weight average" in capsys.readouterr().err
    saved = load_checkpoint(tmp_path / "run" / "checkpoints" / LATEST)
    assert saved["ema_updates"] == STEPS and len(snapshots) == STEPS - 3
    # From the step-3 weights, three updates with the warm-up counted from step 3.
    expected = _reference_average(resumed_from, snapshots, 0.9998, updates=3)
    for name, value in expected.items():
        torch.testing.assert_close(
            saved["state_dict_ema"][name].to(value.dtype), value, rtol=1e-5, atol=1e-6
        )


def test_flags_and_refusals() -> None:
    config = parse_args(["--model-ema", "--model-ema-decay", "0.99"])
    assert config.model_ema and config.model_ema_decay == 0.99
    assert not parse_args([]).model_ema
    for decay in (0.0, 1.0, 1.5):
        with pytest.raises(lightclip.InvalidInputError, match="--model-ema-decay"):
            lightclip.TrainConfig(model_ema=True, model_ema_decay=decay)
    with pytest.raises(lightclip.InvalidInputError, match="--model-ema .*amp_bf16"):
        lightclip.TrainConfig(model_ema=True, precision="bf16")
    with pytest.raises(ValueError, match="decay"):
        ModelEma(torch.nn.Linear(2, 2), 1.0)
