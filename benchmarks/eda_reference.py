"""A straightforward pure-Python EDA (Wei & Zou 2019), the baseline lightclip's Rust EDA is
timed against (benchmarks/bench_text.py) and the independent synonym source its tests check
inserted and replaced words against (tests/test_eda.py).

It reads the same WordNet 3.0 dictionary files (Debian's wordnet-base) with a plain parser,
and applies the paper's four operations the way its reference code does: n = max(1, α·l)
changed words, synonyms of non-stop words, swaps of random positions, deletion with
probability p that never empties a caption.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

STOP_WORDS = set(
    """a about above after again against ain all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into is it
    its itself just me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own same she should so some such than that the their theirs them
    themselves then there these they this those through to too under until up very was we were
    what when where which while who whom why will with would you your yours yourself yourselves
    s t d ll m o re ve y one two three""".split()
)

POS = ("noun", "verb", "adj", "adv")
RULES = {
    "noun": [("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"),
             ("men", "man"), ("ies", "y")],
    "verb": [("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""),
             ("ing", "e"), ("ing", "")],
    "adj": [("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    "adv": [],
}  # fmt: skip


def wordnet_dir() -> Path | None:
    env = os.environ.get("LIGHTCLIP_WORDNET")
    candidates = [Path(env)] if env else [Path("/usr/share/wordnet")]
    return next((d for d in candidates if (d / "data.noun").is_file()), None)


def spelling(lemma: str) -> str:
    text = lemma.replace("_", " ").replace("-", " ").lower()
    return " ".join("".join(c for c in text if c in " abcdefghijklmnopqrstuvwxyz").split())


class WordNet:
    """lemma → synonyms, from WordNet's data.* files, with morphy-style base forms."""

    def __init__(self, directory: Path):
        self.synsets_of: dict[str, list[tuple[str, list[str]]]] = {}
        self.exceptions: dict[str, dict[str, list[str]]] = {}
        for pos in POS:
            for line in (directory / f"data.{pos}").read_text().splitlines():
                if line.startswith("  ") or not line:
                    continue
                fields = line.split(" ")
                count = int(fields[3], 16)
                lemmas = [fields[4 + 2 * k].split("(")[0].lower() for k in range(count)]
                members = [spelling(lemma) for lemma in lemmas]
                for lemma in lemmas:
                    self.synsets_of.setdefault(lemma, []).append((pos, members))
            self.exceptions[pos] = {}
            for line in (directory / f"{pos}.exc").read_text().splitlines():
                form, *bases = line.split()
                self.exceptions[pos][form] = bases

    def _direct(self, word: str, pos: str | None = None) -> set[str]:
        own = spelling(word)
        return {
            m
            for p, members in self.synsets_of.get(word, [])
            if pos is None or p == pos
            for m in members
            if m and m != own
        }

    def synonyms(self, word: str) -> set[str]:
        found = self._direct(word)
        if found:
            return found
        for pos in POS:
            for base in self.exceptions[pos].get(word, []):
                found = self._direct(base)
                if found:
                    return found
            for old, new in RULES[pos]:
                if word.endswith(old):
                    base = word[: len(word) - len(old)] + new
                    if any(p == pos for p, _ in self.synsets_of.get(base, [])):
                        found = self._direct(base)
                        if found:
                            return found
        return set()


def _core(word: str) -> str:
    return "".join(c for c in word.lower() if c.isalpha())


def synonym_replacement(words: list[str], n: int, wn: WordNet, rng: random.Random) -> list[str]:
    out = list(words)
    candidates = sorted({w for w in words if w.isalpha() and w.lower() not in STOP_WORDS})
    rng.shuffle(candidates)
    replaced = 0
    for word in candidates:
        synonyms = sorted(wn.synonyms(word.lower()))
        if synonyms:
            choice = rng.choice(synonyms)
            out = [choice if w == word else w for w in out]
            replaced += 1
        if replaced >= n:
            break
    return " ".join(out).split(" ")


def random_insertion(words: list[str], n: int, wn: WordNet, rng: random.Random) -> list[str]:
    out = list(words)
    for _ in range(n):
        for _ in range(10):
            word = words[rng.randrange(len(words))]
            synonyms = sorted(wn.synonyms(_core(word))) if _core(word) not in STOP_WORDS else []
            if synonyms:
                out.insert(rng.randrange(len(out) + 1), rng.choice(synonyms))
                break
    return out


def random_swap(words: list[str], n: int, rng: random.Random) -> list[str]:
    out = list(words)
    for _ in range(n):
        if len(out) < 2:
            break
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: list[str], p: float, rng: random.Random) -> list[str]:
    if len(words) == 1:
        return words
    kept = [w for w in words if rng.random() > p]
    return kept or [rng.choice(words)]


def eda(caption: str, wn: WordNet | None, rng: random.Random, alpha: float = 0.1) -> str:
    """DeCLIP mode: one of SR, RS, RD per caption (SR only with WordNet)."""
    words = caption.split()
    if not words:
        return caption
    n = max(1, int(alpha * len(words)))
    ops = ["rs", "rd"] + (["sr"] if wn is not None else [])
    op = rng.choice(ops)
    if op == "sr":
        words = synonym_replacement(words, n, wn, rng)
    elif op == "rs":
        words = random_swap(words, n, rng)
    else:
        words = random_deletion(words, alpha, rng)
    return " ".join(words)
