# %% [markdown]
# # Progressive soft labels
#
# LightCLIP replaces the one-hot targets of the contrastive loss with a schedule over training
# progress `p = step / total_steps`:
#
# * `p < r1`: **hard** labels, `Y = I`;
# * `r1 <= p < r2`: **uniform** smoothing, `Y = (1 - α) I + α / (N - 1) (1 - I)`;
# * `p >= r2`: **negative-aware** labels, `Y = (1 - α) I + α W`, with `W` the softmax of the
#   (detached) logits over the negatives — similar negatives get more of the mass.
#
# The targets are built in Rust (`lightclip.soft_labels`); `lightclip.LabelSchedule` holds the
# configuration.

# %%
import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np
import torch

import lightclip

FAST = os.environ.get("LIGHTCLIP_NOTEBOOK_FAST") == "1"
torch.manual_seed(0)
WORK = tempfile.mkdtemp(prefix="lightclip-notebook-")  # logs and checkpoints go here
print(f"lightclip {lightclip.__version__}, torch {torch.__version__}, fast mode: {FAST}")

# %%
schedule = lightclip.LabelSchedule(r1=0.33, r2=0.66, alpha=0.2)
ramped = lightclip.LabelSchedule(r1=0.33, r2=0.66, alpha=0.2, ramp=True, ramp_width=0.1)
progress = np.linspace(0, 1, 401)
for p in (0.1, 0.5, 0.9):
    print(f"p={p}: phase {schedule.phase(p)!r}, weights {schedule.weights(p)}")

fig, axes = plt.subplots(1, 2, figsize=(12, 3.5), sharey=True)
for ax, sched, title in ((axes[0], schedule, "hard switches"), (axes[1], ramped, "ramp=True")):
    w = np.array([sched.weights(p) for p in progress])
    ax.stackplot(progress, w.T, labels=["identity I", "uniform", "negative-aware W"])
    for r in (sched.r1, sched.r2):
        ax.axvline(r, color="k", linestyle="--", linewidth=1)
    ax.set_ylim(0.6, 1.0); ax.set_xlabel("training progress p"); ax.set_title(title)
axes[0].set_ylabel("share of the target mass")
axes[1].legend(loc="lower left")
plt.show()

# %% [markdown]
# ## The targets for a real batch
#
# The negative-aware targets follow the model's own logits, so they only mean something for a
# model that has learned. We train the earlier `make demo`'s run (tiny MobileNet-V2, 800 steps
# of 64 at lr 2e-3) with the plain CLIP recipe (about three minutes on a 2-core CPU, a few
# steps with `LIGHTCLIP_NOTEBOOK_FAST=1`), then compute the image→text and text→image targets
# for one batch of held-out scenes at one progress value inside each phase.

# %%
result = lightclip.train(lightclip.TrainConfig(
    model="lightclip-tiny-mnv2", recipe="clip", train_data="synthetic:train",
    train_num_samples=256 if FAST else 65_536, steps=3 if FAST else 800,
    batch_size=16 if FAST else 64, lr=2e-3, logs=WORK, name="soft-labels", progress=False,
    export=True, log_every_n_steps=100,
))
from lightclip.checkpoint import model_from_checkpoint

model = model_from_checkpoint(result.export_path).eval()

batch = next(iter(lightclip.DataPipeline(
    "synthetic:heldout", batch_size=8, image_size=64,
    text=lightclip.TextConfig(context_length=32), train=False,
    reading=lightclip.ReadingConfig(num_samples=64), return_captions=True)))
with torch.no_grad():
    image = model.encode_image(batch["image"], normalize=True)
    text = model.encode_text(batch["text"], normalize=True)
    logits = model.exp_logit_scale() * image @ text.T   # [images, texts]
print("\n".join(f"{i}: {c}" for i, c in enumerate(batch["captions"])))
hits = int((logits.argmax(dim=1) == torch.arange(len(logits))).sum())
print(f"{hits} of {len(logits)} images score their own caption highest (chance: 1)")

# %%
phases = [(0.1, "hard"), (0.5, "uniform"), (0.9, "negative-aware")]
fig, axes = plt.subplots(2, 4, figsize=(15, 7))
axes[0, 0].imshow(logits.numpy(), cmap="viridis")
axes[0, 0].set_title("logits (image x text)")
axes[1, 0].imshow(logits.softmax(dim=1).numpy(), cmap="viridis")
axes[1, 0].set_title("softmax of the logits, per image")
for col, (p, name) in enumerate(phases, start=1):
    i2t, t2i = lightclip.soft_labels(logits, p, schedule=schedule)
    assert torch.allclose(i2t.sum(dim=1), torch.ones(len(i2t)), atol=1e-5)
    for row, (target, direction) in enumerate(((i2t, "image->text"), (t2i, "text->image"))):
        # The diagonal (the positive, 1 - alpha or 1) would swamp the colour scale: draw the
        # negatives' share only, on a common scale, and give the diagonal in the title.
        negatives = target.clone().fill_diagonal_(float("nan")).numpy()
        ax = axes[row, col]
        im = ax.imshow(negatives, cmap="magma", vmin=0, vmax=0.1)
        ax.set_title(f"p={p} ({name})\n{direction}, diagonal {float(target[0, 0]):.2f}",
                     fontsize=9)
for ax in axes.flat:
    ax.set_xticks([]); ax.set_yticks([])
fig.colorbar(im, ax=axes[:, 1:], shrink=0.6, label="target on a negative (diagonal blank)")
plt.show()

# %% [markdown]
# In the last phase the off-diagonal mass follows the model's own confusions: a caption that
# the model finds close to an image (same colour or shape) receives more of the `α` share than
# an unrelated one. The text→image targets normalise over images (columns of the logits), so
# they are not simply the transpose of the image→text ones.

# %%
i2t, _ = lightclip.soft_labels(logits, 0.9, schedule=schedule)
off_diagonal = i2t.clone().fill_diagonal_(0)
row = int(off_diagonal.max(dim=1).values.argmax())
col = int(off_diagonal[row].argmax())
print(f"image {row}: {batch['captions'][row]!r}")
print(f"  gets {float(off_diagonal[row, col]):.3f} of its target on caption {col}: "
      f"{batch['captions'][col]!r}")
print(f"  (uniform smoothing would give every negative {0.2 / (len(i2t) - 1):.3f})")
