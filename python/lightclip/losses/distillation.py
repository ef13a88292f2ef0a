"""L_distill: soft-target contrastive distillation from a frozen teacher (``--distill-model``).

The student's image→text and text→image distributions are pulled towards the teacher's on the
same batch: ``L = ½ [CE_rows(z_s, softmax(z_t)) + CE_rows(z_sᵀ, softmax(z_tᵀ))]`` with
``z_s = scale_s · f gᵀ`` (the student's logits, its own learnt scale) and ``z_t`` the teacher's
logits, at the teacher's own logit scale or at ``1 / temperature`` when one is given. With the
teacher's scale this is open_clip's ``DistillClipLoss`` distillation term (TinyCLIP's affinity
mimicking is the same two cross-entropies).

    >>> import torch, torch.nn.functional as F
    >>> from lightclip.teacher import TeacherOutput
    >>> f, g = (F.normalize(torch.randn(4, 8), dim=-1) for _ in range(2))
    >>> loss = DistillationLoss()(f, g, 10.0, TeacherOutput(f, g, torch.tensor(10.0)))
    >>> entropy = lambda z: -(z.softmax(1) * z.log_softmax(1)).sum(1).mean()
    >>> z = 10 * f @ g.T   # the teacher is the student itself: the loss is the mean entropy
    >>> bool(torch.isclose(loss, (entropy(z) + entropy(z.T)) / 2))
    True

Distributed, the teacher's features are gathered like the student's (without gradient), so
both distributions run over the global batch; ``local_loss`` keeps this rank's rows.

:class:`FeatureDistillationLoss` (``--w-distill-feature``) is the feature distillation of
CLIP-KD and TinyCLIP: each row's student embedding, mapped to the teacher's width by the
model's training-only ``distill_proj``, pulled towards the teacher's embedding of the same
image or caption.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import current_context, gather_features
from ..errors import InvalidInputError
from .soft_clip import _at_least_float32, soft_cross_entropy

if TYPE_CHECKING:
    from ..teacher import TeacherOutput

__all__ = ["DistillationLoss", "FeatureDistillationLoss", "pair_logits", "teacher_logits"]


def pair_logits(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    scale: torch.Tensor | float,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """``(logits_per_image, logits_per_text, offset)`` over the global batch: every row when
    not ``local_loss`` (offset 0), else this rank's rows, whose positives start at ``offset``."""
    ctx = current_context()
    all_images, all_texts = gather_features(
        image_features,
        text_features,
        local_loss=local_loss,
        gather_with_grad=gather_with_grad,
        context=ctx,
    )
    if not (local_loss and ctx.is_distributed):
        # Every row: the text->image logits are the image->text ones transposed.
        per_image = _at_least_float32(scale * all_images @ all_texts.T)
        return per_image, per_image.T, 0
    offset = ctx.rank * image_features.shape[0]
    per_image = _at_least_float32(scale * image_features @ all_texts.T)
    per_text = _at_least_float32(scale * text_features @ all_images.T)
    return per_image, per_text, offset


def teacher_logits(
    teacher: TeacherOutput, temperature: float | None, *, local_loss: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The teacher's ``pair_logits``, at its own logit scale or at ``1 / temperature``."""
    scale = teacher.logit_scale if temperature is None else 1.0 / temperature
    return pair_logits(
        teacher.image_features.detach(),
        teacher.text_features.detach(),
        scale,
        local_loss=local_loss,
    )


class DistillationLoss(nn.Module):
    """``forward(image_features, text_features, logit_scale, teacher)``: the student's
    L2-normalised features and exponentiated logit scale, and the teacher's
    :class:`~lightclip.teacher.TeacherOutput` of the same batch."""

    def __init__(
        self,
        temperature: float | None = None,
        *,
        local_loss: bool = False,
        gather_with_grad: bool = False,
    ) -> None:
        super().__init__()
        if temperature is not None and not temperature > 0:
            raise InvalidInputError(f"distillation temperature must be positive: {temperature}")
        self.temperature = temperature
        self.local_loss = local_loss
        self.gather_with_grad = gather_with_grad

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, local_loss={self.local_loss}"

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        teacher: TeacherOutput | None,
    ) -> torch.Tensor:
        if teacher is None:
            raise InvalidInputError(
                "the distillation loss needs the teacher's output of the batch (out['teacher'])"
            )
        if teacher.image_features.shape[0] != image_features.shape[0]:
            raise InvalidInputError(
                f"teacher output has {teacher.image_features.shape[0]} rows, the student's batch "
                f"{image_features.shape[0]}: the teacher must see the same batch"
            )
        student_i, student_t, _ = pair_logits(
            image_features,
            text_features,
            logit_scale,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
        )
        teacher_i, teacher_t, _ = teacher_logits(
            teacher, self.temperature, local_loss=self.local_loss
        )
        return 0.5 * (
            soft_cross_entropy(student_i, teacher_i.softmax(dim=1))
            + soft_cross_entropy(student_t, teacher_t.softmax(dim=1))
        )


class FeatureDistillationLoss(nn.Module):
    """``forward(image_features, text_features, teacher)``: the mean of ``1 - cos`` between
    each projected student row (the model's ``distill_image_features`` /
    ``distill_text_features``) and the teacher's row of the same sample, over the image rows
    and the text rows alike, in float32.

    Cosine rather than an MSE of raw features: both sides are L2-normalised embeddings, whose
    lengths say nothing (on unit vectors the MSE is ``2 (1 - cos) / D``, the same loss scaled
    by the width). Per row, so it needs no gathering across ranks.

        >>> import torch, torch.nn.functional as F
        >>> from lightclip.teacher import TeacherOutput
        >>> f, g = (F.normalize(torch.randn(3, 8), dim=-1) for _ in range(2))
        >>> loss = FeatureDistillationLoss()
        >>> bool(loss(f, g, TeacherOutput(f, g, torch.tensor(10.0))).abs() < 1e-6)  # same rows
        True
        >>> round(float(loss(f, g, TeacherOutput(-f, -g, torch.tensor(10.0)))), 4)
        2.0
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        teacher: TeacherOutput | None,
    ) -> torch.Tensor:
        if teacher is None:
            raise InvalidInputError(
                "the feature distillation loss needs the teacher's output of the batch "
                "(out['teacher'])"
            )
        pairs = (
            (image_features, teacher.image_features),
            (text_features, teacher.text_features),
        )
        for student, target in pairs:
            if student.shape != target.shape:
                raise InvalidInputError(
                    f"feature distillation: student rows {tuple(student.shape)} (after the "
                    f"projection), teacher rows {tuple(target.shape)}: they must match"
                )
        student = torch.cat([image_features, text_features]).float()
        target = torch.cat([teacher.image_features, teacher.text_features]).detach().float()
        return (1.0 - F.cosine_similarity(student, target, dim=-1)).mean()
