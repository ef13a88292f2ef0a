"""CLIP baseline vs LightCLIP and the ablation rows, on Flickr8k: ``make compare``.

Every row trains the same towers on the same Flickr8k train shards for the same number of
steps with the same seed, batch and learning rate; only the LightCLIP switches differ:

    clip          plain CLIP (hard-label contrastive loss only)
    +soft         + progressive soft labels
    +token        + Hungarian token-level alignment loss
    +mlm          + masked language modelling with image->text fusion
    lightclip     all three (the full recipe, SPEC §2 loss weights)

Each trained model is exported (training-only heads dropped) and evaluated on the Flickr8k
dev shard, all 5 captions per image: image->text and text->image R@1/5/10. The table is
printed and written as Markdown and JSON next to a bar plot (matplotlib)::

    python -m lightclip.experiments.ablation --steps 1000          # the full comparison
    python -m lightclip.experiments.ablation --steps 20 --rows clip lightclip   # a smoke run

Results land in ``--out`` (default ``logs/ablation``): ``ablation.md``, ``ablation.json``,
``ablation.png`` and one run folder per row.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from ..checkpoint import model_from_checkpoint
from ..config import TrainConfig
from ..errors import InvalidInputError, LightclipError
from ..train import train
from ..validation import evaluate_held_out

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip": ("CLIP baseline", dict(recipe="clip")),
    "+soft": ("+ soft labels", dict(recipe="clip", soft_labels=True)),
    "+token": ("+ token loss", dict(recipe="clip", token_loss=True)),
    "+mlm": ("+ MLM / fusion", dict(recipe="clip", mlm=True, fusion=True)),
    "lightclip": ("LightCLIP (all)", dict(recipe="lightclip")),
}
METRICS = [
    ("t2i R@1", "image_retrieval_recall@1"),
    ("t2i R@5", "image_retrieval_recall@5"),
    ("t2i R@10", "image_retrieval_recall@10"),
    ("i2t R@1", "text_retrieval_recall@1"),
    ("i2t R@5", "text_retrieval_recall@5"),
    ("i2t R@10", "text_retrieval_recall@10"),
]
TRAIN_SHARDS = "train-{000000..000005}.tar"
DEV_SHARD = "dev-000000.tar"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lightclip.experiments.ablation", description=__doc__.splitlines()[0]
    )
    p.add_argument(
        "--data-dir",
        default="../shared/data/flickr8k",
        help="folder with Flickr8k's train-*.tar and dev-000000.tar",
    )
    p.add_argument(
        "--towers",
        default="tiny-mnv2",
        help="tower preset: model lightclip-<towers> (e.g. tiny-mnv2, mnv2, r18)",
    )
    p.add_argument("--image-size", type=int, default=None, help="default: the preset's")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="evaluate only this many dev batches of 128 (default: all 1,000 images)",
    )
    p.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    p.add_argument("--out", default="logs/ablation")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_row(key: str, args: argparse.Namespace, train_data: str, dev_data: str) -> dict[str, Any]:
    label, switches = ROWS[key]
    config = TrainConfig(
        model=f"lightclip-{args.towers}",
        train_data=train_data,
        steps=args.steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        image_size=args.image_size,
        workers=args.workers,
        logs=args.out,
        name=f"row-{key.strip('+')}",
        progress=not args.no_progress,
        log_every_n_steps=max(args.steps // 20, 1),
        save_frequency=0,
        export=True,
        **switches,
    )
    print(f"\n=== {label}: {config.model}, {args.steps} steps x {args.batch_size}", flush=True)
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    assert result.export_path is not None
    model = model_from_checkpoint(result.export_path).eval()
    metrics = evaluate_held_out(
        model,
        dev_data,
        image_size=args.image_size,
        zero_shot=False,
        max_batches=args.eval_batches,
    )
    final = result.history[-1] if result.history else {}
    return {
        "row": key,
        "label": label,
        "train_seconds": seconds,
        "final_loss": final.get("loss"),
        "samples_per_s": _mean_rate(result.history),
        "dev_images": metrics.get("retrieval_num_images"),
        **{k: metrics[k] for _, k in METRICS},
    }


def _mean_rate(history: list[dict[str, float]]) -> float | None:
    rates = [h["samples_per_s"] for h in history[1:] if "samples_per_s" in h]
    return sum(rates) / len(rates) if rates else None


def markdown_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = ["row"] + [name for name, _ in METRICS] + ["train s"]
    lines = [
        f"Flickr8k dev retrieval ({rows[0]['dev_images']:.0f} images, 5 captions each), "
        f"lightclip-{args.towers}, "
        f"{args.steps} steps x batch {args.batch_size}, lr {args.lr}, seed {args.seed}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|",
    ]
    for r in rows:
        cells = [r["label"]] + [f"{100 * r[k]:.1f}" for _, k in METRICS]
        cells.append(f"{r['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(METRICS))]
        ax.bar(xs, [100 * r[k] for _, k in METRICS], width, label=r["label"])
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(METRICS))])
    ax.set_xticklabels([name for name, _ in METRICS])
    ax.set_ylabel("recall (%)")
    ax.set_title("Flickr8k dev retrieval")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    try:
        if not (data_dir / DEV_SHARD).is_file():
            raise InvalidInputError(f"--data-dir: no Flickr8k shards in {data_dir}")
        if args.steps < 1 or args.batch_size < 1:
            raise InvalidInputError("--steps and --batch-size must be at least 1")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        train_data = str(data_dir / TRAIN_SHARDS)
        dev_data = str(data_dir / DEV_SHARD)
        rows = [run_row(key, args, train_data, dev_data) for key in args.rows]
    except LightclipError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    table = markdown_table(rows, args)
    print("\n" + table)
    (out / "ablation.md").write_text(table + "\n")
    (out / "ablation.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    if plot(rows, out / "ablation.png"):
        print(f"\nplot: {out / 'ablation.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
