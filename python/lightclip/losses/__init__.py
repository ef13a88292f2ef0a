"""The LightCLIP losses, one module each: L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm
(+ w_distill L_distill + w_distill_feature L_distill_feature with a teacher), summed with their
weights by :class:`LightCLIPLoss`."""

from .distillation import DistillationLoss, FeatureDistillationLoss
from .lightclip_loss import LightCLIPLoss
from .mlm import MaskedLanguageModelLoss
from .siglip import SigLipLoss
from .soft_clip import SoftClipLoss
from .token_alignment import TokenAlignmentLoss

__all__: list[str] = [
    "DistillationLoss",
    "FeatureDistillationLoss",
    "LightCLIPLoss",
    "MaskedLanguageModelLoss",
    "SigLipLoss",
    "SoftClipLoss",
    "TokenAlignmentLoss",
]
