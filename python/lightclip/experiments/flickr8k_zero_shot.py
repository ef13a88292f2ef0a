"""A zero-shot figure on the Flickr8k dev shard, which has captions but no class labels.

Each dev image is labelled by the subject its captions agree on: one of ``SUBJECTS`` when at
least 3 of its 5 captions name it (singular or plural) and no other subject reaches 3; the
other images are left out (about half of them). The model then classifies the labelled images
zero-shot with a prompt ensemble ("a photo of a {}."), and the figure is the mean per-class
recall (balanced accuracy, as CLIP_benchmark reports it), so the many dog photos do not carry
it. Chance is 1 / len(SUBJECTS) = 20 %.

    >>> subject_label(["A dog runs .", "Two dogs play .", "A dog in snow .", "A man .", "x"])
    0
    >>> subject_label(["A man and a dog ."] * 5) is None
    True
"""

from __future__ import annotations

import re
from typing import Any

import torch

from ..data import DataPipeline
from ..evaluate import default_tokenizer
from ..metrics import ZeroShotAccumulator
from ..validation import eval_pipeline_options
from ..zero_shot import build_zero_shot_classifier

SUBJECTS = ("dog", "man", "woman", "boy", "girl")
_FORMS = {"dog": {"dog", "dogs"}, "man": {"man", "men"}, "woman": {"woman", "women"}}
_FORMS |= {"boy": {"boy", "boys"}, "girl": {"girl", "girls"}}
TEMPLATES = ("a photo of a {}.", "a picture of a {}.", "a {}.")
_WORD = re.compile(r"[a-z]+")


def subject_label(captions: list[str], min_votes: int = 3) -> int | None:
    """The index in ``SUBJECTS`` that ``min_votes`` captions name, if exactly one does."""
    votes = [0] * len(SUBJECTS)
    for caption in captions:
        words = set(_WORD.findall(caption.lower()))
        for i, subject in enumerate(SUBJECTS):
            votes[i] += bool(words & _FORMS[subject])
    winners = [i for i, v in enumerate(votes) if v >= min_votes]
    return winners[0] if len(winners) == 1 else None


@torch.inference_mode()
def zero_shot_accuracy(
    model: Any, dev_data: str, *, image_size: int | None = None, max_batches: int | None = None
) -> float:
    """Mean per-class recall of zero-shot subject classification on ``dev_data``."""
    model.eval()
    device = next(model.parameters()).device
    classifier = build_zero_shot_classifier(
        model, default_tokenizer(model), list(SUBJECTS), TEMPLATES, device=device
    )
    pipeline = DataPipeline(
        dev_data,
        all_captions=True,
        **eval_pipeline_options(model, image_size=image_size, batch_size=128, threads=None, seed=0),
    )
    accumulator = ZeroShotAccumulator(num_classes=len(SUBJECTS))
    for index, batch in enumerate(pipeline):
        if max_batches is not None and index >= max_batches:
            break
        labels = [subject_label(list(c)) for c in batch["all_captions"]]
        keep = [i for i, label in enumerate(labels) if label is not None]
        if not keep:
            continue
        images = batch["image"][keep].to(device)
        features = model.encode_image(images, normalize=True).float()
        target = torch.tensor([labels[i] for i in keep], device=device)
        accumulator.update(features @ classifier, target)
    return accumulator.compute()["mean_per_class_recall"] if accumulator.count else float("nan")


__all__ = ["SUBJECTS", "subject_label", "zero_shot_accuracy"]
