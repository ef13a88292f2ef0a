"""SigLIP's sigmoid loss, `lightclip train --siglip` (python/lightclip/losses/siglip.py).

The loss must equal open_clip's own ``SigLipLoss`` and a binary cross-entropy written here over
every pair; the model's logit bias must start where open_clip's ``--siglip`` starts it, decay
with nothing, reach the logits the way open_clip's do, and survive an export that open_clip
itself loads; the flags that cannot go with it are refused.
"""

from __future__ import annotations

import csv
import json
import math
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import lightclip
from lightclip.config import TrainConfig, parse_args
from lightclip.errors import InvalidInputError
from lightclip.labels import LabelSchedule
from lightclip.losses import LightCLIPLoss, SigLipLoss
from lightclip.models import build_model
from lightclip.optim import parameter_groups
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def features(n: int, dim: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    f = F.normalize(torch.randn(n, dim, generator=gen), dim=-1)
    g = F.normalize(torch.randn(n, dim, generator=gen), dim=-1)
    return f, g


def pairwise_bce_reference(f, g, scale, bias) -> torch.Tensor:
    """Each pair a binary problem (1: the matching pair), summed, divided by the images."""
    logits = scale * f @ g.T + bias
    targets = torch.eye(f.shape[0])
    return F.binary_cross_entropy_with_logits(logits, targets, reduction="sum") / f.shape[0]


@pytest.mark.parametrize(
    ("n", "scale", "bias"), [(1, 10.0, -10.0), (6, 10.0, -10.0), (9, 3.7, 1.5)]
)
def test_loss_is_a_binary_cross_entropy_over_every_pair(n, scale, bias) -> None:
    f, g = features(n, seed=n)
    got = SigLipLoss()(f, g, torch.tensor(scale), torch.tensor(bias))
    torch.testing.assert_close(got, pairwise_bce_reference(f, g, scale, bias))
    if n == 1:  # one positive pair: softplus(-(s cos + b)) by hand
        z = scale * float(f[0] @ g[0]) + bias
        assert float(got) == pytest.approx(math.log1p(math.exp(-z)), rel=1e-5)


def test_loss_and_gradients_equal_open_clips_siglip_loss() -> None:
    open_clip_loss = pytest.importorskip("open_clip.loss")
    f, g = features(8, seed=3)
    scale, bias = torch.tensor(12.0), torch.tensor(-7.0)
    grads = []
    for loss_fn in (SigLipLoss(), open_clip_loss.SigLipLoss()):
        fl, gl = f.clone().requires_grad_(True), g.clone().requires_grad_(True)
        sl, bl = scale.clone().requires_grad_(True), bias.clone().requires_grad_(True)
        loss = loss_fn(fl, gl, sl, bl)
        loss.backward()
        grads.append((loss.detach(), fl.grad, gl.grad, sl.grad, bl.grad))
    for ours, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_shapes_are_checked() -> None:
    with pytest.raises(InvalidInputError, match="each image needs its caption"):
        SigLipLoss()(torch.randn(4, 8), torch.randn(3, 8), 10.0, -10.0)


def test_lightclip_loss_takes_the_bias_from_the_model_output() -> None:
    f, g = features(5, seed=1)
    out = {"image_features": f, "text_features": g, "logit_scale": 10.0, "logit_bias": -4.0}
    config = TrainConfig(recipe="clip", siglip=True)
    loss = LightCLIPLoss.from_config(config)
    total, parts = loss(out, {}, progress=0.5)
    torch.testing.assert_close(parts["ins"], pairwise_bce_reference(f, g, 10.0, -4.0))
    torch.testing.assert_close(total, parts["ins"])
    with pytest.raises(InvalidInputError, match="logit bias"):
        loss({**out, "logit_bias": None}, {}, progress=0.5)
    with pytest.raises(InvalidInputError, match="hard targets"):
        LightCLIPLoss(LabelSchedule(), siglip=True, token_loss=False, mlm=False)


def test_flags_that_cannot_go_with_siglip_are_refused() -> None:
    assert parse_args(["--recipe", "clip", "--siglip"]).siglip
    with pytest.raises(InvalidInputError, match="--siglip has hard targets.*--no-soft-labels"):
        parse_args(["--siglip"])  # the lightclip recipe's soft labels
    assert parse_args(["--siglip", "--no-soft-labels"]).token_loss  # the rest of the recipe stays
    with pytest.raises(InvalidInputError, match="--no-gather-with-grad does not apply"):
        parse_args(["--recipe", "clip", "--siglip", "--no-gather-with-grad"])


def test_siglip_model_starts_where_open_clip_starts_it(tmp_path: Path) -> None:
    model = build_model(TrainConfig(recipe="clip", siglip=True, model="lightclip-tiny-mnv2"))
    assert model.logit_bias is not None and model.logit_bias.item() == -10.0
    assert model.logit_scale.exp().item() == pytest.approx(10.0)
    decayed, undecayed = parameter_groups(model, 0.1)
    assert "logit_bias" in dict(undecayed["named"]) and "logit_bias" not in dict(decayed["named"])
    # Only the sigmoid loss reads a bias: the softmax loss would leave it without a gradient.
    assert build_model(TrainConfig(recipe="clip", model="lightclip-tiny-mnv2")).logit_bias is None
    own = tmp_path / "own-bias.json"
    own.write_text(
        json.dumps(
            {
                **lightclip.models.get_model_config("lightclip-tiny-mnv2").to_dict(),
                "init_logit_bias": -3.0,
                "init_logit_scale": 2.0,
            }
        )
    )
    kept = build_model(TrainConfig(recipe="clip", siglip=True, model=str(own)))
    assert kept.logit_bias.item() == -3.0 and kept.logit_scale.item() == 2.0
    assert build_model(TrainConfig(recipe="clip", model=str(own))).logit_bias is None


def test_the_bias_reaches_the_logits_and_the_forward_as_in_open_clip() -> None:
    model = lightclip.create_model("clip-tiny-mnv2", seed=0, init_logit_bias=-2.5).eval()
    images = torch.randn(2, 3, 64, 64)
    text = lightclip.get_tokenizer("clip-tiny-mnv2")(["a dog", "a cat", "a red car"])
    with torch.no_grad():
        per_image, per_text = model.get_logits(images, text)
        image_features, text_features, scale, bias = model(images, text)
        intermediates = model.forward_intermediates(
            images, text, output_logits=True, output_logit_scale_bias=True
        )
    assert bias.item() == -2.5 and intermediates["logit_bias"].item() == -2.5
    torch.testing.assert_close(intermediates["image_logits"], per_image)
    torch.testing.assert_close(per_image, scale * image_features @ text_features.T - 2.5)
    torch.testing.assert_close(per_text, per_image.T)
    plain = lightclip.create_model("clip-tiny-mnv2", seed=0).eval()
    with torch.no_grad():
        assert len(plain(images, text)) == 3
        torch.testing.assert_close(plain.get_logits(images, text)[0], per_image + 2.5)


def test_open_clip_loads_an_exported_siglip_model(tmp_path: Path) -> None:
    pytest.importorskip("open_clip")
    pytest.importorskip("timm")
    from lightclip.checkpoint import model_from_checkpoint
    from lightclip.openclip_export import export_openclip, load_openclip

    model = lightclip.create_model("clip-tiny-mnv2", seed=0, init_logit_bias=-6.25).eval()
    with torch.no_grad():
        model.logit_bias.fill_(-3.0)  # a trained value: the weights carry it, not the config
    export_openclip(model, tmp_path)
    theirs, _, _ = load_openclip(tmp_path)
    assert theirs.logit_bias.item() == -3.0
    images = torch.randn(2, 3, 64, 64)
    text = lightclip.get_tokenizer("clip-tiny-mnv2")(["a dog", "two children play"])
    with torch.no_grad():
        torch.testing.assert_close(
            theirs.eval().get_logits(images, text)[0], model.get_logits(images, text)[0]
        )
    back = model_from_checkpoint(tmp_path)
    assert back.config.init_logit_bias == -6.25 and back.logit_bias.item() == -3.0


_config = partial(quiet_config, recipe="clip", siglip=True, warmup=0)


def test_a_siglip_run_learns_its_bias_and_logs_it(tmp_path: Path) -> None:
    result = lightclip.train(
        _config(tmp_path, steps=4, lr=1e-2), data=FakePipeline(num_samples=16, batch_size=4)
    )
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    biases = [float(r["logit_bias"]) for r in rows if r["kind"] == "train"]
    assert len(biases) == 4 and all(math.isfinite(float(r["loss_ins"])) for r in rows)
    assert biases[-1] != -10.0  # it trains
    state = lightclip.checkpoint.model_state(
        lightclip.checkpoint.load_checkpoint(result.checkpoint)
    )
    assert float(state["logit_bias"]) == pytest.approx(biases[-1])


def test_configs_without_a_bias_leave_the_field_out() -> None:
    # Their exports must still load in lightclip versions from before the field.
    plain = lightclip.models.get_model_config("clip-tiny-mnv2")
    assert "init_logit_bias" not in plain.to_dict()
    assert type(plain).from_dict(plain.to_dict()) == plain
    with_bias = plain.replace(init_logit_bias=-4.0)
    assert type(plain).from_dict(with_bias.to_dict()) == with_bias
