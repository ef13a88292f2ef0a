"""Sizes, hostile files and sharing: every size a caller sets is bounded before anything is
allocated (an error naming the parameter, never a process abort), files that are not regular
or too big are counted skips (never a hang), and one pipeline has one iterator at a time.

Cases that could abort the process or hang run in a subprocess, so that such a failure fails
the test instead of killing pytest.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading

import pytest

import lightclip
from test_pipeline_sources import image_bytes, pipe, sample_members, write_tar


def run_isolated(code: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Runs `code` in a fresh interpreter; the test fails (not pytest) if it aborts or hangs."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=os.path.dirname(__file__),
        )
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"hung for {timeout} s; output so far: {e.stdout!r} {e.stderr!r}")


HUGE_SIZES = {
    # case: (code raising the error, the parameter the message names)
    "batch_size_1e6": ("pipe('synthetic', batch_size=1_000_000, image_size=64)", "batch_size"),
    "batch_size_2_62": (
        "pipe('synthetic', batch_size=2**62, on_error='raise', num_samples=8)",
        "batch_size",
    ),
    "brace_1e12_names": ("pipe(str(TMP) + '/s-{0..999999}-{0..999999}.tar')", "source"),
    "prefetch": ("pipe('synthetic', prefetch=10**12)", "prefetch"),
    "shuffle_buffer": ("pipe('synthetic', shuffle_buffer=10**12)", "shuffle_buffer"),
    "context_length": ("pipe('synthetic', context_length=10**9)", "context_length"),
    "captions_per_sample": ("pipe('synthetic', captions_per_sample=10**6)", "captions_per_sample"),
    # Within its own bound, but 64 captions of 65,536 tokens a sample pass the batch's bytes.
    "captions_x_context": (
        "pipe('synthetic', batch_size=512, captions_per_sample=64, context_length=65536)",
        "batch_size",
    ),
    "threads": ("pipe('synthetic', threads=100_000)", "threads"),
    "num_samples": ("pipe('synthetic', num_samples=10**12)", "num_samples"),
    "tokenizer_call": (
        "lightclip.get_tokenizer()(['a dog'], context_length=2**62)",
        "context_length",
    ),
    "tokenizer_new": ("lightclip.get_tokenizer(context_length=2**62)", "context_length"),
}


def test_huge_sizes_raise_naming_the_parameter_instead_of_aborting(tmp_path):
    script = f"""
        import json, pathlib
        import lightclip
        from test_pipeline_sources import pipe
        TMP = pathlib.Path({str(tmp_path)!r})
        (TMP / "s-0-0.tar").write_bytes(b"")
        cases = {json.dumps({k: v[0] for k, v in HUGE_SIZES.items()})}
        for name, code in cases.items():
            try:
                eval(code)
                outcome = ("no error", "")
            except Exception as e:  # what a user's `except Exception` sees
                outcome = (type(e).__name__, str(e))
            print(json.dumps([name, *outcome]), flush=True)
    """
    result = run_isolated(script)
    assert result.returncode == 0, f"exit {result.returncode}: {result.stderr[-3000:]}"
    seen = {}
    for line in result.stdout.splitlines():
        name, kind, message = json.loads(line)
        seen[name] = (kind, message)
    for name, (_, argument) in HUGE_SIZES.items():
        kind, message = seen[name]
        assert kind == "InvalidInputError", (name, kind, message)
        assert f"invalid `{argument}`" in message, (name, message)


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        (dict(prefetch=-1), "prefetch"),
        (dict(shuffle_buffer=2.5), "shuffle_buffer"),
        (dict(max_image_bytes=2**64), "max_image_bytes"),
        (dict(shuffle_buffer_bytes=0), "shuffle_buffer_bytes"),
        (dict(context_length=-5), "context_length"),
    ],
)
def test_sizes_that_cannot_cross_to_rust_are_named_too(kwargs, argument):
    with pytest.raises(lightclip.InvalidInputError, match=f"invalid `{argument}`"):
        pipe("synthetic", num_samples=8, **kwargs)


@pytest.mark.parametrize("value", [float("nan"), -0.1, 1.5, float("inf")])
@pytest.mark.parametrize("argument", ["eda_prob", "mlm_prob"])
def test_probabilities_outside_zero_one_are_refused_by_name(argument, value):
    # NaN and negative values are refused, not read as "off".
    with pytest.raises(lightclip.InvalidInputError, match=f"`{argument}`"):
        pipe("synthetic", num_samples=8, **{argument: value})


def test_the_bounds_leave_ordinary_sizes_alone():
    batch = next(iter(pipe("synthetic", num_samples=8, prefetch=64, context_length=65536)))
    assert batch["text"].shape == (4, 65536)
    tok = lightclip.get_tokenizer()
    assert tok(["a dog"], context_length=65536).shape == (1, 65536)


# ------------------------------------------------------------------ files a source names


def test_rows_naming_a_sparse_file_a_device_or_a_fifo_are_skipped_not_read(tmp_path):
    (tmp_path / "ok.png").write_bytes(image_bytes(1))
    with open(tmp_path / "sparse.png", "wb") as f:
        f.truncate(1 << 30)  # 1 GB of nothing, no disk used
    os.mkfifo(tmp_path / "fifo.png")  # no writer ever comes: opening it would hang
    rows = ["ok.png,first", "sparse.png,big", "/dev/zero,endless", "fifo.png,pipe", "ok.png,last"]
    (tmp_path / "t.csv").write_text("filepath,title\n" + "\n".join(rows) + "\n")
    script = f"""
        import json, lightclip
        from test_pipeline_sources import pipe
        p = pipe({str(tmp_path / "t.csv")!r}, train=False, return_captions=True)
        captions = [c for b in p for c in b["captions"]]
        log = p._core.take_skip_log()
        try:
            list(pipe({str(tmp_path / "t.csv")!r}, train=False, on_error="raise", batch_size=1))
            raised = ""
        except lightclip.DataError as e:
            raised = str(e)
        print(json.dumps([captions, p.stats()["skipped"], raised]))
    """
    result = run_isolated(script)
    assert result.returncode == 0, result.stderr[-3000:]
    captions, skipped, raised = json.loads(result.stdout)
    assert captions == ["first", "last"]
    assert skipped == {"too_large": 1, "unreadable": 2}
    assert "sparse.png" in raised and "max_image_bytes" in raised


def test_max_image_bytes_is_an_option_for_files_and_shard_members(tmp_path):
    picture = image_bytes(3)
    shard = write_tar(
        tmp_path / "s.tar",
        sample_members("a", 1, caption="one") + sample_members("b", 2, caption="two"),
    )
    limit = len(picture) - 1
    p = pipe(str(shard), train=False, all_captions=True, max_image_bytes=limit)
    with pytest.raises(lightclip.DataError, match="no usable samples"):
        list(p)
    assert p.stats()["skipped"] == {"too_large": 2}
    p = pipe(str(shard), train=False, all_captions=True, max_image_bytes=len(picture))
    assert [k for b in p for k in b["key"]] == ["a", "b"]
    (tmp_path / "pic.png").write_bytes(picture)
    (tmp_path / "t.csv").write_text("filepath,title\npic.png,a picture\n")
    with pytest.raises(lightclip.DataError, match="pic.png.*max_image_bytes"):
        list(pipe(tmp_path / "t.csv", train=False, on_error="raise", max_image_bytes=limit))
    with pytest.raises(lightclip.InvalidInputError, match="max_image_bytes"):
        pipe("synthetic", max_image_bytes=0)


def test_big_members_pass_through_the_shuffle_buffer(tmp_path):
    # Samples far above the byte bound still come through, each exactly once.
    members = []
    for i in range(6):
        members += sample_members(f"k{i}", i, caption=f"caption {i}")
    shard = write_tar(tmp_path / "s.tar", members)
    p = pipe(str(shard), train=True, all_captions=True, shuffle_buffer_bytes=1, drop_last=False)
    assert sorted(k for b in p for k in b["key"]) == [f"k{i}" for i in range(6)]


# ------------------------------------------------------------------ one iterator at a time


def test_a_second_thread_is_refused_and_the_first_reads_every_batch_once():
    reference = [b["key"] for b in pipe("synthetic", num_samples=24, all_captions=True)]
    p = pipe("synthetic", num_samples=24, all_captions=True)
    first_taken, second_done = threading.Event(), threading.Event()
    got, errors = [], []

    def first():
        for i, batch in enumerate(p):
            got.append(batch["key"])
            if i == 0:
                first_taken.set()
                second_done.wait(60)

    def second():
        first_taken.wait(60)
        try:
            for batch in p:
                got.append(batch["key"])
        except lightclip.LightclipError as e:
            errors.append(str(e))
        second_done.set()

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(errors) == 1 and "already being iterated" in errors[0], errors
    assert got == reference


def test_an_unfinished_iterator_blocks_a_second_until_closed():
    p = pipe("synthetic", num_samples=16, all_captions=True)
    reference = [b["key"] for b in pipe("synthetic", num_samples=16, all_captions=True)]
    it = iter(p)
    first = next(it)["key"]
    with pytest.raises(lightclip.LightclipError, match="close"):
        next(iter(p))
    it.close()
    rest = [b["key"] for b in p]  # carries on from the position after the first batch
    assert [first, *rest] == reference
