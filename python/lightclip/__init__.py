"""lightclip: train lightweight CLIP models with the LightCLIP recipe, on a Rust core.

    >>> import lightclip, torch
    >>> s = lightclip.token_similarity(torch.randn(2, 49, 64), torch.randn(2, 12, 64))
    >>> tuple(s.shape)
    (2, 49, 12)
"""

# torch first: the extension links libtorch, and importing torch is what loads it into the
# process (an installed wheel also finds it through its rpath).
import torch  # noqa: F401  (imported for its side effect)

from . import _core
from ._core import token_similarity
from .errors import DataError, InvalidDtypeError, InvalidInputError, LightclipError

__version__: str = _core.__version__

__all__ = [
    "__version__",
    "DataError",
    "InvalidDtypeError",
    "InvalidInputError",
    "LightclipError",
    "token_similarity",
]
