"""Teacher embeddings offline (``lightclip teacher-embeddings``): a teacher run once over a
shard set, its embeddings stored beside each shard, and training reading them instead of
running the teacher (``--distill-embeddings``).

``store.py`` owns the stored format, the checks a store must pass and its reader
(:func:`load_teacher_embeddings`, :class:`TeacherEmbeddings`, :func:`distillation_teacher`);
``writer.py`` runs the teacher and writes the stores (:func:`write_teacher_embeddings`, the
command). The writer reads the store's format and checks; the reader never imports the
writer, so the format and its checks can be read, and changed, in one file.

    teacher = Teacher.load("local-dir:runs/big/inference_model", None, device="cuda")
    write_teacher_embeddings("flickr8k/train-{000000..000005}.tar", teacher)
    store = load_teacher_embeddings("flickr8k/train-{000000..000005}.tar", teacher=teacher)
    out = store.output_for(batch)  # a TeacherOutput, as teacher.output_for(batch) gives
"""

from .store import (
    FORMAT,
    FORMAT_VERSION,
    SUFFIX,
    TeacherEmbeddings,
    distillation_teacher,
    embeddings_path,
    load_teacher_embeddings,
    shard_fingerprint,
    teacher_fingerprint,
)
from .writer import DTYPES, add_arguments, run, write_teacher_embeddings

__all__ = [
    "DTYPES",
    "FORMAT",
    "FORMAT_VERSION",
    "SUFFIX",
    "TeacherEmbeddings",
    "add_arguments",
    "distillation_teacher",
    "embeddings_path",
    "load_teacher_embeddings",
    "run",
    "shard_fingerprint",
    "teacher_fingerprint",
    "write_teacher_embeddings",
]
