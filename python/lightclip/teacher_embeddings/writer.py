"""The writer of teacher-embeddings stores (``store.py`` says the format) and the
``lightclip teacher-embeddings`` command: a teacher run once over a shard set, one store per
shard, beside it or in ``--out``.

    teacher = Teacher.load("local-dir:runs/big/inference_model", None, device="cuda")
    write_teacher_embeddings("flickr8k/train-{000000..000005}.tar", teacher)
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import secrets
import stat
from collections.abc import Sequence
from pathlib import Path

import torch
from safetensors.torch import save_file

from ..data import DataPipeline, ReadingConfig
from ..errors import DataError, InvalidInputError
from ..teacher import Teacher
from ..tokenizer import get_tokenizer
from .store import (
    FORMAT,
    FORMAT_VERSION,
    _check_distinct_names,
    _open_store,
    _shards,
    embeddings_path,
    shard_fingerprint,
    teacher_fingerprint,
)

logger = logging.getLogger("lightclip.teacher_embeddings")

DTYPES = {"float32": torch.float32, "float16": torch.float16}

__all__ = ["DTYPES", "add_arguments", "run", "write_teacher_embeddings"]


# ---------------------------------------------------------------------- writing


@torch.no_grad()
def _embed_shard(
    shard: str, teacher: Teacher, batch_size: int, threads: int | None, device: torch.device
) -> tuple[list[str], torch.Tensor, torch.Tensor, torch.Tensor]:
    data = DataPipeline(
        shard,
        batch_size=batch_size,
        image_size=teacher.image_size,
        train=False,
        threads=threads,
        rank=0,
        world_size=1,
        all_captions=True,
        reading=ReadingConfig(on_error="skip"),
    )
    tokenizer = get_tokenizer(context_length=teacher.context_length)
    keys: list[str] = []
    images: list[torch.Tensor] = []
    texts: list[torch.Tensor] = []
    counts: list[int] = []
    for batch in data:
        keys += batch["key"]
        images.append(teacher.embed_images(batch["image"].to(device)).cpu())
        captions = [caption for sample in batch["all_captions"] for caption in sample]
        counts += [len(sample) for sample in batch["all_captions"]]
        for start in range(0, len(captions), batch_size):
            tokens = tokenizer(captions[start : start + batch_size]).to(device)
            texts.append(teacher.embed_text(tokens).cpu())
    if not keys:
        raise DataError(f"shard {shard}: no usable sample (see the pipeline's skip log)")
    dim = images[0].shape[1]
    offsets = torch.zeros(len(keys) + 1, dtype=torch.int64)
    offsets[1:] = torch.tensor(counts, dtype=torch.int64).cumsum(0)
    text = torch.cat(texts) if texts else torch.zeros(0, dim)
    return keys, torch.cat(images), text, offsets


def _metadata(
    shard: str,
    fingerprint: tuple[int, str],
    teacher: Teacher,
    teacher_sha: str,
    pretrained: str | None,
    keys: list[str],
    dim: int,
) -> dict[str, str]:
    size, sha = fingerprint
    return {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "shard_name": Path(shard).name,
        "shard_size": str(size),
        "shard_sha256": sha,
        "teacher_model": teacher.name,
        "teacher_pretrained": pretrained or "",
        "teacher_sha256": teacher_sha,
        "teacher_image_size": str(teacher.image_size),
        "teacher_context_length": str(teacher.context_length),
        "embed_dim": str(dim),
        "keys": json.dumps(keys),
    }


def write_teacher_embeddings(
    source: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    teacher: Teacher,
    *,
    out: str | os.PathLike[str] | None = None,
    pretrained: str | None = None,
    batch_size: int = 64,
    threads: int | None = None,
    dtype: str = "float32",
    force: bool = False,
) -> list[Path]:
    """Embeds every shard of ``source`` with ``teacher`` and writes one store per shard
    (beside it, or in ``out``); returns their paths. A store that already matches its shard
    and this teacher is kept unless ``force``. ``pretrained`` is only recorded."""
    if dtype not in DTYPES:
        raise InvalidInputError(f"--dtype {dtype}: one of {', '.join(DTYPES)}")
    if batch_size < 1:
        raise InvalidInputError(f"--batch-size must be at least 1, got {batch_size}")
    shards = _shards(source)
    _check_distinct_names(shards, out)
    if out is not None:
        Path(out).mkdir(parents=True, exist_ok=True)
    teacher_sha = teacher_fingerprint(teacher)
    device = teacher.pixel_scale.device
    written = []
    for shard in shards:
        path = embeddings_path(shard, out)
        if not force and path.is_file():
            try:
                _open_store(path, shard, teacher_sha)
                logger.info("%s: up to date", path)
                written.append(path)
                continue
            except (DataError, InvalidInputError) as e:
                logger.info("%s: rewriting (%s)", path, e)
        fingerprint = shard_fingerprint(shard)  # before reading: what the rows come from
        keys, images, texts, offsets = _embed_shard(shard, teacher, batch_size, threads, device)
        tensors = {
            "image_features": images.to(DTYPES[dtype]).contiguous(),
            "text_features": texts.to(DTYPES[dtype]).contiguous(),
            "text_offsets": offsets,
            "logit_scale": teacher.logit_scale().cpu().reshape(()),
        }
        metadata = _metadata(
            shard, fingerprint, teacher, teacher_sha, pretrained, keys, images.shape[1]
        )
        tmp = _temp_beside(path)
        try:
            mode = stat.S_IMODE(os.stat(tmp).st_mode)
            save_file(tensors, tmp, metadata=metadata)
            os.chmod(tmp, mode)  # safetensors writes its files 0o600
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        written.append(path)
    return written


def _temp_beside(path: Path) -> str:
    """A new empty file beside ``path`` to write the store into and rename over it, so an
    interrupted run leaves no half store under the name. Created as ``open(path, "w")``
    would create it (0o666 less the umask), not with mkstemp's 0o600: a store is data that
    others training on the same shards read. Its mode is the one the store keeps."""
    while True:
        tmp = str(path.parent / f".{path.name}.{secrets.token_hex(6)}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue
        except OSError as e:
            if e.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
                raise
            raise DataError(
                f"cannot write {path}: {e.strerror}; put the stores elsewhere with --out FOLDER "
                "(and give training the same folder)"
            ) from None


# ---------------------------------------------------------------------- command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--train-data",
        required=True,
        help="webdataset shards: paths or brace patterns joined by '::', as lightclip train",
    )
    parser.add_argument(
        "--distill-model",
        required=True,
        help="the teacher, spelt as for lightclip train (a preset, an open_clip model name or "
        "a local-dir: export)",
    )
    parser.add_argument(
        "--distill-pretrained", help="the teacher's weights (as for lightclip train)"
    )
    parser.add_argument(
        "--out",
        help="folder for the stores (default: beside each shard, as <shard>.teacher.safetensors)",
    )
    parser.add_argument("--batch-size", type=int, default=64, help="images per teacher pass")
    parser.add_argument(
        "--device",
        default="cuda" if torch.cuda.is_available() else "cpu",
        help="where the teacher runs (default: cuda when available)",
    )
    parser.add_argument("--workers", type=int, help="data pipeline threads (default: one per core)")
    parser.add_argument(
        "--dtype",
        choices=tuple(DTYPES),
        default="float32",
        help="stored precision (float32: the online teacher's numbers; float16: half the size)",
    )
    parser.add_argument("--force", action="store_true", help="rewrite stores that already match")


def run(args: argparse.Namespace) -> int:
    teacher = Teacher.load(args.distill_model, args.distill_pretrained, device=args.device)
    paths = write_teacher_embeddings(
        args.train_data,
        teacher,
        out=args.out,
        pretrained=args.distill_pretrained,
        batch_size=args.batch_size,
        threads=args.workers,
        dtype=args.dtype,
        force=args.force,
    )
    for path in paths:
        print(path)
    return 0
