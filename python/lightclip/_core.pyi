"""Type stubs for lightclip._core, the compiled extension (rust/py).

One section per concern, in the order of rust/py/src. tests/test_stubs.py checks this file
against the compiled module, so it cannot drift.
"""

import torch

__version__: str

# --- similarity.rs ---------------------------------------------------------------------------

def token_similarity(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarity of every token of ``a`` with every token of ``b``, per batch item.

    ``a`` ``[B, N, D]`` and ``b`` ``[B, M, D]`` (or 2-D ``[N, D]``, ``[M, D]``), any float
    dtype, one device. Returns ``[B, N, M]`` (or ``[N, M]``) on that device; autograd flows
    through it. The GIL is released while it computes.
    """
