"""DataPipeline sources: shards, CSV/TSV, folders, synthetic data; order, ranks and resume.

References are independent of the pipeline: Python's tarfile for what a shard holds, Pillow
for pixels, lightclip's own tokenizer only where it is itself tested against open_clip.
The helpers at the top are shared by the other test_pipeline_*.py files.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import lightclip
from lightclip.data import CLIP_MEAN, CLIP_STD, augmentation_defaults, config_fields

# ------------------------------------------------------------------ shared helpers


def image_bytes(seed: int, size: tuple[int, int] = (24, 20), fmt: str = "PNG", mode="RGB") -> bytes:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr).convert(mode)
    out = io.BytesIO()
    img.save(out, format=fmt)
    return out.getvalue()


def write_tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def sample_members(key: str, seed: int, caption: str | None = "a photo", json_caps=None):
    members = [(f"{key}.png", image_bytes(seed))]
    if json_caps is not None:
        members.append((f"{key}.json", json.dumps({"captions": json_caps}).encode()))
    if caption is not None:
        members.append((f"{key}.txt", caption.encode()))
    return members


def make_shards(tmp: Path, n_shards: int, per_shard: int) -> str:
    for s in range(n_shards):
        members = []
        for i in range(per_shard):
            k = s * per_shard + i
            members += sample_members(f"s{k:04d}", k, caption=f"sample number {k}")
        write_tar(tmp / f"shard-{s:03d}.tar", members)
    return str(tmp / f"shard-{{000..{n_shards - 1:03d}}}.tar")


def pipe(source, **kw) -> lightclip.DataPipeline:
    """A small DataPipeline. For brevity the fields of its settings objects may be given flat
    here (``flip_p=0``, ``on_error="raise"``): they are sorted into ``augmentation`` (over the
    source's defaults, as the trainer's --aug-cfg), ``text`` and ``reading``."""
    kw.setdefault("batch_size", 4)
    kw.setdefault("image_size", 16)
    kw.setdefault("threads", 2)
    groups = dict(
        augmentation=lightclip.AugmentationConfig,
        text=lightclip.TextConfig,
        reading=lightclip.ReadingConfig,
    )
    for argument, config_type in groups.items():
        fields = {k: kw.pop(k) for k in config_fields(config_type) if k in kw}
        if not fields:
            continue
        if argument == "augmentation":
            base = augmentation_defaults(os.fspath(source), kw["image_size"])
            kw[argument] = base.replace(**fields)
        else:
            kw[argument] = config_type(**fields)
    return lightclip.DataPipeline(source, **kw)


def all_batches(p) -> list[dict]:
    return list(p)


def keys_of(p) -> list[str]:
    return [k for b in p for k in b["key"]]


def unnormalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return images * std + mean


# ------------------------------------------------------------------ synthetic


def test_synthetic_batches_have_the_contract_keys_shapes_and_length():
    p = pipe("synthetic", num_samples=20, batch_size=8, image_size=32, return_captions=True)
    batches = all_batches(p)
    assert len(batches) == len(p) == 2  # drop_last in training: 20 // 8
    b = batches[0]
    assert b["image"].shape == (8, 3, 32, 32) and b["image"].dtype == torch.float32
    for key in ("text", "masked_text", "mlm_labels"):
        assert b[key].shape == (8, 77) and b[key].dtype == torch.int64
    assert b["word_lengths"].shape == (8,) and b["label"].shape == (8,)
    assert len(b["captions"]) == 8
    names = p.class_names
    assert len(names) == 30 and "red circle" in names
    assert int(b["label"].min()) >= 0 and int(b["label"].max()) < len(names)
    # An epoch ends and the position moves on.
    assert p.state_dict()["epoch"] == 1 and p.state_dict()["consumed"] == 0


def test_heldout_split_labels_name_unseen_combinations():
    train = pipe(
        "synthetic:train", num_samples=200, batch_size=50, train=False, return_captions=True
    )
    held = pipe(
        "synthetic:heldout", num_samples=60, batch_size=20, train=False, return_captions=True
    )
    held_names = held.class_names
    assert len(held_names) == 6 and not set(held_names) & set(train.class_names)
    train_captions = [c for b in train for c in b["captions"]]
    for name in held_names:
        assert not any(name in c for c in train_captions), name
    for b in held:
        for caption, label in zip(b["captions"], b["label"].tolist(), strict=True):
            assert held_names[label] in caption


def test_same_seed_same_batches_whatever_the_thread_count():
    a = all_batches(pipe("synthetic", num_samples=24, threads=1, seed=3))
    b = all_batches(pipe("synthetic", num_samples=24, threads=2, seed=3))
    for x, y in zip(a, b, strict=True):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    c = all_batches(pipe("synthetic", num_samples=24, threads=2, seed=4))
    assert not torch.equal(a[0]["image"], c[0]["image"])


def test_flip_swaps_left_and_right_and_mirrors_the_image():
    common = dict(
        num_samples=40,
        batch_size=40,
        image_size=24,
        return_captions=True,
        crop_scale=(1.0, 1.0),
        crop_ratio=(1.0, 1.0),
        jitter_p=0.0,
        blur_p=0.0,
    )
    plain = next(iter(pipe("synthetic", flip_p=0.0, **common)))
    flipped = next(iter(pipe("synthetic", flip_p=1.0, **common)))
    assert torch.allclose(flipped["image"], plain["image"].flip(-1))
    swapped = 0
    for a, b in zip(plain["captions"], flipped["captions"], strict=True):
        want = a.replace("left", "\0").replace("right", "left").replace("\0", "right")
        assert b == want
        swapped += a != b
    assert swapped > 5


# ------------------------------------------------------------------ shards


def test_shards_yield_every_sample_once_with_json_and_txt_captions(tmp_path):
    members = sample_members("a", 1, caption="only txt")
    members += sample_members("b", 2, caption="ignored txt", json_caps=["one", "two"])
    members += sample_members("dir/c", 3, caption=None, json_caps=["from json"])
    shard = write_tar(tmp_path / "x.tar", members)
    p = pipe(str(shard), train=False, all_captions=True, return_captions=True)
    (batch,) = all_batches(p)
    assert batch["key"] == ["a", "b", "dir/c"]
    assert batch["all_captions"] == [["only txt"], ["one", "two"], ["from json"]]
    assert batch["captions"] == ["only txt", "one", "from json"]
    # Lossless PNG at its own size: the pixels come back exactly (after normalisation).
    ref = Image.open(io.BytesIO(image_bytes(1))).convert("RGB")
    side = min(ref.size)
    left = (ref.size[0] - side) // 2
    crop = np.asarray(ref.crop((left, 0, left + side, side)), dtype=np.float32) / 255
    p2 = pipe(str(shard), train=False, image_size=side, all_captions=True)
    got = unnormalize(next(iter(p2))["image"][:1])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(got, crop, atol=1e-5)


def test_brace_patterns_and_epoch_shuffling_cover_all_shards(tmp_path):
    pattern = make_shards(tmp_path, 3, 5)
    expected = {f"s{k:04d}" for k in range(15)}
    ordered = keys_of(pipe(pattern, train=False, all_captions=True))
    assert ordered == sorted(expected)  # evaluation keeps file order
    p = pipe(pattern, train=True, drop_last=False, all_captions=True, shuffle_buffer=6)
    epoch0, epoch1 = keys_of(p), keys_of(p)
    assert sorted(epoch0) == sorted(epoch1) == sorted(expected)
    assert epoch0 != epoch1 and epoch0 != sorted(expected)


@pytest.mark.parametrize("n_shards", [1, 4])
def test_ranks_read_disjoint_shares(tmp_path, n_shards):
    pattern = make_shards(tmp_path, n_shards, 6)
    shares = [
        set(keys_of(pipe(pattern, rank=r, world_size=2, drop_last=False, all_captions=True)))
        for r in range(2)
    ]
    assert not shares[0] & shares[1]
    assert len(shares[0] | shares[1]) == n_shards * 6


def test_synthetic_ranks_are_disjoint_and_equal_sized():
    shares = [
        set(
            keys_of(
                pipe(
                    "synthetic",
                    num_samples=21,
                    rank=r,
                    world_size=3,
                    train=False,
                    all_captions=True,
                )
            )
        )
        for r in range(3)
    ]
    assert [len(s) for s in shares] == [7, 7, 7]
    assert (
        not (shares[0] & shares[1]) and not (shares[1] & shares[2]) and not (shares[0] & shares[2])
    )


@pytest.mark.parametrize("source", ["shards", "synthetic"])
def test_state_dict_resumes_at_the_exact_next_sample(tmp_path, source):
    spec = make_shards(tmp_path, 2, 13) if source == "shards" else "synthetic"
    kw = dict(num_samples=26) if source == "synthetic" else {}
    p = pipe(spec, batch_size=3, shuffle_buffer=5, all_captions=True, seed=9, **kw)
    p.set_epoch(2)
    it = iter(p)
    for _ in range(3):
        next(it)
    state = p.state_dict()
    rest = list(it)
    q = pipe(spec, batch_size=3, shuffle_buffer=5, all_captions=True, seed=9, **kw)
    q.load_state_dict(state)
    resumed = list(q)
    assert [b["key"] for b in resumed] == [b["key"] for b in rest]
    for a, b in zip(rest, resumed, strict=True):
        assert torch.equal(a["image"], b["image"])
        assert torch.equal(a["masked_text"], b["masked_text"])


@pytest.mark.parametrize("source", ["shards", "synthetic"])
def test_the_next_epoch_read_ahead_is_what_a_fresh_start_gives(tmp_path, source):
    # A training pipeline builds the next epoch's first batches while the current one ends;
    # every way of going on must see the batches a pipeline started afresh there would give.
    spec = make_shards(tmp_path, 2, 7) if source == "shards" else "synthetic"
    kw = dict(num_samples=14) if source == "synthetic" else {}

    def make() -> lightclip.DataPipeline:
        return pipe(spec, batch_size=3, shuffle_buffer=5, all_captions=True, seed=4, **kw)

    def epoch_of(p: lightclip.DataPipeline, epoch: int) -> list[dict]:
        p.set_epoch(epoch)
        return all_batches(p)

    def same(a: list[dict], b: list[dict]) -> None:
        assert [x["key"] for x in a] == [x["key"] for x in b]
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x["image"], y["image"]) and torch.equal(x["text"], y["text"])

    expected = {e: epoch_of(make(), e) for e in (1, 2, 5)}
    assert [x["key"] for x in expected[1]] != [x["key"] for x in expected[2]]
    p = make()
    yielded = len(all_batches(p))  # epoch 0, then its read-ahead of epoch 1
    assert p.epoch == 1
    deadline = time.monotonic() + 30
    while p.stats()["batches"] == yielded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert p.stats()["batches"] > yielded, "nothing of epoch 1 was built ahead"
    same(all_batches(p), expected[1])  # iterating on
    same(epoch_of(p, 2), expected[2])  # set_epoch to the epoch read ahead
    same(epoch_of(p, 5), expected[5])  # set_epoch elsewhere drops the read-ahead
    # A saved position inside an epoch, restored after a read-ahead, is exact too.
    q = make()
    q.set_epoch(1)
    it = iter(q)
    next(it)
    state = q.state_dict()
    it.close()
    r = make()
    all_batches(r)
    r.load_state_dict(state)
    same(all_batches(r), expected[1][1:])
    r.close()
    same(all_batches(r), expected[2])  # close() stops the threads; iterating restarts them


def test_text_fields_follow_the_tokenizer_and_mlm_rules(tmp_path):
    caps = ["a dog runs across the grass", "two people ride bicycles", "a red car"]
    members = []
    for i, c in enumerate(caps):
        members += sample_members(f"k{i}", i, caption=c)
    shard = write_tar(tmp_path / "t.tar", members)
    batch = next(iter(pipe(str(shard), train=False, mlm_prob=0.5, seed=1)))
    tokenizer = getattr(lightclip, "get_tokenizer", None)
    if tokenizer is not None:
        assert torch.equal(batch["text"], tokenizer()(caps))
    text, masked, labels = batch["text"], batch["masked_text"], batch["mlm_labels"]
    eot = (text == 49407).int().argmax(dim=1)
    assert torch.equal(batch["word_lengths"], eot - 1)
    predicted = labels != -100
    assert torch.equal(labels[predicted], text[predicted])
    assert torch.equal(masked[~predicted], text[~predicted])
    positions = torch.arange(77).expand_as(text)
    assert not (predicted & ((positions == 0) | (positions >= eot[:, None]))).any()
    assert predicted.any()


# ------------------------------------------------------------------ tables and folders


@pytest.mark.parametrize("sep", [",", "\t"])
def test_csv_and_tsv_with_relative_paths_and_custom_columns(tmp_path, sep):
    (tmp_path / "img").mkdir()
    rows = []
    for i in range(5):
        (tmp_path / "img" / f"{i}.png").write_bytes(image_bytes(i))
        rows.append({"path": f"img/{i}.png", "text": f"caption {i}"})
    ext = "csv" if sep == "," else "tsv"
    table = tmp_path / f"data.{ext}"
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "text"], delimiter=sep)
        w.writeheader()
        w.writerows(rows)
    p = pipe(table, train=False, csv_img_key="path", csv_caption_key="text", return_captions=True)
    captions = [c for b in p for c in b["captions"]]
    assert captions == [f"caption {i}" for i in range(5)]
    with pytest.raises(lightclip.InvalidInputError, match="filepath"):
        pipe(table, train=False)


def test_image_folder_labels_follow_sorted_class_names(tmp_path):
    for cls, n in (("zebra", 2), ("apple", 3)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            (tmp_path / cls / f"{i}.jpg").write_bytes(image_bytes(i, fmt="JPEG"))
    (tmp_path / "notes.txt").write_text("not a class")
    p = pipe(tmp_path, train=False, all_captions=True)
    assert p.class_names == ["apple", "zebra"]
    batches = all_batches(p)
    labels = torch.cat([b["label"] for b in batches]).tolist()
    keys = [k for b in batches for k in b["key"]]
    assert labels == [0, 0, 0, 1, 1]
    assert all(k.startswith(("apple/", "zebra/")) for k in keys)


def test_flickr8k_shard_reads_like_tarfile(flickr8k_dir):
    shard = flickr8k_dir / "dev-000000.tar"
    with tarfile.open(shard) as tar:
        names = [m.name for m in tar.getmembers()]
        first_json = json.load(tar.extractfile(names[1]))
    p = pipe(str(shard), batch_size=100, image_size=64, train=False, all_captions=True)
    batches = all_batches(p)
    keys = [k for b in batches for k in b["key"]]
    assert keys == sorted({n.split(".")[0] for n in names})
    assert batches[0]["all_captions"][0] == first_json["captions"]
    assert p.stats()["skipped_total"] == 0
