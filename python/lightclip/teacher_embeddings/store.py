"""The teacher-embeddings store: its format, the identities it is checked by, and its reader.
The writer and the ``lightclip teacher-embeddings`` command are ``writer.py``.

One safetensors file per shard, ``<shard file name>.teacher.safetensors`` (beside the shard, or
in ``--out``). It holds the teacher's L2-normalised embeddings, in float32 by default:

* ``image_features`` ``[N, D]``: one row per sample, the embedding of the *clean* image, the
  evaluation preprocessing at the teacher's resolution (resize the short side, centre crop),
  not of a training augmentation. MobileCLIP's reinforced datasets store one embedding per
  stored augmentation; we store the clean view only, so offline image targets do not follow
  the student's crop.
* ``text_features`` ``[M, D]``: every caption of every sample (a Flickr8k sample has 5), since
  training draws one at random each epoch; sample ``i``'s captions are rows
  ``text_offsets[i]:text_offsets[i + 1]``, in the order the data pipeline lists them
  (``batch["all_captions"]``). Captions are tokenized at the teacher's context length.
* ``text_offsets`` ``[N + 1]`` (int64) and ``logit_scale`` ``[]`` (the exponentiated scale).

float32 because then the stored rows are the online teacher's own numbers (the loss computes in
float32 anyway); ``--dtype float16`` halves the files where their size matters (a wide teacher
over many captions), and the reader takes either. The header's metadata (all strings) says what
the rows belong to, and the reader refuses a file that does not match:

    format               "lightclip-teacher-embeddings"
    format_version       "1" (a newer one is refused, not misread)
    shard_name           the shard's file name
    shard_size           its size in bytes
    shard_sha256         the sha256 of the whole shard file
    teacher_model        --distill-model as given (information only)
    teacher_pretrained   --distill-pretrained as given, or ""
    teacher_sha256       teacher_fingerprint(): its state dict and preprocessing
    teacher_image_size   the resolution the images were embedded at
    teacher_context_length
    embed_dim            D
    keys                 JSON list of the sample keys, in row order

A store is read whole into memory (``4 * D`` bytes per image and per caption in float32).
``lightclip train --distill-embeddings DIR|auto`` distils from the stores instead of running
the teacher (:func:`distillation_teacher`): each batch row finds its embeddings by the sample
key, shard and drawn caption the pipeline reports (``DataPipeline(sample_ids=True)``)::

    store = load_teacher_embeddings("flickr8k/train-{000000..000005}.tar", teacher=teacher)
    out = store.output_for(batch)  # a TeacherOutput, as teacher.output_for(batch) gives
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open

from .. import _core
from ..data import is_shard_source
from ..errors import DataError, InvalidInputError
from ..teacher import Teacher, TeacherOutput, _mean_std

FORMAT = "lightclip-teacher-embeddings"
FORMAT_VERSION = 1
SUFFIX = ".teacher.safetensors"

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "SUFFIX",
    "TeacherEmbeddings",
    "distillation_teacher",
    "embeddings_path",
    "load_teacher_embeddings",
    "shard_fingerprint",
    "teacher_fingerprint",
]


# ---------------------------------------------------------------------- identities


def shard_fingerprint(shard: str | os.PathLike[str]) -> tuple[int, str]:
    """``(size in bytes, sha256 hex)`` of a shard file."""
    digest = hashlib.sha256()
    try:
        with open(shard, "rb") as f:
            size = 0
            while chunk := f.read(1 << 20):
                digest.update(chunk)
                size += len(chunk)
    except OSError as e:
        raise DataError(f"shard {shard}: cannot read it: {e}") from None
    return size, digest.hexdigest()


def teacher_fingerprint(teacher: Teacher) -> str:
    """A sha256 over the teacher's state dict (names, dtypes, shapes, bytes, in name order)
    and its preprocessing (resolution, context length, mean/std): what its embeddings depend
    on. The model's name does not enter it, so a moved folder is the same teacher."""
    digest = hashlib.sha256()
    state = teacher.model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(state[name].shape)}|".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    mean, std = _mean_std(teacher.model)
    preprocessing = {
        "image_size": teacher.image_size,
        "context_length": teacher.context_length,
        "mean": list(mean),
        "std": list(std),
    }
    digest.update(json.dumps(preprocessing, sort_keys=True).encode())
    return digest.hexdigest()


def embeddings_path(shard: str | os.PathLike[str], folder: str | os.PathLike[str] | None) -> Path:
    """Where the store of ``shard`` lives: beside it, or in ``folder`` under its file name."""
    shard = Path(shard)
    return (shard.parent if folder is None else Path(folder)) / f"{shard.name}{SUFFIX}"


def _shards(source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        source = os.fspath(source)
    else:
        source = "::".join(os.fspath(s) for s in source)
    shards = list(dict.fromkeys(_core.shard_names(source)))  # a shard named twice: one store
    if not shards:
        raise InvalidInputError(f"no shards in {source!r}")
    return shards


def _check_distinct_names(shards: list[str], folder: str | os.PathLike[str] | None) -> None:
    if folder is None:
        return
    names: dict[str, str] = {}
    for shard in shards:
        other = names.setdefault(Path(shard).name, shard)
        if other != shard:
            raise InvalidInputError(
                f"--out {folder}: shards {other} and {shard} have the same file name, so "
                "their stores would be one file; store them beside their shards instead"
            )


# ---------------------------------------------------------------------- reading


def _open_store(path: Path, shard: str, teacher_sha: str | None) -> dict[str, str]:
    """The metadata of the store at ``path``, checked against ``shard`` and the teacher."""
    if not path.is_file():
        raise DataError(
            f"shard {shard}: no teacher embeddings at {path} "
            "(write them with `lightclip teacher-embeddings`)"
        )
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise DataError(f"{path}: not a readable teacher-embeddings file: {e}") from None
    if meta.get("format") != FORMAT:
        raise DataError(f"{path}: not a teacher-embeddings file (format {meta.get('format')!r})")
    try:
        version = int(meta.get("format_version", ""))
    except ValueError:
        raise DataError(f"{path}: bad format_version {meta.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise DataError(
            f"{path}: format version {version} is newer than this lightclip reads "
            f"({FORMAT_VERSION}); upgrade lightclip or rewrite the store"
        )
    if version < 1:
        raise DataError(f"{path}: bad format_version {version}")
    size, sha = shard_fingerprint(shard)
    if (str(size), sha) != (meta.get("shard_size"), meta.get("shard_sha256")):
        raise DataError(
            f"{path}: written for another shard ({meta.get('shard_name')}, "
            f"{meta.get('shard_size')} bytes, sha256 {str(meta.get('shard_sha256'))[:12]}...) "
            f"than {shard} ({size} bytes, sha256 {sha[:12]}...): the shard changed since; "
            "rewrite the embeddings"
        )
    if teacher_sha is not None and meta.get("teacher_sha256") != teacher_sha:
        raise InvalidInputError(
            f"{path}: embeddings of another teacher ({meta.get('teacher_model')}, sha256 "
            f"{str(meta.get('teacher_sha256'))[:12]}...) than expected (sha256 "
            f"{teacher_sha[:12]}...: the teacher given, else the first shard's store's)"
        )
    return meta


def _read_tensors(path: Path, meta: dict[str, str]) -> tuple[list[str], dict[str, torch.Tensor]]:
    try:
        with safe_open(path, framework="pt") as f:
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118
        keys = json.loads(meta["keys"])
        dim = int(meta["embed_dim"])
    except (SafetensorError, OSError, KeyError, ValueError) as e:
        raise DataError(f"{path}: damaged teacher-embeddings file: {e!r}") from None
    need = ("image_features", "text_features", "text_offsets", "logit_scale")
    missing = [name for name in need if name not in tensors]
    if missing:
        raise DataError(f"{path}: damaged teacher-embeddings file: no {', '.join(missing)}")
    images, texts, offsets = (tensors[n] for n in need[:3])
    ok = (
        isinstance(keys, list)
        and images.shape == (len(keys), dim)
        and texts.ndim == 2
        and texts.shape[1] == dim
        and offsets.shape == (len(keys) + 1,)
        and int(offsets[0]) == 0
        and int(offsets[-1]) == texts.shape[0]
        and bool((offsets[1:] >= offsets[:-1]).all())
    )
    if not ok:
        raise DataError(f"{path}: damaged teacher-embeddings file: shapes do not agree")
    return keys, tensors


@dataclass
class TeacherEmbeddings:
    """The stored teacher embeddings of a shard set, looked up by sample key.

    ``image_features[row]`` / ``text_features[text_offsets[row] + caption]``, where ``row`` is
    ``index[key]``. A key that occurs in two shards (``ambiguous[key]``: its row in each) needs
    its shard to be looked up, as the pipeline's ``batch["shard"]`` names it; without one it
    raises :class:`~lightclip.errors.DataError`, as does a key that is in no store.

    It is also what training distils from with ``--distill-embeddings``: :meth:`to` moves the
    embeddings to the training device once, and :meth:`output_for` gives each batch's
    :class:`~lightclip.teacher.TeacherOutput`, as :meth:`Teacher.output_for
    <lightclip.teacher.Teacher.output_for>` does by running the teacher. Its targets are of the
    clean image and the caption as written, where an online teacher sees the student's crop,
    flip and EDA-edited caption."""

    image_features: torch.Tensor
    text_features: torch.Tensor
    text_offsets: torch.Tensor  # on the host: the lookups are
    logit_scale: torch.Tensor
    index: dict[str, int]
    ambiguous: dict[str, dict[str, int]]
    teacher_sha256: str
    teacher_model: str

    def __len__(self) -> int:
        return self.image_features.shape[0]

    def __contains__(self, key: object) -> bool:
        return key in self.index

    @property
    def embed_dim(self) -> int:
        return self.image_features.shape[1]

    def row(self, key: str, shard: str | None = None) -> int:
        """The row of ``key``; ``shard`` (the shard path as the source names it) tells a key
        that is in several shards apart."""
        rows = self.ambiguous.get(key)
        if rows is not None:
            if shard in rows:
                return rows[shard]
            raise DataError(
                f"sample key {key!r} is in several shards ({', '.join(rows)}): "
                + ("a lookup by key cannot tell which" if shard is None else f"not in {shard}")
            )
        if key not in self.index:
            raise DataError(f"sample key {key!r}: not in the teacher embeddings")
        return self.index[key]

    def captions(self, key: str) -> torch.Tensor:
        """The teacher's embeddings of every caption of ``key``, ``[n_captions, D]``."""
        row = self.row(key)
        return self.text_features[self.text_offsets[row] : self.text_offsets[row + 1]].float()

    def output(
        self,
        keys: Sequence[str],
        caption_indices: Sequence[int],
        device: str | torch.device = "cpu",
        shards: Sequence[str] | None = None,
    ) -> TeacherOutput:
        """A batch's :class:`~lightclip.teacher.TeacherOutput`: the clean image of each key
        and its caption ``caption_indices[i]`` (its place in ``batch["all_captions"][i]``), in
        float32 on ``device``: what the distillation loss takes in place of an online teacher.
        ``shards[i]`` (``batch["shard"]``) is needed only for a key that is in several shards.
        The indices are checked on the host, then the rows gathered where the embeddings are."""
        if len(keys) != len(caption_indices) or (shards is not None and len(shards) != len(keys)):
            raise InvalidInputError(
                f"{len(keys)} keys, {len(caption_indices)} caption indices"
                + ("" if shards is None else f" and {len(shards)} shards")
                + ": one each per row"
            )
        where = [None] * len(keys) if shards is None else shards
        rows = torch.tensor(
            [self.row(key, shard) for key, shard in zip(keys, where, strict=True)],
            dtype=torch.int64,
        )
        starts = self.text_offsets[rows]
        counts = self.text_offsets[rows + 1] - starts
        picks = torch.tensor(list(caption_indices), dtype=torch.int64)
        bad = (picks < 0) | (picks >= counts)
        if bool(bad.any()):
            i = int(bad.nonzero()[0])
            raise DataError(
                f"sample key {keys[i]!r}: caption {int(picks[i])} asked for, the store has "
                f"{int(counts[i])}"
            )
        return TeacherOutput(
            image_features=_gather(self.image_features, rows).to(device, torch.float32),
            text_features=_gather(self.text_features, starts + picks).to(device, torch.float32),
            logit_scale=self.logit_scale.to(device),
        )

    def to(self, device: str | torch.device) -> TeacherEmbeddings:
        """A copy with the embeddings on ``device`` (the index and the offsets stay on the
        host, where the lookups are): read once at the start of training, so a step moves
        only its row numbers."""
        return dataclasses.replace(
            self,
            image_features=self.image_features.to(device),
            text_features=self.text_features.to(device),
            logit_scale=self.logit_scale.to(device),
        )

    def output_for(self, batch: dict[str, Any]) -> TeacherOutput:
        """The stored teacher output of a training batch, by its ``"key"``, ``"shard"`` and
        ``"caption_index"`` (``DataPipeline(sample_ids=True)``), on the embeddings' device."""
        missing = [name for name in ("key", "shard", "caption_index") if name not in batch]
        if missing:
            raise DataError(
                f"--distill-embeddings: the batch has no {', '.join(map(repr, missing))}: stored "
                "embeddings are looked up by sample, so the data needs "
                "DataPipeline(..., sample_ids=True)"
            )
        return self.output(
            batch["key"],
            batch["caption_index"],
            device=self.image_features.device,
            shards=batch["shard"],
        )


def _gather(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    if table.device.type == "cuda":  # pinned, the row numbers go over without a sync
        rows = rows.pin_memory()
    return table[rows.to(table.device, non_blocking=True)]


def load_teacher_embeddings(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    folder: str | os.PathLike[str] | None = None,
    teacher: Teacher | str | None = None,
) -> TeacherEmbeddings:
    """The stores of every shard of ``source`` (paths or brace patterns, as
    :class:`~lightclip.DataPipeline` takes them), read from beside the shards or from
    ``folder``. Each is checked against its shard (size and sha256) and, when ``teacher`` (a
    :class:`~lightclip.teacher.Teacher` or its :func:`teacher_fingerprint`) is given, against
    it; all must come from one teacher. A missing, damaged or newer-format file raises
    :class:`~lightclip.errors.DataError`; another teacher
    :class:`~lightclip.errors.InvalidInputError`."""
    shards = _shards(source)
    _check_distinct_names(shards, folder)
    expected = teacher_fingerprint(teacher) if isinstance(teacher, Teacher) else teacher
    images, texts, offsets, scales = [], [], [], []
    index: dict[str, int] = {}
    owner: dict[str, str] = {}
    ambiguous: dict[str, dict[str, int]] = {}
    first: dict[str, str] | None = None
    rows = text_rows = 0
    for shard in shards:
        path = embeddings_path(shard, folder)
        meta = _open_store(path, shard, expected)
        if first is None:
            first = meta
            expected = meta["teacher_sha256"]  # every other store: the same teacher
        keys, tensors = _read_tensors(path, meta)
        for i, key in enumerate(keys):
            if key in owner:
                ambiguous.setdefault(key, {owner[key]: index[key]})[shard] = rows + i
            owner[key] = shard
            index[key] = rows + i
        images.append(tensors["image_features"])
        texts.append(tensors["text_features"])
        offsets.append(tensors["text_offsets"][1:] + text_rows)
        scales.append(tensors["logit_scale"].float().reshape(()))
        rows += len(keys)
        text_rows += tensors["text_features"].shape[0]
    assert first is not None  # _shards gives at least one
    dims = {t.shape[1] for t in images}
    if len(dims) > 1:
        raise DataError(f"stores of one teacher with embedding widths {sorted(dims)}")
    return TeacherEmbeddings(
        image_features=torch.cat(images),
        text_features=torch.cat(texts),
        text_offsets=torch.cat([torch.zeros(1, dtype=torch.int64), *offsets]),
        logit_scale=scales[0],
        index=index,
        ambiguous=ambiguous,
        teacher_sha256=first["teacher_sha256"],
        teacher_model=first["teacher_model"],
    )


def distillation_teacher(
    config: Any, device: str | torch.device
) -> Teacher | TeacherEmbeddings | None:
    """What a training run distils from: with ``--distill-embeddings`` the stores of its
    ``--train-data`` shards on ``device`` (checked, when ``--distill-model`` is given too, to be
    that teacher's, which is then loaded once for its fingerprint and not run), else the online
    teacher of ``--distill-model``, else None. Both answer ``output_for(batch)``."""
    if config.distill_embeddings is None:
        return Teacher.from_config(config, device)
    if not is_shard_source(config.train_data):
        raise InvalidInputError(
            f"--distill-embeddings reads the stores of webdataset shards; --train-data "
            f"{config.train_data} is not a shard source"
        )
    folder = None if config.distill_embeddings == "auto" else config.distill_embeddings
    expected = None
    if config.distill_model is not None:
        teacher = Teacher.load(config.distill_model, config.distill_pretrained, device="cpu")
        expected = teacher_fingerprint(teacher)
    store = load_teacher_embeddings(config.train_data, folder=folder, teacher=expected)
    return store.to(device)
