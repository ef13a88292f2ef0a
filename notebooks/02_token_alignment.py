# %% [markdown]
# # Token-level alignment: which patch did each word take?
#
# LightCLIP adds a token-level loss: for each positive image–caption pair, the Hungarian
# algorithm (Rust, `lightclip.match_tokens`) assigns every word its own image patch so that the
# total cosine similarity is maximal, and the loss pulls the matched pairs together.
#
# Here we draw those matches over the image for a few held-out pairs:
#
# * the LightCLIP model **before** training (random initialisation),
# * the LightCLIP model **after** a short training run,
# * a plain **CLIP** baseline trained the same way but without the token loss (loss weight 0).
#   The tokens live in the joint embedding space, mapped there by each tower's own projection,
#   so the baseline has them too: whatever structure its matches show comes from the
#   contrastive loss alone.
#
# Both runs are the earlier `make demo`'s (tiny MobileNet-V2, 800 steps of 64 at lr 2e-3, scenes
# that never repeat) at 96 px, where the MobileNetV2 grid has 3×3 patches: one per cell of the
# scenes' 3×3 layout. They take about eleven minutes together on a 2-core CPU
# (`LIGHTCLIP_NOTEBOOK_FAST=1`: a few steps at 64 px, 2×2 patches, to check that the notebook
# runs).

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


# %%
IMAGE_SIZE = 64 if FAST else 96
STEPS = 3 if FAST else 800

def run(recipe, **switches):
    config = lightclip.TrainConfig(
        model="lightclip-tiny-mnv2", recipe=recipe, image_size=IMAGE_SIZE,
        train_data="synthetic:train", train_num_samples=256 if FAST else 65_536, steps=STEPS,
        batch_size=8 if FAST else 64, lr=2e-3, logs=WORK, name=f"align-{recipe}",
        progress=False, export=False, log_every_n_steps=50, **switches,
    )
    start = time.perf_counter()
    result = lightclip.train(config)
    print(f"{recipe}: {result.step} steps in {time.perf_counter() - start:.0f}s")
    return result

lightclip_run = run("lightclip")
# The baseline: hard-label contrastive loss only; its tokens are computed, with weight 0.
clip_run = run("clip", token_loss=True, w_tok=0.0)

# %%
from lightclip.checkpoint import model_from_checkpoint

models = {
    "before training": lightclip.create_model(
        "lightclip-tiny-mnv2", image_size=IMAGE_SIZE, seed=0).eval(),
    "CLIP baseline": model_from_checkpoint(clip_run.checkpoint).eval(),
    "LightCLIP": model_from_checkpoint(lightclip_run.checkpoint).eval(),
}

# %% [markdown]
# First, whether the two runs learned: held-out retrieval over 1,000 scenes of colour–shape
# combinations neither run saw.

# %%
heldout_scenes = 128 if FAST else 1000
for name, model in models.items():
    heldout = lightclip.DataPipeline(
        "synthetic:heldout", batch_size=250, image_size=IMAGE_SIZE,
        text=lightclip.TextConfig(context_length=32), train=False, all_captions=True,
        reading=lightclip.ReadingConfig(num_samples=heldout_scenes))
    recall = lightclip.evaluate_retrieval(model, heldout)
    print(f"{name:16s} held-out R@10: text->image {recall['image_retrieval_recall@10']:.3f}, "
          f"image->text {recall['text_retrieval_recall@10']:.3f}")
print(f"chance: {10 / heldout_scenes:.3f}")

# %%
pairs = next(iter(lightclip.DataPipeline(
    "synthetic:heldout", batch_size=4, image_size=IMAGE_SIZE,
    text=lightclip.TextConfig(context_length=32), train=False,
    reading=lightclip.ReadingConfig(num_samples=64), return_captions=True)))
tokenizer = lightclip.get_tokenizer(32)
print("\n".join(pairs["captions"]))


# %%
@torch.no_grad()
def word_patch_matches(model, batch):
    """Per pair: the similarity [patches, words] and the patch each word was matched
    to (-1 when there are more words than patches: the matching is one-to-one)."""
    out = model.forward_train(batch["image"], batch["text"])
    similarity = out["image_tokens"] @ out["word_tokens"].mT  # unit vectors: cosine
    rows, cols = lightclip.match_tokens(1.0 - similarity, cols_valid=out["word_lengths"])
    results = []
    for b in range(similarity.shape[0]):
        words = int(out["word_lengths"][b])
        patch_of_word = {int(c): int(r) for r, c in zip(rows[b], cols[b], strict=True) if r >= 0}
        results.append((similarity[b, :, :words], [patch_of_word.get(j, -1) for j in range(words)]))
    return results

def word_strings(ids, words):
    # word j of the model is text position j + 1 (position 0 is the start token)
    return [tokenizer.decode([int(t)]).strip() for t in ids[1:words + 1]]

matches = {name: word_patch_matches(m, pairs) for name, m in models.items()}
grid = int(round(matches["LightCLIP"][0][0].shape[0] ** 0.5))
print(f"{grid}x{grid} patches per image")


# %%
def draw_pair(b, max_words=8):
    words = word_strings(pairs["text"][b], pairs["word_lengths"][b])[:max_words]
    fig, axes = plt.subplots(len(models), len(words) + 1,
                             figsize=(1.7 * (len(words) + 1), 1.9 * len(models)))
    for row, (name, per_pair) in enumerate(matches.items()):
        similarity, chosen = per_pair[b]
        axes[row, 0].imshow(to_rgb(pairs["image"][b]))
        axes[row, 0].set_ylabel(name, fontsize=9)
        axes[row, 0].set_xticks([]); axes[row, 0].set_yticks([])
        for j, word in enumerate(words):
            ax = axes[row, j + 1]
            ax.imshow(to_rgb(pairs["image"][b]))
            heat = similarity[:, j].reshape(grid, grid).numpy()
            ax.imshow(heat, cmap="magma", alpha=0.55, extent=(0, IMAGE_SIZE, IMAGE_SIZE, 0))
            if chosen[j] >= 0:
                r, c = divmod(chosen[j], grid)
                cell = IMAGE_SIZE / grid
                ax.add_patch(plt.Rectangle((c * cell, r * cell), cell, cell, fill=False,
                                           edgecolor="cyan", linewidth=2))
            ax.set_title(word if chosen[j] >= 0 else f"({word})", fontsize=9); ax.axis("off")
    fig.suptitle(pairs["captions"][b], fontsize=10)
    plt.tight_layout()
    plt.show()

for b in range(min(3, len(pairs["captions"]))):
    draw_pair(b)

# %% [markdown]
# Heat = cosine similarity of the word with each patch; the cyan box is the patch the
# Hungarian matching gave that word (one patch per word while patches last; a word in
# parentheses got none). The baseline's tokens are shaped only by the contrastive loss on the
# pooled embeddings. Compare the rows for the words that name an object, such as a colour or a
# shape. The matching is one-to-one and a scene has one to three shapes in nine cells, so
# most words of a caption, "a" and "the" as well as "yellow", have to take a background cell,
# and the token loss pulls each of them toward the cell it got. Nothing in it asks for the cell
# that shows the word's object. In our run of this notebook (torch seed 0) the colour and shape
# words of LightCLIP often landed on plain background cells rather than on their shape, and
# the baseline's did too. The mean similarity over the matched pairs is exactly what the token
# loss maximises:

# %%
names = list(matches)
mean_matched = []
for name in names:
    values = []
    for sim, chosen in matches[name]:
        chosen = torch.tensor(chosen)
        words = torch.arange(len(chosen))[chosen >= 0]
        values.append(sim[chosen[chosen >= 0], words].mean())
    mean_matched.append(float(torch.stack(values).mean()))
for name, value in zip(names, mean_matched, strict=True):
    print(f"{name:16s} mean matched cosine {value:.3f}")
plt.figure(figsize=(6, 3))
plt.bar(names, mean_matched)
plt.ylabel("mean matched cosine"); plt.title("word-patch alignment on held-out pairs")
plt.show()

# %% [markdown]
# The token loss reaches what it optimises: its matched similarity ends far above the
# baseline's. Whether that helps is a separate question, and the held-out retrieval at the top
# answers it for this run: the full recipe is not ahead of the plain CLIP baseline. On
# Flickr8k the token loss at its default weight costs retrieval as well (the README's
# "Expected numbers").
