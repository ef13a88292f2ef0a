"""``lightclip eval`` against CLIP_benchmark's own evaluation code, on the same export and the
same data in CLIP_benchmark's webdataset layout, and the layout's reading and refusals.

The data sets are written by CLIP_benchmark's own converters
(``clip_benchmark.webdataset_builder.convert_retrieval_dataset`` / ``convert_dataset``): a
retrieval set of 12 PNG pictures with 2-5 captions each (one ``.txt`` per picture, a caption
per line, ``dataset_type.txt`` = retrieval) and a classification set of 12 pictures in 6
classes (``.cls``, ``classnames.txt`` with multi-word names, a templates file with ``{c}``).
The model is lightclip-tiny-mnv2 trained a few contrastive steps on those pictures (so scores
are spread, not near-ties), exported to open_clip's format. CLIP_benchmark reads the export
with open_clip (``local-dir:``, open_clip's preprocessing and tokenizer) and the data with its
``build_dataset("wds/...")``; lightclip reads both itself through ``lightclip eval``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("open_clip")
pytest.importorskip("clip_benchmark")
pytest.importorskip("webdataset")

import lightclip  # noqa: E402
from lightclip.cli import main as lightclip_main  # noqa: E402

COLOURS = ["red", "green", "blue", "yellow", "purple", "white"]
SHAPES = ["square", "stripe", "ring"]
THINGS = [
    "apple",
    "boat",
    "cloud",
    "dog",
    "egg",
    "fern",
    "gate",
    "hill",
    "ink",
    "jar",
    "kite",
    "lamp",
]
CLASS_NAMES = ["red square", "green stripe", "blue ring", "sea lion", "yellow square", "dusk"]
TEMPLATES = ["a photo of a {c}.", "a blurry picture of the {c}.", "{c}"]
SIZES = [(80, 60), (64, 64), (100, 70), (50, 90)]


def picture(index: int) -> np.ndarray:
    """A PNG-able picture: a coloured shape on seeded noise, in assorted sizes and aspects."""
    rng = np.random.default_rng(index)
    w, h = SIZES[index % len(SIZES)]
    pixels = rng.integers(0, 90, size=(h, w, 3), dtype=np.uint8)
    colour = np.array([(index * 97) % 256, (index * 53 + 80) % 256, (index * 31 + 160) % 256])
    shape = index % len(SHAPES)
    ys, xs = np.mgrid[0:h, 0:w]
    if shape == 0:
        mask = (abs(xs - w / 2) < w / 4) & (abs(ys - h / 2) < h / 4)
    elif shape == 1:
        mask = (xs // 8) % 2 == 0
    else:
        r = np.hypot(xs - w / 2, ys - h / 2)
        mask = (r > min(w, h) / 5) & (r < min(w, h) / 3)
    pixels[mask] = colour
    return pixels


def png_bytes(index: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(picture(index)).save(buffer, format="png")
    return buffer.getvalue()


def captions_of(index: int) -> list[str]:
    """2-5 captions, all different (an identical caption under two pictures would tie)."""
    colour, shape = COLOURS[index % len(COLOURS)], SHAPES[index % len(SHAPES)]
    thing = THINGS[index]
    variants = [
        f"a {colour} {shape} on noise",
        f"a picture of the {thing}",
        f"the {shape} beside a {thing}",
        f"noise around a {colour} {thing}",
        f"{thing} in {colour} and grey",
    ]
    return [variants[0] + ("" if index < len(COLOURS) else " again")] + variants[1 : 2 + index % 4]


class Pairs(list):
    """(image bytes, target) pairs with the attributes CLIP_benchmark's converters read."""

    classes: list[str] | None = None
    templates: list[str] | None = None


def write_with_clip_benchmark(root: Path, pairs: Pairs, *, retrieval: bool) -> None:
    from clip_benchmark.webdataset_builder import convert_dataset, convert_retrieval_dataset

    convert = convert_retrieval_dataset if retrieval else convert_dataset
    convert(pairs, "test", str(root), image_format="png", verbose=False)


def train_a_few_steps(model: torch.nn.Module, steps: int = 8) -> None:
    """Plain CLIP loss on the retrieval pictures, so the embeddings spread apart; then batch
    norm's running statistics are set to these pictures' (a few steps of momentum would leave
    them near their initial values, where the image tower maps every picture to one point)."""
    from PIL import Image

    size = model.config.image_size
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)
    pixels = [np.array(Image.fromarray(picture(i)).resize((size, size))) for i in range(12)]
    images = torch.stack([torch.from_numpy(p).permute(2, 0, 1) / 255.0 for p in pixels])
    images = (images - mean) / std
    tokenizer = lightclip.get_tokenizer(context_length=model.config.context_length)
    texts = tokenizer([captions_of(i)[0] for i in range(12)])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    target = torch.arange(12)
    model.train()
    for _ in range(steps):
        image_features = F.normalize(model.encode_image(images), dim=-1)
        text_features = F.normalize(model.encode_text(texts), dim=-1)
        logits = 10.0 * image_features @ text_features.t()
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.reset_running_stats()
                module.momentum = None  # a cumulative average: one batch sets them exactly
        model.encode_image(images)
    model.eval()


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """The export, the retrieval root and the classification root."""
    from lightclip.openclip_export import export_openclip

    base = tmp_path_factory.mktemp("parity")
    torch.manual_seed(0)
    model = lightclip.create_model("lightclip-tiny-mnv2")
    train_a_few_steps(model)
    export = export_openclip(model.export(), base / "export")

    retrieval = Pairs((png_bytes(i), captions_of(i)) for i in range(12))
    write_with_clip_benchmark(base / "retrieval", retrieval, retrieval=True)

    labelled = Pairs((png_bytes(100 + i), i % len(CLASS_NAMES)) for i in range(12))
    labelled.classes, labelled.templates = CLASS_NAMES, TEMPLATES
    write_with_clip_benchmark(base / "classification", labelled, retrieval=False)
    return export, base / "retrieval", base / "classification"


def clip_benchmark_metrics(export: Path, root: Path, task: str) -> dict[str, float]:
    """CLIP_benchmark's numbers: open_clip's model, transform and tokenizer; its data loading
    (``build_dataset("wds/...")``) and its metric code."""
    import open_clip
    from clip_benchmark.datasets.builder import build_dataset, image_captions_collate_fn
    from clip_benchmark.metrics import zeroshot_classification, zeroshot_retrieval

    from lightclip.openclip_export import load_openclip

    model, _, preprocess = load_openclip(export)
    model.eval()
    tokenizer = open_clip.get_tokenizer(f"local-dir:{export}")
    dataset = build_dataset("wds/parity", root=str(root), transform=preprocess, task=task)
    if task == "zeroshot_retrieval":
        loader = torch.utils.data.DataLoader(
            dataset, batch_size=5, collate_fn=image_captions_collate_fn
        )
        metrics = zeroshot_retrieval.evaluate(
            model, loader, tokenizer, "cpu", amp=False, recall_k_list=[1, 5, 10]
        )
    else:
        loader = torch.utils.data.DataLoader(dataset, batch_size=5)
        metrics = zeroshot_classification.evaluate(
            model, loader, tokenizer, dataset.classes, dataset.templates, "cpu", amp=False
        )
    return {k: float(v) for k, v in metrics.items()}


def lightclip_eval(export: Path, dataset: str, tmp_path: Path, *extra: str) -> dict:
    out = tmp_path / "result.json"
    argv = ["eval", "--checkpoint", str(export), "--dataset", dataset, "--device", "cpu"]
    assert lightclip_main([*argv, "--batch-size", "5", "--output", str(out), *extra]) == 0
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- agreement


def test_retrieval_metrics_equal_clip_benchmark(setting, tmp_path):
    export, root, _ = setting
    reference = clip_benchmark_metrics(export, root, "zeroshot_retrieval")
    record = lightclip_eval(export, str(root / "test" / "0.tar"), tmp_path)
    assert record["task"] == "zeroshot_retrieval"  # from dataset_type.txt
    assert record["stats"]["num_texts"] == sum(len(captions_of(i)) for i in range(12))
    ours = {k: record["metrics"][k] for k in reference}
    assert ours == pytest.approx(reference, abs=1e-6)  # CLIP_benchmark: float32
    # Not all perfect or all chance: the comparison can see a ranking difference.
    assert 0 < reference["image_retrieval_recall@1"] < 1


def test_classification_metrics_equal_clip_benchmark(setting, tmp_path):
    export, _, root = setting
    reference = clip_benchmark_metrics(export, root, "zeroshot_classification")
    record = lightclip_eval(export, str(root / "test" / "0.tar"), tmp_path)
    assert record["task"] == "zeroshot_classification"
    assert record["stats"]["num_classes"] == len(CLASS_NAMES)
    ours = {k: record["metrics"][k] for k in reference}
    assert ours == pytest.approx(reference, abs=1e-6)  # CLIP_benchmark: float32
