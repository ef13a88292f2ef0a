"""Where lightclip's tokenizer knowingly differs from open_clip's, pinned to what the README says.

open_clip cleans every caption with ftfy's `fix_text`, which also re-decodes mojibake (UTF-8
that was read as Windows-1252 or Latin-1: "cafÃ©" for "café"). lightclip reproduces the rest
of `fix_text` but not that repair, so such a caption is tokenized as it is written. A sweep of
every code point between two letters found two more single characters that differ, besides
letters newer than Unicode 14 (which depend on the installed `regex` module's tables, so they
are stated in the README but not pinned here). These tests fail if either tokenizer changes on
any of these points or if the README stops naming them, so the README cannot go stale.
"""

from __future__ import annotations

from pathlib import Path

import ftfy
import pytest

from lightclip.tokenizer import get_tokenizer

README = Path(__file__).resolve().parent.parent / "README.md"

# The README's example, and more of the same kind (Windows-1252 mojibake of accented Latin
# letters and of a curly apostrophe, as a mis-decoded caption file produces them).
README_EXAMPLE = ("cafÃ©", "café")
MOJIBAKE = [
    README_EXAMPLE,
    ("a naÃ¯ve dog in the cafÃ© garden", "a naïve dog in the café garden"),
    ("lâ€™hÃ´tel", "l'hôtel"),
]
# Single characters the README names, each written as it names them.
ODD_CHARACTERS = {"U+FFE3": "\uffe3", "U+0345": "\u0345"}


@pytest.fixture(scope="module")
def open_clip_tokenizer(open_clip_tokenizer_module):
    """open_clip's SimpleTokenizer (its tokenizer.py loaded on its own, conftest.py)."""
    return open_clip_tokenizer_module.SimpleTokenizer()


def readme_paragraph() -> str:
    """The README paragraph that says whose ids the tokenizer gives."""
    text = README.read_text(encoding="utf-8")
    (paragraph,) = [p for p in text.split("\n\n") if "The tokenizer gives open_clip's ids" in p]
    return paragraph


def test_readme_states_the_exceptions_where_it_claims_equality() -> None:
    paragraph = readme_paragraph()
    garbled, repaired = README_EXAMPLE
    assert f'"{garbled}"' in paragraph and f'"{repaired}"' in paragraph, paragraph
    assert "ftfy" in paragraph and "fix_encoding" in paragraph, paragraph
    for name in ODD_CHARACTERS:
        assert name in paragraph, name


@pytest.mark.parametrize(("garbled", "repaired"), MOJIBAKE)
def test_open_clip_repairs_mojibake_and_lightclip_does_not(
    open_clip_tokenizer, garbled: str, repaired: str
) -> None:
    ours = get_tokenizer()
    # open_clip: the caption as if it had been decoded right.
    assert open_clip_tokenizer.encode(garbled) == open_clip_tokenizer.encode(repaired)
    # lightclip: the garbled letters as written, so other ids...
    assert ours.encode(garbled) != open_clip_tokenizer.encode(garbled)
    assert ours.clean(garbled) != ours.clean(repaired)
    # ...and nothing else differs: after the README's advice (ftfy.fix_encoding first), the
    # ids are open_clip's.
    assert ours.encode(ftfy.fix_encoding(garbled)) == open_clip_tokenizer.encode(garbled)


def test_readme_example_exactly(open_clip_tokenizer) -> None:
    garbled, repaired = README_EXAMPLE
    ours = get_tokenizer()
    assert ours.clean(garbled) == "cafã©"
    # "ã©" is no mojibake to ftfy, so open_clip tokenizes this lower-cased text unchanged.
    assert ours.encode(garbled) == open_clip_tokenizer.encode("cafã©")
    assert open_clip_tokenizer.decode(open_clip_tokenizer.encode(garbled)).strip() == repaired


def test_the_odd_characters_differ_as_the_readme_says(open_clip_tokenizer) -> None:
    ours = get_tokenizer()
    for name, char in ODD_CHARACTERS.items():
        text = f"a{char}b"
        assert ours.encode(text) != open_clip_tokenizer.encode(text), name
    # U+FFE3: ftfy widens it to a space and a combining macron; lightclip keeps it.
    assert ftfy.fix_text("a\uffe3b") == "a \u0304b"
    assert ours.clean("a\uffe3b") == "a\uffe3b"
    # U+0345: open_clip's case-insensitive split matches neither letters nor "other" for it
    # and drops it ("a", "b"); lightclip keeps it as a piece of its own.
    assert open_clip_tokenizer.encode("a\u0345b") == open_clip_tokenizer.encode("a b")
    assert ours.encode("a\u0345b") == ours.encode("a") + ours.encode("\u0345") + ours.encode("b")
