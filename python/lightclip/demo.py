"""``make demo``: train a CPU-sized LightCLIP on the bundled data, evaluate it, show it learned.

Steps, all through the public API:

1. ``lightclip.train`` runs the full LightCLIP recipe (soft labels, Hungarian token loss,
   MLM with image fusion) on the bundled procedural dataset (``synthetic:train``: pictures of
   coloured shapes with compositional captions, generated in Rust, nothing downloaded) with
   the ``lightclip-tiny-r18`` preset at 64 px;
2. the exported inference model (training-only heads dropped) is loaded back from disk;
3. on the held-out split (``synthetic:heldout``: colour-shape combinations never seen in
   training) it is evaluated zero-shot (prompt ensemble over the class names) and for
   image<->text retrieval, and a table compares every number with chance. Zero-shot prompts
   are the data's own phrasings ("a small red triangle"); the table also shows top-1 with
   generic ones ("a photo of a red triangle.").

On this 2-core machine it takes a few minutes. The checkpoint and the exported model stay in
``<logs>/<name>/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import torch

from .checkpoint import model_from_checkpoint
from .config import TrainConfig
from .models import resolve_model_config, write_model_config
from .openclip_export import export_inference_model
from .train import train
from .validation import evaluate_held_out

# Zero-shot on held-out colour-shape pairs needs the image tower to tell every colour apart;
# the tiny ResNet-18 learns them within the demo's steps on every seed measured, the tiny
# MobileNet-V2 on some (docs/experiments.md, "The demo's tower").
DEMO_MODEL = "lightclip-tiny-r18"
HELD_OUT = "synthetic:heldout"
# Sized for about five minutes on a quiet 2-core CPU. Contrastive learning on this data has a
# plateau before it takes off, hence the high learning rate. The time budget only guards against a
# stuck machine (one several times slower than a quiet 2-core one still finishes): training
# stops there (checkpoint saved) and evaluation goes on.
DEMO_STEPS = 500
DEMO_LR = 2e-3
# More distinct scenes than the run draws (500 x 64 = 32,000), so no scene repeats and the
# model cannot memorise the colour-shape pairs of a few thousand scenes.
DEMO_TRAIN_SAMPLES = 65_536
DEMO_TRAIN_BUDGET_S = 20 * 60
_RECIPE_NAMES = {"lightclip": "full LightCLIP recipe", "clip": "CLIP baseline recipe"}


def retrieval_chance(k: int, candidates: int, positives: int = 1) -> float:
    """P(at least one of ``positives`` right answers is in the top k of ``candidates``) for a
    random ranking: 1 - C(candidates - positives, k) / C(candidates, k)."""
    if k >= candidates:
        return 1.0
    miss = math.comb(candidates - positives, k) / math.comb(candidates, k)
    return 1.0 - miss


def chance_levels(metrics: dict[str, float], stats: dict[str, float]) -> dict[str, float]:
    """Chance for every metric the table shows, from the evaluation's own counts."""
    images, texts = int(stats["num_images"]), int(stats["num_texts"])
    per_image = max(texts // max(images, 1), 1)
    chance = {}
    for k in (1, 5, 10):
        chance[f"image_retrieval_recall@{k}"] = retrieval_chance(k, images)
        chance[f"text_retrieval_recall@{k}"] = retrieval_chance(k, texts, per_image)
    classes = int(metrics.get("zeroshot_num_classes", 0))
    if classes:
        chance["zeroshot_acc1"] = chance["zeroshot_generic_acc1"] = 1.0 / classes
        chance["zeroshot_acc5"] = min(5.0 / classes, 1.0)
    return chance


_ROWS = [
    ("zero-shot top-1", "zeroshot_acc1"),
    ("zero-shot top-5", "zeroshot_acc5"),
    ("  generic prompts", "zeroshot_generic_acc1"),
    ("text->image R@1", "image_retrieval_recall@1"),
    ("text->image R@5", "image_retrieval_recall@5"),
    ("text->image R@10", "image_retrieval_recall@10"),
    ("image->text R@1", "text_retrieval_recall@1"),
    ("image->text R@5", "text_retrieval_recall@5"),
    ("image->text R@10", "text_retrieval_recall@10"),
]


def results_table(metrics: dict[str, float], chance: dict[str, float]) -> str:
    lines = [f"{'held-out metric':<18} {'model':>8} {'chance':>8} {'x chance':>9}"]
    lines.append("-" * len(lines[0]))
    for label, key in _ROWS:
        if key in metrics and key in chance:
            ratio = metrics[key] / chance[key] if chance[key] > 0 else float("inf")
            lines.append(f"{label:<18} {metrics[key]:>8.3f} {chance[key]:>8.3f} {ratio:>8.1f}x")
    return "\n".join(lines)


def run_demo(
    seed: int = 0,
    steps: int | None = None,
    batch_size: int = 64,
    train_samples: int = DEMO_TRAIN_SAMPLES,
    heldout_samples: int = 1000,
    logs: str = "./logs",
    name: str = "demo",
    progress: bool = True,
    train_budget_s: float | None = DEMO_TRAIN_BUDGET_S,
    recipe: str = "lightclip",
    lr: float = DEMO_LR,
    model: str = DEMO_MODEL,
    model_options: dict[str, Any] | None = None,
    train_options: dict[str, Any] | None = None,
) -> dict[str, float]:
    """Trains, exports, evaluates and prints the table; returns the held-out metrics (plus
    ``chance_*`` entries and ``train_seconds``). ``recipe``, ``lr``, ``model`` (a preset, or
    a model config file when ``model_options`` is empty) with ``model_options`` (its config
    fields changed; written to ``<logs>/<name>.model.json``) and ``train_options``
    (``TrainConfig`` fields, over the demo's own) vary the run for experiments on it."""
    steps = steps or DEMO_STEPS
    preset = model
    if model_options:
        Path(logs).mkdir(parents=True, exist_ok=True)
        model = write_model_config(preset, model_options, Path(logs) / f"{name}.model.json")
    fields: dict[str, Any] = dict(
        model=model,
        recipe=recipe,
        train_data="synthetic:train",
        train_num_samples=train_samples,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        logs=logs,
        name=name,
        progress=progress,
        log_every_n_steps=25,
        save_every_n_steps=100,
        export=True,
        overwrite=True,  # each demo is a fresh run in the same folder
    )
    config = TrainConfig(**{**fields, **(train_options or {})})
    changed = "".join(f", {k}={v}" for k, v in (model_options or {}).items())
    size = resolve_model_config(model).image_size
    print(
        f"training {Path(preset).stem}{changed} ({_RECIPE_NAMES.get(recipe, recipe)}) on the "
        f"bundled synthetic data: {steps} steps x {batch_size} samples at {size} px"
    )
    start = time.perf_counter()

    def over_budget(_step: int, _metrics: dict[str, float]) -> bool:
        return train_budget_s is not None and time.perf_counter() - start > train_budget_s

    result = train(config, on_step=over_budget)
    train_seconds = time.perf_counter() - start
    export_path = result.export_path
    if export_path is None:  # stopped by the time budget: export the last checkpoint
        print(f"time budget reached after {result.step} of {steps} steps; evaluating that model")
        if result.checkpoint is None:
            raise RuntimeError("the demo run saved no checkpoint")
        trained = model_from_checkpoint(result.checkpoint)
        export_path = export_inference_model(trained, result.run_dir)

    # Evaluate what a user would ship: the exported model, read back from disk.
    model = model_from_checkpoint(export_path).eval()
    print(
        f"evaluating the exported model ({sum(p.numel() for p in model.parameters()):,} "
        f"parameters) on {HELD_OUT} (unseen colour-shape combinations)"
    )
    metrics = evaluate_held_out(
        model, HELD_OUT, batch_size=256, num_samples=heldout_samples, seed=seed
    )
    metrics["zeroshot_generic_acc1"] = generic_prompts_top1(model, heldout_samples, seed)
    chance = chance_levels(metrics, _last_stats(metrics, heldout_samples))
    print()
    print(results_table(metrics, chance))
    print()
    print(f"trained in {train_seconds:.0f}s; checkpoint {result.checkpoint}")
    print(f"exported inference model {export_path}")
    out = dict(metrics)
    out.update({f"chance_{k}": v for k, v in chance.items()})
    out["train_seconds"] = train_seconds
    return out


def generic_prompts_top1(model: torch.nn.Module, heldout_samples: int, seed: int) -> float:
    """Held-out zero-shot top-1 with the generic prompts ("a photo of a red triangle."), beside
    the figure with the data's own ("a small red triangle"): how much of the zero-shot result
    is the wording of the prompts."""
    from ._core import ReadingConfig
    from .data import DataPipeline
    from .evaluate import evaluate_zero_shot
    from .validation import eval_pipeline_options

    options = eval_pipeline_options(model, image_size=None, batch_size=256, threads=None, seed=seed)
    data = DataPipeline(HELD_OUT, reading=ReadingConfig(num_samples=heldout_samples), **options)
    return float(evaluate_zero_shot(model, data, templates="generic")["acc1"])


def _last_stats(metrics: dict[str, float], heldout_samples: int) -> dict[str, float]:
    """The retrieval counts evaluate_held_out reported (falls back to the requested size)."""
    images = metrics.get("retrieval_num_images", float(heldout_samples))
    texts = metrics.get("retrieval_num_texts", images)
    return {"num_images": images, "num_texts": texts}


__all__ = ["chance_levels", "results_table", "retrieval_chance", "run_demo"]
