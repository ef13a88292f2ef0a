"""Evaluation speed, side by side with the references, in one run.

1. Retrieval metrics: lightclip's block-wise ranks vs the CLIP_benchmark way (the full N x T
   score matrix, ``topk`` per query). Prints time and the score-buffer size of each.
2. End-to-end Flickr8k dev retrieval (skipped when the shards are absent): ``evaluate_retrieval``
   over the Rust ``DataPipeline`` vs a plain-Python reference that reads the tar with
   ``tarfile``, decodes with PIL and preprocesses with open_clip's own eval transform, for the
   same model (``clip-tiny-mnv2``, random weights: speed does not depend on them).

    .venv/bin/python benchmarks/bench_eval.py [--images 300] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import tarfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import lightclip
from lightclip.evaluate import evaluate_retrieval
from lightclip.metrics import retrieval_metrics
from lightclip.validation import eval_pipeline_options

FLICKR8K = Path(
    os.environ.get(
        "LIGHTCLIP_FLICKR8K", Path(__file__).resolve().parents[2] / "shared" / "data" / "flickr8k"
    )
)


def clip_benchmark_recall(img, txt, owner, ks=(1, 5, 10)):
    """CLIP_benchmark's recall: full score matrix, topk, any positive in the top k."""
    scores = txt @ img.T  # [T, N]
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(owner)), owner] = True
    out = {}
    for k in ks:
        top = scores.topk(k, dim=1).indices
        out[f"image_retrieval_recall@{k}"] = positive.gather(1, top).any(1).float().mean().item()
        top = scores.T.topk(k, dim=1).indices
        out[f"text_retrieval_recall@{k}"] = positive.T.gather(1, top).any(1).float().mean().item()
    return out


def bench_metrics(n_images: int = 2000, per_image: int = 5, dim: int = 512) -> None:
    gen = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(n_images, dim, generator=gen), dim=1)
    owner = torch.arange(n_images).repeat_interleave(per_image)
    txt = F.normalize(img[owner] + 1.5 * torch.randn(len(owner), dim, generator=gen), dim=1)
    best = {}
    for label, fn in [
        ("lightclip block-wise", lambda: retrieval_metrics(img, txt, owner, block_size=256)),
        ("CLIP_benchmark full matrix", lambda: clip_benchmark_recall(img, txt, owner)),
    ]:
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
        best[label] = (min(times), result)
    ours, ref = best["lightclip block-wise"], best["CLIP_benchmark full matrix"]
    for key, value in ref[1].items():  # no ties with random floats: both rules agree
        assert abs(ours[1][key] - value) < 1e-9, (key, ours[1][key], value)
    t = len(owner)
    print(f"retrieval metrics, {n_images} images x {t} captions, dim {dim} (same recalls):")
    print(
        f"  lightclip block-wise (256 rows): {ours[0] * 1e3:8.1f} ms, score buffer "
        f"{256 * t * 4 / 2**20:.1f} MiB (+ mean/median ranks)"
    )
    print(
        f"  CLIP_benchmark full matrix     : {ref[0] * 1e3:8.1f} ms, score buffer "
        f"{n_images * t * 4 / 2**20:.1f} MiB"
    )
    print(
        f"  ratio (reference / lightclip)  : {ref[0] / ours[0]:.2f}x time, "
        f"{n_images / 256:.1f}x memory"
    )


def reference_flickr8k(model, shard: Path, n_images: int, batch_size: int) -> tuple[float, dict]:
    """tarfile + PIL + open_clip's eval transform, then the same encode and metrics."""
    import open_clip
    from PIL import Image

    transform = open_clip.image_transform(model.config.image_size, is_train=False)
    tokenizer = lightclip.get_tokenizer(model.config.context_length)
    t0 = time.perf_counter()
    images, captions = {}, {}
    with tarfile.open(shard) as tar:
        for member in tar:
            key, ext = member.name.rsplit(".", 1)
            if ext == "jpg":
                images[key] = transform(Image.open(io.BytesIO(tar.extractfile(member).read())))
            elif ext == "json":
                captions[key] = json.loads(tar.extractfile(member).read())["captions"]
            if len(captions) >= n_images and len(images) >= n_images:
                break
    keys = sorted(images)[:n_images]
    img_feats, txt_feats, owner = [], [], []
    with torch.inference_mode():
        for s in range(0, len(keys), batch_size):
            chunk = keys[s : s + batch_size]
            img_feats.append(
                model.encode_image(torch.stack([images[k] for k in chunk]), normalize=True)
            )
            texts = [c for k in chunk for c in captions[k]]
            owner += [s + i for i, k in enumerate(chunk) for _ in captions[k]]
            txt_feats.append(model.encode_text(tokenizer(texts), normalize=True))
    metrics = retrieval_metrics(torch.cat(img_feats), torch.cat(txt_feats), torch.tensor(owner))
    return time.perf_counter() - t0, metrics


def bench_flickr8k(n_images: int, threads: int | None, batch_size: int = 100) -> None:
    shard = FLICKR8K / "dev-000000.tar"
    if not shard.exists():
        print(f"Flickr8k not found at {FLICKR8K}; skipping the end-to-end comparison")
        return
    model = lightclip.create_model("clip-tiny-mnv2", seed=0).export().eval()
    data = lightclip.DataPipeline(
        str(shard),
        all_captions=True,
        **eval_pipeline_options(
            model, image_size=None, batch_size=batch_size, threads=threads, seed=0
        ),
    )
    t0 = time.perf_counter()
    ours = evaluate_retrieval(model, data, max_batches=-(-n_images // batch_size))
    ours_s = time.perf_counter() - t0
    ref_s, _ = reference_flickr8k(model, shard, n_images, batch_size)
    n = int(ours.stats["num_images"])
    print(
        f"Flickr8k dev retrieval, {n} images / {int(ours.stats['num_texts'])} captions, "
        f"clip-tiny-mnv2 at 64 px, torch threads {torch.get_num_threads()}:"
    )
    print(
        f"  lightclip evaluate_retrieval (Rust pipeline): {n / ours_s:7.1f} images/s "
        f"(image tower alone {ours.stats['image_encode_images_per_second']:.1f} images/s)"
    )
    print(f"  tarfile + PIL + open_clip transform         : {n / ref_s:7.1f} images/s")
    print(f"  ratio (lightclip / reference)               : {ref_s / ours_s:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None, help="data pipeline threads")
    args = parser.parse_args()
    bench_metrics()
    bench_flickr8k(args.images, args.threads)


if __name__ == "__main__":
    main()
