"""CLIP's BPE tokenizer, bit-identical to open_clip's, running in Rust.

    >>> import lightclip
    >>> tok = lightclip.get_tokenizer()
    >>> ids = tok(["a dog on the grass", "two cats"])
    >>> tuple(ids.shape), int(ids[0, 0]) == lightclip.SOT_TOKEN
    ((2, 77), True)

The vocabulary (``bpe_simple_vocab_16e6.txt.gz``) is not shipped with lightclip: it is read
from the installed ``open-clip-torch`` distribution (found through its package metadata,
without importing open_clip, which would pull in torchvision), or from
``$LIGHTCLIP_BPE_VOCAB``, or from a path you pass.
"""

from __future__ import annotations

import importlib.metadata
import os
from functools import lru_cache
from pathlib import Path

import torch

from . import _core
from ._core import Tokenizer

__all__ = [
    "EOT_TOKEN",
    "MASK_TOKEN",
    "PAD_TOKEN",
    "SOT_TOKEN",
    "VOCAB_SIZE_WITH_MASK",
    "Tokenizer",
    "decode",
    "default_vocab_path",
    "get_tokenizer",
    "tokenize",
]

SOT_TOKEN: int = _core.SOT_TOKEN
EOT_TOKEN: int = _core.EOT_TOKEN
MASK_TOKEN: int = _core.MASK_TOKEN
PAD_TOKEN: int = 0
VOCAB_SIZE_WITH_MASK: int = _core.VOCAB_SIZE_WITH_MASK

_VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"


def default_vocab_path() -> Path:
    """Where the CLIP BPE vocabulary is: ``$LIGHTCLIP_BPE_VOCAB``, else the copy inside the
    installed ``open-clip-torch`` distribution. Raises ``FileNotFoundError`` saying how to get
    one when neither exists."""
    env = os.environ.get("LIGHTCLIP_BPE_VOCAB")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"LIGHTCLIP_BPE_VOCAB points to {path}, which is not a file")
        return path
    try:
        dist = importlib.metadata.distribution("open-clip-torch")
    except importlib.metadata.PackageNotFoundError:
        dist = None
    if dist is not None:
        for file in dist.files or ():
            if file.name == _VOCAB_NAME:
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    return path
    raise FileNotFoundError(
        f"CLIP BPE vocabulary {_VOCAB_NAME} not found: install open-clip-torch "
        "(`pip install --no-deps open-clip-torch`) or set LIGHTCLIP_BPE_VOCAB to the file"
    )


@lru_cache(maxsize=8)
def _load(path: str, context_length: int) -> Tokenizer:
    return Tokenizer(path, context_length)


def get_tokenizer(
    context_length: int = 77, vocab_path: str | os.PathLike[str] | None = None
) -> Tokenizer:
    """The CLIP tokenizer: ``tok(str | list[str]) -> LongTensor[N, context_length]``.

    Like open_clip's: SOT 49406, the BPE ids, EOT 49407, zero padding; a caption that does not
    fit is cut and keeps EOT last. Batches are tokenized in parallel with the GIL released
    (thread count: ``lightclip.set_num_threads``). Also ``tok.encode``, ``tok.decode``,
    ``tok.clean``.
    """
    path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
    return _load(str(path), int(context_length))


def tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's ``tokenize``: captions → ``LongTensor[N, context_length]``."""
    return get_tokenizer(context_length)(texts)


def decode(ids: torch.Tensor | list[int]) -> str:
    """open_clip's ``decode``: ids → text (``</w>`` as spaces)."""
    return get_tokenizer().decode(ids)
