"""L_mlm: masked language modelling, text-only and image-fused passes averaged.

SPEC §2: the same masked caption goes through the text tower twice, once alone and once with
image features injected by the fusion blocks; L_mlm = ½ (CE_text_only + CE_fused), each a
cross-entropy over the masked positions only (labels -100 elsewhere). Without fusion the
loss is just CE_text_only.

    >>> import torch
    >>> from lightclip.losses.mlm import MaskedLanguageModelLoss
    >>> logits = torch.zeros(1, 3, 5)                   # uniform over a vocabulary of 5
    >>> labels = torch.tensor([[-100, 2, -100]])       # one masked position
    >>> round(MaskedLanguageModelLoss()(logits, logits, labels).item(), 4)   # ln 5
    1.6094
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InvalidInputError

IGNORE_INDEX = -100


class MaskedLanguageModelLoss(nn.Module):
    """½ (CE(text-only logits) + CE(fused logits)) over the masked positions.

    ``forward(logits_text, logits_fused | None, labels, num_masked=None)``: logits ``[B, C, V]``
    with labels ``[B, C]`` (-100 = not masked), or, as the model returns them when given the
    labels, logits ``[M, V]`` at the M masked positions only with labels ``[M]``.

    ``num_masked`` replaces the local count of masked tokens as the denominator. Under DDP
    the trainer passes the global count divided by the world size, so that the gradient
    average DDP takes equals the gradient of one CE over the whole global batch (each rank
    masks a different number of tokens, so a mean of per-rank means would not).

    A batch without any masked token gives a zero loss that still belongs to the graph (a
    plain mean over zero positions would be NaN).
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index

    def forward(
        self,
        logits_text: torch.Tensor,
        logits_fused: torch.Tensor | None,
        labels: torch.Tensor,
        num_masked: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if logits_text.dim() not in (2, 3):
            raise InvalidInputError(
                f"logits_text must be [B, C, V] or [M, V], got shape {tuple(logits_text.shape)}"
            )
        if tuple(labels.shape) != tuple(logits_text.shape[:-1]):
            raise InvalidInputError(
                f"labels must have shape {tuple(logits_text.shape[:-1])} (the logits' leading "
                f"dimensions), got {tuple(labels.shape)}"
            )
        if logits_fused is not None and logits_fused.shape != logits_text.shape:
            raise InvalidInputError(
                f"logits_fused {tuple(logits_fused.shape)} must match logits_text "
                f"{tuple(logits_text.shape)}"
            )
        if num_masked is None:
            num_masked = (labels != self.ignore_index).sum()
        ce_text = self._ce(logits_text, labels, num_masked)
        if logits_fused is None:
            return ce_text
        return 0.5 * (ce_text + self._ce(logits_fused, labels, num_masked))

    def _ce(
        self, logits: torch.Tensor, labels: torch.Tensor, num_masked: float | torch.Tensor
    ) -> torch.Tensor:
        total = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(),
            labels.reshape(-1),
            ignore_index=self.ignore_index,
            reduction="sum",
        )
        denominator = torch.as_tensor(num_masked, dtype=total.dtype, device=total.device)
        return total / denominator.clamp_min(1.0)


__all__ = ["IGNORE_INDEX", "MaskedLanguageModelLoss"]
