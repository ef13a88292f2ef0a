"""Bad input, case by case, under on_error="skip" (counted, logged, stream goes on)
and on_error="raise" (DataError naming the shard/file and member). The bad files are made
here, in tmp_path."""

from __future__ import annotations

import logging
import struct
import zlib

import pytest
import torch

import lightclip
from lightclip.tokenizer import default_vocab_path
from test_pipeline_sources import image_bytes, pipe, sample_members, write_tar

GOOD = [("good0", 0), ("good1", 1)]


def good_members():
    out = []
    for key, seed in GOOD:
        out += sample_members(key, seed, caption=f"caption of {key}")
    return out


def run_skip(source, **kw):
    p = pipe(source, train=False, all_captions=True, **kw)
    keys = [k for b in p for k in b["key"]]
    return p, keys


def jpeg(seed=0):
    return image_bytes(seed, size=(32, 32), fmt="JPEG")


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A tiny PNG whose header claims width x height pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


BAD_SAMPLES = {
    # name: (members of the bad sample, reason counter)
    "corrupt_jpeg": (
        [("bad.jpg", b"\xff\xd8\xff\xe0" + b"garbage" * 50), ("bad.txt", b"x")],
        "corrupt_image",
    ),
    "truncated_jpeg": ([("bad.jpg", jpeg()[:300]), ("bad.txt", b"x")], "corrupt_image"),
    "not_an_image": ([("bad.jpg", b"plain text"), ("bad.txt", b"x")], "corrupt_image"),
    "missing_image": ([("bad.txt", b"a caption without picture")], "missing_image"),
    "missing_caption": ([("bad.png", image_bytes(5))], "missing_caption"),
    "empty_caption": ([("bad.png", image_bytes(5)), ("bad.txt", b"")], "empty_caption"),
    "whitespace_caption": ([("bad.png", image_bytes(5)), ("bad.txt", b" \t\n ")], "empty_caption"),
    "nul_caption": ([("bad.png", image_bytes(5)), ("bad.txt", b"\0\0\0")], "empty_caption"),
    "non_utf8_caption": (
        [("bad.png", image_bytes(5)), ("bad.txt", b"caf\xe9 \xff")],
        "invalid_caption",
    ),
    "bad_json": ([("bad.png", image_bytes(5)), ("bad.json", b"{not json")], "invalid_caption"),
    "decompression_bomb": ([("bad.png", png_bomb()), ("bad.txt", b"x")], "too_large"),
}


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_is_skipped_counted_and_logged(tmp_path, case, caplog):
    bad, reason = BAD_SAMPLES[case]
    members = good_members()[:2] + bad + good_members()[2:]
    shard = write_tar(tmp_path / "shard.tar", members)
    with caplog.at_level(logging.WARNING, logger="lightclip.data"):
        p, keys = run_skip(str(shard))
    assert keys == ["good0", "good1"]
    stats = p.stats()
    assert stats["skipped"] == {reason: 1}, stats
    assert stats["samples_yielded"] == 2
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert "shard.tar" in logged and "bad" in logged and reason in logged


@pytest.mark.parametrize("case", sorted(BAD_SAMPLES))
def test_bad_sample_raises_naming_shard_and_member(tmp_path, case):
    bad, _ = BAD_SAMPLES[case]
    shard = write_tar(tmp_path / "shard.tar", good_members() + bad)
    p = pipe(str(shard), train=False, on_error="raise", batch_size=1)
    with pytest.raises(lightclip.DataError) as info:
        list(p)
    message = str(info.value)
    assert "shard.tar" in message and "bad" in message


def test_a_key_repeated_apart_in_a_shard_is_a_counted_skip(tmp_path):
    again = sample_members("good0", 7, caption="the same key again")
    shard = write_tar(tmp_path / "shard.tar", good_members() + again)
    p, keys = run_skip(str(shard))
    assert keys == ["good0", "good1"]
    assert p.stats()["skipped"] == {"duplicate_key": 1}
    with pytest.raises(lightclip.DataError, match="good0 comes back after other samples"):
        list(pipe(str(shard), train=False, on_error="raise"))


def test_an_empty_json_caption_list_leaves_the_caption_to_the_txt(tmp_path):
    members = sample_members("a", 1, caption="from the txt", json_caps=[])
    members += sample_members("b", 2, caption="ignored txt", json_caps=["from the json"])
    shard = write_tar(tmp_path / "shard.tar", members)
    p = pipe(str(shard), train=False, return_captions=True)
    assert [c for b in p for c in b["captions"]] == ["from the txt", "from the json"]
    assert p.stats()["skipped"] == {}


def test_pixel_limit_is_an_option(tmp_path):
    small = [("small.png", image_bytes(3, size=(10, 10))), ("small.txt", b"tiny")]
    shard = write_tar(tmp_path / "s.tar", good_members() + small)  # goods are 24 x 20 = 480 px
    p, keys = run_skip(str(shard), max_pixels=479)
    assert keys == ["small"] and p.stats()["skipped"] == {"too_large": 2}
    p, keys = run_skip(str(shard), max_pixels=480)
    assert keys == ["good0", "good1", "small"]


def test_very_long_caption_is_cut_to_the_context_keeping_eot(tmp_path):
    long = " ".join(["word"] * 50_000)
    shard = write_tar(tmp_path / "s.tar", sample_members("long", 1, caption=long))
    batch = next(iter(pipe(str(shard), train=False)))
    row = batch["text"][0]
    assert row[0] == 49406 and row[-1] == 49407 and (row != 0).all()
    assert int(batch["word_lengths"][0]) == 75


def test_truncated_tar_keeps_the_samples_before_the_cut(tmp_path):
    members = good_members() + sample_members("late", 9, caption="late one")
    full = write_tar(tmp_path / "full.tar", members).read_bytes()
    cut = tmp_path / "cut.tar"
    # Cut inside the last sample's picture: its header survives, its data does not.
    cut.write_bytes(full[: len(full) - 2048 - 600])
    p, keys = run_skip(str(cut))
    assert keys == ["good0", "good1"]
    assert p.stats()["skipped"] == {"truncated_shard": 1}
    with pytest.raises(lightclip.DataError, match="cut.tar"):
        list(pipe(str(cut), train=False, on_error="raise"))


def test_unreadable_files_are_skipped_or_named(tmp_path):
    (tmp_path / "ok.png").write_bytes(image_bytes(1))
    (tmp_path / "table.csv").write_text(
        "filepath,title\nok.png,fine\nmissing.png,gone\nok.png,fine again\n"
    )
    p = pipe(tmp_path / "table.csv", train=False, return_captions=True)
    captions = [c for b in p for c in b["captions"]]
    assert captions == ["fine", "fine again"]
    assert p.stats()["skipped"] == {"unreadable": 1}
    with pytest.raises(lightclip.DataError, match="missing.png"):
        list(pipe(tmp_path / "table.csv", train=False, on_error="raise"))
    # A missing shard among existing ones is skipped like an unreadable file.
    write_tar(tmp_path / "s-0.tar", good_members())
    p = pipe(str(tmp_path / "s-{0..1}.tar"), train=False, all_captions=True)
    assert [k for b in p for k in b["key"]] == ["good0", "good1"]
    assert p.stats()["skipped"] == {"unreadable": 1}


def test_empty_sources_fail_clearly(tmp_path):
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(lightclip.DataError, match="empty source"):
        pipe(tmp_path / "empty_dir")
    (tmp_path / "header_only.csv").write_text("filepath,title\n")
    with pytest.raises(lightclip.DataError, match="no rows"):
        pipe(tmp_path / "header_only.csv")
    with pytest.raises(lightclip.InvalidInputError, match="no shard exists"):
        pipe(str(tmp_path / "nothing-{000..003}.tar"))
    with pytest.raises(lightclip.InvalidInputError, match="source"):
        pipe("")
    empty_tar = write_tar(tmp_path / "empty.tar", [])
    with pytest.raises(lightclip.DataError, match="no samples"):
        list(pipe(str(empty_tar)))
    # Every sample bad: the epoch says so instead of silently yielding nothing.
    all_bad = write_tar(tmp_path / "bad.tar", [("x.txt", b"caption only")])
    with pytest.raises(lightclip.DataError, match="missing_image"):
        list(pipe(str(all_bad)))


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(batch_size=0), "batch_size"),
        (dict(image_size=0), "image_size"),
        (dict(on_error="ignore"), "on_error"),
        (dict(rank=2, world_size=2), "rank"),
        (dict(crop_scale=(0.5, 0.2)), "crop_scale"),
        (dict(jitter_p=1.5), "jitter_p"),
        (dict(image_dtype="float16"), "image_dtype"),
        (dict(mlm_prob=2.0), "mlm_prob"),
        (dict(threads=0), "threads"),
    ],
)
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(lightclip.InvalidInputError, match=argument):
        pipe("synthetic", num_samples=8, **kwargs)


def test_missing_vocabulary_names_the_argument_and_the_remedy(monkeypatch, tmp_path):
    # The pipeline finds the vocabulary as the tokenizer does, and says what to do.
    monkeypatch.setenv("LIGHTCLIP_BPE_VOCAB", str(tmp_path / "nope.gz"))
    with pytest.raises(lightclip.InvalidInputError, match="vocab_path.*LIGHTCLIP_BPE_VOCAB"):
        pipe("synthetic", num_samples=8)
    # An explicit path needs no search.
    monkeypatch.delenv("LIGHTCLIP_BPE_VOCAB")
    vocab = str(default_vocab_path())
    monkeypatch.setenv("LIGHTCLIP_BPE_VOCAB", str(tmp_path / "nope.gz"))
    found = next(iter(pipe("synthetic", num_samples=8, vocab_path=vocab)))
    assert found["text"].shape[-1] == 77


def test_abandoned_iteration_stops_cleanly_and_resumes():
    p = pipe("synthetic", num_samples=64, batch_size=4, prefetch=1)
    it = iter(p)
    first = next(it)
    del it  # the producer thread must stop, not hang
    nxt = next(iter(p))
    assert not torch.equal(first["image"], nxt["image"])
    assert p.state_dict()["consumed"] == 8
