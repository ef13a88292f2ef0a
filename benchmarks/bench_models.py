"""Model cost on this machine: parameter counts and forward+backward time per tower, and one
LightCLIP training step against the equivalent plain-CLIP step.

    .venv/bin/python benchmarks/bench_models.py            # towers at 64 and 224 px, batch 32
    .venv/bin/python benchmarks/bench_models.py --quick    # 64 px only, fewer repeats
    .venv/bin/python benchmarks/bench_models.py --threads 1  # steadiest on a shared machine

Each timing is printed as wall/CPU seconds (median); with one thread the CPU time is close to
what the call costs on an idle core, whatever else the machine is running.

The ratio printed for the training step is LightCLIP (token head + fusion + MLM, sparse MLM
logits) over plain CLIP with the same towers, measured side by side in this run.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

import lightclip
from lightclip.models import LightCLIP

PAPER_PARAMS = {"resnet18": 12.51e6, "mobilenetv2": 2.45e6, "swin": 7.11e6}


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median (wall seconds, process CPU seconds) per call. On a shared machine the CPU time
    is the steadier figure: with one thread it is what the call costs without contention."""
    fn()  # warm-up (allocator, oneDNN primitive caches)
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def caption_batch(batch: int, context: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """Random captions of 8-20 words (Flickr8k-like lengths), masked BERT-style at 15%."""
    text = torch.zeros(batch, context, dtype=torch.long)
    text[:, 0] = lightclip.models.SOT_TOKEN_ID
    lengths = torch.randint(8, min(21, context - 1), (batch,), generator=gen)
    for b, n in enumerate(lengths.tolist()):
        text[b, 1 : n + 1] = torch.randint(1, 49000, (n,), generator=gen)
        text[b, n + 1] = lightclip.models.EOT_TOKEN_ID
    words = (text > 0) & (text < lightclip.models.SOT_TOKEN_ID)
    chosen = words & (torch.rand(batch, context, generator=gen) < 0.15)
    labels = torch.where(chosen, text, torch.full_like(text, -100))
    masked = torch.where(chosen, torch.full_like(text, lightclip.models.MASK_TOKEN_ID), text)
    return {"text": text, "masked_text": masked, "mlm_labels": labels}


def training_step(
    model: LightCLIP, images: torch.Tensor, batch: dict[str, torch.Tensor], opt
) -> None:
    out = model(
        images, batch["text"], masked_text=batch["masked_text"], mlm_labels=batch["mlm_labels"]
    )
    logits = out["logit_scale"] * out["image_features"] @ out["text_features"].T
    target = torch.arange(images.shape[0])
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
    if out["image_tokens"] is not None:
        # Stand-in for the Hungarian token loss (its matching runs in Rust on detached values).
        sim = out["image_tokens"] @ out["word_tokens"].transpose(1, 2)
        loss = loss + 0.1 * (1 - sim.max(dim=1).values.mean())
    if out["mlm_logits_text"] is not None:
        labels = out["mlm_labels"]
        ce = F.cross_entropy(out["mlm_logits_text"], labels)
        if out["mlm_logits_fused"] is not None:
            ce = 0.5 * (ce + F.cross_entropy(out["mlm_logits_fused"], labels))
        loss = loss + 0.1 * ce
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def bench_towers(sizes: list[int], batch: int, repeats: int) -> None:
    print(
        f"\nimage towers: forward+backward of encode_image, batch {batch}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"{'tower':<12} {'params':>11} {'paper':>7} "
        + " ".join(f"{s:>4}px wall/cpu s" for s in sizes)
    )
    for name in ("clip-r18", "clip-mnv2", "clip-swin-nano"):
        model = lightclip.create_model(name, seed=0)
        tower = model.config.image_tower
        row = (
            f"{tower:<12} {model.num_parameters('visual'):>11,} {PAPER_PARAMS[tower] / 1e6:>6.2f}M"
        )
        for size in sizes:
            images = torch.randn(batch, 3, size, size)
            wall, cpu = timed(lambda m=model, x=images: m.encode_image(x).sum().backward(), repeats)
            row += f" {wall:>8.3f}/{cpu:<7.3f}"
        print(row, flush=True)
    model = lightclip.create_model("clip-mnv2", seed=0)
    gen = torch.Generator().manual_seed(0)
    text = caption_batch(batch, model.config.context_length, gen)["text"]
    wall, cpu = timed(lambda: model.encode_text(text).sum().backward(), repeats)
    print(
        f"{'text 8x512':<12} {model.num_parameters('text'):>11,} {'':>7} "
        f"context 77: {wall:.3f}/{cpu:.3f}"
    )


def bench_step(name: str, batch: int, repeats: int) -> float:
    model = lightclip.create_model(name, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, model.config.image_size, model.config.image_size, generator=gen)
    texts = caption_batch(batch, model.config.context_length, gen)
    wall, cpu = timed(lambda: training_step(model, images, texts, opt), repeats)
    print(
        f"{name:<22} params {model.num_parameters():>11,}  step wall {wall:.3f} s, cpu {cpu:.3f} s",
        flush=True,
    )
    return cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="64 px only, fewer repeats")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--preset", default="tiny-mnv2", help="CPU preset for the training step")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = 2 if args.quick else 3
    print(f"training step, batch 64, {torch.get_num_threads()} threads (median of {repeats + 2})")
    light = bench_step(f"lightclip-{args.preset}", 64, repeats + 2)
    plain = bench_step(f"clip-{args.preset}", 64, repeats + 2)
    print(
        f"ratio lightclip/clip step cpu time: {light / plain:.2f}x "
        "(the price of the training-only heads)"
    )
    bench_towers([64] if args.quick else [64, 224], 32, repeats)


if __name__ == "__main__":
    main()
