"""Training diagnostics: how alike the batch's embeddings and L_tok's tokens are, and whether
the MLM's image fusion carries anything.

A loss over positive pairs only, as L_tok is, can be satisfied by mapping every token to one
direction; the contrastive embeddings can drift toward one direction too. Each number here is
the mean cosine similarity between vectors of *different* samples of the batch: near 0 for
spread-out vectors, 1 for a full collapse.

* ``img_cos`` / ``txt_cos``: between the global image / text embeddings of different pairs;
* ``tok_img_cos``: between the image tokens of different images (only with the token loss);
* ``tok_word_cos``: between the real word tokens of different captions (padding left out).

They cost O(B·N·D) and no B×B×N×N tensor: for unit vectors grouped by sample, with s_i the sum
of sample i's n_i vectors and S = Σ s_i, the sum of a·b over the pairs (a in sample i, b in
sample j, i ≠ j) is ‖S‖² − Σ‖s_i‖², and there are (Σ n_i)² − Σ n_i² such pairs. They are
computed without gradients, so reading them changes no loss and no gradient.

``mlm_fusion_gain`` (only with fusion) is CE_text_only − CE_fused over the batch's masked
positions, in nats per masked token: how much better the pass that sees the image predicts the
masked words. Near 0, the fusion blocks pass the text tower nothing it uses, and L_mlm's fused
half gives the image tower no useful gradient.

    >>> import torch
    >>> from lightclip.diagnostics import cross_sample_cosine
    >>> same = torch.ones(3, 5, 8)          # every vector one direction
    >>> round(float(cross_sample_cosine(same)), 4)
    1.0
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F

from .losses.mlm import IGNORE_INDEX

__all__ = [
    "collapse_diagnostics",
    "cross_sample_cosine",
    "fusion_diagnostics",
    "training_diagnostics",
]


@torch.no_grad()
def cross_sample_cosine(vectors: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cosine similarity over all pairs of vectors from different samples.

    ``vectors`` [B, N, D]: sample i's vectors are ``vectors[i, :counts[i]]`` (all N when
    ``counts`` is None); they need not be normalised. Returns a float32 scalar on their device,
    NaN when no pair exists (fewer than two samples with vectors).
    """
    x = F.normalize(vectors.detach().float(), dim=-1)
    b, n = x.shape[:2]
    if counts is None:
        sizes = torch.full((b,), float(n), device=x.device)
    else:
        valid = torch.arange(n, device=x.device) < counts.to(x.device)[:, None]
        x = x * valid.unsqueeze(-1)
        sizes = counts.to(device=x.device, dtype=torch.float32)
    per_sample = x.sum(dim=1)  # [B, D]
    total = per_sample.sum(dim=0)  # [D]
    similarity = total.square().sum() - per_sample.square().sum()
    pairs = sizes.sum().square() - sizes.square().sum()
    return torch.where(pairs > 0, similarity / pairs.clamp_min(1.0), float("nan"))


@torch.no_grad()
def collapse_diagnostics(out: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """The diagnostics of one training forward (``LightCLIP.forward``'s output), as device
    scalars: ``img_cos`` and ``txt_cos`` always, ``tok_img_cos`` and ``tok_word_cos`` when the
    output has tokens."""
    image, text = out["image_features"], out["text_features"]
    assert image is not None and text is not None
    metrics = {
        "img_cos": cross_sample_cosine(image.unsqueeze(1)),
        "txt_cos": cross_sample_cosine(text.unsqueeze(1)),
    }
    image_tokens, word_tokens = out.get("image_tokens"), out.get("word_tokens")
    if image_tokens is not None and word_tokens is not None:
        metrics["tok_img_cos"] = cross_sample_cosine(image_tokens)
        metrics["tok_word_cos"] = cross_sample_cosine(word_tokens, out["word_lengths"])
    return metrics


@torch.no_grad()
def fusion_diagnostics(out: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """``mlm_fusion_gain`` of one training forward, as a device scalar (NaN when nothing was
    masked); empty without the fused pass or without the masked positions' labels."""
    fused, text, labels = (
        out.get(k) for k in ("mlm_logits_fused", "mlm_logits_text", "mlm_labels")
    )
    if fused is None or text is None or labels is None:
        return {}
    labels = labels.reshape(-1)
    count = (labels != IGNORE_INDEX).sum()

    def ce(logits: torch.Tensor) -> torch.Tensor:
        flat = logits.detach().float().reshape(-1, logits.shape[-1])
        return F.cross_entropy(flat, labels, ignore_index=IGNORE_INDEX, reduction="sum")

    gain = (ce(text) - ce(fused)) / count.clamp_min(1)
    return {"mlm_fusion_gain": torch.where(count > 0, gain, float("nan"))}


def training_diagnostics(out: Mapping[str, torch.Tensor | None]) -> dict[str, torch.Tensor]:
    """Everything a training step logs besides its losses: the collapse diagnostics and, with
    fusion, ``mlm_fusion_gain``."""
    return {**collapse_diagnostics(out), **fusion_diagnostics(out)}
