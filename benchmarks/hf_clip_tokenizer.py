"""CLIP's BPE as a Hugging Face `tokenizers` pipeline, built from open_clip's vocabulary file, for
the tokenizer benchmark's HF row (the fast Rust tokenizer most users already know).

No `tokenizer.json` for CLIP is on disk (the Hub is out of reach), so it is assembled here from
`bpe_simple_vocab_16e6.txt.gz` the way open_clip reads that file: the 256 byte symbols, the same
with `</w>`, one token per merge, then the two special tokens. Normalisation is NFC, whitespace
collapsed, lower case; words are split by open_clip's regex and mapped to byte symbols. What it
does not do: ftfy's repairs and HTML unescaping, which open_clip's cleaning adds. The benchmark
prints how many captions come out exactly as open_clip's, so the row is read for what it is.
Its timing includes turning the encodings' id lists into the LongTensor a model takes, as the
lightclip and open_clip rows return one.
"""

from __future__ import annotations

import gzip
from pathlib import Path

CONTEXT = 77
SOT, EOT = "<start_of_text>", "<end_of_text>"
# open_clip's pre-tokenizer pattern (its special tokens first, then contractions, letters,
# single digits, other non-space runs).
SPLIT = (
    r"""<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
)


def byte_symbols() -> dict[int, str]:
    """GPT-2's printable stand-in for every byte: printable Latin-1 bytes stand for themselves
    and come first, then the rest take code points from 256 on, in byte order. The order is
    the order of the first 256 token ids."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    rest = [byte for byte in range(256) if byte not in keep]
    symbols = {byte: chr(byte) for byte in keep}
    symbols.update({byte: chr(256 + k) for k, byte in enumerate(rest)})
    return symbols


def vocabulary(path: Path) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """open_clip's token ids and merges from its vocabulary file."""
    with gzip.open(path, "rt", encoding="utf-8") as file:
        lines = file.read().split("\n")
    # The first line is a header; open_clip keeps 49152 - 256 - 2 merges.
    merges = [(a, b) for a, b in (line.split() for line in lines[1 : 49152 - 256 - 2 + 1])]
    singles = list(byte_symbols().values())
    tokens = singles + [s + "</w>" for s in singles] + [a + b for a, b in merges] + [SOT, EOT]
    return {token: i for i, token in enumerate(tokens)}, merges


def hf_clip_tokenizer(path: Path):
    """A `tokenizers.Tokenizer` giving [SOT, ..., EOT] padded with 0 to 77, truncated with EOT
    kept last, as open_clip's `tokenize` does."""
    from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers.processors import TemplateProcessing

    vocab, merges = vocabulary(path)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    tok.enable_truncation(CONTEXT)
    tok.enable_padding(length=CONTEXT, pad_id=0)
    return tok


def encode(tok, texts: list[str]):
    """The LongTensor [N, 77] a CLIP model takes, as open_clip's `tokenize` returns it."""
    import torch

    return torch.tensor([e.ids for e in tok.encode_batch(texts)], dtype=torch.long)


def main() -> int:
    """`python hf_clip_tokenizer.py VOCAB CAPTIONS REPEATS`: best seconds of `encode` over
    the captions file (one per line). A process of its own, because HF's thread pool is sized
    once per process (RAYON_NUM_THREADS)."""
    import sys
    import time

    vocab, captions, repeats = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])
    texts = captions.read_text(encoding="utf-8").split("\n")
    tok = hf_clip_tokenizer(vocab)
    encode(tok, texts[:100])  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        encode(tok, texts)
        best = min(best, time.perf_counter() - start)
    print(best)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
