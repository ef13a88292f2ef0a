"""Held-out evaluation during and after training: retrieval, plus zero-shot where labelled.

A thin adaptor from a data source to :mod:`lightclip.evaluate` (the evaluation stream's
functions): it builds the evaluation pipelines at the model's resolution and context length
and merges the metric dicts, so the training loop, the demo and the ablation script all
report the same numbers the ``lightclip eval`` command would. During training
(:func:`held_out_metrics`, :func:`zero_shot_metrics`) rank 0 evaluates and shares the numbers
with the other ranks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from ._core import ReadingConfig
    from .config import TrainConfig
    from .runtime import Runtime


def eval_pipeline_options(
    model: torch.nn.Module,
    *,
    image_size: int | None,
    batch_size: int,
    threads: int | None,
    seed: int,
) -> dict[str, Any]:
    """DataPipeline's arguments for evaluating ``model``: its resolution (unless
    ``image_size``) and context length, the evaluation transform, no augmentation, no masked
    captions (evaluation never reads them)."""
    from ._core import TextConfig

    config = model.config
    return dict(
        batch_size=batch_size,
        image_size=image_size or config.image_size,
        train=False,
        seed=seed,
        threads=threads,
        text=TextConfig(context_length=config.context_length, mlm=False),
    )


def evaluate_held_out(
    model: torch.nn.Module,
    source: str,
    *,
    image_size: int | None = None,
    batch_size: int = 128,
    threads: int | None = None,
    num_samples: int | None = None,
    seed: int = 0,
    zero_shot: bool | None = None,
    templates: str | None = None,
    max_batches: int | None = None,
    reading: ReadingConfig | None = None,
) -> dict[str, float]:
    """Image<->text retrieval R@1/5/10 on ``source`` (all captions of each image) and, when
    the source is labelled (image folders, synthetic) and ``zero_shot`` is not False,
    zero-shot top-1/top-5 with prompt ensembling over its class names (``templates``: the
    source's own prompts when None, else "generic"). ``reading``: how to read the source (a
    table's columns, say); ``num_samples`` sizes a synthetic one."""
    from ._core import ReadingConfig
    from .data import DataPipeline
    from .evaluate import evaluate_retrieval, evaluate_zero_shot

    kwargs = eval_pipeline_options(
        model, image_size=image_size, batch_size=batch_size, threads=threads, seed=seed
    )
    reading = reading or ReadingConfig()
    if num_samples is not None and source.startswith("synthetic"):
        reading = reading.replace(num_samples=num_samples)
    kwargs["reading"] = reading
    retrieval = evaluate_retrieval(
        model, DataPipeline(source, all_captions=True, **kwargs), max_batches=max_batches
    )
    metrics = {k: float(v) for k, v in retrieval.items()}
    stats = getattr(retrieval, "stats", {})
    for key in ("num_images", "num_texts", "images_per_second"):
        if key in stats:
            metrics[f"retrieval_{key}"] = float(stats[key])
    if zero_shot is not False:
        labelled = DataPipeline(source, **kwargs)
        if getattr(labelled, "class_names", None):
            zs = evaluate_zero_shot(model, labelled, templates=templates, max_batches=max_batches)
            metrics.update({f"zeroshot_{k}": float(v) for k, v in zs.items()})
            metrics["zeroshot_num_classes"] = float(len(labelled.class_names))
    return metrics


def evaluate_zero_shot_source(
    model: torch.nn.Module,
    source: str,
    *,
    image_size: int | None = None,
    batch_size: int = 128,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Zero-shot classification on a labelled ``source`` (``lightclip train --zeroshot-data``),
    named as open_clip names its ImageNet numbers without the data set's prefix:
    ``zeroshot-val-top1``, ``zeroshot-val-top5`` (where there are 5 classes), and
    ``zeroshot-val-mean-per-class-recall``. The source's own templates are used where it
    ships them (CLIP_benchmark's layout), else the generic set."""
    from .data import DataPipeline
    from .errors import InvalidInputError
    from .evaluate import evaluate_zero_shot

    data = DataPipeline(
        source,
        **eval_pipeline_options(
            model, image_size=image_size, batch_size=batch_size, threads=threads, seed=seed
        ),
    )
    if not data.class_names:
        raise InvalidInputError(
            f"--zeroshot-data {source}: not a labelled data set (an image folder with one "
            "sub-folder per class, shards with classnames.txt, or synthetic:heldout)"
        )
    scores = evaluate_zero_shot(model, data)  # the source's own templates, else generic
    metrics = {}
    for key, value in scores.items():
        name = f"top{key[3:]}" if key.startswith("acc") else key.replace("_", "-")
        metrics[f"zeroshot-val-{name}"] = float(value)
    return metrics


# ---------------------------------------------------------------------- during training


def held_out_metrics(
    model: torch.nn.Module, config: TrainConfig, image_size: int, rt: Runtime
) -> dict[str, float]:
    """``--val-data``'s metrics (:func:`evaluate_held_out`), computed on rank 0 and shared."""
    from .data import reading_config, resolve_source

    metrics: dict[str, float] = {}
    if rt.is_main:
        with _eval_mode(model):
            metrics = evaluate_held_out(
                model,
                resolve_source(config.val_data or "", config.dataset_type, "--val-data"),
                image_size=image_size,
                batch_size=config.batch_size,
                threads=config.workers,
                num_samples=config.val_num_samples,
                seed=config.seed,
                reading=reading_config(config),
            )
    return _shared_from_rank_0(metrics, rt, "eval")


def zero_shot_due(config: TrainConfig, epoch: int) -> bool:
    """open_clip's rule: every ``--zeroshot-frequency`` epochs and after the last one."""
    if not config.zeroshot_data or config.zeroshot_frequency == 0:
        return False
    last = config.steps is None and epoch == config.epochs
    return epoch % config.zeroshot_frequency == 0 or last


def zero_shot_metrics(
    model: torch.nn.Module, config: TrainConfig, image_size: int, rt: Runtime
) -> dict[str, float]:
    """``zeroshot-val-top1`` / ``-top5`` on ``--zeroshot-data``, on rank 0, shared."""
    from .data import resolve_source

    metrics: dict[str, float] = {}
    if rt.is_main:
        with _eval_mode(model):
            metrics = evaluate_zero_shot_source(
                model,
                resolve_source(config.zeroshot_data or "", "auto", "--zeroshot-data"),
                image_size=image_size,
                batch_size=config.batch_size,
                threads=config.workers,
                seed=config.seed,
            )
    return _shared_from_rank_0(metrics, rt, "zero-shot")


@contextlib.contextmanager
def _eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """``model.eval()`` for the block, then back to the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _shared_from_rank_0(metrics: dict[str, float], rt: Runtime, what: str) -> dict[str, float]:
    if rt.is_main:
        rt.print(f"{what}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if rt.world_size > 1:
        holder = [metrics]
        dist.broadcast_object_list(holder, src=0)
        metrics = holder[0]
    return metrics


__all__ = [
    "eval_pipeline_options",
    "evaluate_held_out",
    "evaluate_zero_shot_source",
    "held_out_metrics",
    "zero_shot_due",
    "zero_shot_metrics",
]
