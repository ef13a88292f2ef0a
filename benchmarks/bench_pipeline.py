"""Data pipeline throughput against what users run, side by side in one run.

Reference: Python's tarfile reading webdataset shards + Pillow decode + torchvision's MoCo-v2
transforms (RandomResizedCrop 0.2-1, ColorJitter 0.4/0.4/0.4/0.1 p 0.8, RandomGrayscale 0.2,
GaussianBlur sigma 0.1-2 p 0.5, flip, normalise) + open_clip's tokenizer, default collate; in
this process and in a DataLoader with 2 worker processes. lightclip: DataPipeline with the same
image augmentations (plus EDA and MLM masking, which the reference does not do), 1 thread and
all threads. Both read Flickr8k's train shards (../shared/data/flickr8k) at 112 and 224 px.

"per core" compares samples per CPU-second (process CPU time, workers included), so it stays
meaningful on a busy machine; samples/s is wall clock. Target: lightclip >= 5x the one-process
reference per core at both sizes. Then EDA's share of lightclip's per-sample time at 64 and 224
px (1 thread, EDA on every caption against EDA off, taking turns; also EDA's own time per caption
through `eda_augment` over that per-sample time). Target: under 1 %. Then RSS over many batches
(flat = no leak).

Needs Pillow and torchvision (the build for torch 2.11.0): both are dev dependencies, so
`make setup` / `make bench` install them; by hand, `uv pip install Pillow` and
`uv pip install --no-deps torchvision==0.26.0` (--no-deps so it cannot replace torch).

    python benchmarks/bench_pipeline.py [--samples 1024] [--rss-batches 2000] [--eda-only]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import resource
import sys
import tarfile
import time
from pathlib import Path

import torch

import lightclip
from open_clip_reference import simple_tokenizer

DATA = Path(
    os.environ.get(
        "LIGHTCLIP_FLICKR8K", Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    )
)
BATCH = 64


def shards() -> list[str]:
    return sorted(str(p) for p in DATA.glob("train-*.tar"))


class ReferenceDataset(torch.utils.data.IterableDataset):
    """tarfile + PIL + torchvision + open_clip tokenizer, the way a user's webdataset loader
    works (each DataLoader worker takes every n-th shard)."""

    def __init__(self, paths: list[str], size: int, limit: int) -> None:
        from torchvision import transforms as T

        self.paths, self.limit = paths, limit
        kernel = int(0.1 * size) // 2 * 2 + 1
        self.transform = T.Compose(
            [
                T.RandomResizedCrop(size, scale=(0.2, 1.0), antialias=True),
                T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
                T.RandomGrayscale(p=0.2),
                T.RandomApply([T.GaussianBlur(kernel, sigma=(0.1, 2.0))], p=0.5),
                T.RandomHorizontalFlip(),
                T.ToTensor(),
                T.Normalize(lightclip.data.CLIP_MEAN, lightclip.data.CLIP_STD),
            ]
        )
        self.tokenizer = simple_tokenizer()  # set-up, outside the timed loop (forked)

    def __iter__(self):
        from PIL import Image

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        limit = self.limit // nw
        produced = 0
        for path in self.paths[wid::nw] * 100:
            group: dict[str, bytes] = {}
            key = None
            with tarfile.open(path) as tar:
                for member in tar:
                    k, ext = member.name.split(".", 1)
                    if key is not None and k != key:
                        yield self.sample(group, Image)
                        produced += 1
                        if produced >= limit:
                            return
                        group = {}
                    key = k
                    group[ext] = tar.extractfile(member).read()

    def sample(self, group, Image):
        image = Image.open(io.BytesIO(group["jpg"])).convert("RGB")
        caption = random.choice(json.loads(group["json"])["captions"])
        text = self.tokenizer(caption, context_length=77)[0]
        return {"image": self.transform(image), "text": text}


def cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def measure(batches) -> tuple[int, float, float]:
    cpu0, t0 = cpu_seconds(), time.perf_counter()
    n = 0
    for batch in batches:
        n += batch["image"].shape[0]
    return n, time.perf_counter() - t0, cpu_seconds() - cpu0


def reference_in_process(size: int, limit: int):
    from torch.utils.data import default_collate

    dataset = ReferenceDataset(shards(), size, limit)

    def batches():
        buf = []
        for sample in dataset:
            buf.append(sample)
            if len(buf) == BATCH:
                yield default_collate(buf)
                buf = []

    return batches()


def reference_dataloader(size: int, limit: int):
    dataset = ReferenceDataset(shards(), size, limit)
    return iter(torch.utils.data.DataLoader(dataset, batch_size=BATCH, num_workers=2))


def lightclip_batches(size: int, limit: int, threads: int | None, eda_prob: float | None = None):
    """Builds the pipeline (vocabulary, WordNet: set-up, not timed), then yields `limit`
    samples' worth of batches. `eda_prob` None: the pipeline's default for the size."""
    pattern = str(DATA / "train-{000000..000005}.tar")
    pipe = lightclip.DataPipeline(
        pattern,
        batch_size=BATCH,
        image_size=size,
        threads=threads,
        text=lightclip.TextConfig(eda_prob=eda_prob),
    )

    def batches():
        n = 0
        while n < limit:
            for batch in pipe:
                yield batch
                n += BATCH
                if n >= limit:
                    return

    return batches()


def flickr8k_captions(limit: int) -> list[str]:
    out: list[str] = []
    for path in shards():
        with tarfile.open(path) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    out += json.load(tar.extractfile(member))["captions"]
                    if len(out) >= limit:
                        return out[:limit]
    return out


def eda_share(sizes: list[int], samples: int, rounds: int = 3) -> bool:
    """EDA's share of the pipeline's per-sample CPU time, 1 thread: EDA on every caption
    (eda_prob 1, strength 0.1, DeCLIP mode) against EDA off, taking turns `rounds` times, each
    keeping its best; and, steadier, EDA's own CPU time per caption through `eda_augment` over
    the EDA-off time per sample."""
    captions = flickr8k_captions(20_000)
    before = lightclip.get_num_threads()
    lightclip.set_num_threads(1)
    try:
        lightclip._core.eda_augment(captions, 0)  # warm-up (WordNet loaded)
        eda = min(measure_cpu(lambda: lightclip._core.eda_augment(captions, 0)) for _ in range(3))
    finally:
        lightclip.set_num_threads(before)
    eda_us = eda / len(captions) * 1e6
    print(f"\nEDA's share of the per-sample time (1 thread; EDA alone: {eda_us:.2f} us/caption)")
    print(f"{'size':>4} {'EDA off ms':>10} {'EDA on ms':>10} {'on/off':>8} {'EDA alone':>10}")
    ok = True
    for size in sizes:
        best = {0.0: float("inf"), 1.0: float("inf")}
        for _ in range(rounds):
            for prob in best:
                n, _, cpu = measure(lightclip_batches(size, samples, 1, eda_prob=prob))
                best[prob] = min(best[prob], cpu / n)
        off, on = best[0.0], best[1.0]
        alone = eda_us * 1e-6 / off
        ok &= alone < 0.01
        print(
            f"{size:>4} {off * 1e3:>10.3f} {on * 1e3:>10.3f} {(on - off) / off:>+8.2%} "
            f"{alone:>10.3%}"
        )
    print("target: EDA under 1 % of the per-sample time: " + ("met" if ok else "NOT met"))
    return ok


def measure_cpu(fn) -> float:
    start = time.process_time()
    fn()
    return time.process_time() - start


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def rss_check(batches: int) -> None:
    pattern = str(DATA / "train-{000000..000005}.tar")
    pipe = lightclip.DataPipeline(pattern, batch_size=32, image_size=112)
    seen, marks = 0, []
    while seen < batches:
        for _ in pipe:
            seen += 1
            if seen in (batches // 10, batches // 2, batches) or seen % 1000 == 0:
                marks.append((seen, rss_mib()))
            if seen >= batches:
                break
    print(
        f"\nRSS over {batches:,} batches of 32 at 112 px (MiB): "
        + ", ".join(f"{b}: {m:.0f}" for b, m in marks)
    )
    first = marks[0][1]
    print(f"  growth after the first tenth: {marks[-1][1] - first:+.1f} MiB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=1024)
    parser.add_argument("--rss-batches", type=int, default=2000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--eda-sizes", type=int, nargs="+", default=[64, 224])
    parser.add_argument("--eda-only", action="store_true", help="only EDA's share")
    args = parser.parse_args()
    if not shards():
        print(f"skipped: Flickr8k shards not found in {DATA}")
        return 0
    try:
        import PIL  # noqa: F401
        import torchvision  # noqa: F401
    except ImportError as e:
        print(f"skipped: the reference needs Pillow and torchvision ({e}); see the docstring")
        return 0
    torch.set_num_threads(1)  # the reference's transforms run in one thread per process
    if args.eda_only:
        eda_share(args.eda_sizes, args.samples)
        return 0
    cores = os.cpu_count() or 1
    threads = lightclip.DataPipeline("synthetic", batch_size=1, image_size=8).threads
    print(
        f"Flickr8k train shards (128 px JPEGs), batch {BATCH}, {args.samples} samples per run, "
        f"{cores} cores, lightclip threads={threads}"
    )
    print(f"{'size':>4} {'pipeline':<38} {'samples/s':>10} {'CPU ms/sample':>14} {'per core':>9}")
    ok = True
    for size in args.sizes:
        runs = [
            (
                "reference: tarfile+PIL+torchvision",
                lambda size=size: reference_in_process(size, args.samples),
            ),
            (
                "reference: DataLoader, 2 workers",
                lambda size=size: reference_dataloader(size, args.samples),
            ),
            ("lightclip, 1 thread", lambda size=size: lightclip_batches(size, args.samples * 2, 1)),
            (
                "lightclip, all threads",
                lambda size=size: lightclip_batches(size, args.samples * 2, None),
            ),
        ]
        base = None
        for name, make in runs:
            n, wall, cpu = measure(make())  # make() does the set-up; measure() times the loop
            per_sample = cpu / n
            base = base or per_sample
            print(
                f"{size:>4} {name:<38} {n / wall:>10.0f} {per_sample * 1e3:>14.2f} "
                f"{base / per_sample:>8.1f}x",
                flush=True,
            )
            if name == "lightclip, 1 thread" and base / per_sample < 5:
                ok = False
    print(
        "target: lightclip >= 5x the one-process reference per core: "
        + ("met" if ok else "NOT met")
    )
    eda_share(args.eda_sizes, args.samples)
    rss_check(args.rss_batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
