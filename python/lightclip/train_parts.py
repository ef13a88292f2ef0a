"""What the training loop (``lightclip.train``) is made of, in the order it uses them: the run
folder's name, the model (and open_clip's --pretrained / --lock-* / --grad-checkpointing), the
data pipeline and its epochs, the learning-rate schedule, the losses of one step, the state
saved at a step boundary, held-out and zero-shot evaluation and the inference export. The
per-step metrics are in ``step_metrics.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from .config import TrainConfig
from .errors import InvalidInputError
from .runtime import Runtime


def run_name(config: TrainConfig) -> str:
    if config.name:
        return config.name
    if config.resume == "latest":
        raise InvalidInputError("--resume latest needs --name (which run to resume)")
    # Every rank must agree on the folder, so the name comes from rank 0's clock.
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    if dist.is_initialized() and dist.get_world_size() > 1:
        holder = [stamp]
        dist.broadcast_object_list(holder, src=0)
        stamp = holder[0]
    config.name = f"{stamp}-{config.model}-{config.recipe}"
    return config.name


def build_model(config: TrainConfig) -> torch.nn.Module:
    """The named model (or a JSON model config file) with exactly the training-only heads the
    switches ask for.

    Heads that no loss uses are not built: they would cost compute, and DDP refuses
    parameters that receive no gradient.
    """
    from .models import LightCLIP, LightCLIPConfig, get_model_config, list_models

    if config.model.endswith(".json"):
        if not Path(config.model).is_file():
            raise InvalidInputError(f"--model: no such model config file: {config.model}")
        preset = LightCLIPConfig.from_json(config.model)
    elif config.model in list_models():
        preset = get_model_config(config.model)
    else:
        raise InvalidInputError(
            f"--model: unknown model {config.model!r}; known: {', '.join(list_models())} "
            "(or a path to a .json model config)"
        )
    fusion_stages = (preset.fusion_stages or (2, 3)) if config.fusion else ()
    overrides: dict[str, Any] = dict(
        token_head=bool(config.token_loss), mlm=bool(config.mlm), fusion_stages=fusion_stages
    )
    if config.image_size is not None:
        overrides["image_size"] = config.image_size
    if config.token_space is not None:
        overrides["token_space"] = config.token_space
    # Seeded here, apart from the global RNG: every rank builds the same initial weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LightCLIP(preset.replace(**overrides), output_dict=True)


def apply_model_options(model: Any, config: TrainConfig, rt: Runtime) -> None:
    """open_clip's model flags, in its order: ``--pretrained`` weights, then the tower locks
    (frozen parameters get ``requires_grad=False``, which keeps them out of the optimizer),
    then ``--grad-checkpointing``."""
    if config.pretrained:
        from .pretrained import load_pretrained

        report = load_pretrained(
            model, config.pretrained, text_layers=config.pretrained_text_layers
        )
        rt.print(f"--pretrained {config.pretrained}: {report.summary()}")
    if config.lock_image:
        model.lock_image_tower(
            unlocked_groups=config.lock_image_unlocked_groups,
            freeze_bn_stats=config.lock_image_freeze_bn_stats,
        )
    if config.lock_text:
        model.lock_text_tower(
            unlocked_layers=config.lock_text_unlocked_layers,
            freeze_layer_norm=config.lock_text_freeze_layer_norm,
        )
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)


def build_pipeline(
    config: TrainConfig,
    source: str,
    *,
    train: bool,
    image_size: int,
    context_length: int,
    rank: int,
    world_size: int,
    num_samples: int | None,
    device: torch.device,
) -> Any:
    from .augmentation import pipeline_kwargs
    from .data import DataPipeline

    source = resolve_source(source, config.dataset_type, "--train-data" if train else "--val-data")
    kwargs: dict[str, Any] = dict(
        batch_size=config.batch_size,
        image_size=image_size,
        train=train,
        seed=config.seed,
        threads=config.workers,
        context_length=context_length,
        rank=rank,
        world_size=world_size,
        **csv_options(config),
    )
    if train:
        kwargs.update(eda_prob=config.eda_prob, mlm=bool(config.mlm))  # None: per source
        kwargs.update(pipeline_kwargs(config.aug_cfg or {}))
    if device.type == "cuda":
        # uint8 images from pinned memory: a quarter of the bytes over PCIe, copied
        # asynchronously, and normalised on the GPU instead of on the pipeline's cores.
        kwargs.update(image_dtype="uint8", pin_memory=True, device=device)
    if train and config.dataset_resampled:
        from .resampled import ResampledShards

        if not is_shard_source(source):
            raise InvalidInputError(
                f"--dataset-resampled draws shards; --train-data {source} is not a shard source"
            )
        return ResampledShards(source, num_samples=num_samples, **kwargs)
    if num_samples is not None and source.startswith("synthetic"):
        kwargs["num_samples"] = num_samples
    return DataPipeline(source, **kwargs)


def is_shard_source(source: str) -> bool:
    """Whether the pipeline reads ``source`` as webdataset shards (as ``Source::open`` tells
    the kinds apart: synthetic, folder, table, else shards)."""
    return not (
        source.startswith("synthetic")
        or Path(source).is_dir()
        or source.lower().endswith((".csv", ".tsv"))
    )


def resolve_source(source: str, dataset_type: str, flag: str) -> str:
    """Checks the path exists (one clear line instead of a reader's error) and applies
    ``--dataset-type synthetic``."""
    if dataset_type == "synthetic" and not source.startswith("synthetic"):
        return f"synthetic:{source}"
    if source.startswith("synthetic"):
        return source
    first = source.split("::")[0]
    if "{" not in first and not Path(first).exists():
        raise InvalidInputError(f"{flag}: no such file or folder: {first}")
    if "{" in first and not Path(first.split("{")[0]).parent.exists():
        raise InvalidInputError(f"{flag}: no such folder: {Path(first.split('{')[0]).parent}")
    return source


def batches_per_epoch(pipeline: Any) -> int | None:
    try:
        return len(pipeline)
    except TypeError:
        return None


def epoch_batches(pipeline: Any, epoch: int, data_state: Any) -> CountingIterator:
    """One pass over the data: from the start of ``epoch``, or from a saved position."""
    if data_state is not None:
        pipeline.load_state_dict(data_state)
    else:
        pipeline.set_epoch(epoch)
    return CountingIterator(iter(pipeline))


class CountingIterator:
    def __init__(self, it: Iterator[Any]) -> None:
        self.it, self.count = it, 0

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> Any:
        item = next(self.it)
        self.count += 1
        return item


def stats_line(pipeline: Any) -> str:
    try:
        return f"pipeline stats {pipeline.stats()}"
    except Exception:  # noqa: BLE001 - only decorates an error message
        return "no stats"


def build_lr_schedule(
    config: TrainConfig, *, warmup: int, total_steps: int, steps_per_epoch: int | None
) -> Callable[[int], float]:
    """``step -> lr`` for ``--lr-scheduler``; const-cooldown's ``--epochs-cooldown`` counts
    optimizer steps per epoch, as open_clip's does."""
    from .schedules import lr_schedule

    cooldown_steps = None
    if config.lr_scheduler == "const-cooldown":
        epochs = config.epochs_cooldown or 0
        if steps_per_epoch is None:
            raise InvalidInputError(
                f"--epochs-cooldown {epochs}: the epoch length of --train-data "
                f"{config.train_data} is not known (pass --train-num-samples)"
            )
        cooldown_steps = steps_per_epoch * epochs
        if cooldown_steps > total_steps:
            raise InvalidInputError(
                f"--epochs-cooldown {epochs} is {cooldown_steps} steps, more than the run's "
                f"{total_steps}"
            )
    return lr_schedule(
        config.lr_scheduler,
        base_lr=config.lr,
        warmup_steps=warmup,
        total_steps=total_steps,
        cooldown_steps=cooldown_steps,
        cooldown_power=config.lr_cooldown_power,
        cooldown_end_lr=config.lr_cooldown_end,
    )


@dataclass
class Losses:
    ins: Any
    tok: Any
    mlm: Any


def build_losses(config: TrainConfig) -> Losses:
    from .labels import LabelSchedule
    from .losses.mlm import MaskedLanguageModelLoss
    from .losses.soft_clip import SoftClipLoss
    from .losses.token_alignment import TokenAlignmentLoss

    if config.soft_labels:
        schedule = LabelSchedule(
            r1=config.r1,
            r2=config.r2,
            alpha=config.alpha,
            ramp=config.label_ramp,
            ramp_width=config.label_ramp_width,
        )
    else:
        # alpha = 0 gives the identity target in every phase: plain CLIP's hard labels.
        schedule = LabelSchedule(r1=1.0, r2=1.0, alpha=0.0)
    ins = SoftClipLoss(
        schedule, local_loss=config.local_loss, gather_with_grad=config.gather_with_grad
    )
    return Losses(
        ins=ins,
        tok=TokenAlignmentLoss() if config.token_loss else None,
        mlm=MaskedLanguageModelLoss() if config.mlm else None,
    )


def loss_parts(
    out: dict[str, Any],
    batch: dict[str, Any],
    losses: Losses,
    config: TrainConfig,
    progress: float,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    parts = {
        "ins": losses.ins(out["image_features"], out["text_features"], out["logit_scale"], progress)
    }
    if losses.tok is not None:
        lengths = out.get("word_lengths")
        if lengths is None:
            lengths = batch["word_lengths"]
        parts["tok"] = losses.tok(out["image_tokens"], out["word_tokens"], lengths)
    if losses.mlm is not None:
        # The model returns logits at the masked positions only, with their labels.
        labels = out["mlm_labels"] if out.get("mlm_labels") is not None else batch["mlm_labels"]
        # Normalise by the global masked-token count (see MaskedLanguageModelLoss).
        count = (labels != -100).sum().to(torch.float32)
        if rt.world_size > 1:
            count = count.clone()
            dist.all_reduce(count)
            count = count / rt.world_size
        parts["mlm"] = losses.mlm(
            out["mlm_logits_text"], out.get("mlm_logits_fused"), labels, num_masked=count
        )
    return parts


@dataclass
class StepBoundary:
    """Everything that must be saved together: the state right after one optimizer step."""

    step: int
    epoch: int
    rng: dict[str, Any]
    data: Any


def held_out_metrics(
    model: torch.nn.Module, config: TrainConfig, image_size: int, rt: Runtime
) -> dict[str, float]:
    """Held-out metrics, computed on rank 0 and shared with the others."""
    from .validation import evaluate_held_out

    def evaluate() -> dict[str, float]:
        return evaluate_held_out(
            model,
            resolve_source(config.val_data or "", config.dataset_type, "--val-data"),
            image_size=image_size,
            batch_size=config.batch_size,
            threads=config.workers,
            num_samples=config.val_num_samples,
            seed=config.seed,
            csv_options=csv_options(config),
        )

    return _on_rank_0(evaluate, model, rt, "eval")


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
    from .validation import evaluate_zero_shot_source

    def evaluate() -> dict[str, float]:
        return evaluate_zero_shot_source(
            model,
            resolve_source(config.zeroshot_data or "", "auto", "--zeroshot-data"),
            image_size=image_size,
            batch_size=config.batch_size,
            threads=config.workers,
            seed=config.seed,
        )

    return _on_rank_0(evaluate, model, rt, "zero-shot")


def csv_options(config: TrainConfig) -> dict[str, Any]:
    return dict(
        csv_img_key=config.csv_img_key,
        csv_caption_key=config.csv_caption_key,
        csv_separator=config.csv_separator,
    )


def _on_rank_0(
    evaluate: Callable[[], dict[str, float]], model: torch.nn.Module, rt: Runtime, what: str
) -> dict[str, float]:
    metrics: dict[str, float] = {}
    if rt.is_main:
        was_training = model.training
        model.eval()
        metrics = evaluate()
        model.train(was_training)
        rt.print(f"{what}: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if rt.world_size > 1:
        holder = [metrics]
        dist.broadcast_object_list(holder, src=0)
        metrics = holder[0]
    return metrics


#: The folder in a run's directory that holds its exported inference model.
INFERENCE_MODEL_DIR = "inference_model"


def export_inference_model(model: torch.nn.Module, config: TrainConfig, run_dir: Path) -> Path:
    """The inference model (training-only heads dropped) as ``run_dir/inference_model/``:
    safetensors weights with JSON configs, an open_clip ``local-dir`` folder where open_clip
    can express the towers (:func:`~lightclip.openclip_export.export_openclip`).

    Its model is the plain-CLIP version of the towers (``clip-tiny-mnv2`` for
    ``lightclip-tiny-mnv2``), whose ``create_model`` has exactly these tensors; its
    ``lightclip_config.json`` rebuilds it exactly, resolution included
    (``model_from_checkpoint(folder)``).
    """
    from .openclip_export import export_openclip

    return export_openclip(model.export(), run_dir / INFERENCE_MODEL_DIR, strict=False)
