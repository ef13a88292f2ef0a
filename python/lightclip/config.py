"""The training configuration: one dataclass, every flag of ``lightclip train``.

Flag names follow open_clip (``--train-data``, ``--batch-size``, ``--accum-freq`` ...); the
LightCLIP parts are switches, so the plain CLIP baseline and every ablation row are one flag
away::

    >>> from lightclip.config import TrainConfig
    >>> TrainConfig(recipe="clip").soft_labels, TrainConfig(recipe="clip").w_ins
    (False, 1.0)
    >>> c = TrainConfig(recipe="clip", soft_labels=True)   # the "+soft labels" ablation row
    >>> c.soft_labels, c.token_loss, c.mlm
    (True, False, False)

The recipe only fills the switches and loss weights left at ``None``; whatever is given
explicitly wins. The command line is generated from the fields (``add_arguments``), so a flag
and its field can never drift apart.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import numbers
import types
import typing
from dataclasses import dataclass, field
from typing import Any

from .augmentation import parse_aug_cfg
from .errors import InvalidInputError
from .models.config import TOKEN_SPACES
from .progressive_resize import STRIDE

RECIPES = ("lightclip", "clip")
PRECISIONS = ("fp32", "amp", "amp_bf16", "bf16")
DATASET_TYPES = ("auto", "webdataset", "csv", "folder", "synthetic")
REPORTERS = ("csv", "tensorboard", "wandb")
LR_SCHEDULERS = ("cosine", "const", "const-cooldown")
MAX_CAPTIONS_PER_SAMPLE = 64  # the data pipeline's bound

# What each recipe means for the switches left at None. "clip" is the plain baseline with the
# same towers: hard-label contrastive loss only, no training-only heads.
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "lightclip": dict(
        soft_labels=True, token_loss=True, mlm=True, fusion=True, w_ins=0.8, w_tok=0.1, w_mlm=0.1
    ),
    "clip": dict(
        soft_labels=False,
        token_loss=False,
        mlm=False,
        fusion=False,
        w_ins=1.0,
        w_tok=0.1,
        w_mlm=0.1,
    ),
}


def _opt(help_text: str, default: Any = None, **extra: Any) -> Any:
    return field(default=default, metadata={"help": help_text, **extra})


@dataclass
class TrainConfig:
    """Everything a training run needs; ``lightclip.train(TrainConfig(...))`` runs it."""

    # --- data ---------------------------------------------------------------------------------
    train_data: str = _opt(
        "training data: shard pattern ('dir/train-{000000..000005}.tar'), CSV/TSV file, image "
        "folder, or 'synthetic[:train]' (bundled procedural data)",
        "synthetic:train",
    )
    val_data: str | None = _opt(
        "held-out data evaluated every --val-frequency epochs (retrieval; zero-shot too for "
        "labelled sources such as 'synthetic:heldout')"
    )
    dataset_type: str = _opt("how to read --train-data", "auto", choices=DATASET_TYPES)
    train_num_samples: int | None = _opt(
        "samples per epoch: the synthetic split size, or the epoch length of shards whose "
        "length is not known up front"
    )
    val_num_samples: int | None = _opt("samples of --val-data to evaluate (synthetic size)")
    image_size: int | None = _opt(
        "training resolution (default: the model's); --force-image-size is open_clip's spelling "
        "(one side: the images are square)"
    )
    image_size_start: int | None = _opt(
        "progressive resizing: train the first steps at this smaller side (a multiple of 32), "
        "growing to the training resolution by --image-size-ramp-end; the token loss then "
        "matches fewer image tokens, (side/32)^2 (lightclip.progressive_resize)"
    )
    image_size_ramp_end: float | None = _opt(
        "with --image-size-start: the progress, in (0, 1), from which the run trains at full "
        "size (default 0.5)"
    )
    workers: int | None = _opt("data pipeline threads (default: one per core)")
    eda_prob: float | None = _opt(
        "probability of one EDA operation per caption (default: the data pipeline's for the "
        "source: 0 for the synthetic data, whose captions EDA would make false)"
    )
    aug_cfg: dict[str, Any] | None = _opt(
        "training-image augmentation as open_clip's KEY=VALUE pairs, e.g. --aug-cfg "
        "scale='(0.6,1)' color_jitter=0.4 color_jitter_prob=0.3 gray_scale_prob=0 blur_prob=0 "
        "(keys: scale ratio color_jitter color_jitter_prob gray_scale_prob blur_prob "
        "blur_sigma flip_prob; see lightclip.augmentation). A key left out keeps the default: "
        "MoCo-v2 for photos above 128 px, only the flip at 128 px and below",
        nargs="*",
    )
    dataset_resampled: bool = _opt(
        "draw the shards of --train-data with replacement (open_clip's ResampledShards): each "
        "epoch reads shards drawn at random, seeded by --seed and the epoch; an epoch is "
        "--train-num-samples samples (or runs until --steps)",
        False,
    )
    csv_img_key: str = _opt("CSV/TSV --train-data / --val-data: the image path column", "filepath")
    csv_caption_key: str = _opt("CSV/TSV --train-data / --val-data: the caption column", "title")
    csv_separator: str | None = _opt(
        "CSV/TSV field separator, one character (default: tab for .tsv, comma for .csv)"
    )

    # --- model --------------------------------------------------------------------------------
    model: str = _opt("model name (see `lightclip.list_models()`)", "lightclip-tiny-mnv2")
    recipe: str = _opt(
        "'lightclip' (soft labels + token loss + MLM/fusion) or 'clip' (plain baseline, same "
        "towers); individual switches below override it",
        "lightclip",
        choices=RECIPES,
    )
    pretrained: str | None = _opt(
        "load these weights before training (lightclip.pretrained.load_pretrained: a lightclip "
        "checkpoint or export (a --model-ema run's checkpoint gives its weight average), an "
        "open_clip checkpoint or local-dir: folder, a timm state dict)"
    )
    pretrained_text_layers: str | None = _opt(
        "with --pretrained: which source text layers a shallower text tower inherits: "
        "'uniform' (default when depths differ), 'first', 'every-other', or indices '0,2,4,...'"
    )
    lock_image: bool = _opt("freeze the image tower (LiT)", False)
    lock_image_unlocked_groups: int = _opt(
        "with --lock-image: leave the last N image tower groups trainable", 0
    )
    lock_image_freeze_bn_stats: bool = _opt(
        "with --lock-image: also freeze the BatchNorm statistics of the locked groups", False
    )
    lock_text: bool = _opt("freeze the text tower", False)
    lock_text_unlocked_layers: int = _opt(
        "with --lock-text: leave the last N text tower groups trainable", 0
    )
    lock_text_freeze_layer_norm: bool = _opt(
        "with --lock-text: freeze the LayerNorms of the locked groups too", False
    )
    grad_checkpointing: bool = _opt(
        "recompute activations in the backward pass (less memory, same gradients)", False
    )
    torchcompile: bool = _opt(
        "torch.compile each block of both towers (inductor; the first steps compile)", False
    )
    channels_last: bool = _opt("channels-last memory for the convolutions and the images", False)
    fused_adamw: bool | None = _opt(
        "torch's fused AdamW kernel (default: wherever torch has one for the parameters)"
    )

    # --- optimisation -------------------------------------------------------------------------
    batch_size: int = _opt("samples per rank per micro-batch", 64)
    epochs: int = _opt("passes over the training data (ignored when --steps is given)", 1)
    steps: int | None = _opt("total optimizer steps (overrides --epochs)")
    lr: float = _opt("peak learning rate", 5e-4)
    wd: float = _opt("AdamW weight decay (not on norms, biases, logit scale, embeddings)", 0.1)
    beta1: float = _opt("AdamW beta1", 0.9)
    beta2: float = _opt("AdamW beta2", 0.98)
    eps: float = _opt("AdamW epsilon", 1e-6)
    warmup: int | None = _opt("linear warm-up steps (default: 5%% of the total steps)")
    lr_scheduler: str = _opt(
        "after warm-up: 'cosine' decay to 0, 'const' (constant), or 'const-cooldown' (constant, "
        "then a decay over the last --epochs-cooldown epochs)",
        "cosine",
        choices=LR_SCHEDULERS,
    )
    epochs_cooldown: int | None = _opt(
        "with --lr-scheduler const-cooldown: the epochs at the end the cooldown takes"
    )
    lr_cooldown_power: float = _opt("cooldown shape: (1 - t) ** power (1: linear)", 1.0)
    lr_cooldown_end: float = _opt("learning rate at the end of the cooldown", 0.0)
    precision: str = _opt("numeric precision", "fp32", choices=PRECISIONS)
    grad_clip_norm: float | None = _opt("clip the global gradient norm to this value")
    accum_freq: int = _opt("micro-batches accumulated per optimizer step", 1)
    model_ema: bool = _opt(
        "keep an exponential moving average of the weights (timm's --model-ema); a run "
        "evaluates and exports the average, its checkpoints hold both",
        False,
    )
    model_ema_decay: float = _opt(
        "the average's decay per optimizer step, warmed up as min(decay, (1 + t) / (10 + t)) "
        "after t updates (TensorFlow's)",
        0.9998,
    )
    seed: int = _opt("random seed (model init, data order, augmentation)", 0)
    device: str = _opt("'auto', 'cpu', 'cuda' or 'cuda:N'", "auto")
    local_loss: bool = _opt("DDP: each rank computes its own rows of the contrastive loss", False)
    gather_with_grad: bool = _opt(
        "DDP: all-gather features with gradients (exact global-batch gradients); "
        "--no-gather-with-grad, as in open_clip, gives the gathered losses 1/world-size of "
        "their weight against the per-rank token and MLM losses (lightclip.distributed)",
        True,
    )
    captions_per_sample: int = _opt(
        "captions of each training image per step, 1 to 64 (Flickr8k and COCO store five): "
        "the drawn one and others (a random order of the ones not drawn, repeated when there "
        "are fewer), each caption set in its own contrastive loss against the same images, "
        "averaged; the token, MLM and distillation losses keep the drawn one; the text "
        "tower's work grows with K",
        1,
    )
    siglip: bool = _opt(
        "SigLIP's sigmoid loss instead of the softmax contrastive loss (open_clip's --siglip): "
        "the model starts at logit scale 10 and logit bias -10 (a model config with its own "
        "init_logit_bias keeps its own scale and bias); hard targets only (no "
        "--soft-labels); under DDP each rank's images meet every rank's texts, gathered with "
        "their gradients",
        False,
    )

    # --- LightCLIP switches (None: from --recipe) ---------------------------------------------
    soft_labels: bool | None = _opt("progressive soft labels for the contrastive loss")
    token_loss: bool | None = _opt("token-level alignment loss (Hungarian matching)")
    token_space: str | None = _opt(
        "where the token loss compares tokens: 'joint' (each tower's own projection into the "
        "joint embedding space) or 'heads' (two training-only Linear heads; their "
        "positives-only loss can collapse) (default: the model's)",
        choices=TOKEN_SPACES,
    )
    mlm: bool | None = _opt("masked language modelling loss")
    fusion: bool | None = _opt("image-to-text fusion pass for the MLM loss (needs --mlm)")
    w_ins: float | None = _opt("weight of the instance (contrastive) loss")
    w_tok: float | None = _opt("weight of the token alignment loss")
    tok_start: float = _opt(
        "progress from which the token loss counts (before it, it is computed and logged but "
        "weighs 0); 0: from the first step, SPEC's reading",
        0.0,
    )
    w_mlm: float | None = _opt("weight of the MLM loss")
    mlm_prob: float = _opt(
        "probability that a word token is chosen for the MLM loss (of those, 80%% become the "
        "mask token, 10%% a random token, 10%% stay); SPEC's 0.15 is BERT's",
        0.15,
    )
    r1: float = _opt("progress where hard labels give way to uniform smoothing", 0.33)
    r2: float = _opt("progress where uniform smoothing gives way to negative-aware labels", 0.66)
    alpha: float = _opt("label softening mass", 0.2)
    label_ramp: bool = _opt("ramp linearly between label phases instead of switching", False)
    label_ramp_width: float = _opt("progress span of each ramp (with --label-ramp)", 0.1)

    # --- distillation from a frozen teacher (lightclip.teacher) -------------------------------
    distill_model: str | None = _opt(
        "teacher model (open_clip's flag): a lightclip preset or open_clip model name (with "
        "--distill-pretrained), or a local-dir: folder (a lightclip or open_clip export); with "
        "--distill-embeddings it is not run, only checked to be the teacher of the stores"
    )
    distill_pretrained: str | None = _opt(
        "the teacher's weights: a checkpoint file (or a registered tag) for --distill-model"
    )
    distill_embeddings: str | None = _opt(
        "distil from stored teacher embeddings (lightclip teacher-embeddings) instead of running "
        "the teacher: the folder they were written to (its --out), or 'auto' (beside the "
        "shards). They embed each clean image (no augmentation) and each caption as written (no "
        "EDA, no left/right swap), where an online teacher sees the student's augmented batch"
    )
    w_distill: float | None = _opt(
        "weight of the soft-target distillation loss (default with a teacher: 1.0; 0: the "
        "teacher only gives --distill-labels)"
    )
    w_distill_feature: float = _opt(
        "weight of feature distillation (0: off): the student's normalised image and text "
        "embeddings, mapped by a training-only linear projection to the teacher's width, pulled "
        "towards the teacher's by mean (1 - cosine); needs a teacher, online or stored",
        0.0,
    )
    distill_temperature: float | None = _opt(
        "temperature of the teacher's distributions (default: the teacher's own logit scale)"
    )
    distill_labels: bool = _opt(
        "the similarity-aware phase of --soft-labels weighs the negatives by the teacher's "
        "similarities instead of the student's own",
        False,
    )

    # --- logging and checkpoints --------------------------------------------------------------
    logs: str = _opt("folder for runs (logs/<name>/...); --logs-dir under torchrun", "./logs")
    name: str | None = _opt("run name (default: model-recipe-timestamp)")
    report_to: str = _opt("comma-separated: csv, tensorboard, wandb", "csv")
    wandb_project_name: str = _opt("with --report-to wandb: the wandb project", "lightclip")
    log_every_n_steps: int = _opt("write a log row every N optimizer steps", 10)
    save_frequency: int = _opt("keep epoch_N.pt every N epochs (0: only epoch_latest)", 1)
    save_every_n_steps: int = _opt("also refresh epoch_latest.pt every N steps (0: off)", 0)
    save_most_recent: bool = _opt(
        "refresh checkpoints/epoch_latest.pt at every epoch end (open_clip's --save-most-recent; "
        "on here by default); --no-save-most-recent keeps epoch_N.pt files only, writing "
        "epoch_latest.pt only where a run stops between them, and --resume latest takes the "
        "newest of them",
        True,
    )
    delete_previous_checkpoint: bool = _opt(
        "after saving epoch_N.pt, delete the epoch checkpoint saved before it", False
    )
    val_frequency: int = _opt("evaluate --val-data every N epochs", 1)
    zeroshot_data: str | None = _opt(
        "labelled data (an image folder, shards with classnames.txt, 'synthetic:heldout') for "
        "zero-shot classification during training, logged as zeroshot-val-top1/top5"
    )
    zeroshot_frequency: int = _opt(
        "with --zeroshot-data: evaluate every N epochs and after the last (0: never)", 2
    )
    resume: str | None = _opt("checkpoint path, or 'latest' (this run's epoch_latest.pt)")
    overwrite: bool = _opt(
        "replace an earlier run of the same --name (its checkpoints, metrics and export) "
        "instead of refusing to start",
        False,
    )
    progress: bool = _opt("show a progress bar", True)
    export: bool = _opt("write the exported inference model at the end", True)

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise InvalidInputError(f"--recipe must be one of {RECIPES}, got {self.recipe!r}")
        for key, value in RECIPE_DEFAULTS[self.recipe].items():
            if getattr(self, key) is None:
                # Fusion only feeds the MLM loss: --no-mlm alone also turns it off.
                setattr(self, key, value and bool(self.mlm) if key == "fusion" else value)
        if self.distills and self.w_distill is None:
            self.w_distill = 1.0
        self.aug_cfg = parse_aug_cfg(self.aug_cfg)
        self._validate()

    def _validate(self) -> None:
        def bad(flag: str, why: str) -> None:
            raise InvalidInputError(f"--{flag.replace('_', '-')} {why}")

        # Numbers first: every range check below is false for NaN (so a NaN passes the ones
        # written as `x < low`), an infinity passes the open-ended ones, and either one trains
        # a NaN model.
        for name, kind in _NUMERIC_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue  # optional (None means "the default"); required ones are never None
            accepted, what = _NUMBER_KINDS[kind]
            if isinstance(value, bool) or not isinstance(value, accepted):
                bad(name, f"must be {what}, got {value!r}")
            if not math.isfinite(value):
                bad(name, f"must be a finite number, got {value}")
        if not 1 <= self.captions_per_sample <= MAX_CAPTIONS_PER_SAMPLE:
            bad(
                "captions_per_sample",
                f"must be in [1, {MAX_CAPTIONS_PER_SAMPLE}], got {self.captions_per_sample}",
            )
        for name in ("batch_size", "epochs", "accum_freq", "log_every_n_steps", "val_frequency"):
            if getattr(self, name) < 1:
                bad(name, f"must be at least 1, got {getattr(self, name)}")
        for name in ("steps", "train_num_samples", "val_num_samples", "image_size", "workers"):
            value = getattr(self, name)
            if value is not None and value < 1:
                bad(name, f"must be at least 1, got {value}")
        for name in (
            "save_frequency",
            "save_every_n_steps",
            "zeroshot_frequency",
            "lock_image_unlocked_groups",
            "lock_text_unlocked_layers",
            "lr_cooldown_end",
        ):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        self._validate_progressive_resize(bad)
        if self.warmup is not None and self.warmup < 0:
            bad("warmup", f"must be >= 0, got {self.warmup}")
        if not self.lr > 0:
            bad("lr", f"must be positive, got {self.lr}")
        if self.wd < 0:
            bad("wd", f"must be >= 0, got {self.wd}")
        for name in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, name) < 1.0:
                bad(name, f"must be in [0, 1), got {getattr(self, name)}")
        if not self.eps > 0:
            bad("eps", f"must be positive, got {self.eps}")
        if self.grad_clip_norm is not None and not self.grad_clip_norm > 0:
            bad("grad_clip_norm", f"must be positive, got {self.grad_clip_norm}")
        if self.precision not in PRECISIONS:
            bad("precision", f"must be one of {PRECISIONS}, got {self.precision!r}")
        if not 0.0 < self.model_ema_decay < 1.0:
            bad("model_ema_decay", f"must be in (0, 1), got {self.model_ema_decay}")
        if self.model_ema and self.precision == "bf16":
            bad(
                "model_ema",
                "needs weights finer than bfloat16's (an update of (1 - decay) of a difference "
                "rounds away): use --precision amp_bf16",
            )
        if self.dataset_type not in DATASET_TYPES:
            bad("dataset_type", f"must be one of {DATASET_TYPES}, got {self.dataset_type!r}")
        if self.eda_prob is not None and not 0.0 <= self.eda_prob <= 1.0:
            bad("eda_prob", f"must be in [0, 1], got {self.eda_prob}")
        if not 0.0 < self.mlm_prob <= 1.0:
            bad("mlm_prob", f"must be in (0, 1], got {self.mlm_prob}")
        if not 0.0 <= self.alpha < 1.0:
            bad("alpha", f"must be in [0, 1), got {self.alpha}")
        if not 0.0 <= self.r1 <= self.r2 <= 1.0:
            bad("r1", f"and --r2 must satisfy 0 <= r1 <= r2 <= 1, got {self.r1}, {self.r2}")
        if not 0.0 < self.label_ramp_width <= 1.0:
            bad("label_ramp_width", f"must be in (0, 1], got {self.label_ramp_width}")
        if not 0.0 <= self.tok_start < 1.0:
            bad("tok_start", f"must be in [0, 1), got {self.tok_start}")
        for name in ("w_ins", "w_tok", "w_mlm"):
            if getattr(self, name) < 0:
                bad(name, f"must be >= 0, got {getattr(self, name)}")
        if self.token_space is not None and self.token_space not in TOKEN_SPACES:
            bad("token_space", f"must be one of {TOKEN_SPACES}, got {self.token_space!r}")
        if self.fusion and not self.mlm:
            bad("fusion", "needs --mlm (the fused pass only feeds the MLM loss)")
        if self.siglip and self.soft_labels:
            bad(
                "siglip",
                "has hard targets and takes no --soft-labels (the lightclip recipe turns them "
                "on: add --no-soft-labels)",
            )
        if self.siglip and not self.gather_with_grad:
            bad(
                "siglip",
                "gathers the texts with their gradients, as open_clip's SigLipLoss does; "
                "--no-gather-with-grad does not apply",
            )
        unknown = set(self.reporters) - set(REPORTERS)
        if unknown:
            bad("report_to", f"takes {REPORTERS}, got {sorted(unknown)}")
        self._validate_open_clip_flags(bad)
        self._validate_distillation(bad)
        if self.overwrite and self.resume is not None:
            bad("overwrite", "and --resume exclude each other: resume the run or replace it")

    def _validate_progressive_resize(self, bad: Any) -> None:
        """What can be checked before the model says its size; the start side against that
        size is checked by ``progressive_resize.check_image_size_start``."""
        if self.image_size_start is None:
            if self.image_size_ramp_end is not None:
                bad("image_size_ramp_end", "only applies with --image-size-start")
            return
        if self.image_size_start < STRIDE or self.image_size_start % STRIDE:
            bad(
                "image_size_start",
                f"must be a positive multiple of {STRIDE}, got {self.image_size_start}",
            )
        if self.image_size is not None and self.image_size_start >= self.image_size:
            bad(
                "image_size_start",
                f"must be below --image-size {self.image_size}, got {self.image_size_start}",
            )
        if self.image_size_ramp_end is not None and not 0.0 < self.image_size_ramp_end < 1.0:
            # At 1 no step would train at the size the model is evaluated and exported at.
            bad("image_size_ramp_end", f"must be in (0, 1), got {self.image_size_ramp_end}")

    def _validate_open_clip_flags(self, bad: Any) -> None:
        """The flags that only mean something with another one: given alone they would be
        ignored silently, so they are refused."""
        if self.lr_scheduler not in LR_SCHEDULERS:
            bad("lr_scheduler", f"must be one of {LR_SCHEDULERS}, got {self.lr_scheduler!r}")
        if self.lr_scheduler == "const-cooldown" and self.epochs_cooldown is None:
            bad("lr_scheduler", "const-cooldown needs --epochs-cooldown (how long the cooldown is)")
        if self.epochs_cooldown is not None:
            if self.lr_scheduler != "const-cooldown":
                bad("epochs_cooldown", "only applies to --lr-scheduler const-cooldown")
            if self.epochs_cooldown < 1:
                bad("epochs_cooldown", f"must be at least 1, got {self.epochs_cooldown}")
        if not self.lr_cooldown_power > 0:
            bad("lr_cooldown_power", f"must be positive, got {self.lr_cooldown_power}")
        for tower, lock in (("image", self.lock_image), ("text", self.lock_text)):
            if lock:
                continue
            for name in [f.name for f in dataclasses.fields(self)]:
                if name.startswith(f"lock_{tower}_") and getattr(self, name):
                    bad(name, f"needs --lock-{tower}")
        if self.dataset_resampled and self.dataset_type not in ("auto", "webdataset"):
            bad("dataset_resampled", f"draws shards; --dataset-type is {self.dataset_type}")
        if self.csv_separator is not None and len(self.csv_separator) != 1:
            bad("csv_separator", f"must be one character, got {self.csv_separator!r}")

    @property
    def distills(self) -> bool:
        """Whether the run has a teacher: run online (--distill-model) or stored
        (--distill-embeddings)."""
        return self.distill_model is not None or self.distill_embeddings is not None

    def _validate_distillation(self, bad: Any) -> None:
        """The teacher's flags: a teacher needs its weights, and the loss flags need a
        teacher (given alone they would be ignored silently)."""
        model, pretrained = self.distill_model, self.distill_pretrained
        if model is None and pretrained is not None:
            bad("distill_pretrained", "needs --distill-model (which model these weights are)")
        if not self.distills:
            teacher = "--distill-model or --distill-embeddings"
            for name in ("w_distill", "distill_temperature"):
                if getattr(self, name) is not None:
                    bad(name, f"needs {teacher} (a teacher to distil from)")
            if self.distill_labels:
                bad("distill_labels", f"needs {teacher} (a teacher to take labels from)")
            if self.w_distill_feature:
                bad("w_distill_feature", f"needs {teacher} (a teacher to distil from)")
            return
        if self.distill_embeddings is not None:
            if not self.distill_embeddings.strip():
                bad("distill_embeddings", "needs a folder, or 'auto' for beside the shards")
            if self.dataset_type not in ("auto", "webdataset"):
                bad(
                    "distill_embeddings",
                    f"reads stores of webdataset shards; --dataset-type is {self.dataset_type}",
                )
        if model is not None and model.startswith("local-dir:"):
            if pretrained is not None:
                bad(
                    "distill_pretrained",
                    f"with --distill-model {model}: the folder brings its own weights",
                )
        elif model is not None and pretrained is None:
            bad(
                "distill_model",
                f"{model} needs --distill-pretrained (a teacher with random weights teaches "
                "nothing); a local-dir: folder brings its own",
            )
        if self.w_distill is not None and self.w_distill < 0:
            bad("w_distill", f"must be >= 0, got {self.w_distill}")
        if self.w_distill_feature < 0:
            bad("w_distill_feature", f"must be >= 0, got {self.w_distill_feature}")
        if self.distill_temperature is not None and not self.distill_temperature > 0:
            bad("distill_temperature", f"must be positive, got {self.distill_temperature}")
        if self.distill_labels and not self.soft_labels:
            bad("distill_labels", "needs --soft-labels (it replaces their similarity-aware phase)")
        if self.distill_labels and self.captions_per_sample > 1:
            bad(
                "captions_per_sample",
                "takes no --distill-labels: the teacher's labels are for the drawn captions",
            )
        if not self.w_distill and not self.distill_labels and not self.w_distill_feature:
            bad(
                "w_distill",
                "is 0, and --distill-labels and --w-distill-feature are off: the teacher would "
                "do nothing",
            )

    @property
    def reporters(self) -> list[str]:
        return [r.strip() for r in self.report_to.split(",") if r.strip()]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InvalidInputError(f"unknown training options: {', '.join(unknown)}")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# (name, int or float) of every numeric field, checked by TrainConfig._validate; NumPy's
# scalars count as numbers too.
_NUMBER_KINDS: dict[type, tuple[type, str]] = {
    float: (numbers.Real, "a number"),
    int: (numbers.Integral, "a whole number"),
}
_NUMERIC_FIELDS = [
    (name, kind)
    for name, hint in typing.get_type_hints(TrainConfig).items()
    for kind in (float, int)
    if kind in (hint, *typing.get_args(hint))
]


# --- the command line, generated from the fields ----------------------------------------------


def _base_type(annotation: Any) -> tuple[type, bool]:
    """(scalar type, optional?) of a field annotation such as ``int | None``."""
    hint = typing.get_type_hints(TrainConfig)[annotation]
    args = typing.get_args(hint)
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in args:
        (inner,) = [a for a in args if a is not type(None)]
        return inner, True
    return hint, False


# Second spellings of a flag. torchrun reads `--logs` as an abbreviation of its own
# --logs-specs even after the script name, so the folder flag has an unambiguous spelling;
# --force-image-size is open_clip's name for the resolution.
_ALIASES = {"logs": ["--logs-dir"], "image_size": ["--force-image-size"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds one ``--flag-name`` per TrainConfig field; defaults stay the dataclass's own."""
    for f in dataclasses.fields(TrainConfig):
        kind, _ = _base_type(f.name)
        flag = "--" + f.name.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": f.name, "default": None, "help": f.metadata["help"]}
        if "nargs" in f.metadata:
            # Given twice, the flag's pairs add up (argparse's "store" would keep the last).
            kwargs.update(type=str, nargs=f.metadata["nargs"], action="extend")
            kwargs["metavar"] = "KEY=VALUE"
        elif kind is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = kind
            kwargs["metavar"] = f.name.upper()
            if "choices" in f.metadata:
                kwargs["choices"] = f.metadata["choices"]
                kwargs.pop("metavar")
        aliases = _ALIASES.get(f.name, [])
        parser.add_argument(flag, *aliases, **kwargs)


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The TrainConfig for parsed flags: flags not given keep the dataclass defaults."""
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainConfig)
        if getattr(args, f.name, None) is not None
    }
    return TrainConfig(**given)


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = argparse.ArgumentParser(
        prog="lightclip train", description="Train a lightweight CLIP model."
    )
    add_arguments(parser)
    return config_from_args(parser.parse_args(argv))


__all__ = [
    "TrainConfig",
    "RECIPES",
    "PRECISIONS",
    "LR_SCHEDULERS",
    "add_arguments",
    "config_from_args",
    "parse_args",
]
