"""The data pipeline: webdataset shards, CSV/TSV, image folders or the bundled procedural data,
decoded, augmented, tokenized and batched in Rust, yielded as dicts of torch tensors.

    >>> import lightclip
    >>> data = lightclip.DataPipeline(
    ...     "synthetic", batch_size=4, image_size=32, reading=lightclip.ReadingConfig(num_samples=8)
    ... )
    >>> batch = next(iter(data))
    >>> tuple(batch["image"].shape), tuple(batch["text"].shape)
    ((4, 3, 32, 32), (4, 77))

Settings come in three checked, frozen groups, each passed as one object:
:class:`AugmentationConfig` (the training-image augmentation), :class:`TextConfig`
(tokenizing, EDA, MLM masking) and :class:`ReadingConfig` (error policy, table columns,
synthetic size, size bounds, shuffle buffer). ``replace`` makes a changed copy::

    >>> aug = lightclip.augmentation_defaults("synthetic", 32).replace(flip_p=0.0)
    >>> aug.flip_p, aug.crop_scale
    (0.0, (0.8, 1.0))

Iterating a pipeline runs the rest of the current epoch from its current position; when the
epoch ends the position moves to the start of the next one, whose first batches a training
pipeline (``train=True``) is already building in the background (``close()`` stops that).
``set_epoch(e)`` jumps to the start of epoch ``e``, ``state_dict()`` / ``load_state_dict()``
save and restore the position exactly (the next batch after a restore is the one that would
have come next). Batch contents depend
only on ``(seed, epoch, rank, world_size)`` and the sample's place in the epoch, never on the
number of threads.

Bad samples are counted in ``stats()["skipped"]`` by reason and logged (logger
``lightclip.data``) with ``ReadingConfig(on_error="skip")``; ``on_error="raise"`` stops with a
:class:`lightclip.DataError` naming the shard/file and member. Only regular files are read
(a row naming a FIFO, a device or a folder is skipped as ``unreadable``), and a picture above
``max_image_bytes`` is skipped as ``too_large`` without being read. In shards a sample's
members must be consecutive: a key that comes back after other samples is skipped as
``duplicate_key``; a ``.json`` whose ``captions`` list (or ``caption``) is empty leaves the
caption to the ``.txt``. CLIP_benchmark's files beside the shards (or in their parent folder)
are read as it reads them: ``classnames.txt``, ``zeroshot_classification_templates.txt`` and
``dataset_type.txt``, where "retrieval" makes every line of a ``.txt`` one caption (a blank
line is skipped as ``invalid_caption``). A caption of only whitespace and control characters
(NUL bytes, say) is skipped as ``empty_caption``.

One pipeline is read by one iterator at a time: starting a second one (from another thread,
or while the first is unfinished) raises :class:`lightclip.LightclipError`. Finish or
``close()`` the first, or give each consumer a pipeline of its own.
"""

from __future__ import annotations

import inspect
import logging
import math
import operator
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import _core
from ._core import AugmentationConfig, ReadingConfig, TextConfig
from .errors import InvalidInputError, LightclipError
from .tokenizer import default_vocab_path

if TYPE_CHECKING:
    from .config import TrainConfig

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "AugmentationConfig",
    "DataPipeline",
    "PipelineDataset",
    "ReadingConfig",
    "TextConfig",
    "augmentation_defaults",
    "default_eda_prob",
    "normalize_uint8",
]

logger = logging.getLogger("lightclip.data")

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# Per kind of source: its augmentation and its EDA probability when training.
# The procedural captions are about colour, shape and position: hue jitter and grayscale would
# make them false, strong crops would cut shapes out, EDA would scramble "to the left of", and
# MoCo-v2's blur (sigma up to 2 px, set for 224 px photos) smears a shape a few pixels wide into
# its background, colour and outline alike.
_SYNTHETIC_DEFAULTS = (
    AugmentationConfig(
        crop_scale=(0.8, 1.0),
        jitter=(0.4, 0.4, 0.2, 0.0),
        jitter_p=0.8,
        grayscale_p=0.0,
        blur_p=0.0,
    ),
    0.0,
)
# Real photos at 224 px and up: SPEC §2's MoCo-v2 recipe (AugmentationConfig's defaults).
_REAL_DEFAULTS = (AugmentationConfig(), 0.5)
# Real photos at small sizes (the tiny presets' 64 px, up to 128 px): the whole picture, only
# flipped. In a short run a small model is held back by how fast it fits, and random crops and
# colour jitter slow that down more than they regularise (docs/experiments.md, "Flickr8k").
# The full-scale square crop is the evaluation's centre crop on a picture that is not square.
SMALL_IMAGE_SIZE = 128
_SMALL_REAL_DEFAULTS = (
    AugmentationConfig(
        crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0, blur_p=0.0
    ),
    0.0,
)


def _defaults(source: str, image_size: int) -> tuple[AugmentationConfig, float]:
    if source.startswith("synthetic"):
        return _SYNTHETIC_DEFAULTS
    return _REAL_DEFAULTS if image_size > SMALL_IMAGE_SIZE else _SMALL_REAL_DEFAULTS


def augmentation_defaults(source: str, image_size: int) -> AugmentationConfig:
    """The augmentation a source gets when the caller gives none: mild for the synthetic
    data, MoCo-v2 for real photos, only the flip for real photos of at most 128 px."""
    return _defaults(source, image_size)[0]


def default_eda_prob(source: str, image_size: int) -> float:
    """The EDA probability a source's training captions get when ``TextConfig.eda_prob`` is
    None: 0.5 for real photos above 128 px, else off."""
    return _defaults(source, image_size)[1]


def config_fields(config_type: type) -> list[str]:
    """The field names of a settings class: its constructor's keywords, in order."""
    return list(inspect.signature(config_type).parameters)


# Keyword -> the settings object that holds it now (DataPipeline took them one by one).
_MOVED = {
    name: (argument, config_type.__name__)
    for argument, config_type in (
        ("augmentation", AugmentationConfig),
        ("text", TextConfig),
        ("reading", ReadingConfig),
    )
    for name in config_fields(config_type)
}


def normalize_uint8(images: torch.Tensor) -> torch.Tensor:
    """CLIP normalisation of a ``uint8`` ``[B, 3, H, W]`` batch, on the batch's own device."""
    mean = torch.tensor(CLIP_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def _dist_rank_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def checked_epoch(epoch: int) -> int:
    """``epoch`` for a ``set_epoch`` call: an int >= 0."""
    if epoch < 0:
        raise InvalidInputError(f"invalid `epoch`: must be >= 0, got {epoch}")
    return int(epoch)


def saved_position(
    state: dict[str, Any], keys: Sequence[str], world_size: int, kind: str
) -> list[int]:
    """The non-negative ints ``state[key]`` of a ``kind`` state_dict (a pipeline's position),
    checked to come from a job of the same ``world_size``: each rank's position means
    something only with the same split of the data."""
    try:
        values = [int(state[key]) for key in keys]
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidInputError(f"state: not a {kind} state_dict ({e!r})") from None
    if state.get("world_size", world_size) != world_size:
        raise InvalidInputError(
            f"state: saved with world_size={state['world_size']}, this pipeline has "
            f"world_size={world_size}; the position does not carry over"
        )
    if min(values) < 0:
        raise InvalidInputError(f"state: negative position {state!r}")
    return values


class DataPipeline:
    """Batches of ``{"image", "text", "masked_text", "mlm_labels", "word_lengths"}`` tensors
    (plus ``"label"`` for folders, synthetic data and labelled shards, ``"captions"`` with
    ``return_captions=True``, ``"all_captions"`` and ``"key"`` with ``all_captions=True``,
    ``"other_text"`` [B, K - 1, context] with ``TextConfig(captions_per_sample=K)``, K > 1).

    ``sample_ids=True`` adds what names each row without the caption lists: ``"key"`` (the
    sample key), ``"shard"`` (the shard or file it came from, as the source names it: keys are
    unique only within one) and ``"caption_index"`` (a list of ints, the drawn caption's place
    in ``all_captions``, chosen before the flip's left/right swap and EDA edit its text; -1
    for a sample without captions). That is how a row finds its stored teacher embeddings
    (:mod:`lightclip.teacher_embeddings`); they are lists, as the keys, because that lookup is
    on the host, and a tensor would follow the batch onto the device.

    ``source``: shard paths or brace patterns (``"dir/train-{000000..000005}.tar"``, several
    joined by ``::``), a ``.csv``/``.tsv`` file, an image folder (one class per sub-folder), or
    ``"synthetic"`` / ``"synthetic:train"`` / ``"synthetic:heldout"``.

    ``threads=None`` uses one thread per core. ``image_dtype="uint8"`` leaves normalisation to
    :func:`normalize_uint8` (done for you when ``device`` is given). ``pin_memory=True`` pins
    batches for fast asynchronous copies to CUDA. ``rank``/``world_size`` default to
    torch.distributed's.

    ``augmentation`` (:class:`AugmentationConfig`, used when ``train``) defaults to
    :func:`augmentation_defaults`: SPEC §2's MoCo-v2 recipe for real photos above 128 px,
    only the flip for smaller ones (where crops and jitter slow small models down), and
    milder still for synthetic data, whose captions name colours and places. ``text``
    (:class:`TextConfig`) defaults to 77 tokens, open_clip's vocabulary, MLM masking on and
    EDA as :func:`default_eda_prob` says when training; ``reading`` (:class:`ReadingConfig`)
    to skipping bad samples. The settings that used to be keyword arguments of their own
    (``crop_scale=``, ``context_length=``, ``on_error=`` ...) are fields of these objects;
    passing one here raises :class:`lightclip.InvalidInputError` naming its object.

    Sizes are bounded so that a typo raises :class:`lightclip.InvalidInputError` instead of
    exhausting memory: ``threads`` <= 1024, ``prefetch`` <= 64, ``shuffle_buffer`` <= 10**6
    samples, ``context_length`` <= 65536, and one batch's buffers (``batch_size`` x images
    and token rows) <= 16 GiB. ``max_image_bytes`` (64 MiB) bounds one encoded picture, file
    or shard member; ``shuffle_buffer_bytes`` (1 GiB) bounds what the shard shuffle buffer
    holds besides its sample count (it always holds at least one sample).
    """

    def __init__(
        self,
        source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
        *,
        batch_size: int,
        image_size: int,
        train: bool = True,
        seed: int = 0,
        threads: int | None = None,
        rank: int | None = None,
        world_size: int | None = None,
        drop_last: bool | None = None,
        return_captions: bool = False,
        all_captions: bool = False,
        sample_ids: bool = False,
        image_dtype: str = "float32",
        pin_memory: bool = False,
        device: str | torch.device | None = None,
        prefetch: int = 2,
        augmentation: AugmentationConfig | None = None,
        text: TextConfig | None = None,
        reading: ReadingConfig | None = None,
        **moved: Any,
    ) -> None:
        for name in moved:
            if name not in _MOVED:
                raise TypeError(f"DataPipeline() got an unexpected keyword argument {name!r}")
            argument, config_name = _MOVED[name]
            raise InvalidInputError(
                f"`{name}` is a field of {config_name}: pass "
                f"{argument}=lightclip.{config_name}({name}=...) instead"
            )
        if isinstance(source, (list, tuple)):
            source = "::".join(os.fspath(s) for s in source)
        source = os.fspath(source)
        for name, value in (("batch_size", batch_size), ("image_size", image_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidInputError(f"invalid `{name}`: must be a positive int, got {value!r}")
        # The upper bound is the core's (it names it); here only what cannot cross over.
        try:
            ok = not isinstance(prefetch, bool) and 0 <= operator.index(prefetch) < 2**63
        except TypeError:
            ok = False
        if not ok:
            raise InvalidInputError(
                f"invalid `prefetch`: must be an int in [0, 2**63), got {prefetch!r}"
            )
        if threads is not None and threads < 1:
            raise InvalidInputError(f"invalid `threads`: must be at least 1, got {threads}")
        if seed < 0:
            raise InvalidInputError("invalid `seed`: must be >= 0")
        dist_rank, dist_world = _dist_rank_world()
        rank = dist_rank if rank is None else rank
        world_size = dist_world if world_size is None else world_size
        if world_size < 1 or not 0 <= rank < world_size:
            raise InvalidInputError(
                f"invalid `rank`: need 0 <= rank < world_size, got rank={rank}, "
                f"world_size={world_size}"
            )
        if augmentation is None:
            augmentation = augmentation_defaults(source, image_size)
        text = TextConfig() if text is None else text
        if text.eda_prob is None:
            text = text.replace(eda_prob=default_eda_prob(source, image_size) if train else 0.0)
        if text.vocab_path is None:
            try:
                text = text.replace(vocab_path=os.fspath(default_vocab_path()))
            except FileNotFoundError as e:
                raise InvalidInputError(f"invalid `vocab_path`: none given and {e}") from None
        reading = ReadingConfig() if reading is None else reading
        self._device = torch.device(device) if device is not None else None
        self._pin = pin_memory
        self._image_dtype = image_dtype
        self.batch_size = batch_size
        self.image_size = image_size
        self.train = train
        self.drop_last = train if drop_last is None else drop_last
        self.rank, self.world_size = rank, world_size
        self.augmentation, self.text, self.reading = augmentation, text, reading
        self._core = _core.Pipeline(
            source,
            batch_size=batch_size,
            image_size=image_size,
            train=train,
            seed=seed,
            threads=threads or 0,
            rank=rank,
            world_size=world_size,
            drop_last=self.drop_last,
            image_dtype=image_dtype,
            prefetch=prefetch,
            return_captions=return_captions,
            all_captions=all_captions,
            sample_ids=sample_ids,
            augmentation=augmentation,
            text=text,
            reading=reading,
        )
        self.source = source
        self._epoch = 0
        self._consumed = 0
        # One iterator at a time: the position and the running epoch are the pipeline's own.
        self._iter_lock = threading.Lock()
        self._iterating = False

    # ---------------------------------------------------------------- position
    @property
    def epoch(self) -> int:
        return self._epoch

    def set_epoch(self, epoch: int) -> None:
        """Moves to the start of ``epoch`` (reshuffles; like DistributedSampler.set_epoch)."""
        self._epoch, self._consumed = checked_epoch(epoch), 0

    def state_dict(self) -> dict[str, int]:
        """The position after the last batch yielded: restore it to continue from there."""
        return {
            "epoch": self._epoch,
            "consumed": self._consumed,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._epoch, self._consumed = saved_position(
            state, ("epoch", "consumed"), self.world_size, "DataPipeline"
        )

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        with self._iter_lock:
            if self._iterating:
                raise LightclipError(
                    "this DataPipeline is already being iterated (by another thread, or by "
                    "an iterator that has not finished): finish or close() that iterator "
                    "first, or give each consumer a DataPipeline of its own (split the data "
                    "between them with rank/world_size)"
                )
            self._iterating = True
        epoch_done = False
        try:
            self._core.start(self._epoch, self._consumed)
            while True:
                batch = self._core.next_batch()
                self._log_skips()
                if batch is None:
                    self._epoch, self._consumed = self._epoch + 1, 0
                    epoch_done = True
                    return
                self._epoch = batch.pop("_epoch")
                self._consumed = batch.pop("_consumed")
                yield self._finish(batch)
        finally:
            if not epoch_done:  # an abandoned epoch: what was read ahead is of no use
                self._core.stop()
            with self._iter_lock:
                self._iterating = False

    def close(self) -> None:
        """Stops the background threads: a training pipeline reads the next epoch's first
        batches while the current one ends (so that epoch starts without a wait); ``close``
        ends that when no further epoch will be read. Iterating again restarts them."""
        self._core.stop()

    def _finish(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self._pin and torch.cuda.is_available():
            batch = {k: v.pin_memory() if torch.is_tensor(v) else v for k, v in batch.items()}
        if self._device is not None:
            nb = self._pin
            batch = {
                k: v.to(self._device, non_blocking=nb) if torch.is_tensor(v) else v
                for k, v in batch.items()
            }
            if self._image_dtype == "uint8":
                batch["image"] = normalize_uint8(batch["image"])
        return batch

    def _log_skips(self) -> None:
        for message in self._core.take_skip_log():
            logger.warning("%s", message)

    def __len__(self) -> int:
        """Batches per epoch on this rank, for sources whose size is known (not shards)."""
        n = self._core.num_samples
        if n is None:
            raise TypeError("the number of batches of a shard source is not known in advance")
        share = n // self.world_size if self.world_size > 1 else n
        return share // self.batch_size if self.drop_last else math.ceil(share / self.batch_size)

    # ---------------------------------------------------------------- info
    def stats(self) -> dict[str, Any]:
        """Counters over the pipeline's life: ``samples_read``, ``samples_yielded``,
        ``batches``, ``dropped_tail``, ``skipped_total`` and ``skipped`` (by reason)."""
        return self._core.stats()

    @property
    def class_names(self) -> list[str] | None:
        """Class names of labelled sources (folders: sub-folder names; synthetic: "red circle"
        ...; shards: the ``classnames.txt`` beside them or in their parent folder, as
        CLIP_benchmark lays out its webdatasets); ``batch["label"]`` indexes this list. None for
        tables and unlabelled shards.

        Shard samples are labelled by a ``.cls`` member (the class index as text) or their
        ``.json``'s ``label``; ``batch["label"]`` is -1 for a sample without one."""
        return self._core.class_names

    @property
    def dataset_type(self) -> str | None:
        """What a ``dataset_type.txt`` beside the shards (or in their parent folder) says:
        ``"retrieval"``, ``"classification"`` or ``"multilabel"``, as CLIP_benchmark lays out its
        webdatasets; None without one and for other sources. In a retrieval dataset every line
        of a sample's ``.txt`` is one caption (``all_captions`` lists them all)."""
        return self._core.dataset_type

    @property
    def templates(self) -> list[str] | None:
        """The zero-shot prompts the source ships, with CLIP_benchmark's ``{c}`` slot: the lines
        of a ``zeroshot_classification_templates.txt`` beside the shards (or in their parent),
        or, for the synthetic data, the phrasings its captions give a lone shape ("a small
        {c} on the left"); None for other sources."""
        return self._core.templates

    @property
    def num_samples(self) -> int | None:
        """Samples per epoch over all ranks, where known without reading (not shards)."""
        return self._core.num_samples

    @property
    def threads(self) -> int:
        return self._core.threads

    def as_iterable_dataset(self) -> PipelineDataset:
        """A ``torch.utils.data.IterableDataset`` view; use it with
        ``DataLoader(ds, batch_size=None, num_workers=0)`` (the pipeline batches itself)."""
        return PipelineDataset(self)

    def __repr__(self) -> str:
        return (
            f"DataPipeline({self.source!r}, batch_size={self.batch_size}, "
            f"image_size={self.image_size}, train={self.train}, threads={self.threads}, "
            f"rank={self.rank}, world_size={self.world_size})"
        )


class PipelineDataset(torch.utils.data.IterableDataset):
    """Adapts a :class:`DataPipeline` to ``torch.utils.data`` (already batched)."""

    def __init__(self, pipeline: DataPipeline) -> None:
        super().__init__()
        self.pipeline = pipeline

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = torch.utils.data.get_worker_info()
        if info is not None and info.num_workers > 1:
            raise InvalidInputError(
                "num_workers: DataPipeline runs its own threads; use DataLoader(..., "
                "batch_size=None, num_workers=0)"
            )
        return iter(self.pipeline)

    def __len__(self) -> int:
        return len(self.pipeline)


# ---------------------------------------------------------------------- from a TrainConfig


def build_pipeline(
    config: TrainConfig,
    source: str,
    *,
    train: bool,
    image_size: int,
    context_length: int,
    rank: int,
    world_size: int,
    num_samples: int | None,
    device: torch.device,
) -> Any:
    """The pipeline ``lightclip train`` reads ``source`` with: a :class:`DataPipeline`, or
    with ``--dataset-resampled`` a :class:`~lightclip.resampled.ResampledShards`."""
    from .augmentation import apply_aug_cfg

    source = resolve_source(source, config.dataset_type, "--train-data" if train else "--val-data")
    reading = reading_config(config)
    kwargs: dict[str, Any] = dict(
        batch_size=config.batch_size,
        image_size=image_size,
        train=train,
        seed=config.seed,
        threads=config.workers,
        rank=rank,
        world_size=world_size,
        text=TextConfig(context_length=context_length),
    )
    if train and config.distill_embeddings is not None:
        kwargs["sample_ids"] = True  # the rows of the stored teacher embeddings
    if train:
        # eda_prob None: the source's default.
        kwargs["text"] = kwargs["text"].replace(
            eda_prob=config.eda_prob,
            mlm=bool(config.mlm),
            mlm_prob=config.mlm_prob,
            captions_per_sample=config.captions_per_sample,
        )
        kwargs["augmentation"] = apply_aug_cfg(
            config.aug_cfg or {}, augmentation_defaults(source, image_size)
        )
    if device.type == "cuda":
        # uint8 images from pinned memory: a quarter of the bytes over PCIe, copied
        # asynchronously, and normalised on the GPU instead of on the pipeline's cores.
        kwargs.update(image_dtype="uint8", pin_memory=True, device=device)
    if train and config.dataset_resampled:
        from .resampled import ResampledShards  # it builds on DataPipeline

        if not is_shard_source(source):
            raise InvalidInputError(
                f"--dataset-resampled draws shards; --train-data {source} is not a shard source"
            )
        return ResampledShards(source, num_samples=num_samples, reading=reading, **kwargs)
    if num_samples is not None and source.startswith("synthetic"):
        reading = reading.replace(num_samples=num_samples)
    return DataPipeline(source, reading=reading, **kwargs)


def is_shard_source(source: str) -> bool:
    """Whether the pipeline reads ``source`` as webdataset shards (as ``Source::open`` tells
    the kinds apart: synthetic, folder, table, else shards)."""
    return not (
        source.startswith("synthetic")
        or Path(source).is_dir()
        or source.lower().endswith((".csv", ".tsv"))
    )


def resolve_source(source: str, dataset_type: str, flag: str) -> str:
    """Checks the path exists (one clear line instead of a reader's error) and applies
    ``--dataset-type synthetic``."""
    if dataset_type == "synthetic" and not source.startswith("synthetic"):
        return f"synthetic:{source}"
    if source.startswith("synthetic"):
        return source
    first = source.split("::")[0]
    if "{" not in first and not Path(first).exists():
        raise InvalidInputError(f"{flag}: no such file or folder: {first}")
    if "{" in first and not Path(first.split("{")[0]).parent.exists():
        raise InvalidInputError(f"{flag}: no such folder: {Path(first.split('{')[0]).parent}")
    return source


def reading_config(config: TrainConfig) -> ReadingConfig:
    """The reading settings of ``--csv-img-key`` / ``--csv-caption-key`` / ``--csv-separator``."""
    return ReadingConfig(
        csv_img_key=config.csv_img_key,
        csv_caption_key=config.csv_caption_key,
        csv_separator=config.csv_separator,
    )
