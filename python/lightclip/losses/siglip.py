"""The sigmoid contrastive loss of SigLIP (Zhai et al., 2023), open_clip's ``--siglip``.

Every image–text pair of the batch is its own binary problem: ``z_ij = scale · f_i·g_j + bias``,
label +1 for the matching pair and −1 for every other, and

``L_sig = −(1/N) Σ_i Σ_j log σ(label_ij · z_ij)``

(summed over the N² pairs, divided by the number of images, as open_clip's ``SigLipLoss``).
No softmax couples a row, so the loss needs no normalisation over the batch; the paper reports
it ahead of the softmax loss at smaller batch sizes. ``lightclip train --siglip`` starts the
model at logit scale 10 and bias −10, the paper's (and open_clip's) initialisation; where a
batch is small, a model config's ``init_logit_bias`` can start the bias elsewhere
(docs/experiments.md measures −ln 63 at batch 64).

    >>> import torch, torch.nn.functional as F
    >>> from lightclip.losses import SigLipLoss
    >>> f = F.normalize(torch.randn(8, 32), dim=-1)
    >>> g = F.normalize(torch.randn(8, 32), dim=-1)
    >>> loss = SigLipLoss()(f, g, torch.tensor(10.0), torch.tensor(-10.0))
    >>> loss.shape
    torch.Size([])

Distributed: each rank computes its own images' rows against every rank's texts, gathered
with their gradients, so each pair counts once in the job and every text feature receives the
gradient of every image it is compared with (open_clip exchanges the texts between
neighbouring ranks to the same end). The mean of the ranks' losses is the global loss, and
DDP's averaging of the gradients makes them exactly the global loss's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..distributed import current_context, gather_features
from .soft_clip import _at_least_float32, _check_features

__all__ = ["SigLipLoss"]


class SigLipLoss(nn.Module):
    """``forward(image_features, text_features, logit_scale, logit_bias)``: the SigLIP loss.

    ``logit_scale`` is the already exponentiated scale, ``logit_bias`` the bias (scalar tensors
    or floats). Features should be L2-normalised.
    """

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        logit_scale: torch.Tensor | float,
        logit_bias: torch.Tensor | float,
    ) -> torch.Tensor:
        _check_features(image_features, text_features)
        ctx = current_context()
        _, all_texts = gather_features(
            image_features, text_features, local_loss=True, gather_with_grad=True, context=ctx
        )
        # The bias is added in float32: under autocast a half-precision sum would round the
        # logits near -10 to steps of 1/16 and reduce the bias's gradient in half precision.
        logits = _at_least_float32(logit_scale * image_features @ all_texts.T) + logit_bias
        n = image_features.shape[0]
        # +1 on this rank's own pairs (columns rank·n + i), −1 everywhere else.
        labels = -torch.ones_like(logits)
        labels[:, ctx.rank * n : (ctx.rank + 1) * n] += 2 * torch.eye(
            n, dtype=logits.dtype, device=logits.device
        )
        return -F.logsigmoid(labels * logits).sum() / n
