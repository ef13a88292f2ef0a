"""``make demo`` over several seeds: held-out zero-shot and retrieval as multiples of chance.

The demo's targets (zero-shot top-1 >= 3x chance, R@10 >= 10x) must hold on every seed, not
on average; this runs the demo's own training and evaluation (``lightclip.demo.run_demo``) for
each seed, with the variations an experiment on it needs, and prints one line per seed plus
the mean ± std::

    python -m lightclip.experiments.demo_seeds --seeds 3 --out logs/demo-seeds
    python -m lightclip.experiments.demo_seeds --recipe clip --out logs/demo-seeds-clip
    python -m lightclip.experiments.demo_seeds --lr 1e-3 --train-opt r1=0.5 --out logs/x
    python -m lightclip.experiments.demo_seeds --model lightclip-tiny-mnv2 --steps 800 --out logs/y

Each run also gets an attribute probe of its image embeddings (:func:`attribute_probe`): how
well a nearest-centroid classifier over the training split's colour-shape combinations tells
the colour and the shape of a lone shape, so a zero-shot failure can be traced to what the
image tower did not learn; with the lightclip recipe, a probe of the fused MLM pass
(:func:`fused_mlm_probe`) says whether the pass that must read a masked colour or shape word
from the image has learned to.

``<out>/results.json`` keeps every seed's metrics; ``<out>/seed<N>/`` its run folder.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import io
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .._core import ReadingConfig
from ..checkpoint import model_from_checkpoint
from ..config import TrainConfig
from ..data import DataPipeline
from ..demo import DEMO_LR, DEMO_MODEL, DEMO_STEPS, run_demo
from ..errors import InvalidInputError, LightclipError
from ..evaluate import default_tokenizer
from ..tokenizer import MASK_TOKEN
from ..validation import eval_pipeline_options
from .options import key_values

# (label, metric key) in the order the table shows them; each is reported as x chance.
FIGURES = [
    ("zero-shot top-1", "zeroshot_acc1"),
    ("generic prompts", "zeroshot_generic_acc1"),
    ("t->i R@10", "image_retrieval_recall@10"),
    ("i->t R@10", "text_retrieval_recall@10"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m lightclip.experiments.demo_seeds", description=__doc__.splitlines()[0]
    )
    p.add_argument("--seeds", type=int, default=3, help="seeds: first-seed, +1, ...")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=DEMO_STEPS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=DEMO_LR)
    p.add_argument("--recipe", default="lightclip", help="lightclip (the demo's) or clip")
    p.add_argument(
        "--model",
        default=DEMO_MODEL,
        help=f"a preset or model config file (the demo's: {DEMO_MODEL})",
    )
    p.add_argument(
        "--train-opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="more TrainConfig fields for every run, e.g. r1=0.5 w_tok=0.2",
    )
    p.add_argument(
        "--model-opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="--model with these config fields changed, e.g. text_layers=4 "
        "zero_init_residual=False",
    )
    p.add_argument("--heldout-samples", type=int, default=1000, help="held-out scenes evaluated")
    p.add_argument("--out", required=True, help="folder for the runs and results.json")
    p.add_argument("--verbose", action="store_true", help="show each run's own output")
    return p.parse_args(argv)


def ratios(metrics: dict[str, float]) -> dict[str, float]:
    """Each figure of ``FIGURES`` divided by its chance level."""
    return {key: metrics[key] / metrics[f"chance_{key}"] for _, key in FIGURES if key in metrics}


PROBES = [("colour probe", "probe_colour_acc"), ("shape probe", "probe_shape_acc")]
# A wrong colour is named in a seed's line when it takes at least this share of a colour's scenes.
CONFUSION_SHOWN = 0.1
# The fused MLM pass restoring a masked word from the image (training model; lightclip recipe).
MLM_PROBES = [("MLM colour", "mlm_colour_acc"), ("MLM shape", "mlm_shape_acc")]


def centroid_probe(
    features: torch.Tensor, labels: torch.Tensor, class_names: list[str]
) -> dict[str, Any]:
    """Nearest-centroid classification of ``features`` into ``class_names`` ("red circle"):
    centroids from the first half, predictions on the second; how often the predicted class
    has the right colour (first word) and the right shape (second word), and which colours it
    mistakes for which (:func:`colour_confusions`)."""
    half = len(features) // 2
    train, test = F.normalize(features[:half], dim=-1), F.normalize(features[half:], dim=-1)
    present = [c for c in range(len(class_names)) if bool((labels[:half] == c).any())]
    centroids = torch.stack(
        [F.normalize(train[labels[:half] == c].mean(0), dim=0) for c in present]
    )
    predicted = torch.tensor(present)[(test @ centroids.t()).argmax(dim=1)]
    words = [name.split() for name in class_names]
    pairs = list(zip(predicted.tolist(), labels[half:].tolist(), strict=True))
    colours = [(words[t][0], words[p][0]) for p, t in pairs]  # (true, predicted)
    shape = [words[p][1] == words[t][1] for p, t in pairs]
    return {
        "probe_colour_acc": statistics.fmean(t == p for t, p in colours),
        "probe_shape_acc": statistics.fmean(shape),
        "probe_scenes": float(len(pairs)),
        "probe_colour_confusions": colour_confusions(colours),
    }


def colour_confusions(
    true_predicted: list[tuple[str, str]], at_least: float = CONFUSION_SHOWN
) -> list[list[Any]]:
    """``[true, predicted, share]`` for every wrong colour predicted for at least ``at_least``
    of a true colour's scenes, most frequent first: which colours a seed has not told apart."""
    totals = collections.Counter(true for true, _ in true_predicted)
    wrong = collections.Counter((t, p) for t, p in true_predicted if t != p)
    shares = [[t, p, n / totals[t]] for (t, p), n in wrong.items() if n / totals[t] >= at_least]
    return sorted(shares, key=lambda c: (-c[2], c[0], c[1]))


@torch.no_grad()
def attribute_probe(model: Any, num_samples: int = 3000, seed: int = 0) -> dict[str, Any]:
    """:func:`centroid_probe` of ``model``'s image embeddings of the lone-shape scenes among
    ``num_samples`` of the training split (unaugmented). A lone shape's caption has one size
    word ("a small red circle"), which is how those scenes are found."""
    options = eval_pipeline_options(model, image_size=None, batch_size=250, threads=None, seed=seed)
    data = DataPipeline(
        "synthetic:train", reading=ReadingConfig(num_samples=num_samples), **options
    )
    tokenizer = default_tokenizer(model)
    size_words = [int(tokenizer([word])[0, 1]) for word in ("small", "large")]
    features, labels = [], []
    for batch in data:
        lone = sum((batch["text"] == word).sum(dim=1) for word in size_words) == 1
        features.append(model.encode_image(batch["image"][lone], normalize=True).float())
        labels.append(batch["label"][lone])
    return centroid_probe(torch.cat(features), torch.cat(labels), list(data.class_names))


def mask_words(text: torch.Tensor, word_ids: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """``text`` with every token in ``word_ids`` replaced by the mask token, and the MLM labels
    for it (the original token there, -100 elsewhere)."""
    where = torch.isin(text, torch.tensor(word_ids, dtype=text.dtype))
    masked = text.masked_fill(where, MASK_TOKEN)
    labels = torch.where(where, text, torch.full_like(text, -100))
    return masked, labels


@torch.no_grad()
def fused_mlm_probe(model: Any, num_samples: int = 400, seed: int = 0) -> dict[str, float]:
    """How often the training model's fused MLM pass (masked caption + image) restores the
    masked words when every colour word, or every shape word, of a caption is masked: top-1
    among the data's colours (or shapes), so chance is one in six. Scenes of
    ``synthetic:train``, unaugmented. Empty for a model without fusion."""
    if getattr(model, "fusion", None) is None or getattr(model, "mlm_head", None) is None:
        return {}
    options = eval_pipeline_options(model, image_size=None, batch_size=200, threads=None, seed=seed)
    data = DataPipeline(
        "synthetic:train", reading=ReadingConfig(num_samples=num_samples), **options
    )
    tokenizer = default_tokenizer(model)
    names = [name.split() for name in data.class_names]
    word_ids = {
        attribute: torch.tensor(
            [int(tokenizer([word])[0, 1]) for word in sorted({n[position] for n in names})]
        )
        for attribute, position in (("colour", 0), ("shape", 1))
    }
    hits: dict[str, list[bool]] = {"colour": [], "shape": []}
    for batch in data:
        for attribute, ids in word_ids.items():
            masked, labels = mask_words(batch["text"], ids.tolist())
            out = model.forward_train(
                batch["image"], batch["text"], masked_text=masked, mlm_labels=labels
            )
            predicted = ids[out["mlm_logits_fused"][:, ids].argmax(dim=1)]
            hits[attribute] += (predicted == out["mlm_labels"]).tolist()
    return {f"mlm_{k}_acc": statistics.fmean(v) for k, v in hits.items() if v}


def table(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    probes = PROBES + [p for p in MLM_PROBES if all(p[1] in r["probe"] for r in runs)]
    head = ["seed"] + [f"{label} (x chance)" for label, _ in FIGURES]
    head += [f"{label} (%)" for label, _ in probes] + ["train s"]
    lines = [
        f"make demo's run, {args.model}, {args.recipe} recipe, {args.steps} steps x "
        f"{args.batch_size}, lr {args.lr}"
        + "".join(f", {opt}" for opt in [*args.model_opt, *args.train_opt]),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] * len(head)) + "|",
    ]
    for run in runs:
        cells = [str(run["seed"])] + [f"{run['ratios'][k]:.2f}" for _, k in FIGURES]
        cells += [f"{100 * run['probe'][k]:.0f}" for _, k in probes]
        lines.append("| " + " | ".join(cells + [f"{run['metrics']['train_seconds']:.0f}"]) + " |")
    columns = [[r["ratios"][k] for r in runs] for _, k in FIGURES]
    columns += [[100 * r["probe"][k] for r in runs] for _, k in probes]
    columns.append([r["metrics"]["train_seconds"] for r in runs])
    cells = ["mean ± std"]
    for values in columns:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        cells.append(f"{statistics.fmean(values):.2f} ± {std:.2f}")
    lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Fields this script sets from its own flags, and the export the probe reads: --train-opt
# may not set them again (it may override the rest of the demo's settings).
_OWN_FIELDS = {"seed", "steps", "batch_size", "lr", "recipe", "model", "logs", "name", "export"}


def train_options(pairs: list[str]) -> dict[str, Any]:
    """``--train-opt`` as TrainConfig fields, refusing unknown ones and the script's own."""
    options = key_values(pairs, "--train-opt")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InvalidInputError(f"--train-opt: {unknown} are not training options")
    clash = sorted(set(options) & _OWN_FIELDS)
    if clash:
        raise InvalidInputError(f"--train-opt: {clash} have flags of their own (or are fixed)")
    return options


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if min(args.seeds, args.steps, args.batch_size, args.heldout_samples) < 1:
            raise InvalidInputError(
                "--seeds, --steps, --batch-size and --heldout-samples must be at least 1"
            )
        options = train_options(args.train_opt)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        model_options = key_values(args.model_opt, "--model-opt")
        runs = run_seeds(args, model_options, options)
    except LightclipError as e:
        print(f"demo_seeds: error: {e}", file=sys.stderr)
        return 2
    report = table(runs, args)
    (Path(args.out) / "table.md").write_text(report + "\n")
    print()
    print(report)
    return 0


def run_seeds(
    args: argparse.Namespace, model_options: dict[str, Any], options: dict[str, Any]
) -> list[dict[str, Any]]:
    out = Path(args.out)
    runs: list[dict[str, Any]] = []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        quiet = (
            contextlib.nullcontext() if args.verbose else contextlib.redirect_stdout(io.StringIO())
        )
        with quiet:
            metrics = run_demo(
                seed=seed,
                steps=args.steps,
                batch_size=args.batch_size,
                logs=str(out),
                name=f"seed{seed}",
                progress=False,
                recipe=args.recipe,
                lr=args.lr,
                model=args.model,
                model_options=model_options,
                heldout_samples=args.heldout_samples,
                train_options=options,
            )
        exported = model_from_checkpoint(out / f"seed{seed}" / "inference_model").eval()
        run = {"seed": seed, "metrics": metrics, "ratios": ratios(metrics)}
        run["probe"] = attribute_probe(exported, seed=seed)
        last = out / f"seed{seed}" / "checkpoints" / "epoch_latest.pt"
        if last.is_file():  # absent with --train-opt save_most_recent=False
            run["probe"].update(fused_mlm_probe(model_from_checkpoint(last).eval(), seed=seed))
        runs.append(run)
        shown = ", ".join(f"{label} {run['ratios'][k]:.2f}x" for label, k in FIGURES)
        shown += "".join(
            f", {label} {100 * run['probe'][k]:.0f} %"
            for label, k in PROBES + MLM_PROBES
            if k in run["probe"]
        )
        confusions = run["probe"]["probe_colour_confusions"]
        confused = ", ".join(f"{t}->{p} {100 * share:.0f} %" for t, p, share in confusions)
        shown += f" (colours confused: {confused})" if confused else ""
        print(f"seed {seed}: {shown}, trained {metrics['train_seconds']:.0f} s", flush=True)
        # Written after every seed: an experiment stopped half-way keeps what it measured.
        (out / "results.json").write_text(json.dumps({"args": vars(args), "runs": runs}, indent=1))
    return runs


if __name__ == "__main__":
    sys.exit(main())
