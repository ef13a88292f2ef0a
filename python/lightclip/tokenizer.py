"""CLIP's BPE tokenizer, running in Rust: open_clip's ids, except where open_clip's ftfy
repairs garbled encodings ("cafÃ©") and the few code points the README lists.

    >>> import lightclip
    >>> tok = lightclip.get_tokenizer()
    >>> ids = tok(["a dog on the grass", "two cats"])
    >>> tuple(ids.shape), int(ids[0, 0]) == lightclip.SOT_TOKEN
    ((2, 77), True)
    >>> lightclip.get_tokenizer("lightclip-tiny-mnv2").context_length  # the model's context
    32

The vocabulary (``bpe_simple_vocab_16e6.txt.gz``) is not shipped with lightclip: it is read
from the installed ``open-clip-torch`` distribution (found through its package metadata,
without importing open_clip, which would pull in torchvision), or from
``$LIGHTCLIP_BPE_VOCAB``, or from a path you pass.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
from functools import lru_cache
from pathlib import Path

import torch

from . import _core
from ._core import Tokenizer
from .errors import InvalidInputError

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
    "model_context_length",
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
    model_name: str | int | None = None,
    context_length: int | None = None,
    vocab_path: str | os.PathLike[str] | None = None,
) -> Tokenizer:
    """The CLIP tokenizer: ``tok(str | list[str]) -> LongTensor[N, context_length]``.

    ``model_name`` as in open_clip: a name from ``lightclip.list_models()`` or
    ``"local-dir:EXPORT"`` (a folder ``lightclip export`` wrote) gives that model's context
    length (the tiny models use 32); ``context_length`` overrides it, and without either it is
    77. An int in place of the name is a context length (``get_tokenizer(32)``).

    Like open_clip's: SOT 49406, the BPE ids, EOT 49407, zero padding; a caption that does not
    fit is cut and keeps EOT last. Batches are tokenized in parallel with the GIL released
    (thread count: ``lightclip.set_num_threads``). Also ``tok.encode``, ``tok.decode``,
    ``tok.clean``.
    """
    if isinstance(model_name, int) and not isinstance(model_name, bool):
        if context_length is not None:
            raise InvalidInputError(
                f"get_tokenizer: context length given twice ({model_name} and "
                f"context_length={context_length}); pass a model name or one context length"
            )
        model_name, context_length = None, model_name
    if model_name is not None:
        if not isinstance(model_name, str):
            raise InvalidInputError(
                f"model_name: expected a model name, got {type(model_name).__name__}"
            )
        if context_length is None:
            context_length = model_context_length(model_name)
    path = Path(vocab_path) if vocab_path is not None else default_vocab_path()
    return _load(str(path), int(77 if context_length is None else context_length))


def model_context_length(model_name: str) -> int:
    """The context length of a registered model or of a ``local-dir:`` export folder."""
    from .models import get_model_config, list_models

    if model_name.startswith("local-dir:"):
        return _export_context_length(Path(model_name.removeprefix("local-dir:")))
    names = list_models()
    if model_name not in names:
        raise InvalidInputError(
            f"model_name: unknown model {model_name!r}; known: {', '.join(names)} "
            "(or local-dir:<export folder>)"
        )
    return get_model_config(model_name).context_length


def _export_context_length(folder: Path) -> int:
    # Either config an export writes names it; read as plain JSON (nothing in it can run).
    for file, keys in (
        ("lightclip_config.json", ("context_length",)),
        ("open_clip_config.json", ("model_cfg", "text_cfg", "context_length")),
    ):
        if (folder / file).is_file():
            try:
                value = json.loads((folder / file).read_text())
                for key in keys:
                    value = value[key]
            except (ValueError, KeyError, TypeError) as e:
                raise InvalidInputError(
                    f"model_name: {folder / file} holds no readable context length ({e!r})"
                ) from None
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidInputError(
                    f"model_name: {folder / file} gives context_length {value!r}, not an int"
                )
            return value
    raise InvalidInputError(
        f"model_name: local-dir:{folder} holds neither lightclip_config.json nor "
        "open_clip_config.json; give the folder `lightclip export` wrote"
    )


def tokenize(texts: str | list[str], context_length: int = 77) -> torch.Tensor:
    """open_clip's ``tokenize``: captions → ``LongTensor[N, context_length]``."""
    return get_tokenizer(context_length)(texts)


def decode(ids: torch.Tensor | list[int]) -> str:
    """open_clip's ``decode``: ids → text (``</w>`` as spaces)."""
    return get_tokenizer().decode(ids)
