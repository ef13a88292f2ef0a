"""Training-step throughput, plain CLIP vs full LightCLIP, and the share of time in Rust.

Runs a few real training steps through ``lightclip.train`` (the same loop a user runs) for
each recipe and resolution and reports samples/s of a whole step (data, forward, losses,
backward, optimizer) and where the time went:

* data wait: the loop blocked on the Rust pipeline (its decode/augment/tokenize/mask threads
  otherwise run ahead in the background, so this is the part that costs the step);
* matching: ``lightclip.match_tokens`` (Rust Hungarian solver) inside the token loss;
* labels: ``lightclip.soft_labels`` (Rust label schedule on tch) inside the contrastive loss.

The Rust calls are timed by wrapping the functions the losses call; the first steps are
warm-up and not counted::

    python -m lightclip.experiments.step_throughput --sizes 64 224 --batch-size 64 --steps 6
    python -m lightclip.experiments.step_throughput --device cuda --precision amp_bf16 \
        --train-data 'flickr8k/train-{000000..000001}.tar' --batch-size 256

The loop reads its metrics off the device every ``--warmup-steps`` steps (as a run logging
that often would), so the host runs ahead of the GPU between reads as in training. On CUDA a
Rust call's column then also holds waits for GPU work queued before it (``match_tokens``
copies costs to the host, so it waits for the forward pass); ``--sync-rust-calls``
synchronises the device around each call instead, so each column is the call's own time, at
the price of a slower step.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from ..config import TrainConfig
from ..train import train

_TIMED = {
    "matching": ("lightclip.losses.token_alignment", "match_tokens"),
    "labels": ("lightclip.losses.soft_clip", "soft_labels"),
}


class _Timers:
    """Wraps module-level functions so every call's wall time is recorded."""

    def __init__(self, synchronize: Callable[[], None] = lambda: None) -> None:
        self.calls: dict[str, list[float]] = {k: [] for k in _TIMED}
        self._sync = synchronize
        self._undo: list[Callable[[], None]] = []

    def __enter__(self) -> _Timers:
        for key, (module_name, attr) in _TIMED.items():
            module = sys.modules.get(module_name) or __import__(module_name, fromlist=[attr])
            original = getattr(module, attr)

            def timed(*args: Any, _f: Any = original, _k: str = key, **kwargs: Any) -> Any:
                self._sync()
                start = time.perf_counter()
                try:
                    return _f(*args, **kwargs)
                finally:
                    self._sync()
                    self.calls[_k].append(time.perf_counter() - start)

            setattr(module, attr, timed)
            self._undo.append(lambda m=module, a=attr, f=original: setattr(m, a, f))
        return self

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._undo):
            undo()

    def seconds_after(self, warmup: int, steps: int) -> dict[str, float]:
        """Seconds in each function over the steps after the first `warmup` of `steps` (each
        function is called the same number of times every step)."""
        out = {}
        for key, calls in self.calls.items():
            per_step = len(calls) // steps
            out[key] = sum(calls[warmup * per_step :])
        return out


def measure(
    recipe: str, image_size: int, args: argparse.Namespace, **overrides: Any
) -> dict[str, float]:
    """One row: ``recipe`` at ``image_size`` with ``args``' settings; ``overrides`` are further
    ``TrainConfig`` fields (the end-to-end benchmark sets the augmentation and AdamW)."""
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    sync = torch.cuda.synchronize if cuda and args.sync_rust_calls else (lambda: None)
    total = args.steps + args.warmup_steps
    with _Timers(sync) as timers, tempfile.TemporaryDirectory() as logs:
        result = train(
            TrainConfig(
                model=args.model,
                recipe=recipe,
                image_size=image_size,
                train_data=args.train_data,
                device=args.device,
                precision=args.precision,
                train_num_samples=args.batch_size * args.epoch_batches,
                steps=total,
                batch_size=args.batch_size,
                workers=args.workers,
                logs=logs,
                name="bench",
                progress=False,
                export=False,
                # The first read ends the warm-up, so no measured step shares its window.
                log_every_n_steps=max(args.warmup_steps, 1),
                save_frequency=0,
                **overrides,
            ),
        )
        rust = timers.seconds_after(args.warmup_steps, total)
    rows = [h for h in result.history if h["step"] > args.warmup_steps]
    seconds = sum(r["step_time"] for r in rows)
    out = {"samples_per_s": args.batch_size * len(rows) / seconds, "step_s": seconds / len(rows)}
    spent = {"data_time": sum(r["data_time"] for r in rows), **rust}
    for key, value in spent.items():
        out[f"{key}_share"] = value / seconds
        out[f"{key}_ms"] = 1000 * value / len(rows)
    out["rust_share"] = sum(out[f"{k}_share"] for k in spent)
    # The data wait of the first step of each epoch (after the first), against the others.
    starts = [r for prev, r in zip(rows, rows[1:], strict=False) if r["epoch"] != prev["epoch"]]
    steady = [r for r in rows if r not in starts]
    out["epochs_crossed"] = len(starts)
    out["epoch_start_data_ms"] = 1000 * sum(r["data_time"] for r in starts) / max(len(starts), 1)
    out["steady_data_ms"] = 1000 * sum(r["data_time"] for r in steady) / max(len(steady), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lightclip-tiny-mnv2")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--recipes", nargs="+", default=["clip", "lightclip"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="measured steps per row")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument(
        "--epoch-batches",
        type=int,
        default=64,
        help="batches per epoch of synthetic data (shards: their own size); fewer than the "
        "steps makes the run cross epoch boundaries, whose data wait is reported apart",
    )
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--precision", default="fp32", help="fp32, amp, amp_bf16 or bf16")
    p.add_argument("--channels-last", action="store_true", help="lightclip train --channels-last")
    p.add_argument("--torchcompile", action="store_true", help="lightclip train --torchcompile")
    p.add_argument(
        "--fused-adamw",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lightclip train --fused-adamw / --no-fused-adamw (default: fused where torch has it)",
    )
    p.add_argument(
        "--sync-rust-calls",
        action="store_true",
        help="on CUDA, synchronise around each timed Rust call (its own time; slower steps)",
    )
    p.add_argument(
        "--train-data",
        default="synthetic:train",
        help="what to train on (any --train-data the trainer takes, e.g. a shard pattern)",
    )
    args = p.parse_args(argv)
    print(
        f"{args.model}, batch {args.batch_size}, {args.precision} on {args.device}, "
        f"data {args.train_data}, torch threads {torch.get_num_threads()}"
    )
    head = (
        f"{'recipe':<10} {'px':>4} {'samples/s':>10} {'s/step':>7} {'data ms':>8} "
        f"{'match ms':>9} {'labels ms':>10} {'rust share':>11} {'epoch-start data ms':>20}"
    )
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        for recipe in args.recipes:
            r = measure(
                recipe,
                size,
                args,
                channels_last=args.channels_last,
                torchcompile=args.torchcompile,
                fused_adamw=args.fused_adamw,
            )
            print(
                f"{recipe:<10} {size:>4} {r['samples_per_s']:>10.1f} {r['step_s']:>7.2f} "
                f"{r['data_time_ms']:>8.1f} {r['matching_ms']:>9.2f} {r['labels_ms']:>10.2f} "
                f"{r['rust_share']:>11.2%} "
                + (
                    f"{r['epoch_start_data_ms']:>9.1f} (x{r['epochs_crossed']}, other "
                    f"steps {r['steady_data_ms']:.1f})"
                    if r["epochs_crossed"]
                    else f"{'-':>20}"
                ),
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
