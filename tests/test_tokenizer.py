"""lightclip's tokenizer against open_clip's own (bit-exact), plus its API and bad input.

open-clip-torch is installed without its dependencies; its tokenizer module is loaded on its
own from the distribution's files (importing the open_clip package would need torchvision).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightclip
from lightclip.errors import InvalidDtypeError, InvalidInputError
from lightclip.tokenizer import default_vocab_path, get_tokenizer


@pytest.fixture(scope="module")
def reference(open_clip_tokenizer_module):
    """open_clip's tokenizer.py, loaded as a standalone module (conftest.py)."""
    return open_clip_tokenizer_module


@pytest.fixture(scope="module")
def ref_tok(reference):
    return reference.SimpleTokenizer()


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def flickr_captions(directory: Path) -> list[str]:
    captions = []
    for shard in sorted(directory.glob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    captions += json.load(tar.extractfile(member))["captions"]
    return captions


HARD_CASES = [
    "",
    "   ",
    "\t\n\r\x0c\x0b",
    "A dog.",
    "a  DOG   runs\tfast\n\nthrough the PARK !!!",
    # HTML entities, single and double escaped, with and without ';', numeric, unknown.
    "Tom &amp; Jerry &lt;3 &gt; &quot;cats&quot; &#39;n&#x27; dogs &nbsp;x",
    "&amp;amp; &amp;lt;b&amp;gt; &hellip; &eacute;t&eacute; &mdash; &rsquo;s &copy &not it",
    "&NTILDE;o&ntilde;o &nTILDE; &#0; &#128; &#x80; &#13; &#xd800; &#99999999999; &#1;x",
    "&bogus; & &; &# &#x; AT&T R&D &ampfoo &notit; &lt",
    "<b>bold</b> &amp;amp; stays once-escaped in HTML",
    "line one &amp;\n<i>line two</i> &amp;\nline three &amp;",
    # Quotes, ligatures, width, controls, line breaks, escapes.
    "\u201ccurly\u201d \u2018single\u2019 \u201ahigh\u201b \u02bcmodifier \u201ework\u201f",
    "\ufb01ne \ufb02ower o\ufb00ice \ufb03x \ufb04y \ufb05 \ufb06 \u0133 \u01c6 \u01c9 \u0149",
    "\uff21\uff22\uff23\uff11\uff12\uff13\uff01 \uff48\uff45\uff4c\uff4c\uff4f\u3000\uff65\uff71",
    "bell\x07 null\x00 del\x7f bom\ufeff obj\ufffc arabic\u206a zw\u200b\u200d joiner",
    "c1 \x93quoted\x94 \x85 next \x80 euro \x81",
    "crlf\r\nline\rbreak\u2028sep\u2029para",
    "\x1b[36;44mcoloured\x1b[0m text \x1b[1m",
    # Unicode: composed/decomposed, case, scripts, numbers.
    "cafe\u0301 na\u00efve re\u0301sume\u0301 \u00c5ngstr\u00f6m \u212bngstr\u00f6m",
    "\u03a3\u039f\u03a6\u039f\u03a3 \u039f\u0394\u039f\u03a3 stra\u00dfe "
    "\u0130stanbul \u0049\u0307",
    "\u041c\u043e\u0441\u043a\u0432\u0430 \u6771\u4eac\u90fd \u0645\u0631\u062d\u0628\u0627 "
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35 \ud55c\uad6d\uc5b4",
    "numbers 1234567890 \u0663\u0664 \u2460\u2461 \u00bd \u00b2 \u216b \u4e00\u4e8c",
    # Emoji: single, skin tone, ZWJ family, flags, keycaps, variation selectors.
    "\U0001f436\U0001f415 dog \U0001f44d\U0001f3fd \U0001f468\u200d\U0001f469\u200d\U0001f467",
    "\U0001f1fa\U0001f1f8 \U0001f1ef\U0001f1f5 1\ufe0f\u20e3 \u2764\ufe0f \u263a",
    # Contractions, apostrophes, the special-token text, long s.
    "it's they're we've I'm you'll he'd can't DON'T IT'S 'tis ''quoted'' o'clock",
    "<start_of_text> a <end_of_text> b<start_of_text>c !!<end_of_text> <START_OF_TEXT>",
    "it'\u017f <\u017ftart_of_text> \u017f\u017f",
    "punctuation!!! ... ?!? --- ((( ))) [x] {y} @#$%^*_+=|\\/~`",
    # Long: over the context, and a word longer than the BPE cache limit.
    " ".join(f"word{i}" for i in range(300)),
    "supercalifragilisticexpialidocious" * 40,
    "a" * 5000,
]


def assert_same(tok, ref_tok, texts, context_length=77):
    ours = tok(texts, context_length=context_length)
    theirs = ref_tok(texts, context_length=context_length)
    assert ours.dtype == torch.int64
    for i, text in enumerate(texts):
        assert torch.equal(ours[i], theirs[i]), f"caption {i}: {text!r}"


def test_flickr8k_captions_are_bit_exact(tok, ref_tok, flickr8k_dir):
    captions = flickr_captions(flickr8k_dir)
    # Every caption of the set, not a sample: a partial copy would test less than it claims.
    assert len(captions) >= 30_000, (
        f"{flickr8k_dir} holds {len(captions)} captions; the whole Flickr8k set "
        "(7 shards, 35,000 captions) is expected"
    )
    assert_same(tok, ref_tok, captions)


@pytest.mark.parametrize("context_length", [77, 16, 2, 1])
def test_hard_cases_are_bit_exact(tok, ref_tok, context_length):
    assert_same(tok, ref_tok, HARD_CASES, context_length)


def test_cleaning_and_encode_match_open_clip(tok, reference, ref_tok):
    for text in HARD_CASES:
        assert tok.clean(text) == reference._clean_lower(text), repr(text)
        assert tok.encode(text) == ref_tok.encode(text), repr(text)


def test_decode_matches_open_clip(tok, ref_tok):
    for text in HARD_CASES[:30]:
        ids = ref_tok.encode(text)
        assert tok.decode(ids) == ref_tok.decode(ids)
        assert tok.decode(torch.tensor(ids, dtype=torch.long)) == ref_tok.decode(ids)
    assert tok.decode([lightclip.MASK_TOKEN]) == "<|mask|>"


# Text drawn from everything captions plausibly hold, minus Latin-1 accents: those can look
# like mojibake to ftfy, whose re-decoding lightclip deliberately does not reproduce.
CAPTION_CHARS = st.one_of(
    st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"),
    st.sampled_from(" \t\n.,;:!?'\"-()&#<>/_@%"),
    st.sampled_from(["&amp;", "&lt;", "&#39;", "'s", "'ll", "\u201c", "\ufb01", "\uff21"]),
    st.characters(min_codepoint=0x4E00, max_codepoint=0x4FFF),
    st.characters(min_codepoint=0x1F300, max_codepoint=0x1F64F),
    st.characters(min_codepoint=0x2000, max_codepoint=0x206F),
)


@settings(max_examples=300, deadline=None)
@given(st.lists(CAPTION_CHARS, max_size=60).map("".join))
def test_random_captions_are_bit_exact(ref_tok, text):
    tok = get_tokenizer()
    assert torch.equal(tok([text]), ref_tok([text])), repr(text)


def test_open_clip_api_shape(tok):
    one = tok("a dog")
    assert one.shape == (1, 77) and one.dtype == torch.int64
    assert one[0, 0] == lightclip.SOT_TOKEN == 49406
    assert (lightclip.EOT_TOKEN, lightclip.MASK_TOKEN) == (49407, 49408)
    batch = tok(["a dog", "a cat on a mat"], context_length=8)
    assert batch.shape == (2, 8)
    long = tok(" ".join(["dog"] * 200))
    assert long[0, -1] == lightclip.EOT_TOKEN and (long[0] == lightclip.EOT_TOKEN).sum() == 1
    assert get_tokenizer(32)(["x"]).shape == (1, 32)
    assert tok([]).shape == (0, 77)
    assert torch.equal(lightclip.tokenize(["a dog"]), tok(["a dog"]))


def test_vocab_is_found_without_importing_open_clip():
    code = (
        "import sys, lightclip.tokenizer as t; p = t.default_vocab_path(); "
        "assert p.name == 'bpe_simple_vocab_16e6.txt.gz' and p.is_file(); "
        "assert 'open_clip' not in sys.modules; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.stdout.strip() == "ok", out.stderr


def test_bad_vocabulary_paths_raise_named_errors(tmp_path, monkeypatch):
    with pytest.raises(lightclip.DataError, match="missing.gz"):
        lightclip._core.Tokenizer(str(tmp_path / "missing.gz"))
    garbage = tmp_path / "garbage.gz"
    garbage.write_bytes(b"not gzip at all")
    with pytest.raises(InvalidInputError, match="garbage.gz"):
        lightclip._core.Tokenizer(str(garbage))
    monkeypatch.setenv("LIGHTCLIP_BPE_VOCAB", str(tmp_path / "nope.gz"))
    with pytest.raises(FileNotFoundError, match="LIGHTCLIP_BPE_VOCAB"):
        default_vocab_path()


def test_bad_input_gets_specific_errors(tok):
    with pytest.raises(InvalidDtypeError, match=r"texts\[1\]"):
        tok(["fine", 3])
    with pytest.raises(InvalidDtypeError, match="texts"):
        tok(42)
    with pytest.raises(InvalidInputError, match=r"texts\[0\]"):
        tok(["lone surrogate \ud800"])
    with pytest.raises(InvalidInputError, match=r"texts\[0\].*UTF-8"):
        tok([b"\xff\xfe not utf-8"])
    with pytest.raises(InvalidInputError, match="context_length"):
        tok(["x"], context_length=0)
    assert torch.equal(tok([b"a dog"]), tok(["a dog"]))


def test_megabyte_captions_finish(tok, ref_tok):
    spaced = "a dog runs " * 100_000
    solid = "abcdefghij" * 100_000
    start = time.perf_counter()
    out = tok([spaced, solid])
    assert time.perf_counter() - start < 30
    assert (out[:, -1] == lightclip.EOT_TOKEN).all()
    # The first 75 ids of a long caption are those of its start.
    assert out[0, 1:76].tolist() == ref_tok.encode("a dog runs " * 30)[:75]


def test_parallel_equals_serial_and_releases_the_gil(tok):
    texts = [f"caption number {i} with a dog and {i % 7} cats" for i in range(40_000)]
    before = lightclip.get_num_threads()
    try:
        lightclip.set_num_threads(1)
        serial = tok(texts)
        lightclip.set_num_threads(2)
        parallel = tok(texts)
    finally:
        lightclip.set_num_threads(before)
    assert torch.equal(serial, parallel)

    # While a big batch tokenizes in another thread, this thread keeps running: the longest
    # stall it sees is far below the call's duration.
    big = texts * 3
    done = threading.Event()
    took = []

    def work():
        start = time.perf_counter()
        tok(big)
        took.append(time.perf_counter() - start)
        done.set()

    worker = threading.Thread(target=work)
    worker.start()
    last, longest = time.perf_counter(), 0.0
    while not done.is_set():
        now = time.perf_counter()
        longest, last = max(longest, now - last), now
    worker.join()
    assert longest < 0.5 * took[0], (longest, took[0])
