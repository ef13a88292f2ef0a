"""Whole training steps: ``lightclip train`` against open_clip's own training loop.

What a user compares: samples per second of complete steps (data, forward, loss, backward,
optimizer) with the trainer they would otherwise use. Both sides train the same towers (our
export is an open_clip model, so open_clip builds it from the export), on the same Flickr8k
shards, with the same batch size, resolution, augmentation (``--aug-cfg`` on both), AdamW
settings, schedule and precision:

* open_clip: ``open_clip_train``'s ``parse_args``, ``get_data`` (its webdataset pipeline with
  PIL/torchvision transforms and its tokenizer, in DataLoader workers) and
  ``train_one_epoch`` with ``ClipLoss``, for each worker count in ``--openclip-workers``; the
  best is the reference;
* lightclip: ``lightclip.train`` with ``--recipe clip``, and with the full LightCLIP recipe
  (soft labels, token alignment, MLM with fusion) to show what the recipe costs on top.

The first ``--warmup-steps`` steps of every run are not counted. Run alone with
``python benchmarks/bench_train_step.py [--sizes 64 128] [--steps 20]``; ``make bench`` runs it
with the defaults.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "flickr8k"

# One augmentation for both trainers: the tiny presets' small-image crop, which is all that
# open_clip's own (non-timm) training transform applies; lightclip's other random ops are off.
AUG = {"scale": (0.6, 1.0)}
LIGHTCLIP_ONLY_AUG = {
    "color_jitter_prob": 0.0,
    "gray_scale_prob": 0.0,
    "blur_prob": 0.0,
    "flip_prob": 0.0,
}
LR, WD, BETAS, EPS = 2e-3, 0.1, (0.9, 0.98), 1e-6


class StepClock:
    """Wraps ``optimizer.step`` so each call stamps the time: the gaps are whole steps."""

    def __init__(self, optimizer: torch.optim.Optimizer) -> None:
        self.stamps: list[float] = []
        original = optimizer.step

        def step(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # a stamp marks finished work, not queued work
            self.stamps.append(time.perf_counter())
            return out

        optimizer.step = step  # type: ignore[method-assign]

    def step_seconds(self, warmup: int) -> list[float]:
        gaps = [b - a for a, b in zip(self.stamps, self.stamps[1:], strict=False)]
        return gaps[max(warmup - 1, 0) :]


def openclip_step(export_dir: Path, shards: str, size: int, workers: int, args) -> dict:
    """Samples/s of open_clip's ``train_one_epoch`` on the exported model."""
    import open_clip
    from open_clip.loss import ClipLoss
    from open_clip_train.data import get_data
    from open_clip_train.params import parse_args
    from open_clip_train.scheduler import cosine_lr
    from open_clip_train.train import train_one_epoch

    from lightclip.openclip_export import load_openclip

    total = args.warmup_steps + args.steps
    oc = parse_args(
        [
            "--train-data", shards,
            "--dataset-type", "webdataset",
            "--train-num-samples", str(args.batch_size * total),
            "--batch-size", str(args.batch_size),
            "--workers", str(workers),
            "--lr", str(LR), "--wd", str(WD), "--eps", str(EPS),
            "--beta1", str(BETAS[0]), "--beta2", str(BETAS[1]),
            "--warmup", str(max(total // 20, 1)),
            "--epochs", "1",
            "--precision", args.precision,
        ]
    )  # fmt: skip
    oc.device, oc.distributed, oc.world_size, oc.rank, oc.local_rank = args.device, False, 1, 0, 0
    oc.distill, oc.wandb, oc.save_logs, oc.log_every_n_steps = False, False, False, 10**9
    model, preprocess_train, preprocess_val = load_openclip(
        export_dir, aug_cfg=dict(AUG), output_dict=True
    )
    model.to(args.device)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export_dir}")
    data = get_data(oc, (preprocess_train, preprocess_val), epoch=0, tokenizer=tokenizer)
    # open_clip's parameter groups: no weight decay on gains, biases and the temperature.
    plain = [
        p
        for n, p in model.named_parameters()
        if p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n
    ]
    plain_ids = {id(p) for p in plain}
    decayed = [p for p in model.parameters() if id(p) not in plain_ids]
    optimizer = torch.optim.AdamW(
        [{"params": plain, "weight_decay": 0.0}, {"params": decayed, "weight_decay": WD}],
        lr=LR,
        betas=BETAS,
        eps=EPS,
    )
    clock = StepClock(optimizer)
    scheduler = cosine_lr(optimizer, LR, oc.warmup, total)
    train_one_epoch(model, data, ClipLoss(), 0, optimizer, None, scheduler, None, oc)
    seconds = clock.step_seconds(args.warmup_steps)
    return {"samples_per_s": args.batch_size * len(seconds) / sum(seconds), "steps": seconds}


def lightclip_step(recipe: str, shards: str, size: int, args) -> dict:
    """Samples/s of ``lightclip.train`` (through the step-throughput experiment's timing)."""
    from lightclip.experiments.step_throughput import measure

    options = SimpleNamespace(
        model=args.model,
        train_data=shards,
        device=args.device,
        precision=args.precision,
        batch_size=args.batch_size,
        steps=args.steps,
        warmup_steps=args.warmup_steps,
        workers=None,
        sync_rust_calls=False,
        epoch_batches=64,
    )
    overrides = dict(aug_cfg={**AUG, **LIGHTCLIP_ONLY_AUG}, lr=LR, wd=WD, eps=EPS)
    return measure(recipe, size, options, **overrides)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lightclip-tiny-mnv2")
    p.add_argument("--sizes", type=int, nargs="+", default=[64])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=20, help="measured steps per run")
    p.add_argument("--warmup-steps", type=int, default=4)
    p.add_argument("--openclip-workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    p.add_argument("--device", default="cpu", help="cpu, or cuda for the GPU figures")
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "amp_bf16"],
        help="both trainers' --precision",
    )
    args = p.parse_args(argv)
    shards = str(args.data_dir / "train-{000000..000005}.tar")
    if not (args.data_dir / "train-000000.tar").is_file():
        print(f"skipped: no Flickr8k shards in {args.data_dir}")
        return 0
    try:
        import open_clip_train  # noqa: F401
    except ImportError:
        print("skipped: open_clip_train is not installed (pip install open_clip_torch[training])")
        return 0
    import lightclip
    from lightclip.openclip_export import export_openclip

    print(
        f"{args.model}, batch {args.batch_size}, {args.precision} on {args.device}, "
        f"{torch.get_num_threads()} torch "
        f"threads, {args.steps} steps after {args.warmup_steps} warm-up, Flickr8k train shards"
    )
    head = f"{'px':>4} {'trainer':<28} {'samples/s':>10} {'ms/step':>8} {'vs open_clip':>13}"
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            export_dir = export_openclip(
                lightclip.create_model(args.model, image_size=size, seed=0), tmp
            )
            reference = {}
            for workers in args.openclip_workers:
                run = openclip_step(export_dir, shards, size, workers, args)
                reference[workers] = run["samples_per_s"]
                ms = 1000 * statistics.median(run["steps"])
                name = f"open_clip ({workers} workers)"
                print(f"{size:>4} {name:<28} {run['samples_per_s']:>10.1f} {ms:>8.0f}", flush=True)
        best = max(reference.values())
        clip_rate = None
        for recipe, name in (("clip", "lightclip --recipe clip"), ("lightclip", "lightclip full")):
            run = lightclip_step(recipe, shards, size, args)
            rate = run["samples_per_s"]
            clip_rate = rate if recipe == "clip" else clip_rate
            print(
                f"{size:>4} {name:<28} {rate:>10.1f} {1000 * run['step_s']:>8.0f} "
                f"{rate / best:>12.2f}x",
                flush=True,
            )
        assert clip_rate is not None
        print(
            f"{size:>4} clip recipe vs best open_clip: {clip_rate / best:.2f}x (target >= 1.0); "
            f"full recipe step / clip step: {clip_rate / rate:.2f}x the time (target <= 1.3)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
