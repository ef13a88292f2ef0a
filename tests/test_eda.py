"""EDA (lightclip._core.eda_augment): invariants of each operation, synonyms checked against an
independent reading of WordNet (benchmarks/eda_reference.py), determinism by seed, bad input."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lightclip
from lightclip._core import eda_augment, wordnet_dir, wordnet_synonyms
from lightclip.errors import InvalidInputError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import eda_reference  # noqa: E402

WORDS = (
    "a the dog dogs cat child children man woman runs running jumps grass green red ball "
    "beach water street bike plays two people . , ! small large house car tree"
).split()
CAPTIONS = st.lists(st.sampled_from(WORDS), min_size=1, max_size=25).map(" ".join)


@pytest.fixture(scope="module")
def wordnet():
    directory = eda_reference.wordnet_dir()
    if directory is None or wordnet_dir() is None:
        pytest.skip("WordNet not installed (make setup installs wordnet-base as root)")
    return eda_reference.WordNet(directory)


@settings(max_examples=100, deadline=None)
@given(CAPTIONS, st.integers(0, 2**63), st.floats(0.05, 1.0))
def test_swap_keeps_the_word_multiset(caption, seed, strength):
    out = eda_augment([caption], seed, op="rs", random_swap=strength)[0]
    assert Counter(out.split()) == Counter(caption.split())


@settings(max_examples=100, deadline=None)
@given(CAPTIONS, st.integers(0, 2**63), st.floats(0.0, 1.0))
def test_deletion_never_empties_and_keeps_order(caption, seed, p):
    out = eda_augment([caption], seed, op="rd", random_deletion=p)[0].split()
    words = caption.split()
    assert out, "deletion emptied the caption"
    if len(words) == 1:
        assert out == words
    it = iter(words)
    assert all(w in it for w in out), "not a subsequence of the caption"


@pytest.mark.parametrize("p", [0.1, 0.3])
def test_deletion_drops_each_word_with_probability_p(p):
    # 4,000 ten-word captions (each its own sample stream): every position is dropped at rate
    # p, overall and position by position, within 5 standard deviations of a binomial count.
    words = [f"w{i}" for i in range(10)]
    n = 4_000
    outs = eda_augment([" ".join(words)] * n, 11, op="rd", random_deletion=p)
    dropped = Counter(w for out in outs for w in set(words) - set(out.split()))
    total = sum(dropped.values()) / (n * len(words))
    assert abs(total - p) < 5 * (p * (1 - p) / (n * len(words))) ** 0.5, total
    for w in words:
        rate = dropped[w] / n
        assert abs(rate - p) < 5 * (p * (1 - p) / n) ** 0.5, (w, rate)


def test_deletion_of_everything_keeps_one_word():
    out = eda_augment(["one two three four"] * 50, 0, op="rd", random_deletion=1.0)
    assert all(len(o.split()) == 1 and o in "one two three four" for o in out)


def split_into_synonyms(original: list[str], out: list[str], wn) -> bool:
    """Whether `out` is `original` with some words replaced by (possibly multi-word) synonyms
    per the reference WordNet."""
    memo: dict[tuple[int, int], bool] = {}

    def ok(i: int, j: int) -> bool:
        if (i, j) in memo:
            return memo[(i, j)]
        if i == len(original):
            return j == len(out)
        word = original[i]
        result = j < len(out) and out[j] == word and ok(i + 1, j + 1)
        if not result:
            synonyms = wn.synonyms(word.lower())
            for k in range(j + 1, min(len(out), j + 6) + 1):
                if " ".join(out[j:k]) in synonyms and ok(i + 1, k):
                    result = True
                    break
        memo[(i, j)] = result
        return result

    return ok(0, 0)


@settings(max_examples=100, deadline=None)
@given(CAPTIONS, st.integers(0, 2**63))
def test_replacement_uses_real_synonyms(wordnet, caption, seed):
    out = eda_augment([caption], seed, op="sr", synonym_replacement=0.3)[0]
    assert split_into_synonyms(caption.split(), out.split(), wordnet), (caption, out)


def interleaves_synonyms(original: list[str], out: list[str], allowed: set[str]) -> bool:
    """Whether `out` is `original` in order with whole phrases from `allowed` put in between."""
    memo: dict[tuple[int, int], bool] = {}

    def ok(i: int, j: int) -> bool:
        if (i, j) not in memo:
            if j == len(out):
                memo[(i, j)] = i == len(original)
            else:
                memo[(i, j)] = (
                    i < len(original) and out[j] == original[i] and ok(i + 1, j + 1)
                ) or any(
                    " ".join(out[j:k]) in allowed and ok(i, k)
                    for k in range(j + 1, min(len(out), j + 6) + 1)
                )
        return memo[(i, j)]

    return ok(0, 0)


def test_replacement_picks_distinct_words_uniformly(wordnet):
    # The paper shuffles the set of words: "dog" written twice is no likelier than "cat".
    out = eda_augment(["dog dog cat"] * 4000, 11, op="sr")
    assert "dog dog cat" not in out  # both words have synonyms: one of them changed
    cat_replaced = sum(o.startswith("dog dog ") for o in out) / len(out)
    assert abs(cat_replaced - 0.5) < 0.04, cat_replaced


@settings(max_examples=100, deadline=None)
@given(CAPTIONS, st.integers(0, 2**63))
def test_insertion_adds_real_synonyms_of_caption_words(wordnet, caption, seed):
    words = caption.split()
    out = eda_augment([caption], seed, op="ri", random_insertion=0.2)[0].split()
    allowed = set().union(
        *(wordnet.synonyms(w) for w in words if w not in eda_reference.STOP_WORDS)
    )
    assert interleaves_synonyms(words, out, allowed), (caption, out)


def test_insertion_inserts(wordnet):
    # Ten tries to find a word with synonyms, as in the paper: with three content words in
    # four, missing all ten is a one-in-a-million event.
    out = eda_augment(["a small dog runs"] * 100, 0, op="ri", random_insertion=0.5)
    assert all(len(o.split()) > 4 for o in out)


def test_plural_and_inflected_words_find_synonyms(wordnet):
    assert set(wordnet_synonyms("dogs")) == wordnet.synonyms("dog")
    assert "domestic dog" in wordnet_synonyms("Dogs")
    assert set(wordnet_synonyms("geese")) == wordnet.synonyms("goose")
    # "a" has WordNet synonyms (vitamin A, ampere...) but is a stop word: left alone.
    assert wordnet_synonyms("a") and eda_augment(["a a a"], 0, op="sr") == ["a a a"]


def test_seeded_reproducible_and_independent_of_batch_and_threads(wordnet):
    texts = [f"a small dog number {i} runs across the green grass" for i in range(600)]
    first = eda_augment(texts, 7)
    assert first == eda_augment(texts, 7)
    assert first != eda_augment(texts, 8)
    assert first != eda_augment(texts, 7, epoch=1)
    assert eda_augment(texts[100:103], 7, start_index=100) == first[100:103]
    before = lightclip.get_num_threads()
    try:
        lightclip.set_num_threads(1)
        assert eda_augment(texts, 7) == first
    finally:
        lightclip.set_num_threads(before)
    assert sum(a != b for a, b in zip(first, texts, strict=True)) > 300


SPACING = st.lists(st.sampled_from([" ", "  ", "\t", " \n "]), min_size=25, max_size=25)


@settings(max_examples=150, deadline=None)
@given(CAPTIONS, SPACING, st.integers(0, 2**63), st.sampled_from(["sr", "ri", "rs", "rd", None]))
def test_spacing_changes_nothing_but_the_spacing(wordnet, caption, gaps, seed, op):
    # Words are what EDA edits: other spacing of the same words gives the same edit, written
    # with single spaces.
    words = caption.split(" ")
    spaced = "".join(w + g for w, g in zip(words, gaps[: len(words)], strict=True)).strip(" ") + " "
    assert eda_augment([spaced], seed, op=op) == eda_augment([caption], seed, op=op)


def test_many_captions_from_any_iterable_match_slice_by_slice(wordnet):
    # Many captions from a generator: caption i keeps sample start_index + i's stream.
    texts = [f"the {i % 7} dogs run across the green grass near house {i}" for i in range(9000)]
    whole = eda_augment((t for t in texts), 3)
    assert len(whole) == len(texts)
    for start in (0, 4095, 8190):
        assert (
            eda_augment(texts[start : start + 20], 3, start_index=start)
            == whole[start : start + 20]
        )


def test_probability_and_mode():
    texts = ["a dog runs across the green grass near the old house"] * 300
    assert eda_augment(texts, 0, probability=0.0) == texts
    changed = sum(
        o != t for o, t in zip(eda_augment(texts, 0, probability=0.5), texts, strict=True)
    )
    assert 90 < changed < 160
    # Without WordNet only swap and deletion remain: no new words appear.
    for out in eda_augment(texts, 1, wordnet=False, mode="any"):
        assert not Counter(out.split()) - Counter(texts[0].split())
    assert eda_augment(texts[:3], 0, op="sr", wordnet=False) == texts[:3]


def test_untouched_captions_come_back_as_the_same_objects_and_bytes_are_decoded():
    texts = [f"caption {i} of a dog on grass" for i in range(400)]
    out = eda_augment(texts, 0, probability=0.5)
    kept = [o is t for o, t in zip(out, texts, strict=True)]
    changed = [o != t for o, t in zip(out, texts, strict=True)]
    assert any(kept) and any(changed)
    assert not any(k and c for k, c in zip(kept, changed, strict=True))
    # bytes in, str out; the same edits as for the str captions.
    assert eda_augment([t.encode() for t in texts], 0, probability=0.5) == out
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        eda_augment(["fine", b"\xff\xfe"], 0)
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        eda_augment([3], 0)


def test_empty_and_odd_captions_are_defined():
    odd = ["", "   ", "x", "!!!", "a\u00a0b", "\U0001f436 dog", "word " * 50_000]
    for op in ("sr", "ri", "rs", "rd"):
        out = eda_augment(odd, 3, op=op)
        assert out[:2] == ["", "   "]
        if op in ("rs", "rd"):
            assert out[2] == "x"
        assert all(o.strip() for o in out[2:])


def test_bad_arguments_name_themselves():
    with pytest.raises(InvalidInputError, match="probability"):
        eda_augment(["a"], 0, probability=1.5)
    with pytest.raises(InvalidInputError, match="random_swap"):
        eda_augment(["a"], 0, random_swap=-0.1)
    with pytest.raises(InvalidInputError, match="mode"):
        eda_augment(["a"], 0, mode="everything")
    with pytest.raises(InvalidInputError, match="op"):
        eda_augment(["a"], 0, op="xx")
    with pytest.raises(lightclip.DataError, match="data.noun"):
        eda_augment(["a"], 0, wordnet="/nonexistent/wordnet")


def test_missing_wordnet_warns_once_and_still_augments(tmp_path):
    code = (
        "from lightclip._core import eda_augment as e; "
        "print(e(['a b c d'] * 4, 0, op='rs')[0] != '', e(['dog'], 0, op='sr'), "
        "e(['dog runs'], 0, op='sr'))"
    )
    env = dict(os.environ, LIGHTCLIP_WORDNET=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "['dog']", "['dog", "runs']"]
    assert out.stderr.count("WordNet not found") == 1
