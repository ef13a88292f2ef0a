# %% [markdown]
# # The Rust data pipeline
#
# `lightclip.DataPipeline` reads webdataset shards (or CSV/TSV, image folders, the bundled
# synthetic data), decodes, augments (MoCo-v2: random resized crop, colour jitter, grayscale,
# blur, flip), tokenizes, applies EDA and MLM masking, and batches — all in Rust threads, with
# the GIL released. This notebook shows what the augmentation does and measures throughput
# against a torchvision `DataLoader` doing the same work, on Flickr8k when it is available.

# %%
import os
import tempfile
import time

import matplotlib.pyplot as plt
import torch

import lightclip

FAST = os.environ.get("LIGHTCLIP_NOTEBOOK_FAST") == "1"
torch.manual_seed(0)
WORK = tempfile.mkdtemp(prefix="lightclip-notebook-")  # logs and checkpoints go here
print(f"lightclip {lightclip.__version__}, torch {torch.__version__}, fast mode: {FAST}")

# %%
from lightclip.data import CLIP_MEAN, CLIP_STD


def to_rgb(image):
    """A CLIP-normalised [3, H, W] tensor back to an [H, W, 3] array in [0, 1] for imshow."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (image.float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0).numpy()


# %% [markdown]
# ## What augmentation does
#
# To see one picture augmented many times, we save a few held-out images as PNG files and
# list each one 8 times in a CSV file; a training pipeline over that CSV gives 8 independent
# augmentations of the same picture. The first column is the un-augmented (eval) image.

# %%
import csv

originals = next(iter(lightclip.DataPipeline(
    "synthetic:heldout", batch_size=3, image_size=96, train=False,
    reading=lightclip.ReadingConfig(num_samples=16), return_captions=True)))
rows = []
for i, (image, caption) in enumerate(zip(originals["image"], originals["captions"], strict=True)):
    path = os.path.join(WORK, f"picture{i}.png")
    plt.imsave(path, to_rgb(image))
    rows.append((path, caption))

def augmentations(path, caption, augmentation, copies=7):
    table = os.path.join(WORK, "one_picture.csv")
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["filepath", "title"])
        writer.writerows([(path, caption)] * copies)
    data = lightclip.DataPipeline(table, batch_size=copies, image_size=96, train=True,
                                  seed=1, return_captions=True, augmentation=augmentation,
                                  text=lightclip.TextConfig(eda_prob=1.0))
    return next(iter(data))

# What a table of photos gets when no augmentation is given: SPEC's MoCo-v2 recipe at 224 px
# and up; at 128 px and below only the flip (in a short run crops and colour jitter slow a
# small model down more than they help it). The synthetic data's own default is milder than
# MoCo-v2: its captions name colours and places.
MOCO = lightclip.augmentation_defaults("photos.csv", 224)
PHOTO = lightclip.augmentation_defaults("photos.csv", 96)
MILD = lightclip.augmentation_defaults("synthetic", 96)
for title, augmentation in (
    ("photo default at 224 px and up: MoCo-v2 (crop 0.2-1, jitter p=0.8, grayscale, blur, flip)",
     MOCO),
    ("photo default at 96 px: the whole picture, only flipped", PHOTO),
    ("synthetic data's default (crop 0.8-1, no hue shift: captions name colours)", MILD),
):
    fig, axes = plt.subplots(len(rows), 8, figsize=(14, 1.9 * len(rows)))
    for r, (path, caption) in enumerate(rows):
        augmented = augmentations(path, caption, augmentation)
        axes[r, 0].imshow(to_rgb(originals["image"][r]))
        for c in range(7):
            axes[r, c + 1].imshow(to_rgb(augmented["image"][c]))
        if r == 0 and augmentation == MOCO:
            print("EDA on the caption of picture 0:", *augmented["captions"][:3], sep="\n  ")
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ## Throughput: Rust pipeline vs torchvision DataLoader
#
# Both sides do the same work per sample on the Flickr8k webdataset shards: read the tar
# member, decode the JPEG, random resized crop, colour jitter (p=0.8), grayscale (p=0.2),
# Gaussian blur (p=0.5), flip, normalise, tokenize the caption (the torchvision side uses
# lightclip's tokenizer, which is faster than open_clip's, so the comparison favours it), and
# both use every core. It needs `../shared/data/flickr8k` (or `$LIGHTCLIP_FLICKR8K`) and
# torchvision/Pillow; otherwise the measurement is skipped.

# %%
import glob
import importlib.util
from pathlib import Path

flickr = Path(os.environ.get("LIGHTCLIP_FLICKR8K",
                             Path.cwd().resolve().parent.parent / "shared" / "data" / "flickr8k"))
shards = sorted(glob.glob(str(flickr / "train-*.tar")))
have_torchvision = all(importlib.util.find_spec(m) for m in ("torchvision", "PIL"))
SKIP = None
if not shards:
    SKIP = f"no Flickr8k shards at {flickr}; set LIGHTCLIP_FLICKR8K to measure"
elif not have_torchvision:
    SKIP = "torchvision and Pillow are not installed; they are the reference being compared"
if SKIP:
    print("skipping the throughput comparison:", SKIP)
else:
    print(len(shards), "shards in", flickr)

# %%
IMAGE_SIZE = 64 if FAST else 224
BATCH = 16 if FAST else 64
BATCHES = 3 if FAST else 30
WORKERS = os.cpu_count() or 1

def images_per_second(batches):
    iterator = iter(batches)
    next(iterator)                       # warm-up: threads / worker processes start
    start, seen = time.perf_counter(), 0
    for _, batch in zip(range(BATCHES), iterator, strict=False):
        seen += batch["image"].shape[0]
    return seen / (time.perf_counter() - start)

if not SKIP:
    rust = lightclip.DataPipeline(shards, batch_size=BATCH, image_size=IMAGE_SIZE, train=True,
                                  threads=WORKERS)
    rust_rate = images_per_second(rust)
    print(f"Rust pipeline: {rust_rate:7.1f} images/s ({WORKERS} threads)")

# %%
if not SKIP:
    import io
    import tarfile

    from PIL import Image
    from torchvision import transforms as T

    tokenize = lightclip.get_tokenizer(77)
    augment = T.Compose([
        T.RandomResizedCrop(IMAGE_SIZE, scale=(0.2, 1.0)),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([T.GaussianBlur(23, sigma=(0.1, 2.0))], p=0.5),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(CLIP_MEAN, CLIP_STD),
    ])

    class Shards(torch.utils.data.IterableDataset):
        """webdataset-style reading: each worker streams its share of the shards."""

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            mine = shards[info.id::info.num_workers] if info else shards
            for shard in mine:
                with tarfile.open(shard) as tar:
                    pending = {}
                    for member in tar:
                        key, _, ext = member.name.partition(".")
                        pending.setdefault(key, {})[ext] = tar.extractfile(member).read()
                        sample = pending[key]
                        if "jpg" in sample and "txt" in sample:
                            del pending[key]
                            caption = sample["txt"].decode()
                            image = Image.open(io.BytesIO(sample["jpg"])).convert("RGB")
                            yield {"image": augment(image), "text": tokenize(caption)[0]}

    loader = torch.utils.data.DataLoader(Shards(), batch_size=BATCH, num_workers=WORKERS)
    torchvision_rate = images_per_second(loader)
    print(f"torchvision DataLoader: {torchvision_rate:7.1f} images/s ({WORKERS} workers)")
    print(f"Rust / torchvision: {rust_rate / torchvision_rate:.2f}x")
    plt.figure(figsize=(6, 2.5))
    plt.barh(["torchvision DataLoader", "lightclip (Rust)"], [torchvision_rate, rust_rate])
    plt.xlabel(f"images/s at {IMAGE_SIZE} px, batch {BATCH}")
    plt.show()
else:
    print("skipped:", SKIP)

# %%
if not SKIP:
    print("Rust pipeline counters:", rust.stats())
