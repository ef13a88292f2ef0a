"""Distillation from a frozen teacher (issue 25, items 1-2): lightclip.teacher,
losses/distillation.py, the --distill-* flags. The teacher is built here, no internet: a
clip-tiny-mnv2 with another seed and a wider text tower, exported and loaded back as our
export and as an open_clip local-dir: model. References: a few lines of torch for the losses,
open_clip's DistillClipLoss and tokenizer, a freshly loaded teacher for the frozen weights."""

from __future__ import annotations

import importlib
import shutil
from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

import lightclip
from lightclip import checkpoint as ckpt
from lightclip.errors import InvalidInputError
from lightclip.labels import LabelSchedule
from lightclip.losses import DistillationLoss, LightCLIPLoss
from lightclip.models import build_model
from lightclip.openclip_export import LIGHTCLIP_CONFIG_FILE, WEIGHTS_FILE, export_openclip
from lightclip.teacher import Teacher, TeacherOutput
from quiet_run import quiet_config
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The module, not the function `lightclip.train` that the package exports under its name.
train_module = importlib.import_module("lightclip.train")

_config = partial(quiet_config, recipe="clip", warmup=0)


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lightclip export of a teacher unlike the student (seed, text width 96)."""
    model = lightclip.create_model("clip-tiny-mnv2", seed=11, text_width=96)
    return export_openclip(model, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def open_clip_teacher_dir(teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same teacher as a plain open_clip local-dir: folder (no lightclip config)."""
    pytest.importorskip("open_clip")
    folder = tmp_path_factory.mktemp("open_clip_teacher")
    for file in teacher_dir.iterdir():
        if file.name != LIGHTCLIP_CONFIG_FILE:
            shutil.copy(file, folder / file.name)
    return folder


def _features(n: int, d: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (F.normalize(torch.randn(n, d, generator=g), dim=-1) for _ in range(2))  # type: ignore[return-value]


# --- the losses against a few lines of torch ----------------------------------------------------


@pytest.mark.parametrize("temperature", [None, 0.05])
def test_distillation_loss_is_soft_cross_entropy_to_the_teacher(temperature: float | None) -> None:
    f, g = _features(6, 16, 0)
    tf, tg = _features(6, 24, 1)  # the teacher's own embedding width
    s, t = torch.tensor(12.0), torch.tensor(40.0)
    loss = DistillationLoss(temperature)(f, g, s, TeacherOutput(tf, tg, t))

    zs = s * f @ g.T
    zt = (tf @ tg.T) * (t if temperature is None else 1 / temperature)
    ce = lambda student, teacher: -(teacher.softmax(1) * student.log_softmax(1)).sum(1).mean()  # noqa: E731
    expected = (ce(zs, zt) + ce(zs.T, zt.T)) / 2
    torch.testing.assert_close(loss, expected)


def test_distillation_loss_is_open_clips_distill_term() -> None:
    loss_module = pytest.importorskip("open_clip.loss")
    f, g = _features(5, 8, 2)
    tf, tg = _features(5, 8, 3)
    ours = DistillationLoss()(f, g, 20.0, TeacherOutput(tf, tg, torch.tensor(30.0)))
    _, theirs = loss_module.DistillClipLoss()(f, g, 20.0, tf, tg, 30.0)
    torch.testing.assert_close(ours, theirs)


def test_teacher_labels_weigh_negatives_by_the_teachers_similarities() -> None:
    f, g = _features(5, 8, 4)
    tf, tg = _features(5, 8, 5)
    schedule, alpha, progress = LabelSchedule(r1=0.3, r2=0.6, alpha=0.2), 0.2, 0.9
    out = {
        "image_features": f,
        "text_features": g,
        "logit_scale": torch.tensor(10.0),
        "teacher": TeacherOutput(tf, tg, torch.tensor(30.0)),
    }
    parts = LightCLIPLoss(schedule, token_loss=False, mlm=False, teacher_labels=True).parts(
        out, {}, progress
    )

    def targets(z: torch.Tensor) -> torch.Tensor:  # (1 - a) I + a softmax over the negatives
        eye = torch.eye(len(z), dtype=torch.bool)
        w = z.masked_fill(eye, float("-inf")).softmax(1)
        return (1 - alpha) * eye + alpha * w

    zs, zt = 10.0 * f @ g.T, 30.0 * tf @ tg.T
    ce = lambda z, y: -(y * z.log_softmax(1)).sum(1).mean()  # noqa: E731
    expected = (ce(zs, targets(zt)) + ce(zs.T, targets(zt.T))) / 2
    torch.testing.assert_close(parts["ins"], expected)
    own = LightCLIPLoss(schedule, token_loss=False, mlm=False).parts(out, {}, progress)["ins"]
    assert not torch.isclose(own, expected)  # the option changes the targets
    assert sorted(parts) == ["ins"]  # labels only: no distillation part unless asked


def test_loss_total_weighs_the_distill_part() -> None:
    f, g = _features(4, 8, 6)
    out = {
        "image_features": f,
        "text_features": g,
        "logit_scale": torch.tensor(10.0),
        "teacher": TeacherOutput(*_features(4, 8, 7), torch.tensor(20.0)),
    }
    loss = LightCLIPLoss.from_config(_config(Path("."), distill_model="local-dir:x", w_distill=0.3))
    total, parts = loss(out, {}, 0.0)
    assert sorted(parts) == ["distill", "ins"]
    torch.testing.assert_close(total, parts["ins"] + 0.3 * parts["distill"])
    with pytest.raises(InvalidInputError, match="teacher"):
        loss({k: v for k, v in out.items() if k != "teacher"}, {}, 0.0)


# --- the teacher --------------------------------------------------------------------------------


def test_teacher_is_frozen_and_sees_the_batch_at_its_own_size(teacher_dir: Path) -> None:
    teacher = Teacher.load(f"local-dir:{teacher_dir}", None)
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not teacher.training and not teacher.model.training
    images = torch.randn(3, 3, 48, 48, requires_grad=True)  # a student at 48 px
    text = lightclip.get_tokenizer()(["a red square", "two dogs", "a cat"], context_length=20)
    out = teacher(images, text)
    assert out.image_features.shape == (3, 128) and not out.image_features.requires_grad
    expected = teacher.model.encode_image(
        F.interpolate(images.detach(), size=64, mode="bicubic", antialias=True), normalize=True
    )
    torch.testing.assert_close(out.image_features, expected)


def test_loading_a_teacher_leaves_the_students_random_stream_alone(
    teacher_dir: Path, open_clip_teacher_dir: Path
) -> None:
    torch.manual_seed(7)
    expected = torch.rand(4)
    for folder in (teacher_dir, open_clip_teacher_dir):
        torch.manual_seed(7)
        Teacher.load(f"local-dir:{folder}", None)
        assert torch.equal(torch.rand(4), expected)


def test_teacher_tokens_are_open_clips_at_its_context_length() -> None:
    open_clip = pytest.importorskip("open_clip")
    captions = ["a photo of a dog " * 6, "a cat", "one two three four five six seven eight nine"]
    student = lightclip.get_tokenizer()(captions, context_length=32)
    for teacher_length in (8, 32, 77):
        model = lightclip.create_model("clip-tiny-mnv2", context_length=teacher_length)
        teacher = Teacher(model)
        expected = open_clip.tokenize(captions, context_length=teacher_length)
        if teacher_length > 32:  # padding cannot restore what the student's length cut off
            expected = F.pad(student, (0, teacher_length - 32))
        assert torch.equal(teacher.text_for_teacher(student), expected)


def test_open_clip_local_dir_teacher_gives_our_exports_outputs(
    teacher_dir: Path, open_clip_teacher_dir: Path
) -> None:
    ours = Teacher.load(f"local-dir:{teacher_dir}", None)
    theirs = Teacher.load(f"local-dir:{open_clip_teacher_dir}", None)
    assert type(theirs.model).__module__.startswith("open_clip")
    images = torch.randn(2, 3, 64, 64)
    text = lightclip.get_tokenizer()(["a dog", "a cat"], context_length=32)
    a, b = ours(images, text), theirs(images, text)
    torch.testing.assert_close(a.image_features, b.image_features, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.text_features, b.text_features, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a.logit_scale, b.logit_scale)


def test_teacher_with_another_vocabulary_is_refused() -> None:
    model = lightclip.create_model("clip-tiny-mnv2", vocab_size=50_000)
    with pytest.raises(InvalidInputError, match="vocabulary of 50000"):
        Teacher(model, name="other-bpe")


# --- training with a teacher --------------------------------------------------------------------


def test_training_leaves_the_teacher_untouched_and_out_of_checkpoint_and_export(
    teacher_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made: list[Teacher] = []
    original = Teacher.from_config

    def keep(config, device):  # type: ignore[no-untyped-def]
        made.append(original(config, device))
        return made[-1]

    monkeypatch.setattr(Teacher, "from_config", keep)  # what distillation_teacher() calls
    config = _config(
        tmp_path,
        recipe="lightclip",
        distill_model=f"local-dir:{teacher_dir}",
        distill_labels=True,
        w_distill=0.5,
        r1=0.0,
        r2=0.0,  # the teacher's labels from the first step
        export=True,
        steps=3,
    )
    result = lightclip.train(config, data=FakePipeline(num_samples=12, batch_size=4))

    (teacher,) = made
    fresh = Teacher.load(f"local-dir:{teacher_dir}", None)
    after, before = teacher.state_dict(), fresh.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)  # BatchNorm statistics too
    assert all(p.grad is None for p in teacher.parameters())

    rows = result.history
    assert len(rows) == 3 and all("loss_distill" in r for r in rows)
    for r in rows:
        weighted = 0.8 * r["loss_ins"] + 0.1 * (r["loss_tok"] + r["loss_mlm"])
        assert r["loss"] == pytest.approx(weighted + 0.5 * r["loss_distill"], rel=1e-5)

    payload = ckpt.load_checkpoint(result.checkpoint)
    student_keys = set(build_model(config).state_dict())
    assert set(ckpt.model_state(payload)) == student_keys
    assert len(payload["optimizer"]["state"]) <= len(list(build_model(config).parameters()))
    exported = load_file(result.export_path / WEIGHTS_FILE)
    plain = export_openclip(build_model(config), tmp_path / "plain")
    assert exported.keys() == load_file(plain / WEIGHTS_FILE).keys()


def test_cli_trains_with_a_teacher_on_synthetic_data(teacher_dir: Path, tmp_path: Path) -> None:
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
        "--distill-temperature=0.05",
        "--log-every-n-steps=1",
    ]
    assert train_module.main(argv) == 0
    log = (tmp_path / "run" / "metrics.csv").read_text().splitlines()
    header = log[0].split(",")
    assert "loss_distill" in header and len(log) >= 3


# --- flag combinations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(distill_pretrained="t.pt"), "--distill-pretrained needs --distill-model"),
        (dict(w_distill=1.0), "--w-distill needs --distill-model"),
        (dict(distill_temperature=0.1), "--distill-temperature needs --distill-model"),
        (dict(distill_labels=True), "--distill-labels needs --distill-model"),
        (dict(distill_model="clip-tiny-mnv2"), "needs --distill-pretrained"),
        (dict(distill_model="local-dir:x", distill_pretrained="t.pt"), "its own weights"),
        (dict(distill_model="local-dir:x", distill_temperature=0.0), "must be positive"),
        (dict(distill_model="local-dir:x", w_distill=-1.0), "must be >= 0"),
        (dict(distill_model="local-dir:x", w_distill=0.0), "the teacher would do nothing"),
        (dict(distill_model="local-dir:x", distill_labels=True), "needs --soft-labels"),
    ],
)
def test_bad_distillation_flags_are_refused(flags: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=message):
        _config(tmp_path, **flags)


def test_missing_or_unknown_teachers_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such folder"):
        Teacher.load(f"local-dir:{tmp_path / 'nowhere'}", None)
    with pytest.raises(InvalidInputError, match="neither a lightclip model"):
        Teacher.load("no-such-model", "t.pt")
