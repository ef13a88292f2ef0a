"""L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm (SPEC §2), + w_distill L_distill
+ w_distill_feature L_distill_feature with a teacher: the training loss of one step.

:class:`LightCLIPLoss` owns the losses the switches turn on and their weights, and turns the
model's outputs (with the batch, and the teacher's output as ``out["teacher"]``) into the
total and its parts.

    >>> import torch
    >>> from lightclip.config import TrainConfig
    >>> from lightclip.losses import LightCLIPLoss
    >>> loss = LightCLIPLoss.from_config(TrainConfig(recipe="clip"))
    >>> out = {"image_features": torch.eye(2), "text_features": torch.eye(2),
    ...        "logit_scale": torch.tensor(10.0)}
    >>> total, parts = loss(out, {}, progress=0.0)
    >>> sorted(parts), round(total.item(), 4)
    (['ins'], 0.0)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import InvalidInputError
from ..labels import LabelSchedule
from .distillation import DistillationLoss, FeatureDistillationLoss, teacher_logits
from .mlm import IGNORE_INDEX, MaskedLanguageModelLoss
from .siglip import SigLipLoss
from .soft_clip import SoftClipLoss
from .token_alignment import TokenAlignmentLoss

if TYPE_CHECKING:
    from ..config import TrainConfig


class LightCLIPLoss(nn.Module):
    """``forward(out, batch, progress) -> (total, parts)``: ``parts`` holds ``ins`` and, where
    switched on, ``tok``, ``mlm``, ``distill`` and ``distill_feature``; ``total`` is their
    weighted sum. With ``out["other_text_features"]`` [B, M, E] (``--captions-per-sample``),
    ``ins`` is the mean of one contrastive loss per caption set, the drawn captions' and each
    of the M others', against the same images.

    ``distill``: the soft-target distillation loss against ``out["teacher"]``;
    ``teacher_labels``: the similarity-aware phase of the soft labels weighs the negatives by
    the teacher's similarities instead of the student's own. Both at the teacher's logit scale
    or at ``1 / distill_temperature``. ``distill_feature``: the feature distillation of the
    model's projected features (``out["distill_image_features"]`` / ``["distill_text_features"]``)
    towards the teacher's.

    ``tok_start``: the training progress from which the token loss counts; before it the
    part is still computed (and logged) but weighs nothing.

    ``siglip``: the instance loss is SigLIP's sigmoid loss (:class:`SigLipLoss`, with the
    model's ``out["logit_bias"]``) instead of the softmax loss; its targets are hard, so the
    schedule must be plain CLIP's and the teacher cannot give the labels.

    ``world_size`` > 1 makes the MLM loss divide by the masked-token count averaged over the
    ranks (one all-reduce a step), see :class:`MaskedLanguageModelLoss`.
    """

    def __init__(
        self,
        schedule: LabelSchedule,
        *,
        token_loss: bool = True,
        mlm: bool = True,
        distill: bool = False,
        teacher_labels: bool = False,
        distill_feature: bool = False,
        distill_temperature: float | None = None,
        weights: dict[str, float] | None = None,
        tok_start: float = 0.0,
        local_loss: bool = False,
        gather_with_grad: bool = False,
        world_size: int = 1,
        siglip: bool = False,
    ) -> None:
        super().__init__()
        if siglip and (schedule.alpha != 0.0 or teacher_labels):
            raise InvalidInputError(
                "siglip: the sigmoid loss has hard targets; it takes neither soft labels nor "
                "the teacher's labels"
            )
        self.ins: SoftClipLoss | SigLipLoss = (
            SigLipLoss()
            if siglip
            else SoftClipLoss(schedule, local_loss=local_loss, gather_with_grad=gather_with_grad)
        )
        self.tok = TokenAlignmentLoss() if token_loss else None
        self.mlm = MaskedLanguageModelLoss() if mlm else None
        self.distill = (
            DistillationLoss(
                distill_temperature, local_loss=local_loss, gather_with_grad=gather_with_grad
            )
            if distill
            else None
        )
        self.distill_feature = FeatureDistillationLoss() if distill_feature else None
        self.teacher_labels = teacher_labels
        self.distill_temperature = distill_temperature
        self.local_loss = local_loss
        self.weights = {
            "ins": 1.0,
            "tok": 1.0,
            "mlm": 1.0,
            "distill": 1.0,
            "distill_feature": 1.0,
            **(weights or {}),
        }
        self.tok_start = tok_start
        self.world_size = world_size

    @classmethod
    def from_config(cls, config: TrainConfig, world_size: int = 1) -> LightCLIPLoss:
        """The loss ``lightclip train`` uses for ``config``: without ``--soft-labels`` the
        schedule's targets are plain CLIP's hard labels in every phase (alpha = 0)."""
        if config.soft_labels:
            schedule = LabelSchedule(
                r1=config.r1,
                r2=config.r2,
                alpha=config.alpha,
                ramp=config.label_ramp,
                ramp_width=config.label_ramp_width,
            )
        else:
            schedule = LabelSchedule(r1=1.0, r2=1.0, alpha=0.0)
        return cls(
            schedule,
            token_loss=bool(config.token_loss),
            mlm=bool(config.mlm),
            # A teacher with --w-distill 0 only gives labels: no part that adds nothing.
            distill=config.distills and bool(config.w_distill),
            teacher_labels=config.distill_labels,
            distill_feature=bool(config.w_distill_feature),
            distill_temperature=config.distill_temperature,
            weights={
                "ins": config.w_ins,
                "tok": config.w_tok,
                "mlm": config.w_mlm,
                "distill": config.w_distill or 0.0,
                "distill_feature": config.w_distill_feature,
            },
            tok_start=config.tok_start,
            local_loss=config.local_loss,
            gather_with_grad=config.gather_with_grad,
            world_size=world_size,
            siglip=config.siglip,
        )

    def forward(
        self, out: dict[str, Any], batch: dict[str, Any], progress: float
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = self.parts(out, batch, progress)
        weights = dict(self.weights)
        if progress < self.tok_start:
            # Still in the graph (a zero gradient), so every DDP rank runs the same backward.
            weights["tok"] = 0.0
        total = sum(weights[k] * v for k, v in parts.items())
        return total, parts  # type: ignore[return-value]

    def parts(
        self, out: dict[str, Any], batch: dict[str, Any], progress: float
    ) -> dict[str, torch.Tensor]:
        """The unweighted losses. ``progress`` in [0, 1] is the label schedule's clock."""
        teacher = out.get("teacher")
        label_logits = None
        if self.teacher_labels:
            if teacher is None:
                raise InvalidInputError(
                    "teacher_labels needs the teacher's output (out['teacher'])"
                )
            per_image, per_text, _ = teacher_logits(
                teacher, self.distill_temperature, local_loss=self.local_loss
            )
            label_logits = (per_image, per_text)
        if isinstance(self.ins, SigLipLoss) and out.get("logit_bias") is None:
            raise InvalidInputError(
                "the SigLIP loss needs the model's logit bias (a model built with "
                "init_logit_bias, as lightclip train --siglip builds it)"
            )

        def contrastive(text_features: torch.Tensor) -> torch.Tensor:
            if isinstance(self.ins, SigLipLoss):
                return self.ins(
                    out["image_features"], text_features, out["logit_scale"], out["logit_bias"]
                )
            return self.ins(
                out["image_features"],
                text_features,
                out["logit_scale"],
                progress,
                label_logits=label_logits,
            )

        ins = contrastive(out["text_features"])
        others = out.get("other_text_features")
        if others is not None:
            # Each caption set is a batch of its own against the same images: no image meets
            # its own other captions as negatives.
            ins = torch.stack([ins, *(contrastive(others[:, k]) for k in range(others.shape[1]))])
            ins = ins.mean()
        parts = {"ins": ins}
        if self.tok is not None:
            lengths = out.get("word_lengths")
            if lengths is None:
                lengths = batch["word_lengths"]
            parts["tok"] = self.tok(out["image_tokens"], out["word_tokens"], lengths)
        if self.mlm is not None:
            # The model returns logits at the masked positions only, with their labels.
            labels = out["mlm_labels"] if out.get("mlm_labels") is not None else batch["mlm_labels"]
            count = (labels != IGNORE_INDEX).sum().to(torch.float32)
            if self.world_size > 1:
                count = count.clone()
                dist.all_reduce(count)
                count = count / self.world_size
            parts["mlm"] = self.mlm(
                out["mlm_logits_text"], out.get("mlm_logits_fused"), labels, num_masked=count
            )
        if self.distill is not None:
            parts["distill"] = self.distill(
                out["image_features"], out["text_features"], out["logit_scale"], teacher
            )
        if self.distill_feature is not None:
            if out.get("distill_image_features") is None:
                raise InvalidInputError(
                    "the feature distillation loss needs the model's projected features "
                    "(a model built with distill_dim, the teacher's embedding width)"
                )
            parts["distill_feature"] = self.distill_feature(
                out["distill_image_features"], out["distill_text_features"], teacher
            )
        return parts


__all__ = ["LightCLIPLoss"]
