"""L_ins: the contrastive loss with progressive soft targets (SPEC §2).

``L_ins = ½ [CE_rows(z, Y_i2t) + CE_rows(zᵀ, Y_t2i)]`` with ``z = scale · f gᵀ`` and soft
cross-entropy ``CE_rows(z, Y) = mean_i −Σ_j Y_ij log softmax(z_i)_j``. The targets come from
:func:`lightclip.soft_labels` (Rust, detached) for the :class:`~lightclip.LabelSchedule` at
the training progress. With hard targets this is exactly open_clip's ``ClipLoss``.

    >>> import torch, torch.nn.functional as F, lightclip
    >>> from lightclip.losses import SoftClipLoss
    >>> f = F.normalize(torch.randn(8, 32), dim=-1)
    >>> g = F.normalize(torch.randn(8, 32), dim=-1)
    >>> loss = SoftClipLoss()(f, g, torch.tensor(14.3), progress=0.9)
    >>> loss.shape
    torch.Size([])

Distributed: when ``torch.distributed`` is initialised the features of every rank are
all-gathered (see :mod:`lightclip.distributed`), so N is the global batch and the negative-aware
softmax runs over all global negatives. ``local_loss=True`` computes only this rank's rows
(``[n, N]`` logits, positives at column ``rank · n + i``), whose mean over ranks is the global
loss; ``gather_with_grad=True`` keeps the graph through the gather.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import DistributedContext, current_context, gather_features
from ..errors import InvalidInputError
from ..labels import LabelSchedule, soft_label_rows, soft_labels

__all__ = ["SoftClipLoss", "soft_cross_entropy"]


def _at_least_float32(t: torch.Tensor) -> torch.Tensor:
    # Autocast hands over half logits; the loss and the targets are computed in float32 so the
    # small off-diagonal target mass (α/(N−1)) is not rounded to bfloat16's ~2 digits.
    return t.to(torch.promote_types(t.dtype, torch.float32))


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over rows of ``−Σ_j targets_ij log softmax(logits_i)_j`` (in at least float32)."""
    log_probs = F.log_softmax(_at_least_float32(logits), dim=1)
    return -(_at_least_float32(targets) * log_probs).sum(dim=1).mean()


def _check_features(image_features: torch.Tensor, text_features: torch.Tensor) -> None:
    for name, t in (("image_features", image_features), ("text_features", text_features)):
        if t.ndim != 2:
            raise InvalidInputError(f"invalid `{name}`: must be [N, D], got shape {tuple(t.shape)}")
    if image_features.shape != text_features.shape:
        raise InvalidInputError(
            f"invalid `text_features`: shape {tuple(text_features.shape)} differs from "
            f"`image_features` {tuple(image_features.shape)}; each image needs its caption"
        )


class SoftClipLoss(nn.Module):
    """Soft-target CLIP loss; ``forward(image_features, text_features, logit_scale, progress)``.

    ``logit_scale`` is the already exponentiated temperature (a scalar tensor or float);
    ``progress`` is ``step / total_steps`` in [0, 1]. Features should be L2-normalised.
    """

    def __init__(
        self,
        schedule: LabelSchedule | None = None,
        *,
        local_loss: bool = False,
        gather_with_grad: bool = False,
    ) -> None:
        super().__init__()
        self.schedule = schedule if schedule is not None else LabelSchedule()
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def extra_repr(self) -> str:
        return (
            f"schedule={self.schedule}, local_loss={self.local_loss}, "
            f"gather_with_grad={self.gather_with_grad}"
        )

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        progress: float,
        label_logits: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """``label_logits``: the ``(per_image, per_text)`` logits whose softmax weighs the
        negatives in the similarity-aware phase (a teacher's, same rows as these logits);
        None: the student's own, detached, as the paper has it."""
        _check_features(image_features, text_features)
        ctx = current_context()
        all_images, all_texts = gather_features(
            image_features,
            text_features,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            context=ctx,
        )
        if self.local_loss and ctx.is_distributed:
            return self._local_rows_loss(
                image_features,
                text_features,
                all_images,
                all_texts,
                logit_scale,
                progress,
                ctx,
                label_logits,
            )
        logits = _at_least_float32(logit_scale * all_images @ all_texts.T)
        # soft_labels takes the text->image weights column-wise from the same matrix.
        source = logits if label_logits is None else label_logits[0]
        targets_i2t, targets_t2i = soft_labels(source, progress, schedule=self.schedule)
        return 0.5 * (
            soft_cross_entropy(logits, targets_i2t) + soft_cross_entropy(logits.T, targets_t2i)
        )

    def _local_rows_loss(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        all_images: torch.Tensor,
        all_texts: torch.Tensor,
        logit_scale: torch.Tensor | float,
        progress: float,
        ctx: DistributedContext,
        label_logits: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        # This rank's images against every text, and its texts against every image: the same
        # rows of z and zᵀ the full loss has, so the row-wise targets are the same too.
        offset = ctx.rank * image_features.shape[0]
        logits_per_image = _at_least_float32(logit_scale * image_features @ all_texts.T)
        logits_per_text = _at_least_float32(logit_scale * text_features @ all_images.T)
        source_i, source_t = label_logits or (logits_per_image, logits_per_text)
        targets_i2t = soft_label_rows(source_i, progress, offset, schedule=self.schedule)
        targets_t2i = soft_label_rows(source_t, progress, offset, schedule=self.schedule)
        return 0.5 * (
            soft_cross_entropy(logits_per_image, targets_i2t)
            + soft_cross_entropy(logits_per_text, targets_t2i)
        )
