"""Evaluation: zero-shot classification and image<->text retrieval of any CLIP-like model.

``model`` is anything with ``encode_image(images, normalize=True)`` and
``encode_text(ids, normalize=True)`` (a lightclip model, its export, an open_clip model).
``data`` is a :class:`lightclip.DataPipeline` built with ``train=False`` or any iterable of
batch dicts:

* zero-shot: ``"image"`` [B,3,H,W] and ``"label"`` [B]; class names come from
  ``data.class_names`` unless given.
* retrieval: ``"image"`` and the captions of each image, taken from the first key present of
  ``"all_captions"`` (list of lists of strings: several captions per image, as in Flickr8k's
  ``.json`` or the lines of a ``.txt`` in CLIP_benchmark's retrieval layout), ``"captions"``
  (one string per image) or ``"text"`` (token ids, one per image). A caption of several lines
  is refused: in CLIP_benchmark's layout those are several captions, which the pipeline splits
  only when a ``dataset_type.txt`` says "retrieval".

A pipeline over shards in CLIP_benchmark's layout knows its ``dataset_type``; evaluating it as
the other task is refused. Zero-shot takes the templates that came with the data (its
``zeroshot_classification_templates.txt``) unless given others.

Both return a dict of metrics (CLIP_benchmark's names: ``acc1``, ``acc5``,
``mean_per_class_recall``; ``image_retrieval_recall@k`` (text->image),
``text_retrieval_recall@k`` (image->text), plus mean/median ranks, see
:mod:`lightclip.metrics` for the tie rule). The dict's ``.stats`` attribute holds sample counts
and timings (images per second end to end, and for the image tower alone).

    >>> import torch
    >>> from lightclip.evaluate import evaluate_retrieval
    >>> from torch.nn.functional import one_hot
    >>> class Echo(torch.nn.Module):  # an "oracle" whose image and caption embeddings agree
    ...     def encode_image(self, x, normalize=False): return x.flatten(1)
    ...     def encode_text(self, t, normalize=False): return one_hot(t[:, 0], 4).float()
    >>> batch = {"image": torch.eye(4).reshape(4, 4, 1, 1), "text": torch.arange(4)[:, None]}
    >>> evaluate_retrieval(Echo(), [batch])["image_retrieval_recall@1"]
    1.0
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .metrics import ZeroShotAccumulator, retrieval_metrics
from .zero_shot import Template, build_zero_shot_classifier

#: The task each CLIP_benchmark ``dataset_type.txt`` value means.
TASK_OF_DATASET_TYPE = {
    "classification": "zeroshot_classification",
    "retrieval": "zeroshot_retrieval",
}

Tokenizer = Callable[[list[str]], torch.Tensor]


class EvalMetrics(dict):
    """The metrics (a plain ``dict[str, float]``) plus ``.stats``: counts and timings."""

    stats: dict[str, float]

    def __init__(self, metrics: dict[str, float], stats: dict[str, float]) -> None:
        super().__init__(metrics)
        self.stats = stats


def default_tokenizer(model: Any) -> Tokenizer:
    """lightclip's tokenizer at the model's context length (77 when the model does not say)."""
    from .tokenizer import get_tokenizer

    config = getattr(model, "config", None)
    return get_tokenizer(context_length=getattr(config, "context_length", 77))


def _model_device(model: Any) -> torch.device:
    try:
        return next(iter(model.parameters())).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


@contextmanager
def _eval_mode(model: Any):
    """Inference mode with the model in eval(); its training flag is restored afterwards."""
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        if was_training and hasattr(model, "train"):
            model.train()


def _images(batch: Any, index: int, device: torch.device) -> torch.Tensor:
    if not isinstance(batch, dict) or "image" not in batch:
        raise InvalidInputError(f"batch {index} has no 'image' entry (got {type(batch).__name__})")
    images = batch["image"]
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise InvalidInputError(f"batch {index}: 'image' must be a [B,3,H,W] tensor")
    return images.to(device, non_blocking=True)


def dataset_task(data: Any) -> str | None:
    """The task that ``data``'s ``dataset_type.txt`` (CLIP_benchmark's layout) names; None
    when it has none. A type lightclip cannot evaluate (multi-label) is refused."""
    dataset_type = getattr(data, "dataset_type", None)
    if dataset_type is None:
        return None
    if dataset_type not in TASK_OF_DATASET_TYPE:
        raise InvalidInputError(
            f"{getattr(data, 'source', 'the data')}: dataset_type.txt says {dataset_type!r}; "
            "lightclip evaluates classification (.cls labels) and retrieval (.txt captions) "
            "datasets, not multi-label ones"
        )
    return TASK_OF_DATASET_TYPE[dataset_type]


def check_dataset_type(data: Any, task: str) -> None:
    """Refuses to evaluate ``data`` as ``task`` when its ``dataset_type.txt`` says otherwise
    (data without one passes)."""
    expected = dataset_task(data)
    if expected is not None and expected != task:
        raise InvalidInputError(
            f"{getattr(data, 'source', 'the data')}: dataset_type.txt says "
            f"{data.dataset_type!r}, so it cannot be evaluated as {task} (use {expected})"
        )


def _encode_images(model: Any, images: torch.Tensor) -> torch.Tensor:
    return F.normalize(model.encode_image(images, normalize=True).float(), dim=-1)


def evaluate_zero_shot(
    model: Any,
    data: Iterable[dict[str, Any]],
    *,
    class_names: Sequence[str] | None = None,
    templates: str | os.PathLike[str] | Sequence[Template] | None = None,
    tokenizer: Tokenizer | None = None,
    device: str | torch.device | None = None,
    ks: Sequence[int] = (1, 5),
    ties: str = "topk",
    max_batches: int | None = None,
) -> EvalMetrics:
    """Top-k accuracy and mean per-class recall of the prompt-ensemble classifier.

    ``templates``: a set name (``"generic"``, ``"imagenet"``: OpenAI's, from open_clip), a
    templates file or a list of templates (see :func:`lightclip.zero_shot.resolve_templates`);
    None takes ``data.templates`` (the ``zeroshot_classification_templates.txt`` that came with
    shards, or the synthetic captions' phrasings), else ``"generic"``.
    """
    check_dataset_type(data, "zeroshot_classification")
    if templates is None:
        templates = getattr(data, "templates", None) or "generic"
    if class_names is None:
        class_names = getattr(data, "class_names", None)
        if not class_names:
            raise InvalidInputError(
                "class_names: the data has no class names (not a labelled source); pass them"
            )
    device = torch.device(device) if device is not None else _model_device(model)
    tokenizer = tokenizer or default_tokenizer(model)
    start = time.perf_counter()
    encode_seconds = 0.0
    with _eval_mode(model):
        classifier = build_zero_shot_classifier(
            model, tokenizer, list(class_names), templates, device=device
        )
        accumulator = ZeroShotAccumulator(num_classes=len(class_names), ties=ties, max_k=max(ks))
        for index, batch in enumerate(data):
            if max_batches is not None and index >= max_batches:
                break
            images = _images(batch, index, device)
            if "label" not in batch:
                raise InvalidInputError(f"batch {index} has no 'label' entry for zero-shot")
            if bool((batch["label"] < 0).any()):
                # The pipeline marks samples of a labelled source that carry no label with -1.
                position = int((batch["label"] < 0).nonzero()[0, 0])
                raise InvalidInputError(
                    f"batch {index}, sample {position} has no class label (a shard sample "
                    f"without a .cls member or JSON 'label'); zero-shot needs one on every sample"
                )
            t0 = time.perf_counter()
            features = _encode_images(model, images)
            encode_seconds += time.perf_counter() - t0
            accumulator.update(features @ classifier, batch["label"].to(device))
    seconds = time.perf_counter() - start
    n = accumulator.count
    stats = {
        "num_images": float(n),
        "num_classes": float(len(class_names)),
        "seconds": seconds,
        "images_per_second": n / seconds if seconds > 0 else 0.0,
        "image_encode_images_per_second": n / encode_seconds if encode_seconds > 0 else 0.0,
    }
    return EvalMetrics(accumulator.compute(ks), stats)


def _captions_of(
    batch: dict[str, Any], index: int, size: int, source: str | None = None
) -> list[list[str]] | torch.Tensor:
    """Each image's captions, or token ids [B, C] (one caption per image); ``source`` names
    where they came from in errors."""
    if "all_captions" in batch:
        captions = batch["all_captions"]
    elif "captions" in batch:
        captions = [[c] for c in batch["captions"]]
    elif "text" in batch:
        ids = batch["text"]
        if not isinstance(ids, torch.Tensor) or ids.ndim != 2 or ids.shape[0] != size:
            raise InvalidInputError(f"batch {index}: 'text' must be [B, context] token ids")
        return ids
    else:
        raise InvalidInputError(
            f"batch {index} has no captions ('all_captions', 'captions' or 'text') for retrieval"
        )
    if len(captions) != size:
        raise InvalidInputError(f"batch {index}: {len(captions)} caption lists for {size} images")
    keys = batch.get("key", [None] * size)
    for j, per_image in enumerate(captions):
        sample = f"batch {index}, sample {j}{f' ({keys[j]})' if keys[j] else ''}"
        if source:
            sample = f"{source}: {sample}"
        if isinstance(per_image, str) or not per_image:
            raise InvalidInputError(f"{sample}: needs a non-empty list of caption strings")
        for caption in per_image:
            lines = len(caption.splitlines())
            if lines > 1:
                raise InvalidInputError(
                    f"{sample}: a caption of {lines} lines. In CLIP_benchmark's retrieval "
                    "layout each line of a .txt is one caption, which lightclip reads so only "
                    "when a dataset_type.txt saying 'retrieval' lies beside the shards or in "
                    "their parent folder: add it (or give the captions as a .json list)"
                )
    return [list(c) for c in captions]


def evaluate_retrieval(
    model: Any,
    data: Iterable[dict[str, Any]],
    *,
    tokenizer: Tokenizer | None = None,
    device: str | torch.device | None = None,
    ks: Sequence[int] = (1, 5, 10),
    block_size: int = 1024,
    text_batch_size: int = 256,
    ties: str = "topk",
    max_batches: int | None = None,
) -> EvalMetrics:
    """Image->text and text->image recall@k and mean/median rank over every caption."""
    check_dataset_type(data, "zeroshot_retrieval")
    device = torch.device(device) if device is not None else _model_device(model)
    image_features: list[torch.Tensor] = []
    text_features: list[torch.Tensor] = []
    owners: list[int] = []
    pending: list[str] = []
    n_images = 0
    encode_seconds = 0.0

    def flush_texts() -> None:
        nonlocal pending, tokenizer
        if pending:
            tokenizer = tokenizer or default_tokenizer(model)
            ids = tokenizer(pending).to(device)
            text_features.append(
                F.normalize(model.encode_text(ids, normalize=True).float(), dim=-1)
            )
            pending = []

    start = time.perf_counter()
    with _eval_mode(model):
        for index, batch in enumerate(data):
            if max_batches is not None and index >= max_batches:
                break
            images = _images(batch, index, device)
            captions = _captions_of(batch, index, images.shape[0], getattr(data, "source", None))
            t0 = time.perf_counter()
            image_features.append(_encode_images(model, images))
            encode_seconds += time.perf_counter() - t0
            if isinstance(captions, torch.Tensor):
                flush_texts()
                ids = captions.to(device)
                text_features.append(
                    F.normalize(model.encode_text(ids, normalize=True).float(), dim=-1)
                )
                owners.extend(range(n_images, n_images + images.shape[0]))
            else:
                for j, per_image in enumerate(captions):
                    pending.extend(per_image)
                    owners.extend([n_images + j] * len(per_image))
                    if len(pending) >= text_batch_size:
                        flush_texts()
            n_images += images.shape[0]
        flush_texts()
    if not image_features:
        raise InvalidInputError("data yielded no batches to evaluate")
    images_all = torch.cat(image_features)
    texts_all = torch.cat(text_features)
    metrics = retrieval_metrics(
        images_all,
        texts_all,
        torch.tensor(owners, device=images_all.device),
        ks=ks,
        block_size=block_size,
        ties=ties,
    )
    seconds = time.perf_counter() - start
    stats = {
        "num_images": float(n_images),
        "num_texts": float(texts_all.shape[0]),
        "seconds": seconds,
        "images_per_second": n_images / seconds if seconds > 0 else 0.0,
        "image_encode_images_per_second": n_images / encode_seconds if encode_seconds > 0 else 0.0,
    }
    return EvalMetrics(metrics, stats)


__all__ = [
    "TASK_OF_DATASET_TYPE",
    "EvalMetrics",
    "check_dataset_type",
    "dataset_task",
    "default_tokenizer",
    "evaluate_retrieval",
    "evaluate_zero_shot",
]
