"""Training-step throughput, plain CLIP vs full LightCLIP, and the share of time in Rust.

Runs a few real training steps through ``lightclip.train`` (the same loop a user runs) for
each recipe and resolution and reports samples/s of a whole step (data, forward, losses,
backward, optimizer) and where the time went:

* data wait: the loop blocked on the Rust pipeline (its decode/augment/tokenize/mask threads
  otherwise run ahead in the background, so this is the part that costs the step);
* matching: ``lightclip.match_tokens`` (Rust Hungarian solver) inside the token loss;
* labels: ``lightclip.soft_labels`` (Rust label schedule on tch) inside the contrastive loss;
* similarity: ``lightclip.token_similarity`` (Rust/tch) forward inside the token loss.

The Rust calls are timed by wrapping the functions the losses call; the first steps are
warm-up and not counted::

    python -m lightclip.experiments.step_throughput --sizes 64 224 --batch-size 64 --steps 6
    python -m lightclip.experiments.step_throughput --device cuda --precision amp_bf16 \
        --train-data 'flickr8k/train-{000000..000001}.tar' --batch-size 256

On CUDA the wrappers synchronise the device before and after each timed call, so a Rust
call is not charged for GPU work queued before it (``match_tokens`` copies costs to the host,
which would otherwise wait for the whole forward pass).
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
    "similarity": ("lightclip.losses.token_alignment", "token_similarity"),
    "labels": ("lightclip.labels", "soft_labels"),
}


class _Timers:
    """Wraps module-level functions so every call adds its wall time to a counter."""

    def __init__(self, synchronize: Callable[[], None] = lambda: None) -> None:
        self.seconds = dict.fromkeys(_TIMED, 0.0)
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
                    self.seconds[_k] += time.perf_counter() - start

            setattr(module, attr, timed)
            self._undo.append(lambda m=module, a=attr, f=original: setattr(m, a, f))
        return self

    def __exit__(self, *exc: Any) -> None:
        for undo in reversed(self._undo):
            undo()

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, dict.fromkeys(_TIMED, 0.0)
        return out


def measure(recipe: str, image_size: int, args: argparse.Namespace) -> dict[str, float]:
    rows: list[dict[str, float]] = []
    cuda = args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available())
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    with _Timers(sync) as timers, tempfile.TemporaryDirectory() as logs:

        def on_step(step: int, metrics: dict[str, float]) -> None:
            rust = timers.take()
            if step > args.warmup_steps:
                rows.append({**metrics, **rust})

        train(
            TrainConfig(
                model=args.model,
                recipe=recipe,
                image_size=image_size,
                train_data=args.train_data,
                device=args.device,
                precision=args.precision,
                train_num_samples=args.batch_size * 64,
                steps=args.steps + args.warmup_steps,
                batch_size=args.batch_size,
                workers=args.workers,
                logs=logs,
                name="bench",
                progress=False,
                export=False,
                log_every_n_steps=10**9,
                save_frequency=0,
            ),
            on_step=on_step,
        )
    step = sum(r["step_time"] for r in rows)
    result = {"samples_per_s": args.batch_size * len(rows) / step, "step_s": step / len(rows)}
    for key in ("data_time", *_TIMED):
        result[f"{key}_share"] = sum(r[key] for r in rows) / step
        result[f"{key}_ms"] = 1000 * sum(r[key] for r in rows) / len(rows)
    result["rust_share"] = sum(result[f"{k}_share"] for k in ("data_time", *_TIMED))
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lightclip-tiny-mnv2")
    p.add_argument("--sizes", type=int, nargs="+", default=[64, 224])
    p.add_argument("--recipes", nargs="+", default=["clip", "lightclip"])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5, help="measured steps per row")
    p.add_argument("--warmup-steps", type=int, default=2)
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--device", default="auto", help="'auto', 'cpu', 'cuda' or 'cuda:N'")
    p.add_argument("--precision", default="fp32", help="fp32, amp, amp_bf16 or bf16")
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
        f"{'match ms':>9} {'labels ms':>10} {'sim ms':>7} {'rust share':>11}"
    )
    print(head)
    print("-" * len(head))
    for size in args.sizes:
        for recipe in args.recipes:
            r = measure(recipe, size, args)
            print(
                f"{recipe:<10} {size:>4} {r['samples_per_s']:>10.1f} {r['step_s']:>7.2f} "
                f"{r['data_time_ms']:>8.1f} {r['matching_ms']:>9.2f} {r['labels_ms']:>10.2f} "
                f"{r['similarity_ms']:>7.2f} {r['rust_share']:>11.2%}",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
