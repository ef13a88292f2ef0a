"""``lightclip eval``: evaluate a model on a data source, write CLIP_benchmark-shaped JSON.

    lightclip eval --model lightclip-tiny-mnv2 --checkpoint runs/x/checkpoints/epoch_latest.pt \\
        --dataset ../shared/data/flickr8k/dev-000000.tar --task zeroshot_retrieval \\
        --output flickr8k_dev.json

The JSON is what CLIP_benchmark writes, so its tools can read ours::

    {"dataset": "...", "model": "...", "pretrained": "<checkpoint or null>",
     "task": "zeroshot_classification" | "zeroshot_retrieval",
     "metrics": {...}, "language": "en", "stats": {"num_images": ..., "images_per_second": ...}}

``stats`` is our addition (counts and throughput). A readable table goes to stdout.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from ._core import ReadingConfig
from .errors import InvalidInputError
from .evaluate import EvalMetrics, dataset_task, evaluate_retrieval, evaluate_zero_shot
from .metrics import TIES
from .zero_shot import TEMPLATE_SETS

TASKS = ("auto", "zeroshot_classification", "zeroshot_retrieval")


def load_eval_model(name: str | None, checkpoint: str | None, device: str) -> tuple[Any, str]:
    """The inference model (training-only heads dropped), in eval mode on ``device``.

    ``checkpoint`` is a training checkpoint (``.pt``) or an exported inference model (its
    folder or ``.safetensors``); either is read without running code hidden in it. A
    ``--model-ema`` run's checkpoint gives its weight average, the weights it exported. One that
    records its model config is rebuilt from it; otherwise ``create_model(name)`` gets its
    weights. Without a checkpoint the model has random weights (a chance-level baseline).
    """
    from .checkpoint import (
        check_compatible,
        inference_state,
        load_model_payload,
        model_from_checkpoint,
    )
    from .models import create_model

    if checkpoint is not None:
        payload = load_model_payload(checkpoint)
        if "model_config" in payload and name is None:
            model = model_from_checkpoint(payload)
            name = str(payload.get("model_name", model.config.name))
        else:
            name = name or payload.get("model_name")
            if not name:
                raise InvalidInputError(
                    "--model is required (the checkpoint does not name its model)"
                )
            model = create_model(name)
            check_compatible(payload, model, name, str(checkpoint))
            model.load_state_dict(inference_state(payload))
    elif name is None:
        raise InvalidInputError("give --model, --checkpoint, or both")
    else:
        model = create_model(name)
    if hasattr(model, "export"):
        model = model.export()
    return model.to(device).eval(), name


def make_eval_data(
    source: str,
    model: Any,
    task: str,
    batch_size: int,
    *,
    threads: int | None = None,
    reading: ReadingConfig | None = None,
) -> Any:
    """A ``DataPipeline(train=False)`` sized for ``model``; all captions for retrieval."""
    from .data import DataPipeline
    from .validation import eval_pipeline_options

    kwargs = eval_pipeline_options(
        model, image_size=None, batch_size=batch_size, threads=threads, seed=0
    )
    return DataPipeline(
        source, all_captions=task == "zeroshot_retrieval", reading=reading, **kwargs
    )


def result_record(
    *,
    dataset: str,
    model: str,
    task: str,
    metrics: EvalMetrics,
    pretrained: str | None = None,
) -> dict[str, Any]:
    """CLIP_benchmark's result shape, plus our ``stats``."""
    return {
        "dataset": dataset,
        "model": model,
        "pretrained": pretrained,
        "task": task,
        "metrics": {k: float(v) for k, v in metrics.items()},
        "language": "en",
        "stats": dict(getattr(metrics, "stats", {})),
    }


def format_table(record: dict[str, Any]) -> str:
    """A two-column text table of a result record."""
    rows = [("dataset", record["dataset"]), ("model", record["model"]), ("task", record["task"])]
    for key, value in record["metrics"].items():
        is_rank = key.endswith("_rank")
        rows.append((key, f"{value:.2f}" if is_rank else f"{100 * value:.2f} %"))
    for key, value in record.get("stats", {}).items():
        rows.append((key, f"{value:.1f}" if not float(value).is_integer() else f"{int(value)}"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model name (default: the checkpoint's model_name)")
    parser.add_argument(
        "--checkpoint",
        help="a training checkpoint (.pt; a --model-ema run's gives its weight average) or an "
        "exported model (folder or .safetensors); random weights if unset",
    )
    parser.add_argument(
        "--dataset",
        required=True,
        help="shards ('dir/dev-000000.tar'), CSV, image folder, or 'synthetic:heldout'",
    )
    parser.add_argument("--dataset-name", help="name written to the JSON (default: --dataset)")
    parser.add_argument(
        "--task",
        choices=TASKS,
        default="auto",
        help="auto: what the shards' dataset_type.txt says (CLIP_benchmark's layout), else "
        "zero-shot classification when the source has labels, else retrieval",
    )
    parser.add_argument(
        "--class-names",
        help="file with one class name per line, in label order (default: the source's own: "
        "image-folder names, or a classnames.txt beside webdataset shards)",
    )
    parser.add_argument(
        "--templates",
        help=f"zero-shot prompts: a set ({', '.join(TEMPLATE_SETS)}: OpenAI's 80, read from "
        "open_clip) or a file with one template per line, the class name written {c} (as "
        "CLIP_benchmark) or {}; default: the source's own (the zeroshot_classification_templates"
        ".txt that came with the shards, or the synthetic data's caption phrasings), else "
        "generic",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--max-batches", type=int, help="stop after this many batches")
    parser.add_argument(
        "--num-samples", type=int, help="size of a synthetic source (default: the source's own)"
    )
    parser.add_argument("--threads", type=int, help="data pipeline threads (default: all cores)")
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="torch intra-op threads (default: torch's; 1 is fastest on a crowded machine)",
    )
    parser.add_argument(
        "--ties",
        choices=TIES,
        default="topk",
        help="how exactly equal scores rank: topk (CLIP_benchmark's torch.topk, whose metric "
        "names the JSON uses), pessimistic (a tie counts against the right answer, so a "
        "constant model scores zero) or optimistic",
    )
    parser.add_argument("--output", help="write the JSON result here")


def read_class_names(path: str) -> list[str]:
    """One class name per line (CLIP_benchmark's ``classnames.txt``), blank lines ignored."""
    try:
        names = [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    except OSError as e:
        raise InvalidInputError(f"--class-names: cannot read {path}: {e.strerror}") from None
    if not names:
        raise InvalidInputError(f"--class-names: {path} lists no class")
    return names


def run_eval(args: argparse.Namespace) -> int:
    if args.torch_threads is not None:
        torch.set_num_threads(args.torch_threads)
    model, name = load_eval_model(args.model, args.checkpoint, args.device)
    class_names = read_class_names(args.class_names) if args.class_names else None
    extra: dict[str, Any] = {
        "threads": args.threads,
        "reading": ReadingConfig(num_samples=args.num_samples),
    }
    task = args.task
    if task == "auto":
        # CLIP_benchmark's shards say which task they are for (dataset_type.txt); labelled
        # sources (image folders, shards with classnames.txt, synthetic) know their class
        # names; given names mean classification too. Retrieval needs every caption, so it
        # opens the source a second time.
        data = make_eval_data(
            args.dataset, model, "zeroshot_classification", args.batch_size, **extra
        )
        named_task = dataset_task(data)
        if named_task is not None:
            task = named_task
        elif class_names is not None or bool(data.class_names):
            task = "zeroshot_classification"
        else:
            task = "zeroshot_retrieval"
        if task == "zeroshot_retrieval":
            data = make_eval_data(args.dataset, model, task, args.batch_size, **extra)
    else:
        data = make_eval_data(args.dataset, model, task, args.batch_size, **extra)
    if task == "zeroshot_classification":
        metrics = evaluate_zero_shot(
            model,
            data,
            class_names=class_names,
            templates=args.templates,
            device=args.device,
            ties=args.ties,
            max_batches=args.max_batches,
        )
    else:
        metrics = evaluate_retrieval(
            model, data, device=args.device, ties=args.ties, max_batches=args.max_batches
        )
    record = result_record(
        dataset=args.dataset_name or args.dataset,
        model=name,
        task=task,
        metrics=metrics,
        pretrained=args.checkpoint,
    )
    print(format_table(record))
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(record, indent=2) + "\n")
        print(f"wrote {out}")
    return 0


def add_export_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="a training checkpoint (.pt; a --model-ema run's gives its weight average) or an "
        "exported model (folder or .safetensors)",
    )
    parser.add_argument("--model", help="model name (default: the checkpoint's own)")
    parser.add_argument("--output", required=True, help="folder to write the open_clip export to")


def run_export(args: argparse.Namespace) -> int:
    from .openclip_export import export_openclip, register_timm_towers

    model, name = load_eval_model(args.model, args.checkpoint, "cpu")
    out = export_openclip(model, args.output)
    plugin = register_timm_towers(out)
    print(f"exported {name} to {out}; load it with")
    if plugin is None:
        print(f'  open_clip.create_model_and_transforms("local-dir:{out}")')
    else:
        print(f"  lightclip.openclip_export.load_openclip({str(out)!r})")
        print(f"  (its image tower is the timm plug-in {plugin!r}, registered by lightclip)")
    return 0


__all__ = [
    "add_eval_arguments",
    "add_export_arguments",
    "format_table",
    "load_eval_model",
    "read_class_names",
    "result_record",
    "run_eval",
    "run_export",
]
