"""Teacher embeddings offline (issue 25, item 3): ``lightclip teacher-embeddings`` and
``lightclip.teacher_embeddings.load_teacher_embeddings``.

Shards are written here with tarfile, the teacher is a local lightclip export (no internet).
Reference for the stored rows: the online teacher (``Teacher.forward``, the path training
runs) on the evaluation-preprocessed images (``DataPipeline(train=False)``, itself checked
against open_clip's preprocessing in test_eval_preprocessing.py) and on the captions as this
file wrote them, tokenized as the student's pipeline does (77 tokens, cut by the teacher)."""

from __future__ import annotations

import hashlib
import json
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import lightclip
from lightclip.cli import main
from lightclip.errors import DataError, InvalidInputError
from lightclip.losses.distillation import teacher_logits
from lightclip.openclip_export import export_openclip
from lightclip.teacher import Teacher
from lightclip.teacher_embeddings import (
    FORMAT_VERSION,
    embeddings_path,
    load_teacher_embeddings,
    teacher_fingerprint,
    write_teacher_embeddings,
)
from test_pipeline_sources import image_bytes, write_tar

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Per shard, per sample: its captions (a .json list of 1 to 5; None: a .txt caption only).
CAPTIONS: list[list[list[str] | None]] = [
    [
        ["a dog runs on the grass", "a brown dog", "dog outside", "an animal", "a pet running"],
        ["a red car"],
        None,
    ],
    [
        ["two people on a bench", "people sitting", "a park bench"],
        ["a boat on the lake", "water and a boat"],
    ],
]
TXT_CAPTION = "a plain text caption"


def _write_shard(path: Path, shard: int, captions: list[list[str] | None]) -> None:
    members = []
    for i, caps in enumerate(captions):
        key = f"s{shard}-{i:03d}"
        members.append((f"{key}.png", image_bytes(10 * shard + i, size=(40, 30))))
        if caps is None:
            members.append((f"{key}.txt", TXT_CAPTION.encode()))
        else:
            members.append((f"{key}.json", json.dumps({"captions": caps}).encode()))
    write_tar(path, members)


def _captions(shard: int, i: int) -> list[str]:
    caps = CAPTIONS[shard][i]
    return [TXT_CAPTION] if caps is None else caps


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = lightclip.create_model("clip-tiny-mnv2", seed=11, text_width=96)
    return export_openclip(model, tmp_path_factory.mktemp("teacher"))


@pytest.fixture(scope="module")
def teacher(teacher_dir: Path) -> Teacher:
    return Teacher.load(f"local-dir:{teacher_dir}", None)


@pytest.fixture
def shards(tmp_path: Path) -> str:
    for s, captions in enumerate(CAPTIONS):
        _write_shard(tmp_path / f"shard-{s:03d}.tar", s, captions)
    return str(tmp_path / "shard-{000..001}.tar")


def _shard_files(pattern: str) -> list[Path]:
    folder = Path(pattern).parent
    return [folder / f"shard-{s:03d}.tar" for s in range(len(CAPTIONS))]


def _run(*argv: str) -> int:
    return main(["teacher-embeddings", "--device", "cpu", "--workers", "1", *argv])


def _online(teacher: Teacher, shard: Path, key: str, captions: list[str]):
    """The online teacher's output for one sample's clean image and each of its captions."""
    data = lightclip.DataPipeline(
        str(shard),
        batch_size=1,
        image_size=teacher.image_size,
        train=False,
        threads=1,
        all_captions=True,  # brings the keys
    )
    (image,) = [batch["image"] for batch in data if batch["key"] == [key]]
    tokens = lightclip.get_tokenizer(context_length=77)(captions)  # the student's rows
    return teacher(image.expand(len(captions), -1, -1, -1), tokens)


# --- what is stored ---------------------------------------------------------------------------


def test_stored_embeddings_are_the_online_teachers(shards, teacher, teacher_dir, capsys):
    assert _run("--train-data", shards, "--distill-model", f"local-dir:{teacher_dir}") == 0
    files = _shard_files(shards)
    printed = capsys.readouterr().out.split()
    assert printed == [str(embeddings_path(f, None)) for f in files]  # beside each shard

    store = load_teacher_embeddings(shards, teacher=teacher)
    assert len(store) == sum(len(c) for c in CAPTIONS)
    torch.testing.assert_close(store.logit_scale, teacher.model.logit_scale.exp().detach())
    for s, shard in enumerate(files):
        for i in range(len(CAPTIONS[s])):
            key, captions = f"s{s}-{i:03d}", _captions(s, i)
            online = _online(teacher, shard, key, captions)
            stored = store.captions(key)
            assert stored.shape == (len(captions), store.embed_dim)
            torch.testing.assert_close(stored, online.text_features, rtol=0, atol=1e-5)
            image = store.output([key], [0]).image_features
            torch.testing.assert_close(image, online.image_features[:1], rtol=0, atol=1e-5)


def test_the_header_says_what_the_rows_belong_to(shards, teacher, teacher_dir):
    write_teacher_embeddings(shards, teacher, threads=1)
    shard = _shard_files(shards)[1]
    with safe_open(embeddings_path(shard, None), framework="pt") as f:
        meta = f.metadata()
        offsets = f.get_tensor("text_offsets")
        assert f.get_tensor("image_features").dtype == torch.float32
    data = shard.read_bytes()
    assert meta["format"] == "lightclip-teacher-embeddings"
    assert meta["format_version"] == str(FORMAT_VERSION)
    assert meta["shard_name"] == shard.name
    assert meta["shard_size"] == str(len(data))
    assert meta["shard_sha256"] == hashlib.sha256(data).hexdigest()
    assert meta["teacher_model"] == f"local-dir:{teacher_dir}"
    assert meta["teacher_sha256"] == teacher_fingerprint(teacher)
    assert meta["teacher_image_size"] == str(teacher.image_size)
    assert meta["teacher_context_length"] == str(teacher.context_length)
    assert meta["embed_dim"] == str(teacher.model.config.embed_dim)
    assert json.loads(meta["keys"]) == ["s1-000", "s1-001"]
    assert offsets.tolist() == [0, 3, 5]


def test_a_batch_gets_the_online_teacher_logits(shards, teacher):
    """The store's batch output (the chosen caption of each sample, its clean image) gives
    the teacher_logits the online teacher gives on the same clean images and captions."""
    write_teacher_embeddings(shards, teacher, threads=1, batch_size=2)
    store = load_teacher_embeddings(shards)
    picks = [("s0-000", 3), ("s1-001", 1), ("s0-002", 0), ("s1-000", 2)]
    keys, indices = zip(*picks, strict=True)
    data = lightclip.DataPipeline(
        _shard_files(shards),
        batch_size=8,
        image_size=teacher.image_size,
        train=False,
        threads=1,
        all_captions=True,
    )
    batch = next(iter(data))
    rows = [batch["key"].index(k) for k in keys]
    captions = [_captions(int(k[1]), int(k[3:]))[i] for k, i in picks]
    online = teacher(batch["image"][rows], lightclip.get_tokenizer(context_length=77)(captions))
    offline = store.output(list(keys), list(indices))
    for temperature in (None, 0.07):
        got, want = teacher_logits(offline, temperature), teacher_logits(online, temperature)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=1e-4)


def test_float16_out_folder_and_up_to_date_stores(shards, teacher, teacher_dir, tmp_path):
    out = tmp_path / "stores"
    write_teacher_embeddings(shards, teacher, out=out, threads=1)
    full = load_teacher_embeddings(shards, folder=out)
    paths = write_teacher_embeddings(shards, teacher, out=out, dtype="float16", threads=1)
    assert all(p.parent == out for p in paths)
    assert not embeddings_path(_shard_files(shards)[0], None).exists()
    # They matched shard and teacher: kept as they were (float32), not rewritten.
    with safe_open(paths[0], framework="pt") as f:
        assert f.get_tensor("image_features").dtype == torch.float32
    assert _run(
        "--train-data", shards, "--distill-model", f"local-dir:{teacher_dir}",
        "--out", str(out), "--dtype", "float16", "--force",
    ) == 0  # fmt: skip
    with safe_open(paths[0], framework="pt") as f:
        assert f.get_tensor("image_features").dtype == torch.float16
    half = load_teacher_embeddings(shards, folder=out, teacher=teacher)
    out_half = half.output(["s0-000", "s1-000"], [4, 2])
    assert out_half.image_features.dtype == torch.float32
    torch.testing.assert_close(half.text_features.float(), full.text_features, rtol=0, atol=1e-3)
    torch.testing.assert_close(half.image_features.float(), full.image_features, rtol=0, atol=1e-3)


def test_the_fingerprint_follows_the_weights_not_the_name(teacher, teacher_dir, tmp_path):
    again = Teacher.load(f"local-dir:{teacher_dir}", None)
    assert teacher_fingerprint(again) == teacher_fingerprint(teacher)
    with torch.no_grad():
        next(again.model.parameters()).view(-1)[0] += 1e-3
    assert teacher_fingerprint(again) != teacher_fingerprint(teacher)


# --- mismatches are clear errors ----------------------------------------------------------------


@pytest.fixture
def written(shards: str, teacher: Teacher) -> str:
    write_teacher_embeddings(shards, teacher, threads=1)
    return shards


def test_a_changed_shard_is_refused(written):
    shard = _shard_files(written)[1]
    _write_shard(shard, 1, [CAPTIONS[1][0], ["another caption"]])
    with pytest.raises(DataError, match=r"another shard .*shard-001\.tar.*changed"):
        load_teacher_embeddings(written)


def test_another_teacher_is_refused(written, teacher):
    other = Teacher(lightclip.create_model("clip-tiny-mnv2", seed=12).export(), name="other")
    with pytest.raises(InvalidInputError, match="another teacher"):
        load_teacher_embeddings(written, teacher=other)
    with pytest.raises(InvalidInputError, match="another teacher"):
        load_teacher_embeddings(written, teacher="0" * 64)
    # Two shards' stores of two teachers do not make one store either.
    write_teacher_embeddings(_shard_files(written)[1], other, threads=1)
    with pytest.raises(InvalidInputError, match="another teacher"):
        load_teacher_embeddings(written)
    # Writing again with the first teacher replaces the other's store (it did not match).
    write_teacher_embeddings(written, teacher, threads=1)
    assert load_teacher_embeddings(written, teacher=teacher).teacher_sha256 == teacher_fingerprint(
        teacher
    )


def test_a_missing_or_damaged_store_is_refused(written, tmp_path):
    path = embeddings_path(_shard_files(written)[0], None)
    with pytest.raises(DataError, match="no teacher embeddings at .*teacher-embeddings"):
        load_teacher_embeddings(written, folder=tmp_path / "elsewhere")
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(DataError, match="not a readable teacher-embeddings file"):
        load_teacher_embeddings(written)
    path.unlink()
    with pytest.raises(DataError, match="shard-000.tar: no teacher embeddings"):
        load_teacher_embeddings(written)


def _rewrite(path: Path, **changes: str) -> None:
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
    save_file(tensors, path, metadata={**meta, **changes})


def test_a_store_from_the_future_or_of_another_format_is_refused(written):
    path = embeddings_path(_shard_files(written)[0], None)
    _rewrite(path, format_version=str(FORMAT_VERSION + 1))
    with pytest.raises(DataError, match=f"format version {FORMAT_VERSION + 1} is newer"):
        load_teacher_embeddings(written)
    _rewrite(path, format_version="1", format="something-else")
    with pytest.raises(DataError, match="not a teacher-embeddings file"):
        load_teacher_embeddings(written)
    _rewrite(path, format="lightclip-teacher-embeddings", keys=json.dumps(["only-one"]))
    with pytest.raises(DataError, match="shapes do not agree"):
        load_teacher_embeddings(written)


def test_a_missing_key_or_caption_is_refused(written):
    store = load_teacher_embeddings(written)
    assert "s0-001" in store and "s9-000" not in store
    with pytest.raises(DataError, match="'s9-000': not in the teacher embeddings"):
        store.output(["s0-000", "s9-000"], [0, 0])
    with pytest.raises(DataError, match="'s0-001': caption 1 asked for, the store has 1"):
        store.output(["s0-000", "s0-001"], [4, 1])
    with pytest.raises(InvalidInputError, match="one each per row"):
        store.output(["s0-000"], [0, 1])


def test_a_key_in_two_shards_is_ambiguous(tmp_path, teacher):
    for s in range(2):  # the same keys in both shards
        _write_shard(tmp_path / f"dup-{s}.tar", 0, CAPTIONS[0])
    source = str(tmp_path / "dup-{0..1}.tar")
    write_teacher_embeddings(source, teacher, threads=1)
    store = load_teacher_embeddings(source)
    with pytest.raises(DataError, match="'s0-000' is in several shards"):
        store.output(["s0-000"], [0])
    with pytest.raises(InvalidInputError, match="same file name"):
        write_teacher_embeddings(
            [tmp_path / "dup-0.tar", _copy(tmp_path / "dup-0.tar", tmp_path / "b")],
            teacher,
            out=tmp_path / "out",
        )


def _copy(shard: Path, folder: Path) -> Path:
    folder.mkdir()
    (folder / shard.name).write_bytes(shard.read_bytes())
    return folder / shard.name


def test_the_command_reports_a_bad_teacher_in_one_line(shards, tmp_path, capsys):
    missing = tmp_path / "no-such-export"
    assert _run("--train-data", shards, "--distill-model", f"local-dir:{missing}") == 2
    assert capsys.readouterr().err.strip().endswith(f"no such folder {missing}")


def test_a_read_only_shard_folder_is_a_clear_error(shards, teacher, monkeypatch):
    real_open, folder = os.open, str(Path(shards).parent)

    def refuse(file, *args, **kwargs):  # as a read-only folder would (root ignores chmod)
        if os.path.dirname(os.fspath(file)) == folder:
            raise PermissionError(13, "Permission denied")
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(DataError, match="cannot write .*shard-000.tar.teacher.* --out FOLDER"):
        write_teacher_embeddings(shards, teacher, threads=1)


@pytest.mark.parametrize("umask", [0o022, 0o027, 0o077])
def test_a_store_gets_the_mode_a_plain_open_would_give(shards, teacher, tmp_path, umask):
    old = os.umask(umask)
    try:
        (path, _) = write_teacher_embeddings(shards, teacher, threads=1)
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    mode = stat.S_IMODE(path.stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "plain").stat().st_mode) == 0o666 & ~umask
    assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []
