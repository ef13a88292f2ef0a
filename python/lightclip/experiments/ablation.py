"""CLIP baseline vs LightCLIP and the ablation rows, on Flickr8k, over seeds: ``make compare``.

Every row trains the same towers on the same Flickr8k train shards for the same number of
steps, with the same seeds, batch, learning rate and augmentation; only the LightCLIP switches
differ:

    clip          plain CLIP (hard-label contrastive loss only)
    +soft         + progressive soft labels
    +token        + Hungarian token-level alignment loss
    +mlm          + masked language modelling with image->text fusion
    lightclip     all three (the full recipe, SPEC §2 loss weights)
    +token-heads  (on request) + token loss through separate heads, another reading of SPEC
    +mlm-text     (on request) + masked language modelling, text-only pass (no fusion)

The default regime is the one in which the CLIP baseline learns on this small data within ten
minutes a run on a 2-core CPU: ``lightclip-tiny-mnv2`` at 128 px (the shards' own size),
1,200 steps of 64, AdamW at lr 2e-3, channels-last.

Each trained model is exported (training-only heads dropped) and evaluated on the Flickr8k
dev shard (1,000 images, all 5 captions each): image->text and text->image R@1/5/10, and a
zero-shot figure (``flickr8k_zero_shot``: dev images labelled by the subject their captions
agree on). Rows report mean ± standard deviation over the seeds, the wall time per run, and
the loss curves; the table is printed and written as Markdown and JSON next to a plot. A run
with ``--train-opt model_ema=True`` exports its weight average and adds a row for the
weights it trained (from its checkpoint), so the average is measured on the same run::

    python -m lightclip.experiments.ablation                         # the full comparison
    python -m lightclip.experiments.ablation --rows clip lightclip --seeds 1   # quick
    python -m lightclip.experiments.ablation --rows clip --seeds 1 \\
        --train-opt lr=1e-3 --model-opt text_layers=4                # one regime variant
    python -m lightclip.experiments.ablation --rows clip --train-shards 2   # a third of the data

Results land in ``--out`` (default ``logs/ablation``): ``ablation.md``, ``ablation.json``,
``ablation.png`` and one run folder per row and seed. A comparison split over several runs of
this command (rows or seeds at a time) becomes one table with ``--merge DIR [DIR ...]``; runs
made with other ``--train-opt`` or ``--model-opt`` become their own rows, named by what they
changed (``+ token loss, w_tok=0.03``), so a setting and the rows it is measured against share
one table and one per-seed view.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from ..augmentation import apply_aug_cfg
from ..checkpoint import model_from_checkpoint
from ..config import TrainConfig
from ..data import augmentation_defaults
from ..errors import InvalidInputError, LightclipError
from ..machine import describe_machine, machine_label
from ..models import get_model_config, resolve_model_config
from ..train import train
from ..validation import evaluate_held_out
from .flickr8k_zero_shot import zero_shot_accuracy
from .options import key_values, preset_with_overrides

ROWS: dict[str, tuple[str, dict[str, Any]]] = {
    "clip": ("CLIP baseline", dict(recipe="clip")),
    "+soft": ("+ soft labels", dict(recipe="clip", soft_labels=True)),
    "+token": ("+ token loss", dict(recipe="clip", token_loss=True)),
    "+mlm": ("+ MLM / fusion", dict(recipe="clip", mlm=True, fusion=True)),
    "lightclip": ("LightCLIP (all)", dict(recipe="lightclip")),
    # Not a default row: the token loss through separate heads (token_space="heads"), to
    # compare with +token.
    "+token-heads": (
        "+ token loss (heads)",
        dict(recipe="clip", token_loss=True, token_space="heads"),
    ),
    # Not a default row: MLM without the image-fused pass, to see what fusion adds to +mlm.
    "+mlm-text": ("+ MLM, no fusion", dict(recipe="clip", mlm=True, fusion=False)),
}
DEFAULT_ROWS = ["clip", "+soft", "+token", "+mlm", "lightclip"]
METRICS = [
    ("t2i R@1", "image_retrieval_recall@1"),
    ("t2i R@5", "image_retrieval_recall@5"),
    ("t2i R@10", "image_retrieval_recall@10"),
    ("i2t R@1", "text_retrieval_recall@1"),
    ("i2t R@5", "text_retrieval_recall@5"),
    ("i2t R@10", "text_retrieval_recall@10"),
    ("zero-shot", "zeroshot_subject_recall"),
]
# What makes saved comparisons one experiment: runs that differ in any of these cannot share a
# table. Runs that differ in --train-opt or in the model they built can: they are variants of a
# row, named by what they changed.
SAME_EXPERIMENT = (
    "data_dir",
    "towers",
    "image_size",
    "steps",
    "batch_size",
    "lr",
    "eval_batches",
    "train_shards",
)
TRAIN_SHARD_COUNT = 6  # Flickr8k's train split: 6,000 images, 1,000 a shard
TRAIN_SHARDS = "train-{000000..000005}.tar"
# What a saved comparison made before a SAME_EXPERIMENT key existed was run with.
SAME_EXPERIMENT_BEFORE = {"train_shards": TRAIN_SHARD_COUNT}
DEV_SHARD = "dev-000000.tar"
# A --train-opt model_ema=True run is reported twice: its weight average (what it exports)
# and, as this variant, the weights it trained.
TRAINED_WEIGHTS = "trained weights, not the average"

# Flickr8k is small data: tiny towers, a short run and a high learning rate, picked on its
# train and dev shards. At the tiny preset's own 64 px the baseline stays near chance whatever
# else changes; at the shards' own 128 px and twice the steps it learns within ten minutes a run.
DEFAULTS = dict(towers="tiny-mnv2", image_size=128, steps=1200, batch_size=64, lr=2e-3)
# Training options every row gets unless --train-opt says otherwise: channels-last only changes
# the memory layout (the same model up to float rounding, a faster step on CPU).
DEFAULT_TRAIN_OPTS: dict[str, Any] = dict(channels_last=True)


def train_shards(count: int) -> str:
    """The first ``count`` of :data:`TRAIN_SHARDS`, as a brace pattern."""
    return f"train-{{000000..{count - 1:06d}}}.tar"


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
        default=DEFAULTS["towers"],
        help="tower preset: model lightclip-<towers> (e.g. tiny-mnv2, tiny-r18, r18)",
    )
    p.add_argument(
        "--image-size",
        type=int,
        default=DEFAULTS["image_size"],
        help="training and evaluation resolution; 0: the preset's own",
    )
    p.add_argument(
        "--train-shards",
        type=int,
        default=TRAIN_SHARD_COUNT,
        choices=range(1, TRAIN_SHARD_COUNT + 1),
        metavar=f"{{1..{TRAIN_SHARD_COUNT}}}",
        help=f"train on the first N of the {TRAIN_SHARD_COUNT} train shards (1,000 images "
        "each): how recall grows with the data at the same steps",
    )
    p.add_argument("--steps", type=int, default=DEFAULTS["steps"])
    p.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"])
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"])
    p.add_argument("--seeds", type=int, default=3, help="seeds per row: first-seed, +1, ...")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--train-opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="any other TrainConfig field for every row (e.g. warmup=100 'aug_cfg={...}')",
    )
    p.add_argument(
        "--model-opt",
        nargs="*",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        help="model config overrides for every row (e.g. text_layers=4 text_width=128)",
    )
    p.add_argument(
        "--eval-batches",
        type=int,
        default=None,
        help="evaluate only this many dev batches of 128 (default: all 1,000 images)",
    )
    p.add_argument("--rows", nargs="+", default=DEFAULT_ROWS, choices=list(ROWS))
    p.add_argument("--out", default="logs/ablation")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="train nothing: rewrite the table and plot from --out's ablation.json",
    )
    p.add_argument(
        "--merge",
        nargs="+",
        default=None,
        metavar="DIR",
        help="train nothing: one table and plot in --out of the runs saved in these folders "
        "(earlier --out folders of the same data, towers, size, steps, batch and lr; runs with "
        "other --train-opt / --model-opt become rows of their own, unless they only restate a "
        "default)",
    )
    args = p.parse_args(argv)
    args.image_size = args.image_size or None  # 0: the preset's own
    return args


def model_argument(args: argparse.Namespace, out: Path) -> str:
    """The ``--model`` of every row: the preset, or a JSON config with ``--model-opt``."""
    return preset_with_overrides(f"lightclip-{args.towers}", args.model_opt, out)


def run_one(
    key: str, seed: int, args: argparse.Namespace, model: str, data: tuple[str, str]
) -> list[dict[str, Any]]:
    label, switches = ROWS[key]
    train_data, dev_data = data
    extra = key_values(args.train_opt, "--train-opt")
    clash = sorted(set(extra) & {*switches, "seed", "steps", "model", "logs", "name"})
    if clash:
        raise InvalidInputError(f"--train-opt: {clash} are set by the experiment itself")
    config = TrainConfig(
        **{
            "model": model,
            "train_data": train_data,
            "steps": args.steps,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "seed": seed,
            "image_size": args.image_size,
            "workers": args.workers,
            "logs": args.out,
            "name": f"row-{key.strip('+')}-seed{seed}",
            "progress": not args.no_progress,
            "log_every_n_steps": max(args.steps // 50, 1),
            "save_frequency": 0,
            "export": True,
            "overwrite": True,  # a rerun retrains the row in its folder
            **DEFAULT_TRAIN_OPTS,
            **extra,
            **switches,
        }
    )
    print(
        f"\n=== {label}, seed {seed}: {model}, {args.steps} steps x {args.batch_size}", flush=True
    )
    start = time.perf_counter()
    result = train(config)
    seconds = time.perf_counter() - start
    assert result.export_path is not None
    metrics = dev_metrics(model_from_checkpoint(result.export_path), dev_data, args)
    curve_keys = ("loss", "loss_ins", "loss_tok", "loss_mlm", "logit_scale")
    curve_keys += ("img_cos", "txt_cos", "tok_img_cos", "tok_word_cos", "mlm_fusion_gain")
    curve = [
        {k: h[k] for k in ("step", *curve_keys) if k in h}
        for h in result.history
        if h["step"] % config.log_every_n_steps == 0 or h["step"] == result.step
    ]
    print("dev: " + "  ".join(f"{name} {100 * metrics[k]:.1f}" for name, k in METRICS))
    run = {
        "row": key,
        "label": label,
        "seed": seed,
        "machine": describe_machine(result.device),
        "train_seconds": seconds,
        "dev_images": metrics.get("retrieval_num_images"),
        "curve": curve,
        **{k: metrics[k] for _, k in METRICS},
    }
    if not config.model_ema:
        return [run]
    # The run exported its weight average; the weights it trained are in its checkpoint, so
    # one run measures what the average adds, on the same trajectory.
    trained = dev_metrics(model_from_checkpoint(result.checkpoint, average=False), dev_data, args)
    print(
        f"dev, {TRAINED_WEIGHTS}: " + "  ".join(f"{n} {100 * trained[k]:.1f}" for n, k in METRICS)
    )
    variant = {"variant": TRAINED_WEIGHTS, "label": f"{label}, {TRAINED_WEIGHTS}"}
    return [run, {**run, **variant, **{k: trained[k] for _, k in METRICS}}]


def dev_metrics(model: Any, dev_data: str, args: argparse.Namespace) -> dict[str, Any]:
    """Retrieval both ways and the subject zero-shot on the dev shard."""
    model.eval()
    metrics = evaluate_held_out(
        model, dev_data, image_size=args.image_size, zero_shot=False, max_batches=args.eval_batches
    )
    metrics["zeroshot_subject_recall"] = zero_shot_accuracy(
        model, dev_data, image_size=args.image_size, max_batches=args.eval_batches
    )
    return metrics


def final_contrastive_loss(curve: list[dict[str, Any]]) -> float | None:
    """Mean L_ins over the logged steps of the last tenth of the run: comparable across rows
    (the total loss is not: it adds the token and MLM terms) and steadier than one step."""
    if not curve:
        return None
    last = curve[-1]["step"]
    tail = [c["loss_ins"] for c in curve if c["step"] > 0.9 * last and "loss_ins" in c]
    return statistics.fmean(tail) if tail else None


def run_key(run: dict[str, Any]) -> str:
    """The table row a run belongs to: its comparison row, and its variant if it has one."""
    return run["row"] + (f" ({run['variant']})" if run.get("variant") else "")


def summarise(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One entry per row: mean and standard deviation (over seeds) of every figure."""
    rows: list[dict[str, Any]] = []
    for key in dict.fromkeys(map(run_key, runs)):
        mine = [r for r in runs if run_key(r) == key]
        row: dict[str, Any] = {
            "row": key,
            "label": mine[0]["label"],
            "seeds": len(mine),
            "seed_list": sorted(r["seed"] for r in mine),
        }
        for run in mine:
            run["final_ins"] = final_contrastive_loss(run["curve"])
        for _, k in [*METRICS, ("", "train_seconds"), ("", "final_ins")]:
            values = [r[k] for r in mine if r[k] is not None]
            row[k] = statistics.fmean(values) if values else None
            row[f"{k}_std"] = statistics.stdev(values) if len(values) > 1 else 0.0
        row["dev_images"] = mine[0]["dev_images"]
        rows.append(row)
    return rows


def model_label(args: argparse.Namespace) -> str:
    """The towers and any ``--model-opt`` as a table names them."""
    options = getattr(args, "model_opt", None)
    return f"lightclip-{args.towers}" + (f" ({', '.join(options)})" if options else "")


def markdown_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    head = ["row", "seeds"] + [name for name, _ in METRICS] + ["train s", "final L_ins"]
    size = getattr(args, "image_size", None)
    at = f" at {size} px" if size else ""
    train_opt = getattr(args, "train_opt", None)
    options = f" ({', '.join(train_opt)})" if train_opt else ""
    shards = getattr(args, "train_shards", TRAIN_SHARD_COUNT)
    some = shards != TRAIN_SHARD_COUNT
    data = f", trained on {shards} of the {TRAIN_SHARD_COUNT} train shards" if some else ""
    lines = [
        f"Flickr8k dev ({rows[0]['dev_images']:.0f} images, 5 captions each), "
        f"{model_label(args)}{at}{data}, {args.steps} steps x batch {args.batch_size}, "
        f"lr {args.lr}"
        f"{options}; "
        "mean ± std over the seeds (recall in %; zero-shot: mean per-class recall over 5 "
        "subjects, chance 20 %)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---", "---"] + ["---:"] * (len(head) - 2)) + "|",
    ]
    for r in rows:
        cells = [r["label"], _seed_span(r["seed_list"])]
        for _, k in METRICS:
            cells.append(f"{100 * r[k]:.1f} ± {100 * r[f'{k}_std']:.1f}")
        cells.append(f"{r['train_seconds']:.0f} ± {r['train_seconds_std']:.0f}")
        cells.append(f"{r['final_ins']:.2f}" if r["final_ins"] is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(runs: list[dict[str, Any]]) -> str:
    """R@10 of every run, rows against seeds: the runs the means hide. Two rows' runs of one
    seed are not a pair: another row computes other floats from its first step on, and that
    moves a run as far as another seed would."""
    seeds = sorted({r["seed"] for r in runs})
    labels = {run_key(r): r["label"] for r in runs}
    lines = [
        "R@10 per seed, text→image / image→text (%)",
        "",
        "| row | " + " | ".join(f"seed {s}" for s in seeds) + " |",
        "|---|" + "---:|" * len(seeds),
    ]
    for key, label in labels.items():
        by_seed = {r["seed"]: r for r in runs if run_key(r) == key}
        cells = [
            f"{100 * by_seed[s]['image_retrieval_recall@10']:.1f} / "
            f"{100 * by_seed[s]['text_retrieval_recall@10']:.1f}"
            if s in by_seed
            else ""
            for s in seeds
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def runs_by_setup(
    runs: list[dict[str, Any]],
) -> tuple[dict[str, list[dict[str, Any]]], list[dict[str, Any]]]:
    """The runs grouped by the kernels that computed them (:func:`machine_label`), and the runs
    saved before runs recorded theirs."""
    by_setup: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        if run.get("machine"):
            by_setup.setdefault(machine_label(run["machine"]), []).append(run)
    return by_setup, [run for run in runs if not run.get("machine")]


def machines_note(runs: list[dict[str, Any]]) -> str:
    """Which machine and kernels trained the runs. A seed's run repeats only within one setup:
    another CPU's kernels may sum in another order, and the same seed then trains into other
    weights."""
    by_setup, unrecorded = runs_by_setup(runs)

    def which(some: list[dict[str, Any]]) -> str:
        seeds_by_label: dict[str, list[int]] = {}
        for run in some:
            seeds_by_label.setdefault(run["label"], []).append(run["seed"])
        return "; ".join(
            f"{label} seed{'s' if len(seeds) > 1 else ''} {_seed_span(sorted(seeds))}"
            for label, seeds in seeds_by_label.items()
        )

    if len(by_setup) > 1:
        lines = [
            "Not all trained on one setup; the same seed on two setups is not the same run:",
            "",
            *(f"- {label}: {which(some)}" for label, some in by_setup.items()),
        ]
        if unrecorded:
            lines.append(f"- not recorded: {which(unrecorded)}")
        return "\n".join(lines)
    if not by_setup:
        return "Trained on: not recorded."
    note = f"Trained on: {next(iter(by_setup))}."
    return note + (f" Not recorded for: {which(unrecorded)}." if unrecorded else "")


def _seed_span(seeds: list[int]) -> str:
    contiguous = seeds == list(range(seeds[0], seeds[-1] + 1))
    if len(seeds) > 2 and contiguous:
        return f"{seeds[0]}–{seeds[-1]}"
    return ", ".join(map(str, seeds))


def plot(rows: list[dict[str, Any]], runs: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)", file=sys.stderr)
        return False
    fig, (bars, curves) = plt.subplots(1, 2, figsize=(14, 4.5))
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        xs = [j + i * width for j in range(len(METRICS))]
        means = [100 * r[k] for _, k in METRICS]
        stds = [100 * r[f"{k}_std"] for _, k in METRICS]
        bars.bar(xs, means, width, yerr=stds, capsize=2, label=r["label"])
    bars.set_xticks([j + 0.4 - width / 2 for j in range(len(METRICS))])
    bars.set_xticklabels([name for name, _ in METRICS], fontsize=8)
    bars.set_ylabel("% (mean ± std over seeds)")
    bars.set_title("Flickr8k dev")
    bars.legend(fontsize=8)
    colours = {r["row"]: f"C{i}" for i, r in enumerate(rows)}
    first_of_row = {run_key(r): id(r) for r in reversed(runs)}
    for run in runs:
        if run.get("variant", "").startswith(TRAINED_WEIGHTS):
            continue  # the curve of its average's run, drawn already
        steps = [c["step"] for c in run["curve"] if "loss_ins" in c]
        values = [c["loss_ins"] for c in run["curve"] if "loss_ins" in c]
        label = run["label"] if first_of_row[run_key(run)] == id(run) else None
        curves.plot(steps, values, color=colours[run_key(run)], alpha=0.7, label=label)
    curves.set_xlabel("step")
    curves.set_ylabel("contrastive loss L_ins")
    curves.set_title("training curves (every seed)")
    curves.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    data_dir = Path(args.data_dir)
    try:
        if not (args.report_only or args.merge) and not (data_dir / DEV_SHARD).is_file():
            raise InvalidInputError(f"--data-dir: no Flickr8k shards in {data_dir}")
        if args.steps < 1 or args.batch_size < 1 or args.seeds < 1:
            raise InvalidInputError("--steps, --batch-size and --seeds must be at least 1")
        out = Path(args.out)
        if args.report_only or args.merge:
            return merge_reports([Path(d) for d in args.merge or [out]], out)
        out.mkdir(parents=True, exist_ok=True)
        model = model_argument(args, out)
        built = resolve_model_config(model).to_dict()
        data = (str(data_dir / train_shards(args.train_shards)), str(data_dir / DEV_SHARD))
        seeds = range(args.first_seed, args.first_seed + args.seeds)
        runs: list[dict[str, Any]] = []
        # Seed by seed, every row each time: a comparison stopped early is still balanced.
        for seed in seeds:
            for key in args.rows:
                runs.extend(run_one(key, seed, args, model, data))
                # Written after every run: a long comparison stopped half-way keeps its rows.
                table = write_report(runs, args, model, out, model_config=built)
    except LightclipError as e:
        print(f"ablation: error: {e}", file=sys.stderr)
        return 2
    print("\n" + table)
    if plot(summarise(runs), runs, out / "ablation.png"):
        print(f"\nplot: {out / 'ablation.png'}")
    return 0


def merge_reports(folders: list[Path], out: Path) -> int:
    """``--merge`` / ``--report-only``: the table and plot of the runs saved in ``folders``,
    written to ``out``; the folders must hold one experiment (:data:`SAME_EXPERIMENT`) and
    each row and seed once."""
    reports: list[tuple[Path, dict[str, Any]]] = []
    for folder in folders:
        path = folder / "ablation.json"
        if not path.is_file():
            raise InvalidInputError(f"--merge: no {path}")
        try:
            report = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"--merge: cannot read {path}: {e}") from e
        if not isinstance(report, dict) or not {"args", "runs"} <= set(report):
            raise InvalidInputError(f"--merge: {path} is not a saved comparison (no args, runs)")
        reports.append((path, report))
    first_path, first = reports[0]
    for path, report in reports[1:]:
        for key in SAME_EXPERIMENT:
            before = SAME_EXPERIMENT_BEFORE.get(key)
            mine, theirs = report["args"].get(key, before), first["args"].get(key, before)
            if mine != theirs:
                raise InvalidInputError(
                    f"--merge: {path} is another experiment than {first_path}: "
                    f"{key} {mine!r} against {theirs!r}"
                )
    needed = {"row", "label", "seed", "curve", "train_seconds", *(k for _, k in METRICS)}
    for _, report in reports:
        for run in report["runs"]:
            if (
                not isinstance(run, dict)
                or not needed <= set(run)
                or run["row"] not in ROWS
                or not isinstance(run.get("machine", {}), dict)
            ):
                raise InvalidInputError(
                    f"--merge: a saved run is not one of this comparison's: {run!r}"[:300]
                )
    changes = [variant_of(report) for _, report in reports]
    shared = [k for k, v in changes[0].items() if all(k in c and c[k] == v for c in changes)]
    runs = []
    for (_, report), change in zip(reports, changes, strict=True):
        own = ", ".join(text for k, text in change.items() if k not in shared)
        for run in report["runs"]:
            if own:
                run = {**run, "variant": ", ".join(filter(None, [run.get("variant"), own]))}
                run["label"] = f"{ROWS[run['row']][0]}, {run['variant']}"
            runs.append(run)
    twice = [pair for pair, n in Counter((run_key(r), r["seed"]) for r in runs).items() if n > 1]
    if twice:
        row, seed = twice[0]
        raise InvalidInputError(f"--merge: row {row} seed {seed} is saved more than once")
    setups = len(runs_by_setup(runs)[0])
    if setups > 1:
        print(
            f"--merge: warning: the runs come from {setups} machine setups (CPU, kernels, "
            "threads, torch); a seed's run repeats only within one (see the table's notes)",
            file=sys.stderr,
        )
    order = list(ROWS)
    runs.sort(key=lambda r: (r["seed"], order.index(r["row"]), r.get("variant", "")))
    # The table's header names what every run shares; each row's label what only it changed.
    train_fields = set(key_values(first["args"].get("train_opt") or [], "--train-opt"))
    first["args"]["train_opt"] = [changes[0][k] for k in shared if k in train_fields]
    first["args"]["model_opt"] = [changes[0][k] for k in shared if k not in train_fields]
    args = argparse.Namespace(**first["args"])
    out.mkdir(parents=True, exist_ok=True)
    sources = [str(p.parent) for p, _ in reports] if len(reports) > 1 else None
    # One folder (--report-only) keeps its exact model; a merge's variants are in its runs.
    built = first.get("model_config") if len(reports) == 1 else None
    table = write_report(
        runs, args, first.get("model", ""), out, merged_from=sources, model_config=built
    )
    print(table)
    if plot(summarise(runs), runs, out / "ablation.png"):
        print(f"\nplot: {out / 'ablation.png'}")
    return 0


def variant_of(report: dict[str, Any]) -> dict[str, str]:
    """What a saved comparison changed on top of its experiment, as ``{field: "KEY=VALUE"}``:
    its ``--train-opt``, and the fields in which the model it built differs from the towers'
    preset (so a ``--model-opt`` that only restates the preset is no change)."""
    args = report["args"]
    train_opt, model_opt = args.get("train_opt") or [], args.get("model_opt") or []
    change = {
        pair.partition("=")[0]: pair for pair in train_opt if not restates_default(pair, args)
    }
    spelled = {pair.partition("=")[0]: pair for pair in model_opt}
    try:
        preset = get_model_config(f"lightclip-{args['towers']}").to_dict()
        built = (
            report.get("model_config")
            or get_model_config(
                f"lightclip-{args['towers']}", **key_values(model_opt, "--model-opt")
            ).to_dict()
        )
    except (LightclipError, KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(
            f"--merge: cannot tell which model a saved comparison built: {e}"
        ) from e
    preset = json.loads(json.dumps(preset))  # as saved: tuples become lists
    for key, value in built.items():
        if key != "name" and preset.get(key) != value:
            change[key] = spelled.get(key, f"{key}={value}")
    return change


def restates_default(pair: str, args: dict[str, Any]) -> bool:
    """Whether a saved ``--train-opt`` pair sets what every row gets without it: the
    experiment's own options, TrainConfig's defaults, or for ``aug_cfg`` the augmentation the
    experiment's training shards get by default. Judged by today's defaults, as a run that
    left a setting out is: a saved report does not record the defaults of its day."""
    key, value = next(iter(key_values([pair], "--train-opt").items()))
    try:
        given = TrainConfig(**{**DEFAULT_TRAIN_OPTS, key: value})
        if key == "aug_cfg":
            shards = str(Path(args["data_dir"]) / TRAIN_SHARDS)
            size = args["image_size"] or get_model_config(f"lightclip-{args['towers']}").image_size
            default = augmentation_defaults(shards, size)
            return apply_aug_cfg(given.aug_cfg, default) == default
        return getattr(given, key) == getattr(TrainConfig(**DEFAULT_TRAIN_OPTS), key)
    except (LightclipError, KeyError, TypeError, ValueError):
        return False


def write_report(
    runs: list[dict[str, Any]],
    args: argparse.Namespace,
    model: str,
    out: Path,
    merged_from: list[str] | None = None,
    model_config: dict[str, Any] | None = None,
) -> str:
    rows = summarise(runs)
    table = markdown_table(rows, args) + "\n\n" + per_seed_table(runs)
    table += "\n\n" + machines_note(runs)
    (out / "ablation.md").write_text(table + "\n")
    report = {"args": vars(args), "model": model, "rows": rows, "runs": runs}
    if model_config:
        # The model exactly as built: --merge tells variants apart by it, even after the
        # preset changes.
        report["model_config"] = model_config
    if merged_from:
        report["merged_from"] = merged_from
    (out / "ablation.json").write_text(json.dumps(report, indent=2))
    return table


if __name__ == "__main__":
    sys.exit(main())
