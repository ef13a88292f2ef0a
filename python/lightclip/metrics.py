"""Evaluation metrics: image<->text retrieval and zero-shot classification, in plain torch.

Ranks and ties
--------------
Every rank here is 1-based. Scores that tie exactly are ordered by one of three rules:

* ``ties="topk"`` (the default) orders them as CLIP_benchmark does, whose metric names our
  results use: recall@k is whether a right answer is among ``torch.topk(scores, k)`` of the
  query, taken for each k as its ``recall_at_k`` does, so the same embeddings give
  CLIP_benchmark's numbers even when scores tie. Zero-shot acc@k reads the first k of one
  ``topk(max(ks))`` and mean per-class recall the ``argmax``, as its classification code does.
  topk's order among equal scores is the kernel's, not the index order, so mean and median
  rank under this rule are positions in one full ``topk`` order.
* ``ties="pessimistic"``: a wrong item whose score *equals* the right one's counts as ranked
  ahead of it. A model that gives every pair the same score then ranks every positive last
  and gets R@1 = 0, rather than being rewarded by whichever order a sort leaves equal scores
  in (topk can make a constant model look perfect).
* ``ties="optimistic"`` counts only strictly greater scores.

All three agree whenever there are no exact ties, the usual case for real float embeddings.
Under the two counting rules:

* image->text (``text_retrieval_*`` in CLIP_benchmark's naming: texts are retrieved): an image
  has several captions; its rank is that of its best-scored caption among all texts, i.e.
  ``1 + #(other images' captions scoring >= that caption)``. Its other captions never count
  against it.
* text->image (``image_retrieval_*``): ``1 + #(other images scoring >= the caption's image)``.
* zero-shot: the true class is in the top k iff fewer than k other classes score >= it.

Scaling
-------
Retrieval needs all embeddings (N x E, small) but never the whole N x T score matrix: the
scores are computed ``block_size`` queries at a time, so memory is ``block_size x T`` however
large the evaluation set is. Zero-shot scores are accumulated batch by batch with
:class:`ZeroShotAccumulator`.

    >>> import torch
    >>> from lightclip.metrics import retrieval_metrics
    >>> img = torch.eye(3)
    >>> txt = torch.eye(3).repeat_interleave(2, 0)     # two captions per image
    >>> owner = torch.tensor([0, 0, 1, 1, 2, 2])
    >>> retrieval_metrics(img, txt, owner)["text_retrieval_recall@1"]
    1.0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .errors import InvalidInputError

TIES = ("topk", "pessimistic", "optimistic")


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise InvalidInputError(f"ties must be one of {TIES}, got {ties!r}")


def _check_features(name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim != 2:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InvalidInputError(f"{name} must be a 2-D tensor [count, dim], got {shape}")
    if not x.is_floating_point():
        raise InvalidInputError(f"{name} must be floating point, got {x.dtype}")
    if x.shape[0] == 0:
        raise InvalidInputError(f"{name} is empty")
    if not bool(torch.isfinite(x).all()):
        # NaN compares false with everything, which would silently turn into perfect ranks.
        raise InvalidInputError(f"{name} contains NaN or infinite values")


def _ahead(scores: torch.Tensor, reference: torch.Tensor, ties: str) -> torch.Tensor:
    """Boolean mask of the scores that rank ahead of ``reference`` (broadcast on dim 1)."""
    return scores >= reference if ties == "pessimistic" else scores > reference


@dataclass(frozen=True)
class RetrievalRanks:
    """1-based ranks: ``image_to_text[i]`` for image i, ``text_to_image[t]`` for caption t."""

    image_to_text: torch.Tensor
    text_to_image: torch.Tensor


def _validated_owner(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    block_size: int,
    ties: str,
) -> torch.Tensor:
    """``text_to_image`` as a long tensor on the features' device, every argument checked."""
    _check_features("image_features", image_features)
    _check_features("text_features", text_features)
    _check_ties(ties)
    if image_features.shape[1] != text_features.shape[1]:
        raise InvalidInputError(
            f"image_features and text_features differ in width: "
            f"{image_features.shape[1]} vs {text_features.shape[1]}"
        )
    if block_size < 1:
        raise InvalidInputError(f"block_size must be >= 1, got {block_size}")
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    owner = torch.as_tensor(text_to_image)
    if owner.shape != (n_texts,) or owner.dtype in (torch.float16, torch.float32, torch.float64):
        raise InvalidInputError(
            f"text_to_image must be an integer tensor of shape [{n_texts}] (one image index per "
            f"caption), got {owner.dtype} {tuple(owner.shape)}"
        )
    owner = owner.to(device=image_features.device, dtype=torch.long)
    if bool(((owner < 0) | (owner >= n_images)).any()):
        bad = int(((owner < 0) | (owner >= n_images)).nonzero()[0, 0])
        raise InvalidInputError(
            f"text_to_image[{bad}] = {int(owner[bad])} is not an image index (0..{n_images - 1})"
        )
    captions_per_image = torch.bincount(owner, minlength=n_images)
    if bool((captions_per_image == 0).any()):
        lonely = int((captions_per_image == 0).nonzero()[0, 0])
        raise InvalidInputError(f"image {lonely} has no caption in text_to_image")

    return owner


def _topk_retrieval(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    owner: torch.Tensor,
    ks: Sequence[int],
    block_size: int,
) -> tuple[RetrievalRanks, dict[str, float]]:
    """Ranks in torch.topk's order, and recall@k as CLIP_benchmark's ``recall_at_k`` takes it:
    a right answer among ``topk(scores, k)``, one topk per k (topk(5) need not be the first
    five of topk(10) when scores tie)."""
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    image_ids = torch.arange(n_images, device=owner.device)
    hits: dict[str, list[torch.Tensor]] = {}

    def rank_and_hits(scores: torch.Tensor, positive: torch.Tensor, prefix: str) -> torch.Tensor:
        order = scores.topk(scores.shape[1], dim=1).indices
        for k in ks:
            top = scores.topk(min(k, scores.shape[1]), dim=1).indices
            hits.setdefault(f"{prefix}_recall@{k}", []).append(positive.gather(1, top).any(1))
        # argmax finds the first right answer in the order (every query has one)
        return positive.gather(1, order).to(torch.uint8).argmax(dim=1) + 1

    # CLIP_benchmark scores texts @ images.T once and reads it both ways; so does this.
    image_ranks = []
    for start in range(0, n_images, block_size):
        images = image_features[start : start + block_size]
        scores = (text_features @ images.t()).t()  # [b, T]
        positive = owner[None, :] == image_ids[start : start + block_size, None]
        image_ranks.append(rank_and_hits(scores, positive, "text_retrieval"))
    text_ranks = []
    for start in range(0, n_texts, block_size):
        scores = text_features[start : start + block_size] @ image_features.t()  # [b, N]
        positive = image_ids[None, :] == owner[start : start + block_size, None]
        text_ranks.append(rank_and_hits(scores, positive, "image_retrieval"))
    ranks = RetrievalRanks(
        image_to_text=torch.cat(image_ranks), text_to_image=torch.cat(text_ranks)
    )
    recalls = {name: float(torch.cat(h).double().mean()) for name, h in hits.items()}
    return ranks, recalls


def retrieval_ranks(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    block_size: int = 1024,
    ties: str = "topk",
) -> RetrievalRanks:
    """Ranks of the right answers for image->text and text->image retrieval.

    ``image_features`` [N, E] and ``text_features`` [T, E] are scored by dot product (pass them
    L2-normalised for cosine similarity). ``text_to_image`` [T] names the image each caption
    belongs to; every image needs at least one caption.
    """
    owner = _validated_owner(image_features, text_features, text_to_image, block_size, ties)
    if ties == "topk":
        return _topk_retrieval(image_features, text_features, owner, (), block_size)[0]
    n_images, n_texts = image_features.shape[0], text_features.shape[0]
    captions_per_image = torch.bincount(owner, minlength=n_images)
    # Each image's caption indices, padded with -1: the own-caption scores of a block of images
    # are then one gather, with no [block, T] "is own caption" mask to build.
    order = torch.argsort(owner, stable=True)
    slot = torch.arange(n_texts, device=owner.device) - torch.repeat_interleave(
        torch.cumsum(captions_per_image, 0) - captions_per_image, captions_per_image
    )
    own_index = torch.full(
        (n_images, int(captions_per_image.max())), -1, dtype=torch.long, device=owner.device
    )
    own_index[owner[order], slot] = order

    text_t = text_features.t()
    image_ranks = torch.empty(n_images, dtype=torch.long, device=image_features.device)
    for start in range(0, n_images, block_size):
        stop = min(start + block_size, n_images)
        scores = image_features[start:stop] @ text_t  # [b, T]: the only large buffer
        index = own_index[start:stop]
        own = scores.gather(1, index.clamp(min=0)).masked_fill(index < 0, float("-inf"))
        best_own = own.amax(dim=1, keepdim=True)
        # everything ahead of the best own caption, minus the own captions counted in that
        ahead = _ahead(scores, best_own, ties).sum(dim=1) - _ahead(own, best_own, ties).sum(dim=1)
        image_ranks[start:stop] = 1 + ahead

    image_t = image_features.t()
    text_ranks = torch.empty(n_texts, dtype=torch.long, device=image_features.device)
    for start in range(0, n_texts, block_size):
        stop = min(start + block_size, n_texts)
        scores = text_features[start:stop] @ image_t  # [b, N]
        right_score = scores.gather(1, owner[start:stop, None])
        # the right image itself is ahead of itself only under the pessimistic (>=) rule
        self_count = 1 if ties == "pessimistic" else 0
        text_ranks[start:stop] = 1 + _ahead(scores, right_score, ties).sum(dim=1) - self_count
    return RetrievalRanks(image_to_text=image_ranks, text_to_image=text_ranks)


def summarise_ranks(ranks: torch.Tensor, prefix: str, ks: Sequence[int]) -> dict[str, float]:
    """Recall@k (fraction of queries with rank <= k), mean and median rank of 1-based ranks.

    The median is the usual one (mean of the two middle values for an even count).
    """
    ranks = ranks.detach().to("cpu", torch.float64)
    out = {f"{prefix}_recall@{k}": float((ranks <= k).double().mean()) for k in ks}
    out[f"{prefix}_mean_rank"] = float(ranks.mean())
    out[f"{prefix}_median_rank"] = float(torch.quantile(ranks, 0.5))
    return out


def retrieval_metrics(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    text_to_image: torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 1024,
    ties: str = "topk",
) -> dict[str, float]:
    """CLIP_benchmark-named retrieval metrics (fractions in [0, 1], ranks 1-based).

    ``text_retrieval_*`` is image->text (an image's query retrieves its captions),
    ``image_retrieval_*`` is text->image, as CLIP_benchmark names them.
    """
    recalls: dict[str, float] = {}
    if ties == "topk":
        owner = _validated_owner(image_features, text_features, text_to_image, block_size, ties)
        ranks, recalls = _topk_retrieval(image_features, text_features, owner, ks, block_size)
    else:
        ranks = retrieval_ranks(
            image_features, text_features, text_to_image, block_size=block_size, ties=ties
        )
    out = summarise_ranks(ranks.image_to_text, "text_retrieval", ks)
    out.update(summarise_ranks(ranks.text_to_image, "image_retrieval", ks))
    # Under topk, recall@k is CLIP_benchmark's (one topk per k), not read off the ranks.
    out.update(recalls)
    return out


@dataclass
class ZeroShotAccumulator:
    """Streams zero-shot scores batch by batch; :meth:`compute` gives the metrics.

    ``update(scores [B, C], labels [B])`` keeps only, per sample, how many wrong classes rank
    ahead of the true one (a [B] tensor), so memory stays O(samples), not O(samples x classes).
    Mean per-class recall averages top-1 recall over the classes that occur in the labels
    (like scikit-learn's balanced accuracy, which CLIP_benchmark uses).
    """

    num_classes: int
    ties: str = "topk"
    #: Under ``ties="topk"``, acc@k reads the first k of one ``topk(max_k)`` (CLIP_benchmark's
    #: ``accuracy``), so ``compute`` takes k up to this.
    max_k: int = 5
    _ahead_counts: list[torch.Tensor] = field(default_factory=list, repr=False)
    _top1: list[torch.Tensor] = field(default_factory=list, repr=False)
    _labels: list[torch.Tensor] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        _check_ties(self.ties)
        if self.max_k < 1:
            raise InvalidInputError(f"max_k must be >= 1, got {self.max_k}")
        if self.num_classes < 1:
            raise InvalidInputError(f"num_classes must be >= 1, got {self.num_classes}")

    def update(self, scores: torch.Tensor, labels: torch.Tensor) -> None:
        _check_features("scores", scores)
        if scores.shape[1] != self.num_classes:
            raise InvalidInputError(
                f"scores has {scores.shape[1]} columns but there are {self.num_classes} classes"
            )
        labels = torch.as_tensor(labels)
        if labels.shape != (scores.shape[0],) or labels.is_floating_point():
            raise InvalidInputError(
                f"labels must be an integer tensor of shape [{scores.shape[0]}], "
                f"got {labels.dtype} {tuple(labels.shape)}"
            )
        labels = labels.to(device=scores.device, dtype=torch.long)
        bad = (labels < 0) | (labels >= self.num_classes)
        if bool(bad.any()):
            i = int(bad.nonzero()[0, 0])
            raise InvalidInputError(
                f"labels[{i}] = {int(labels[i])} is not a class index (0..{self.num_classes - 1})"
            )
        if self.ties == "topk":
            # The true class's position in topk(max_k), or max_k when it is not there.
            top = scores.topk(min(self.max_k, self.num_classes), dim=1).indices
            match = top == labels[:, None]
            ahead = torch.where(match.any(1), match.to(torch.uint8).argmax(1), self.max_k)
            top1 = scores.argmax(dim=1) == labels  # mean per-class recall reads the argmax
        else:
            true_score = scores.gather(1, labels[:, None])
            others = torch.ones_like(scores, dtype=torch.bool).scatter_(1, labels[:, None], False)
            ahead = (_ahead(scores, true_score, self.ties) & others).sum(dim=1)
            top1 = ahead == 0
        self._ahead_counts.append(ahead.cpu())
        self._top1.append(top1.cpu())
        self._labels.append(labels.cpu())

    @property
    def count(self) -> int:
        return sum(int(x.numel()) for x in self._labels)

    def compute(self, ks: Sequence[int] = (1, 5)) -> dict[str, float]:
        if not self._labels:
            raise InvalidInputError("no samples were given to the zero-shot accumulator")
        if self.ties == "topk" and max(ks) > self.max_k:
            raise InvalidInputError(
                f"ks: acc@{max(ks)} needs the accumulator built with max_k >= {max(ks)} "
                f"(it has max_k={self.max_k})"
            )
        ahead = torch.cat(self._ahead_counts)
        labels = torch.cat(self._labels)
        out = {f"acc{k}": float((ahead < k).double().mean()) for k in ks}
        top1 = torch.cat(self._top1).double()
        per_class_total = torch.bincount(labels, minlength=self.num_classes).double()
        per_class_hits = torch.bincount(labels, weights=top1, minlength=self.num_classes)
        present = per_class_total > 0
        out["mean_per_class_recall"] = float(
            (per_class_hits[present] / per_class_total[present]).mean()
        )
        return out


def zero_shot_metrics(
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    ks: Sequence[int] = (1, 5),
    ties: str = "topk",
) -> dict[str, float]:
    """``acc1``/``acc5`` (top-k accuracy) and ``mean_per_class_recall`` of scores [N, C]."""
    _check_features("scores", scores)
    acc = ZeroShotAccumulator(num_classes=scores.shape[1], ties=ties, max_k=max(ks))
    acc.update(scores, labels)
    return acc.compute(ks)


__all__ = [
    "RetrievalRanks",
    "ZeroShotAccumulator",
    "retrieval_metrics",
    "retrieval_ranks",
    "summarise_ranks",
    "zero_shot_metrics",
]
