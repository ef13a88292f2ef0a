"""Type stubs for lightclip._core, the compiled extension (rust/py).

One section per concern, in the order of rust/py/src. tests/test_stubs.py checks this file
against the compiled module, so it cannot drift.
"""

import os
from collections.abc import Sequence
from typing import Any, final, overload

import numpy
import torch
from typing_extensions import Self

__version__: str

# --- threads.rs ------------------------------------------------------------------------------

def set_num_threads(n: int) -> None:
    """Sets how many threads lightclip's Rust code uses for its parallel work (``n >= 1``).

    The default is one per core (or ``RAYON_NUM_THREADS``). Work already running finishes on
    the old pool.
    """

def get_num_threads() -> int:
    """How many threads lightclip's Rust code uses for its parallel work."""

# --- matching.rs -----------------------------------------------------------------------------

@overload
def match_tokens(
    cost: torch.Tensor,
    rows_valid: torch.Tensor | numpy.ndarray | Sequence[int] | None = None,
    cols_valid: torch.Tensor | numpy.ndarray | Sequence[int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]: ...
@overload
def match_tokens(
    cost: numpy.ndarray,
    rows_valid: torch.Tensor | numpy.ndarray | Sequence[int] | None = None,
    cols_valid: torch.Tensor | numpy.ndarray | Sequence[int] | None = None,
) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Exact minimum-cost one-to-one matching (Hungarian) of every item of a cost batch.

    ``cost`` ``[B, N, M]``, any float dtype, any device (or a numpy array). Item b is matched
    on its top-left ``rows_valid[b] × cols_valid[b]`` block (default: all of it); the smaller
    side is matched completely, each to a distinct partner, minimising the total cost (the
    same optimum as ``scipy.optimize.linear_sum_assignment``; solved in float32).

    Returns ``(rows, cols)``, int64 ``[B, K]`` with ``K = min(N, M)`` on the cost's device
    (numpy arrays for numpy input): pair k of item b is ``(rows[b, k], cols[b, k])``, sorted
    by row, ``-1`` after the item's ``min(rows_valid[b], cols_valid[b])`` pairs. NaN/inf in a
    valid block, a zero-size side, a non-3-D cost or lengths out of range raise ``ValueError``.
    Runs on the lightclip thread pool with the GIL released.
    """

# --- labels.rs -------------------------------------------------------------------------------

@final
class LabelSchedule:
    """The progressive label schedule's configuration, checked once, here.

    Hard targets before ``r1``, uniform smoothing from ``r1``, negative-aware from ``r2``
    (``ramp=True``: linear blends across windows of width ``ramp_width`` centred on them).
    ``0 <= r1 <= r2 <= 1``, ``0 <= alpha < 1`` and ``0 < ramp_width <= 1`` must hold, else
    ``ValueError`` naming the argument. Frozen; equal when all five values are; picklable.
    """

    def __new__(
        cls,
        r1: float = 0.33,
        r2: float = 0.66,
        alpha: float = 0.2,
        ramp: bool = False,
        ramp_width: float = 0.1,
    ) -> LabelSchedule: ...
    @property
    def r1(self) -> float: ...
    @property
    def r2(self) -> float: ...
    @property
    def alpha(self) -> float: ...
    @property
    def ramp(self) -> bool: ...
    @property
    def ramp_width(self) -> float: ...
    def phase(self, progress: float) -> str:
        """The hard-switch phase at ``progress``: ``"hard"``, ``"uniform"`` or ``"negative"``."""

    def weights(self, progress: float) -> tuple[float, float, float]:
        """Weights ``(identity, uniform, negatives)`` of the target at ``progress``; sum 1."""

    def __reduce__(self) -> tuple[type[LabelSchedule], tuple[float, float, float, bool, float]]: ...

def soft_labels(
    logits: torch.Tensor, progress: float, *, schedule: LabelSchedule | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Progressive contrastive targets ``(targets_i2t, targets_t2i)`` for square ``logits``.

    ``logits[i, j]`` = scaled similarity of image i and text j, ``[N, N]``, any float dtype,
    any device; ``schedule`` defaults to ``LabelSchedule()``. Both results are ``[N, N]``,
    detached, in the logits' dtype and device: ``targets_i2t[i]`` is the distribution over
    texts for image i, ``targets_t2i[j]`` the distribution over images for text j; every row
    sums to 1. Half inputs are computed in float32. Bad shapes, ``progress`` outside [0, 1] or
    non-finite logits in the negative-aware phase raise ``ValueError``. The GIL is released
    while it computes.
    """

def soft_label_rows(
    logits: torch.Tensor,
    progress: float,
    positive_offset: int = 0,
    *,
    schedule: LabelSchedule | None = None,
) -> torch.Tensor:
    """Targets for each row of a ``[n, M]`` block whose row i has its positive at column
    ``positive_offset + i`` (one rank's rows under ``local_loss``); same rules as
    ``soft_labels``."""

# --- pipeline.rs -----------------------------------------------------------------------------

class Settings:
    """What the pipeline's settings objects share: frozen values, equal when every field is,
    pickled and copied by their fields (the constructor's keywords)."""

    def replace(self, **changes: Any) -> Self:
        """A copy with the given fields changed (checked like a new one)."""
    def __getnewargs_ex__(self) -> tuple[tuple[()], dict[str, Any]]: ...

@final
class AugmentationConfig(Settings):
    """Training-image augmentation: RandomResizedCrop (``crop_scale`` area and ``crop_ratio``
    aspect ranges), colour jitter (``jitter`` = brightness, contrast, saturation, hue) with
    probability ``jitter_p``, grayscale, Gaussian blur (``blur_sigma`` range) and horizontal
    flip with theirs. The defaults are SPEC §2's MoCo-v2 recipe.

    Checked when made: ``0 < lo <= hi <= 1`` for ``crop_scale``, ``0 < lo <= hi`` for the
    other ranges, probabilities in [0, 1], jitter strengths >= 0 and hue <= 0.5, else
    ``InvalidInputError`` naming the field. Frozen; equal when every field is; picklable.
    """

    def __new__(
        cls,
        *,
        crop_scale: Sequence[float] = (0.2, 1.0),
        crop_ratio: Sequence[float] = (0.75, 1.3333333333333333),
        jitter: Sequence[float] = (0.4, 0.4, 0.4, 0.1),
        jitter_p: float = 0.8,
        grayscale_p: float = 0.2,
        blur_p: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        flip_p: float = 0.5,
    ) -> AugmentationConfig: ...
    @property
    def crop_scale(self) -> tuple[float, float]: ...
    @property
    def crop_ratio(self) -> tuple[float, float]: ...
    @property
    def jitter(self) -> tuple[float, float, float, float]: ...
    @property
    def jitter_p(self) -> float: ...
    @property
    def grayscale_p(self) -> float: ...
    @property
    def blur_p(self) -> float: ...
    @property
    def blur_sigma(self) -> tuple[float, float]: ...
    @property
    def flip_p(self) -> float: ...

@final
class TextConfig(Settings):
    """Captions: tokenizing (``context_length`` in 2..=65536; ``vocab_path`` None finds
    open_clip's vocabulary as ``lightclip.get_tokenizer`` does), EDA on training captions
    (``eda_prob`` per caption, every operation at ``eda_strength``; None: the source's
    default when training, off otherwise), BERT masking for the MLM loss (``mlm``,
    ``mlm_prob``), and ``captions_per_sample`` (1..=64) captions of each sample: the drawn one
    (``"text"``) and the others (``"other_text"``, [B, captions_per_sample - 1, context], while
    training in a random order of the captions not drawn, repeated when there are fewer, each
    flipped and edited as the drawn one). Probabilities must lie in [0, 1] (NaN too is
    refused, not read as off), else ``InvalidInputError`` naming the field. Frozen; equal when
    every field is; picklable.
    """

    def __new__(
        cls,
        *,
        context_length: int = 77,
        vocab_path: str | os.PathLike[str] | None = None,
        eda_prob: float | None = None,
        eda_strength: float = 0.1,
        mlm: bool = True,
        mlm_prob: float = 0.15,
        captions_per_sample: int = 1,
    ) -> TextConfig: ...
    @property
    def context_length(self) -> int: ...
    @property
    def vocab_path(self) -> str | None: ...
    @property
    def eda_prob(self) -> float | None: ...
    @property
    def eda_strength(self) -> float: ...
    @property
    def mlm(self) -> bool: ...
    @property
    def mlm_prob(self) -> float: ...
    @property
    def captions_per_sample(self) -> int: ...

@final
class ReadingConfig(Settings):
    """How a source is read: ``on_error`` ("skip" counts and logs a bad sample, "raise"
    stops with ``DataError``), a table's image and caption columns and separator (one ASCII
    character; None: by the extension), the synthetic data's ``num_samples`` (None: the
    split's own) and ``data_seed``, the bounds on one picture (``max_pixels`` decoded,
    ``max_image_bytes`` encoded) and the shard shuffle buffer (``shuffle_buffer`` samples,
    at most 10**6, 0 for none; ``shuffle_buffer_bytes``).

    Sizes are ints in [0, 2**63) and the bounds at least 1, else ``InvalidInputError``
    naming the field. Frozen; equal when every field is; picklable.
    """

    def __new__(
        cls,
        *,
        on_error: str = "skip",
        csv_img_key: str = "filepath",
        csv_caption_key: str = "title",
        csv_separator: str | None = None,
        num_samples: int | None = None,
        data_seed: int = 0,
        max_pixels: int = 50000000,
        max_image_bytes: int = 67108864,
        shuffle_buffer: int = 1000,
        shuffle_buffer_bytes: int = 1073741824,
    ) -> ReadingConfig: ...
    @property
    def on_error(self) -> str: ...
    @property
    def csv_img_key(self) -> str: ...
    @property
    def csv_caption_key(self) -> str: ...
    @property
    def csv_separator(self) -> str | None: ...
    @property
    def num_samples(self) -> int | None: ...
    @property
    def data_seed(self) -> int: ...
    @property
    def max_pixels(self) -> int: ...
    @property
    def max_image_bytes(self) -> int: ...
    @property
    def shuffle_buffer(self) -> int: ...
    @property
    def shuffle_buffer_bytes(self) -> int: ...

@final
class Pipeline:
    """The Rust data pipeline; use :class:`lightclip.DataPipeline`, which wraps it.

    Every size is bounded before anything is allocated (``threads`` <= 1024, ``prefetch``
    <= 64, one batch's buffers <= 16 GiB; the settings objects check their own); a bound
    passed raises ``InvalidInputError`` naming the parameter. ``text.eda_prob`` None is no
    EDA and ``text.vocab_path`` None no tokenizing here (``DataPipeline`` fills both in). A
    panic in a pipeline thread ends the epoch with ``LightclipError``.
    """

    def __new__(
        cls,
        source: str,
        *,
        batch_size: int,
        image_size: int,
        train: bool,
        seed: int,
        threads: int,
        rank: int,
        world_size: int,
        drop_last: bool,
        image_dtype: str,
        prefetch: int,
        return_captions: bool,
        all_captions: bool,
        sample_ids: bool,
        augmentation: AugmentationConfig,
        text: TextConfig,
        reading: ReadingConfig,
    ) -> Pipeline: ...
    def start(self, epoch: int, skip: int) -> None:
        """Starts epoch ``epoch`` after its first ``skip`` items (a resumed position)."""
    def stop(self) -> None:
        """Stops the running epoch and frees its threads and buffers."""
    def next_batch(self) -> dict[str, Any] | None:
        """The next batch (tensors plus ``_epoch``/``_consumed``), or None at the epoch's end."""
    def stats(self) -> dict[str, Any]:
        """Counters: samples read/yielded, batches, skipped samples by reason."""
    def take_skip_log(self) -> list[str]:
        """Skip messages since the last call."""
    @property
    def class_names(self) -> list[str] | None: ...
    @property
    def dataset_type(self) -> str | None: ...
    @property
    def templates(self) -> list[str] | None: ...
    @property
    def num_samples(self) -> int | None: ...
    @property
    def threads(self) -> int: ...

def shard_names(source: str) -> list[str]:
    """The shard paths of ``::``-separated shard paths / brace patterns, in order, repeats
    kept (at most 10**6; ``InvalidInputError`` for a malformed pattern)."""

# --- text.rs ---------------------------------------------------------------------------------

SOT_TOKEN: int
EOT_TOKEN: int
MASK_TOKEN: int
VOCAB_SIZE_WITH_MASK: int

@final
class Tokenizer:
    """open_clip's CLIP BPE tokenizer in Rust (``lightclip.get_tokenizer()``): its ids, except
    where ftfy repairs garbled encodings (see the README)."""

    def __new__(cls, path: str | os.PathLike[str], context_length: int = 77) -> Tokenizer: ...
    def __call__(
        self, texts: str | bytes | Sequence[str | bytes], context_length: int | None = None
    ) -> torch.Tensor:
        """Captions → ``int64 [N, context_length]``: SOT, ids, EOT, zeros; a caption that does
        not fit is cut and keeps EOT last. Parallel, GIL released. ``context_length`` must lie
        in 1..=65536 (``InvalidInputError`` otherwise, also when the rows cannot be
        allocated)."""

    def encode(self, text: str | bytes) -> list[int]:
        """BPE ids of one caption after open_clip's cleaning, without SOT/EOT."""

    def decode(self, ids: Sequence[int] | torch.Tensor) -> str:
        """Text of ids as open_clip decodes it (``</w>`` → space)."""

    @staticmethod
    def clean(text: str | bytes) -> str:
        """open_clip's caption cleaning (ftfy subset, HTML unescape, whitespace, lower case)."""

    @property
    def context_length(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def sot_token_id(self) -> int: ...
    @property
    def eot_token_id(self) -> int: ...
    @property
    def path(self) -> str: ...

def mlm_mask(
    ids: torch.Tensor,
    seed: int,
    epoch: int = 0,
    start_index: int = 0,
    probability: float = 0.15,
    mask_fraction: float = 0.8,
    random_fraction: float = 0.1,
    mask_token: int = 49408,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of token ids ``[N, C]`` (or ``[C]``): returns ``(masked_ids, labels)`` on
    the input's device, labels ``-100`` where not masked. Only positions strictly between SOT
    and EOT are candidates; of the chosen, ``mask_fraction`` become ``mask_token``,
    ``random_fraction`` a random ordinary token, the rest stay. Row ``i`` is seeded by
    ``(seed, epoch, start_index + i)``."""

def word_lengths(ids: torch.Tensor) -> torch.Tensor:
    """Tokens strictly between SOT and the first EOT, per row: ``[N, C]`` → ``int64 [N]``."""

# --- eda.rs ----------------------------------------------------------------------------------

def eda_augment(
    texts: str | bytes | Sequence[str | bytes],
    seed: int,
    epoch: int = 0,
    start_index: int = 0,
    probability: float = 1.0,
    synonym_replacement: float = 0.1,
    random_insertion: float = 0.1,
    random_swap: float = 0.1,
    random_deletion: float = 0.1,
    mode: str = "declip",
    op: str | None = None,
    wordnet: str | os.PathLike[str] | bool | None = None,
) -> list[str]:
    """EDA (Wei & Zou 2019) on captions. ``mode="declip"`` picks one of SR/RS/RD per caption,
    ``"any"`` one of all four; ``op`` ("sr", "ri", "rs", "rd") forces one. Caption ``i`` is
    seeded by ``(seed, epoch, start_index + i)``. ``wordnet``: None/True search
    ``$LIGHTCLIP_WORDNET`` and ``/usr/share/wordnet``, False disables, a path names the folder;
    without WordNet SR and RI are off (one warning) and RS/RD still work."""

def wordnet_synonyms(word: str, wordnet: str | os.PathLike[str] | bool | None = None) -> list[str]:
    """The WordNet synonyms EDA uses for ``word`` (base forms for inflections)."""

def wordnet_dir() -> str | None:
    """The folder of the WordNet found on the search path, or None."""
