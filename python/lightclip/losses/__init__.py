"""The LightCLIP losses, one module each: L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm."""

from .mlm import MaskedLanguageModelLoss
from .soft_clip import SoftClipLoss
from .token_alignment import TokenAlignmentLoss

__all__: list[str] = ["MaskedLanguageModelLoss", "SoftClipLoss", "TokenAlignmentLoss"]
