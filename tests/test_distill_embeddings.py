"""Training from stored teacher embeddings (issue 25, item 3): the pipeline's sample ids
(``DataPipeline(sample_ids=True)``: ``key``, ``shard``, ``caption_index``) and
``lightclip train --distill-embeddings``.

References: for the caption index, the caption text the same batch carries (EDA and the flip
off, so the text is the caption as written) and an uninterrupted pipeline for a resumed one; for
training, the online teacher (``--distill-model``). With augmentation off and square pictures at
the teacher's resolution, the student's batch is the clean image the store embedded, so the
online teacher's targets are the stored ones: every step's teacher logits must agree."""

from __future__ import annotations

import csv
import importlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

import lightclip
from lightclip.cli import main
from lightclip.errors import DataError, InvalidInputError
from lightclip.losses.distillation import teacher_logits
from lightclip.openclip_export import export_openclip
from lightclip.teacher import Teacher
from lightclip.teacher_embeddings import load_teacher_embeddings, write_teacher_embeddings
from quiet_run import quiet_config
from test_pipeline_sources import image_bytes, write_tar
from train_fakes import FakePipeline

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# The module, not the function `lightclip.train` that the package exports under its name.
train_module = importlib.import_module("lightclip.train")

SIZE = 64  # the teacher's and the student's resolution: no resize between them
TXT = "a caption from a text file"


def _captions(shard: int, i: int) -> list[str] | None:
    """1 to 5 distinct captions (None: a .txt caption only, every 5th sample)."""
    if (shard * 6 + i) % 5 == 4:
        return None
    return [f"shard {shard} sample {i} caption {c}" for c in range(1 + (shard + i) % 5)]


def _write_shard(path: Path, shard: int, samples: int = 6, seed: int = 0) -> None:
    members = []
    for i in range(samples):
        key = f"s{shard}-{i:03d}"
        members.append((f"{key}.png", image_bytes(seed + 10 * shard + i, size=(SIZE, SIZE))))
        caps = _captions(shard, i)
        if caps is None:
            members.append((f"{key}.txt", TXT.encode()))
        else:
            members.append((f"{key}.json", json.dumps({"captions": caps}).encode()))
    write_tar(path, members)


@pytest.fixture
def shards(tmp_path: Path) -> str:
    for s in range(2):
        _write_shard(tmp_path / f"shard-{s}.tar", s)
    return str(tmp_path / "shard-{0..1}.tar")


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = lightclip.create_model("clip-tiny-mnv2", seed=11, text_width=96)
    assert model.config.image_size == SIZE
    return export_openclip(model, tmp_path_factory.mktemp("teacher"))


def _pipe(source: str, **kw) -> lightclip.DataPipeline:
    clean = lightclip.AugmentationConfig(flip_p=0.0)
    kw.setdefault("augmentation", clean)
    return lightclip.DataPipeline(
        source,
        batch_size=2,
        image_size=SIZE,
        threads=1,
        text=lightclip.TextConfig(eda_prob=0.0),
        **kw,
    )


# --- the pipeline's sample ids ------------------------------------------------------------------


def test_caption_index_names_the_caption_the_batch_carries(shards):
    p = _pipe(shards, train=True, return_captions=True, all_captions=True, sample_ids=True)
    drawn: dict[str, set[int]] = {}
    for epoch in range(4):
        p.set_epoch(epoch)
        for batch in p:
            assert isinstance(batch["caption_index"], list)
            for i, key in enumerate(batch["key"]):
                index = batch["caption_index"][i]
                assert batch["captions"][i] == batch["all_captions"][i][index]
                assert Path(batch["shard"][i]).name == f"shard-{key[1]}.tar"
                drawn.setdefault(key, set()).add(index)
    several = [k for k, seen in drawn.items() if len(seen) > 1]
    assert several, f"4 epochs drew one caption of every sample: {drawn}"

    evaluation = _pipe(shards, train=False, sample_ids=True)
    batch = next(iter(evaluation))
    assert set(batch) >= {"key", "shard", "caption_index"} and "all_captions" not in batch
    assert all(index == 0 for b in evaluation for index in b["caption_index"])


def test_caption_index_is_stable_across_a_saved_position(shards):
    def ids(batch):
        return list(zip(batch["key"], batch["caption_index"], strict=True))

    whole = _pipe(shards, train=True, sample_ids=True)
    whole.set_epoch(1)
    reference = [ids(b) for b in whole]
    assert len(reference) == 6

    first = _pipe(shards, train=True, sample_ids=True)
    first.set_epoch(1)
    batches = iter(first)
    assert ids(next(batches)) == reference[0]
    assert ids(next(batches)) == reference[1]
    state = first.state_dict()
    first.close()

    resumed = _pipe(shards, train=True, sample_ids=True)
    resumed.load_state_dict(state)
    assert [ids(b) for b in resumed] == reference[2:]


def test_the_shard_tells_a_key_in_two_shards_apart(tmp_path, teacher_dir):
    for s in range(2):  # the same keys, other pictures
        _write_shard(tmp_path / f"dup-{s}.tar", 0, samples=3, seed=100 * s)
    source = str(tmp_path / "dup-{0..1}.tar")
    teacher = Teacher.load(f"local-dir:{teacher_dir}", None)
    write_teacher_embeddings(source, teacher, threads=1)
    store = load_teacher_embeddings(source)
    alone = [load_teacher_embeddings(tmp_path / f"dup-{s}.tar") for s in range(2)]
    with pytest.raises(DataError, match="'s0-000' is in several shards"):
        store.output(["s0-000"], [0])
    for batch in _pipe(source, train=False, sample_ids=True):
        out = store.output_for(batch)
        for i, (key, shard) in enumerate(zip(batch["key"], batch["shard"], strict=True)):
            own = alone[int(Path(shard).stem[-1])].output([key], [0])
            torch.testing.assert_close(out.image_features[i], own.image_features[0])


# --- lightclip train --distill-embeddings -------------------------------------------------------


AUG_OFF = [
    "--aug-cfg",
    "scale=(1.0,1.0)",
    "ratio=(1.0,1.0)",
    "color_jitter_prob=0",
    "gray_scale_prob=0",
    "blur_prob=0",
    "flip_prob=0",
]


def _train(logs: Path, name: str, shards: str, *teacher: str) -> list[dict[str, Any]]:
    """Runs ``lightclip train`` for 3 steps; per step its logged losses and the teacher's
    image->text logits as the loss received them."""
    argv = [
        "train",
        "--model=lightclip-tiny-mnv2",
        "--recipe=lightclip",  # MLM and the fused pass on, the teacher's labels as well
        "--eda-prob=0",
        f"--train-data={shards}",
        "--batch-size=4",
        "--steps=3",
        "--warmup=0",
        "--workers=1",
        f"--logs={logs}",
        f"--name={name}",
        "--no-progress",
        "--no-export",
        "--log-every-n-steps=1",
        "--distill-labels",
        "--r1=0",
        "--r2=0",
        "--w-distill=0.5",
        *AUG_OFF,
        *teacher,
    ]
    logits: list[torch.Tensor] = []
    step_loss = train_module.step_loss

    def record(run, out, batch, progress):  # type: ignore[no-untyped-def]
        logits.append(teacher_logits(out["teacher"], None)[0])
        return step_loss(run, out, batch, progress)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(train_module, "step_loss", record)
        assert main(argv) == 0
    with open(logs / name / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    return [
        {"logits": z, **{k: float(v) for k, v in row.items() if k.startswith("loss")}}
        for z, row in zip(logits, rows, strict=True)
    ]


def test_training_from_stored_embeddings_equals_the_online_teacher(
    shards, teacher_dir, tmp_path, monkeypatch
):
    teacher_flag = f"--distill-model=local-dir:{teacher_dir}"
    stores = tmp_path / "stores"
    write = ["teacher-embeddings", f"--train-data={shards}", teacher_flag, f"--out={stores}"]
    assert main([*write, "--device=cpu", "--workers=1"]) == 0
    online = _train(tmp_path, "online", shards, teacher_flag)

    def not_run(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the teacher ran although its embeddings are stored")

    monkeypatch.setattr(Teacher, "forward", not_run)
    offline = _train(tmp_path, "offline", shards, f"--distill-embeddings={stores}")
    checked = _train(tmp_path, "checked", shards, f"--distill-embeddings={stores}", teacher_flag)

    assert len(online) == 3 and all(row["loss_distill"] > 0 for row in online)
    for run in (offline, checked):
        assert run[0].keys() == online[0].keys()
        # The same batches, so the same targets (the pixels agree to float rounding) ...
        for row, reference in zip(run, online, strict=True):
            torch.testing.assert_close(row["logits"], reference["logits"], rtol=0, atol=1e-4)
        # ... and the same first step; later ones drift apart from that rounding through
        # AdamW's first, sign-like updates, so they are not compared.
        first = {k: v for k, v in run[0].items() if k != "logits"}
        assert first == pytest.approx({k: online[0][k] for k in first}, rel=1e-5)


def test_auto_reads_the_stores_beside_the_shards(shards, teacher_dir, tmp_path):
    teacher = Teacher.load(f"local-dir:{teacher_dir}", None)
    write_teacher_embeddings(shards, teacher, threads=1)
    config = quiet_config(
        tmp_path, train_data=shards, distill_embeddings="auto", steps=1, workers=1, eda_prob=0.0
    )
    result = lightclip.train(config)
    assert result.history[0]["loss_distill"] > 0


def test_feature_distillation_from_stored_embeddings_equals_the_online_teacher(
    shards, teacher_dir, tmp_path
):
    teacher_flag = f"--distill-model=local-dir:{teacher_dir}"
    stores = tmp_path / "stores"
    write = ["teacher-embeddings", f"--train-data={shards}", teacher_flag, f"--out={stores}"]
    assert main([*write, "--device=cpu", "--workers=1"]) == 0
    feature = "--w-distill-feature=1"
    online = _train(tmp_path, "online", shards, teacher_flag, feature)
    offline = _train(tmp_path, "offline", shards, f"--distill-embeddings={stores}", feature)
    assert all(row["loss_distill_feature"] > 0 for row in online)
    # The projection is as wide as the stores say the teacher is, and the first step's
    # losses agree (the later ones drift apart from the pixels' rounding, as above).
    first = {k: v for k, v in offline[0].items() if k != "logits"}
    assert first == pytest.approx({k: online[0][k] for k in first}, rel=1e-5)


# --- refusals ----------------------------------------------------------------------------------


def test_stores_of_another_teacher_or_shard_are_an_error_at_the_start(
    shards, teacher_dir, tmp_path, capsys
):
    stores = tmp_path / "stores"
    teacher = Teacher.load(f"local-dir:{teacher_dir}", None)
    write_teacher_embeddings(shards, teacher, out=stores, threads=1)
    other = export_openclip(lightclip.create_model("clip-tiny-mnv2", seed=12), tmp_path / "other")

    def run(*flags: str) -> str:
        argv = ["train", f"--train-data={shards}", f"--logs={tmp_path}", "--no-progress", *flags]
        assert main(argv) == 2
        return capsys.readouterr().err.strip()

    err = run(f"--distill-embeddings={stores}", f"--distill-model=local-dir:{other}")
    assert "embeddings of another teacher" in err and len(err.splitlines()) == 1
    _write_shard(tmp_path / "shard-1.tar", 1, seed=7)  # the shard changed since
    err = run(f"--distill-embeddings={stores}", "--name=changed")
    assert "written for another shard" in err and "shard-1.tar" in err
    err = run("--distill-embeddings=auto", "--name=auto")  # none beside the shards
    assert "no teacher embeddings at" in err and "lightclip teacher-embeddings" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (dict(distill_embeddings=""), "--distill-embeddings needs a folder"),
        (
            dict(distill_embeddings="auto", dataset_type="csv"),
            "--distill-embeddings reads stores of webdataset shards; --dataset-type is csv",
        ),
        (
            dict(distill_embeddings="auto", distill_model="clip-tiny-mnv2"),
            "needs --distill-pretrained",
        ),
        (dict(w_distill=1.0), "--w-distill needs --distill-model or --distill-embeddings"),
    ],
)
def test_bad_flag_combinations_are_refused(flags, message, tmp_path):
    with pytest.raises(InvalidInputError, match=message):
        quiet_config(tmp_path, **flags)
    assert quiet_config(tmp_path, distill_embeddings="auto").w_distill == 1.0  # as a teacher's


def test_data_that_is_not_shards_or_carries_no_sample_ids_is_refused(shards, teacher_dir, tmp_path):
    config = quiet_config(
        tmp_path, train_data="synthetic:train", distill_embeddings="auto", steps=1
    )
    with pytest.raises(InvalidInputError, match="--train-data synthetic:train is not a shard"):
        lightclip.train(config)
    write_teacher_embeddings(shards, Teacher.load(f"local-dir:{teacher_dir}", None), threads=1)
    config = quiet_config(tmp_path, train_data=shards, distill_embeddings="auto", steps=1, name="b")
    with pytest.raises(DataError, match="no 'key', 'shard', 'caption_index'.*sample_ids=True"):
        lightclip.train(config, data=FakePipeline(num_samples=8, batch_size=4))
