"""Same model, same data: ``lightclip eval`` against CLIP_benchmark's own evaluation code.

Exports a trained model to open_clip's format, writes the retrieval shard in CLIP_benchmark's
webdataset layout (``test/0.tar`` with every caption of an image as one line of its ``.txt``,
``test/nshards.txt``, ``dataset_type.txt``), then evaluates it twice:

* CLIP_benchmark: the export loaded by open_clip (``local-dir:``) with open_clip's own
  preprocessing and tokenizer, the dataset built by ``build_wds_dataset``, scored by
  ``clip_benchmark.metrics.zeroshot_retrieval.evaluate``;
* lightclip: ``lightclip eval`` on the same export and the same converted folder.

It prints the recall of both and their difference as a Markdown table (and writes JSON)::

    python -m lightclip.experiments.clip_benchmark_agreement \\
        --checkpoint logs/regime/px128/row-clip-seed0/checkpoints/epoch_latest.pt \\
        --data ../shared/data/flickr8k/dev-000000.tar --out logs/agreement

Needs the dev extras (open_clip, clip-benchmark).
"""

from __future__ import annotations

import argparse
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import torch

RECALLS = (1, 5, 10)
PICTURE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def read_samples(shard: str | Path) -> dict[str, dict[str, bytes]]:
    """A shard's members grouped by sample key: ``{key: {extension: bytes}}``."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            file = tar.extractfile(member) if member.isfile() else None
            if file is not None:
                key, _, ext = member.name.partition(".")
                samples.setdefault(key, {})[ext] = file.read()
    return samples


def picture_extension(members: dict[str, bytes]) -> str:
    return next(e for e in PICTURE_EXTENSIONS if e in members)


def write_clip_benchmark_retrieval(shard: str | Path, out_dir: str | Path) -> Path:
    """``shard``'s images and all their captions in CLIP_benchmark's retrieval layout."""
    out = Path(out_dir)
    (out / "test").mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "test" / "0.tar", "w") as tar:
        for key, members in read_samples(shard).items():
            image_ext = picture_extension(members)
            if "json" in members:
                captions = json.loads(members["json"])["captions"]
            else:
                captions = members["txt"].decode().splitlines()
            text = "\n".join(c.strip() for c in captions).encode()
            for name, data in ((f"{key}.{image_ext}", members[image_ext]), (f"{key}.txt", text)):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (out / "test" / "nshards.txt").write_text("1\n")
    (out / "dataset_type.txt").write_text("retrieval\n")
    return out


def clip_benchmark_retrieval(export_dir: Path, layout: Path, batch_size: int) -> dict[str, float]:
    """CLIP_benchmark's numbers: open_clip's model, preprocessing and tokenizer, its metric."""
    import open_clip
    from clip_benchmark.datasets.builder import build_wds_dataset, image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_retrieval

    from ..openclip_export import load_openclip

    model, _, preprocess = load_openclip(export_dir)
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export_dir}")
    dataset = build_wds_dataset("agreement", preprocess, split="test", data_dir=str(layout))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, collate_fn=image_captions_collate_fn
    )
    metrics = zeroshot_retrieval.evaluate(
        model.eval(), loader, tokenizer, "cpu", amp=False, recall_k_list=list(RECALLS)
    )
    return {k: float(v) for k, v in metrics.items()}


def lightclip_retrieval(export_dir: Path, layout: Path, batch_size: int) -> dict[str, float]:
    """``lightclip eval`` on the same export and folder (its stats: how many texts it read)."""
    from ..eval_cli import load_eval_model, make_eval_data
    from ..evaluate import evaluate_retrieval

    model, _ = load_eval_model(None, str(export_dir), "cpu")
    data = make_eval_data(str(layout / "test" / "0.tar"), model, "zeroshot_retrieval", batch_size)
    metrics = evaluate_retrieval(model, data, device="cpu")
    print("lightclip eval read", {k: int(v) for k, v in metrics.stats.items() if "num" in k})
    return {k: float(v) for k, v in metrics.items()}


def lightclip_retrieval_pillow(export_dir: Path, layout: Path, batch_size: int) -> dict[str, float]:
    """lightclip's evaluation on pictures decoded by Pillow (``EvalTransform``), not by the
    Rust pipeline: what is left between the two columns above once the JPEG decoder is equal."""
    from PIL import Image

    from ..eval_cli import load_eval_model
    from ..evaluate import evaluate_retrieval
    from ..models.transforms import EvalTransform

    model, _ = load_eval_model(None, str(export_dir), "cpu")
    transform = EvalTransform(model.config.image_size)
    samples = list(read_samples(layout / "test" / "0.tar").values())
    batches = []
    for start in range(0, len(samples), batch_size):
        chunk = samples[start : start + batch_size]
        pictures = [Image.open(io.BytesIO(m[picture_extension(m)])) for m in chunk]
        batches.append(
            {
                "image": torch.stack([transform(p) for p in pictures]),
                "all_captions": [m["txt"].decode().splitlines() for m in chunk],
            }
        )
    return {k: float(v) for k, v in evaluate_retrieval(model, batches, device="cpu").items()}


def agreement_table(reference: dict[str, float], *columns: dict[str, float]) -> str:
    names = ["lightclip eval", "Δ", "lightclip, Pillow-decoded", "Δ"][: 2 * len(columns)]
    lines = ["| metric | CLIP_benchmark | " + " | ".join(names) + " |"]
    lines.append("|---|" + "---:|" * (1 + len(names)))
    for key in reference:
        a = 100 * reference[key]
        cells = [f"{a:.2f}"]
        for ours in columns:
            b = 100 * ours[key]
            cells += [f"{b:.2f}", f"{b - a:+.2f}"]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="training checkpoint or export")
    parser.add_argument("--data", required=True, help="a retrieval shard (.jpg + .json/.txt)")
    parser.add_argument("--out", required=True, help="folder for the export, layout and JSON")
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    from ..eval_cli import load_eval_model
    from ..openclip_export import export_openclip

    out = Path(args.out)
    model, name = load_eval_model(None, args.checkpoint, "cpu")
    export_dir = export_openclip(model, out / "export")
    layout = write_clip_benchmark_retrieval(args.data, out / "clip_benchmark_layout")
    reference = clip_benchmark_retrieval(export_dir, layout, args.batch_size)
    ours = lightclip_retrieval(export_dir, layout, args.batch_size)
    pillow = lightclip_retrieval_pillow(export_dir, layout, args.batch_size)
    table = agreement_table(reference, ours, pillow)
    print(f"{name} from {args.checkpoint} on {args.data}\n\n{table}")
    record: dict[str, Any] = {
        "clip_benchmark": reference,
        "lightclip": ours,
        "lightclip_pillow_decoded": pillow,
        "model": name,
    }
    (out / "agreement.json").write_text(json.dumps(record, indent=2) + "\n")
    (out / "agreement.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
