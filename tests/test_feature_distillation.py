"""Feature distillation (issue 25, item 2's optional part): --w-distill-feature, the model's
training-only ``distill_proj`` and losses/distillation.py's FeatureDistillationLoss.

The teacher is built here, no internet: a clip-tiny-mnv2 export with another seed and a
96-wide joint space (the student's is 128), so the projection maps between widths. References:
a few lines of torch for the loss, a freshly loaded teacher for the frozen weights, an
uninterrupted run for the resumed one, a plain export for the exported keys."""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lightclip
from lightclip import checkpoint as ckpt
from lightclip.errors import InvalidInputError
from lightclip.losses import FeatureDistillationLoss, LightCLIPLoss
from lightclip.models import TRAINING_ONLY_MODULES, build_model
from lightclip.openclip_export import WEIGHTS_FILE, export_openclip
from lightclip.teacher import Teacher, TeacherOutput
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

train_module = importlib.import_module("lightclip.train")

TEACHER_DIM = 96


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = lightclip.create_model("clip-tiny-mnv2", seed=11, embed_dim=TEACHER_DIM)
    return export_openclip(model, tmp_path_factory.mktemp("teacher"))


def _config(tmp_path: Path, teacher_dir: Path, **overrides):  # type: ignore[no-untyped-def]
    values = dict(
        recipe="clip",
        warmup=0,
        lr=1e-2,
        distill_model=f"local-dir:{teacher_dir}",
        w_distill_feature=1.0,
    )
    return quiet_config(tmp_path, **{**values, **overrides})


_data = partial(FakePipeline, num_samples=16, batch_size=4)


# --- the loss against a few lines of torch ------------------------------------------------------


def test_feature_loss_is_mean_one_minus_cosine_over_image_and_text_rows() -> None:
    g = torch.Generator().manual_seed(0)
    f, t = torch.randn(5, 12, generator=g), torch.randn(5, 12, generator=g)  # not normalised
    tf, tt = (F.normalize(torch.randn(5, 12, generator=g), dim=-1) for _ in range(2))
    loss = FeatureDistillationLoss()(f, t, TeacherOutput(tf, tt, torch.tensor(10.0)))

    def gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return 1 - (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))

    torch.testing.assert_close(loss, torch.cat([gap(f, tf), gap(t, tt)]).mean())
    with pytest.raises(InvalidInputError, match="teacher"):
        FeatureDistillationLoss()(f, t, None)
    with pytest.raises(InvalidInputError, match="must match"):
        FeatureDistillationLoss()(f, t, TeacherOutput(tf[:, :8], tt[:, :8], torch.tensor(1.0)))


def test_total_weighs_the_feature_part(tmp_path: Path, teacher_dir: Path) -> None:
    g = torch.Generator().manual_seed(1)
    f, t, pf, pt, tf, tt = (F.normalize(torch.randn(4, 8, generator=g), dim=-1) for _ in range(6))
    out = {
        "image_features": f,
        "text_features": t,
        "logit_scale": torch.tensor(10.0),
        "distill_image_features": pf,
        "distill_text_features": pt,
        "teacher": TeacherOutput(tf, tt, torch.tensor(20.0)),
    }
    config = _config(tmp_path, teacher_dir, w_distill=0.0, w_distill_feature=0.25)
    total, parts = LightCLIPLoss.from_config(config)(out, {}, 0.0)
    assert sorted(parts) == ["distill_feature", "ins"]  # --w-distill 0: no soft-target part
    torch.testing.assert_close(total, parts["ins"] + 0.25 * parts["distill_feature"])
    expected = FeatureDistillationLoss()(pf, pt, out["teacher"])  # the projected rows
    torch.testing.assert_close(parts["distill_feature"], expected)


# --- the projection -----------------------------------------------------------------------------


def test_projection_gets_gradients_and_the_teacher_none(tmp_path: Path, teacher_dir: Path) -> None:
    config = _config(tmp_path, teacher_dir)
    teacher = Teacher.from_config(config, "cpu")
    assert teacher is not None and teacher.embed_dim == TEACHER_DIM
    model = build_model(config, teacher_dim=teacher.embed_dim)
    assert model.distill_proj is not None and model.distill_proj.bias is None
    assert tuple(model.distill_proj.weight.shape) == (TEACHER_DIM, 128)
    batch = next(iter(_data()))
    out = model(batch["image"], batch["text"])
    out["teacher"] = teacher.output_for(batch)
    total, parts = LightCLIPLoss.from_config(config)(out, batch, 0.0)
    total.backward()
    grad = model.distill_proj.weight.grad
    assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    # The part is the projected student rows against the teacher's, by the torch lines above.
    projected = [F.normalize(out[k] @ model.distill_proj.weight.T, dim=-1) for k in (
        "image_features", "text_features")]  # fmt: skip
    gaps = [1 - (p * q).sum(1) for p, q in zip(projected, (
        out["teacher"].image_features, out["teacher"].text_features), strict=True)]  # fmt: skip
    torch.testing.assert_close(parts["distill_feature"], torch.cat(gaps).mean())


def test_equal_widths_start_at_the_identity_and_no_weight_no_projection(
    tmp_path: Path, teacher_dir: Path
) -> None:
    model = build_model(_config(tmp_path, teacher_dir), teacher_dim=128)
    assert model.distill_proj is not None
    assert torch.equal(model.distill_proj.weight, torch.eye(128))
    off = build_model(_config(tmp_path, teacher_dir, w_distill_feature=0.0), teacher_dim=128)
    assert off.distill_proj is None and off.config.distill_dim == 0
    assert not any(k.startswith("distill_proj") for k in off.state_dict())
    # The rest of the model is the same with and without it (same seed, built last).
    on, without = model.state_dict(), off.state_dict()
    assert all(torch.equal(on[k], without[k]) for k in without)
    with pytest.raises(InvalidInputError, match="teacher's embedding width"):
        build_model(_config(tmp_path, teacher_dir))


# --- training: checkpoint, export, resume -----------------------------------------------------


def test_checkpoint_keeps_the_projection_and_export_drops_it(
    tmp_path: Path, teacher_dir: Path
) -> None:
    config = _config(tmp_path, teacher_dir, recipe="lightclip", export=True, steps=3)
    result = lightclip.train(config, data=_data())
    rows = result.history
    assert len(rows) == 3 and all(r["loss_distill_feature"] > 0 for r in rows)
    for r in rows:
        weighted = 0.8 * r["loss_ins"] + 0.1 * (r["loss_tok"] + r["loss_mlm"])
        expected = weighted + r["loss_distill"] + r["loss_distill_feature"]
        assert r["loss"] == pytest.approx(expected, rel=1e-5)

    payload = ckpt.load_checkpoint(result.checkpoint)
    state = ckpt.model_state(payload)
    assert "distill_proj.weight" in payload["trainable"]  # in the optimizer
    assert payload["model_config"]["distill_dim"] == TEACHER_DIM
    initial = build_model(config, teacher_dim=TEACHER_DIM).distill_proj.weight
    assert not torch.equal(state["distill_proj.weight"], initial)  # it was trained
    assert ckpt.model_from_checkpoint(payload).distill_proj is not None  # rebuilt from the file

    assert "distill_proj" in TRAINING_ONLY_MODULES
    exported = load_file(result.export_path / WEIGHTS_FILE)
    plain = export_openclip(build_model(config, teacher_dim=TEACHER_DIM), tmp_path / "plain")
    assert exported.keys() == load_file(plain / WEIGHTS_FILE).keys()
    assert not any("distill" in k for k in exported)
    assert ckpt.model_from_checkpoint(result.export_path).config.distill_dim == 0


def test_resume_restores_the_projection_exactly(tmp_path: Path, teacher_dir: Path) -> None:
    run = partial(_config, tmp_path, teacher_dir, steps=4)
    straight = lightclip.train(run(name="straight"), data=_data())
    lightclip.train(run(name="halves"), data=_data(), on_step=lambda s, _: s == 2)
    resumed = lightclip.train(run(name="halves", resume="latest"), data=_data())
    keys = ("step", "loss", "loss_ins", "loss_distill", "loss_distill_feature")
    assert [[h[k] for k in keys] for h in resumed.history] == [
        [h[k] for k in keys] for h in straight.history[2:]
    ]
    # Without the projection the checkpoint does not fit: refused, naming the switch.
    with pytest.raises(ckpt.CheckpointError, match="--w-distill-feature"):
        lightclip.train(run(name="halves", resume="latest", w_distill_feature=0.0), data=_data())


def test_cli_trains_with_feature_distillation(teacher_dir: Path, tmp_path: Path) -> None:
    argv = [
        "--model=lightclip-tiny-mnv2",
        "--recipe=clip",
        "--train-data=synthetic:train",
        "--train-num-samples=12",
        "--batch-size=4",
        "--steps=2",
        "--warmup=0",
        f"--logs={tmp_path}",
        "--name=run",
        "--no-progress",
        "--no-export",
        f"--distill-model=local-dir:{teacher_dir}",
        "--w-distill=0",
        "--w-distill-feature=1",
        "--log-every-n-steps=1",
    ]
    assert train_module.main(argv) == 0
    log = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = log[0].split(",")
    assert "loss_distill_feature" in header and "loss_distill" not in header
    column = header.index("loss_distill_feature")
    assert len(log) == 3 and all(float(row.split(",")[column]) > 0 for row in log[1:])


# --- flag combinations --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(w_distill_feature=1.0), "--w-distill-feature needs --distill-model"),
        (dict(distill_model="local-dir:x", w_distill_feature=-1.0), "must be >= 0"),
        (dict(distill_model="local-dir:x", w_distill_feature=float("nan")), "finite"),
        (
            dict(distill_model="local-dir:x", w_distill=0.0, w_distill_feature=0.0),
            "the teacher would do nothing",
        ),
    ],
)
def test_bad_feature_distillation_flags_are_refused(
    flags: dict, message: str, tmp_path: Path
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        quiet_config(tmp_path, recipe="clip", **flags)
