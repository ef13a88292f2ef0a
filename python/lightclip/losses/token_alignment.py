"""L_tok: relaxed token-level alignment by bipartite matching (SPEC §2).

For each positive pair b, the image tokens V_b (N patches) and the word tokens T_b (the first
``word_lengths[b]`` of L positions) give the cosine similarities S_b = V_b T_bᵀ. The Hungarian
algorithm (Rust, :func:`lightclip.match_tokens`, on detached values, whole batch at once) picks
the one-to-one assignment of minimum total cost 1 − S_b over min(N, words) pairs: every word
gets its own patch and leftover patches stay unmatched. The loss is

    L_tok = mean_b (1 − mean of S_b over the matched pairs),

with gradients flowing through S at the matched entries only (the matching itself is a
discrete choice and has no gradient).

The loss takes tokens of any width D. The model (``LightCLIP.forward``) gives them in the
joint embedding space by default, each tower's own projection applied per token, so L_tok
shapes ``text_projection`` and the image head as well as the towers; with
``token_space="heads"`` they come from two training-only Linear heads instead, a reading whose
positives-only loss can collapse (every token one direction). ``lightclip.diagnostics``
measures such a collapse.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._core import match_tokens
from ..errors import InvalidInputError

__all__ = ["TokenAlignmentLoss", "token_alignment_loss"]


def _check(image_tokens: torch.Tensor, word_tokens: torch.Tensor, word_lengths: torch.Tensor):
    if image_tokens.dim() != 3 or word_tokens.dim() != 3:
        raise InvalidInputError(
            "`image_tokens` and `word_tokens` must be 3-D [batch, tokens, dim], got shapes "
            f"{tuple(image_tokens.shape)} and {tuple(word_tokens.shape)}"
        )
    batch, _, length = image_tokens.shape[0], image_tokens.shape[1], word_tokens.shape[1]
    if word_tokens.shape[0] != batch:
        raise InvalidInputError(
            f"`word_tokens` has batch {word_tokens.shape[0]} but `image_tokens` has {batch}"
        )
    if word_lengths.dim() != 1 or word_lengths.shape[0] != batch:
        raise InvalidInputError(
            f"`word_lengths` must be 1-D with one length per item ({batch}), got shape "
            f"{tuple(word_lengths.shape)}"
        )
    if word_lengths.numel() and (word_lengths.min() < 0 or word_lengths.max() > length):
        raise InvalidInputError(
            f"`word_lengths` must lie in 0..={length} (the word positions of `word_tokens`), "
            f"got min {int(word_lengths.min())}, max {int(word_lengths.max())}"
        )


def token_alignment_loss(
    image_tokens: torch.Tensor, word_tokens: torch.Tensor, word_lengths: torch.Tensor
) -> torch.Tensor:
    """L_tok for a batch of positive pairs; see :class:`TokenAlignmentLoss`."""
    _check(image_tokens, word_tokens, word_lengths)
    # Cosine similarity [B, N, L] (normalised here: pre-normalised tokens give the same values).
    similarity = F.normalize(image_tokens, dim=-1) @ F.normalize(word_tokens, dim=-1).mT
    with torch.no_grad():
        rows, cols = match_tokens(1.0 - similarity.detach(), cols_valid=word_lengths)
    matched = rows >= 0  # [B, K]; -1 pads items with fewer words than K
    items = torch.arange(similarity.shape[0], device=similarity.device).unsqueeze(1)
    picked = similarity[items, rows.clamp_min(0), cols.clamp_min(0)]  # [B, K], with grad
    picked = torch.where(matched, picked, torch.zeros_like(picked))
    pairs = matched.sum(dim=1)
    has_words = pairs > 0
    if not bool(has_words.any()):
        # Still a graph node, so every rank of a DDP job runs the same backward.
        return similarity.sum() * 0.0
    mean_matched = picked.sum(dim=1)[has_words] / pairs[has_words].to(picked.dtype)
    return (1.0 - mean_matched).mean()


class TokenAlignmentLoss(nn.Module):
    """Token-level alignment loss L_tok of LightCLIP (positive pairs only).

    ``loss(image_tokens, word_tokens, word_lengths)``:

    * ``image_tokens`` ``[B, N, D]``: the projected patch tokens of each image (in the joint
      space for the model's default ``token_space``);
    * ``word_tokens`` ``[B, L, D]``: the projected word tokens of each caption, of which only
      the first ``word_lengths[b]`` are real words (the rest is padding and is never matched);
    * ``word_lengths`` ``[B]`` integer tensor.

    Tokens need not be normalised: the similarity is the cosine (tokens L2-normalised inside),
    so already-normalised tokens, as the models return them, give the same result. Items with
    zero words contribute nothing: the mean runs over the items that have words, and a batch
    with no words at all gives 0 (still attached to the graph). Returns a scalar tensor.

    >>> import torch, lightclip
    >>> loss = lightclip.losses.TokenAlignmentLoss()
    >>> v, t = torch.randn(2, 49, 8), torch.randn(2, 10, 8)
    >>> value = loss(v, t, torch.tensor([3, 10]))
    >>> bool(0.0 <= value <= 2.0)
    True
    """

    def forward(
        self, image_tokens: torch.Tensor, word_tokens: torch.Tensor, word_lengths: torch.Tensor
    ) -> torch.Tensor:
        return token_alignment_loss(image_tokens, word_tokens, word_lengths)
