"""Can a tiny preset's image tower learn shape within the demo's budget when asked directly?

``demo_seeds``' probes find that the demo's contrastive run learns the colour of a shape and
not its shape. This tells apart the two reasons that could have: a tower (or resolution, or
augmentation, or schedule) that cannot learn shape that fast, or an objective that does not
ask for it. It trains a tiny preset's image tower from scratch (``--model-opt
zero_init_residual=False``: the initialisation before the presets took that option), with a
colour head and a shape head on its embedding, by cross-entropy on the lone-shape scenes of
the demo's own training stream: same data, augmentation, batch, learning rate, warm-up and
cosine schedule, AdamW settings and seed. Every ``--eval-every`` steps it measures colour and
shape accuracy on lone-shape scenes the training never draws (``synthetic:train`` with
another data seed)::

    python -m lightclip.experiments.shape_supervised --seeds 3 --out logs/shape-supervised

The defaults, the tiny MobileNet-V2 for 800 steps, are the demo's tower and steps when these
probes were made; ``--model lightclip-tiny-r18 --steps 500`` is the demo's now.

``--tower plain-cnn`` trains a reference tower in the preset's place under the same heads,
data and schedule: blocks of 3x3 convolution, BatchNorm, ReLU and 2x2 max-pooling (by default
four, of 32, 64, 128 and 128 channels: ``--cnn-channels``), then average pooling and a linear
map to the preset's embedding width. Whether it learns shape where the preset does not tells
the tower apart from the data, resolution and schedule.

Only about a third of a batch is a lone shape, so each step trains on about 21 scenes.
``<out>/results.json`` keeps every evaluation; ``<out>/table.md`` the mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._core import ReadingConfig
from ..config import TrainConfig
from ..data import DataPipeline, build_pipeline
from ..demo import DEMO_LR, DEMO_TRAIN_SAMPLES
from ..errors import InvalidInputError, LightclipError
from ..evaluate import default_tokenizer
from ..models import build_model
from ..optim import build_optimizer, set_lr
from ..schedules import default_warmup, lr_at
from ..validation import eval_pipeline_options
from .options import preset_with_overrides

# Scenes of the evaluation set come from this data seed; the demo trains on data seed 0.
EVAL_DATA_SEED = 1
# What docs/experiments.md's tables were measured with.
DEFAULT_MODEL = "lightclip-tiny-mnv2"
DEFAULT_STEPS = 800


TOWERS = ("preset", "plain-cnn")
PLAIN_CNN_CHANNELS = (32, 64, 128, 128)


class PlainCNN(nn.Module):
    """The reference tower of ``--tower plain-cnn``: [B, 3, H, W] -> [B, width]."""

    def __init__(self, width: int, channels: tuple[int, ...] = PLAIN_CNN_CHANNELS) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for cout in channels:
            layers += [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            cin = cout
        self.trunk = nn.Sequential(*layers)
        self.proj = nn.Linear(cin, width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.proj(self.trunk(images).mean(dim=(2, 3)))


class AttributeClassifier(nn.Module):
    """An image tower's embedding (unnormalised) read out by a colour head and a shape head."""

    def __init__(self, tower: nn.Module, width: int, colours: int, shapes: int) -> None:
        super().__init__()
        self.tower = tower
        self.colour_head = nn.Linear(width, colours)
        self.shape_head = nn.Linear(width, shapes)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features = self.tower(images)
        return self.colour_head(features), self.shape_head(features)


class LoneShapes:
    """Picks a batch's lone-shape scenes (their caption has one size word) and gives each its
    colour and shape index, from the data's class names ("red circle")."""

    def __init__(self, model: nn.Module, class_names: list[str]) -> None:
        tokenizer = default_tokenizer(model)
        self.size_words = [int(tokenizer([word])[0, 1]) for word in ("small", "large")]
        words = [name.split() for name in class_names]
        self.colours = sorted({w[0] for w in words})
        self.shapes = sorted({w[1] for w in words})
        self.colour_of = torch.tensor([self.colours.index(w[0]) for w in words])
        self.shape_of = torch.tensor([self.shapes.index(w[1]) for w in words])

    def __call__(
        self, batch: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        lone = sum((batch["text"] == word).sum(dim=1) for word in self.size_words) == 1
        labels = batch["label"][lone]
        return batch["image"][lone], self.colour_of[labels], self.shape_of[labels]


@torch.no_grad()
def accuracy(classifier: AttributeClassifier, data: Any, lone: LoneShapes) -> dict[str, float]:
    classifier.eval()
    colour_hits, shape_hits = [], []
    for batch in data:
        images, colour, shape = lone(batch)
        colour_logits, shape_logits = classifier(images)
        colour_hits += (colour_logits.argmax(dim=1) == colour).tolist()
        shape_hits += (shape_logits.argmax(dim=1) == shape).tolist()
    classifier.train()
    return {
        "colour_acc": statistics.fmean(colour_hits),
        "shape_acc": statistics.fmean(shape_hits),
        "eval_scenes": float(len(shape_hits)),
    }


def run_seed(args: argparse.Namespace, seed: int, model_name: str) -> list[dict[str, float]]:
    """Trains one seed of ``model_name``'s image tower (a preset or a model config file);
    its evaluations, one per ``--eval-every`` steps and one at the end."""
    config = TrainConfig(
        model=model_name,
        train_data="synthetic:train",
        train_num_samples=DEMO_TRAIN_SAMPLES,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
    )
    torch.manual_seed(seed)
    model = build_model(config)
    data = build_pipeline(
        config,
        "synthetic:train",
        train=True,
        image_size=model.config.image_size,
        context_length=model.config.context_length,
        rank=0,
        world_size=1,
        num_samples=DEMO_TRAIN_SAMPLES,
        device=torch.device("cpu"),
    )
    options = eval_pipeline_options(model, image_size=None, batch_size=250, threads=None, seed=0)
    reading = ReadingConfig(num_samples=args.eval_samples, data_seed=EVAL_DATA_SEED)
    held_apart = DataPipeline("synthetic:train", reading=reading, **options)
    lone = LoneShapes(model, list(data.class_names))
    width = model.config.embed_dim
    tower = model.visual if args.tower == "preset" else PlainCNN(width, args.cnn_channels)
    classifier = AttributeClassifier(tower, width, len(lone.colours), len(lone.shapes))
    optimizer = build_optimizer(
        classifier,
        lr=args.lr,
        weight_decay=config.wd,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    warmup = default_warmup(args.steps)
    rows: list[dict[str, float]] = []
    step, start, losses = 0, time.perf_counter(), []
    while step < args.steps:
        for batch in data:
            images, colour, shape = lone(batch)
            if len(images) == 0:  # no lone shape in this batch: nothing to learn from
                continue
            lr = lr_at(step, base_lr=args.lr, warmup_steps=warmup, total_steps=args.steps)
            set_lr(optimizer, lr)
            colour_logits, shape_logits = classifier(images)
            loss = F.cross_entropy(colour_logits, colour) + F.cross_entropy(shape_logits, shape)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(float(loss.detach()))
            step += 1
            if step % args.eval_every == 0 or step == args.steps:
                row = {"step": float(step), "loss": statistics.fmean(losses)}
                row.update(accuracy(classifier, held_apart, lone))
                row["train_seconds"] = time.perf_counter() - start
                rows.append(row)
                losses = []
                print(
                    f"seed {seed} step {step}: loss {row['loss']:.3f}, colour "
                    f"{100 * row['colour_acc']:.0f} %, shape {100 * row['shape_acc']:.0f} %",
                    flush=True,
                )
            if step == args.steps:
                break
    return rows


def table(runs: dict[int, list[dict[str, float]]], args: argparse.Namespace) -> str:
    lines = [
        (
            f"{args.model}'s image tower" + "".join(f", {opt}" for opt in args.model_opt)
            if args.tower == "preset"
            else f"the plain CNN ({', '.join(map(str, args.cnn_channels))} channels) in "
            f"place of {args.model}'s image tower"
        )
        + ", colour and shape heads, lone-shape scenes of make demo's "
        f"stream, {args.steps} steps x {args.batch_size}, lr {args.lr}; accuracy on "
        f"lone-shape scenes of data seed {EVAL_DATA_SEED}, mean ± std over seeds "
        f"{sorted(runs)} (chance 1 in 6 for each)",
        "",
        "| step | colour (%) | shape (%) |",
        "|---:|---:|---:|",
    ]
    for i, row in enumerate(next(iter(runs.values()))):
        cells = [f"{row['step']:.0f}"]
        for key in ("colour_acc", "shape_acc"):
            values = [100 * rows[i][key] for rows in runs.values()]
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.fmean(values):.1f} ± {std:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _channels(text: str) -> tuple[int, ...]:
    try:
        channels = tuple(int(c) for c in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected channels like 32,64,128, got {text!r}"
        ) from None
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(f"channels must be at least 1, got {text!r}")
    return channels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lightclip.experiments.shape_supervised",
        description=__doc__.splitlines()[0],
    )
    p.add_argument("--model", default=DEFAULT_MODEL, help=f"a preset (default {DEFAULT_MODEL})")
    p.add_argument(
        "--model-opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="the preset with these model config fields changed, e.g. width_mult=1.0",
    )
    p.add_argument(
        "--tower",
        choices=TOWERS,
        default="preset",
        help="the preset's image tower, or the reference plain CNN in its place",
    )
    p.add_argument(
        "--cnn-channels",
        type=_channels,
        default=None,
        metavar="C1,C2,...",
        help="with --tower plain-cnn: its blocks, by their channels (each block halves the "
        f"resolution; default {','.join(map(str, PLAIN_CNN_CHANNELS))})",
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds: first-seed, +1, ...")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEFAULT_STEPS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=DEMO_LR)
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-samples", type=int, default=3000, help="scenes (a third are lone)")
    p.add_argument("--out", required=True, help="folder for results.json and table.md")
    args = p.parse_args(argv)
    if args.tower == "preset" and args.cnn_channels is not None:
        p.error("--cnn-channels shapes the plain CNN: it needs --tower plain-cnn")
    # The plain CNN takes the preset's embedding width and resolution and nothing else of it.
    kept = ("embed_dim", "image_size")
    ignored = [opt for opt in args.model_opt if opt.split("=")[0].strip() not in kept]
    if args.tower == "plain-cnn" and ignored:
        p.error(f"--model-opt {' '.join(ignored)} changes the preset's tower, not the plain CNN")
    if args.cnn_channels is None:
        args.cnn_channels = PLAIN_CNN_CHANNELS
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if min(args.seeds, args.steps, args.batch_size, args.eval_every, args.eval_samples) < 1:
            raise InvalidInputError(
                "--seeds, --steps, --batch-size, --eval-every and --eval-samples must be at least 1"
            )
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        model = preset_with_overrides(args.model, args.model_opt, out)
        runs: dict[int, list[dict[str, float]]] = {}
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            runs[seed] = run_seed(args, seed, model)
            (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}))
    except LightclipError as e:
        print(f"shape_supervised: error: {e}", file=sys.stderr)
        return 2
    report = table(runs, args)
    (out / "table.md").write_text(report + "\n")
    print()
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
