"""Batched exact matching: lightclip.match_tokens against scipy and pathfinding, side by side.

For B = 256 cost matrices (1 − cosine similarity of random unit tokens, patches × words) at
the shapes LightCLIP meets — 49×16, 49×32, 49×77, 196×77 — and a structured case where every
word prefers the same patches, prints ms per batch for

* lightclip on 1 thread and on all threads (``lightclip.set_num_threads``),
* ``scipy.optimize.linear_sum_assignment`` looped over the batch (float64 input, its own
  dtype, so it pays no conversion),
* ``pathfinding::kuhn_munkres`` (Rust, integer costs scaled by 1e6, one thread, run by the
  example binary ``rust/core/examples/bench_pathfinding.rs``),

with each one's speed-up over scipy and whether its total cost equals scipy's (relative 1e-5).
Target: lightclip on all threads ≥ 10× scipy at every shape, ≥ 5× on the structured case.

Run alone: ``.venv/bin/python benchmarks/bench_matching.py [--repeats N] [--no-pathfinding]``
(or through ``make bench``).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

import lightclip

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rust_examples import build_example  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
BATCH = 256
DIM = 64
CASES = [
    ("49x16", 49, 16, False),
    ("49x32", 49, 32, False),
    ("49x77", 49, 77, False),
    ("196x77", 196, 77, False),
    ("49x32 structured", 49, 32, True),
    ("196x77 structured", 196, 77, True),
]


def make_costs(n: int, m: int, structured: bool, seed: int) -> np.ndarray:
    """`[BATCH, n, m]` float32 costs 1 − cos(patch, word)."""
    rng = np.random.default_rng(seed)
    patches = rng.normal(size=(BATCH, n, DIM))
    words = rng.normal(size=(BATCH, m, DIM))
    if structured:
        # Every word leans towards one shared direction, which a few patches hold strongly:
        # all words want the same patches.
        shared = rng.normal(size=(BATCH, 1, DIM))
        words = words * 0.3 + shared
        patches = patches + shared * rng.uniform(0, 3, size=(BATCH, n, 1))
    patches /= np.linalg.norm(patches, axis=-1, keepdims=True)
    words /= np.linalg.norm(words, axis=-1, keepdims=True)
    return (1.0 - patches @ words.transpose(0, 2, 1)).astype(np.float32)


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def item_totals(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    c = cost.astype(np.float64)
    items = np.arange(c.shape[0])[:, None]
    return np.where(rows >= 0, c[items, rows.clip(0), cols.clip(0)], 0.0).sum(axis=1)


def time_pathfinding(binary: Path, cost: np.ndarray, repeats: int) -> tuple[float, float]:
    with tempfile.NamedTemporaryFile(suffix=".f32") as f:
        f.write(np.ascontiguousarray(cost, dtype="<f4").tobytes())
        f.flush()
        args = [str(binary), f.name, *map(str, cost.shape), str(repeats)]
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout.split()
    return float(out[0]), float(out[1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-pathfinding", action="store_true")
    args = parser.parse_args()

    all_threads = os.cpu_count() or 1
    saved = lightclip.get_num_threads()
    binary = None if args.no_pathfinding else build_example("bench_pathfinding")
    header = (
        f"{'case (patches×words)':<20} {'lc 1 thr':>9} {f'lc {all_threads} thr':>9} "
        f"{'scipy':>9} {'pathfind':>9} {'× 1 thr':>8} {'× all':>7} {'× pathf':>8}  exact"
    )
    print(f"B={BATCH}, ms per batch (best of {args.repeats}); ×: speed-up over scipy looped")
    print(header)
    print("-" * len(header))
    exact_everywhere, target_met = True, True
    try:
        for seed, (name, n, m, structured) in enumerate(CASES):
            cost32 = make_costs(n, m, structured, seed)
            cost64 = cost32.astype(np.float64)  # scipy's own dtype
            tensor = torch.from_numpy(cost32)

            def scipy_loop(c=cost64):
                return [linear_sum_assignment(item) for item in c]

            t_scipy = best_time(scipy_loop, max(1, args.repeats // 2))
            lightclip.set_num_threads(1)
            t_one = best_time(lambda t=tensor: lightclip.match_tokens(t), args.repeats)
            lightclip.set_num_threads(all_threads)
            t_all = best_time(lambda t=tensor: lightclip.match_tokens(t), args.repeats)

            reference = np.array([cost64[b][r, c].sum() for b, (r, c) in enumerate(scipy_loop())])
            rows, cols = (x.numpy() for x in lightclip.match_tokens(tensor))
            ours = item_totals(cost32, rows, cols)
            exact = np.allclose(ours, reference, rtol=1e-5, atol=1e-6)
            t_path, path_total = float("nan"), float("nan")
            if binary is not None:
                t_path, path_total = time_pathfinding(binary, cost32, max(1, args.repeats // 2))
                # Integer scaling rounds each cost to within 5e-7: the batch totals agree to
                # within 5e-7 per matched pair.
                exact &= abs(path_total - reference.sum()) <= 5e-7 * min(n, m) * BATCH + 1e-6
            exact_everywhere &= exact
            target_met &= t_scipy / t_all >= (5.0 if structured else 10.0)
            print(
                f"{name:<20} {t_one:9.2f} {t_all:9.2f} {t_scipy:9.2f} {t_path:9.2f} "
                f"{t_scipy / t_one:7.1f}× {t_scipy / t_all:6.1f}× {t_scipy / t_path:7.1f}×"
                f"  {'yes' if exact else 'NO'}",
                flush=True,
            )
    finally:
        lightclip.set_num_threads(saved)
    print(
        f"target (all threads ≥10× scipy, ≥5× structured): {'met' if target_met else 'NOT met'}"
        f"; same optimum as scipy everywhere: {'yes' if exact_everywhere else 'NO'}"
    )
    return 0 if exact_everywhere else 1


if __name__ == "__main__":
    sys.exit(main())
