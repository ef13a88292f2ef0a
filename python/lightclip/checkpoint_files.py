"""Which checkpoint files a run keeps in ``<run>/checkpoints``: open_clip's
``--save-most-recent`` and ``--delete-previous-checkpoint``, and the file ``--resume latest``
picks.

A run writes ``epoch_N.pt`` every ``--save-frequency`` epochs and ``epoch_latest.pt`` (the most
recent state, what ``--resume latest`` and Ctrl-C use). With ``--no-save-most-recent``
``epoch_latest.pt`` is written only where a run stops between epoch files (Ctrl-C, ``--steps``
mid-epoch, ``--save-every-n-steps``) and removed as soon as a newer ``epoch_N.pt`` exists, so
whichever file is newest is the state to resume from.

    >>> import tempfile
    >>> from pathlib import Path
    >>> from lightclip.checkpoint_files import newest_checkpoint
    >>> folder = Path(tempfile.mkdtemp())
    >>> for n in (2, 10, 9):
    ...     _ = (folder / f"epoch_{n}.pt").write_bytes(b"")
    >>> newest_checkpoint(folder).name
    'epoch_10.pt'
"""

from __future__ import annotations

import re
from pathlib import Path

from .checkpoint import LATEST

_EPOCH_FILE = re.compile(r"epoch_(\d+)\.pt")


def epoch_checkpoints(checkpoint_dir: Path) -> dict[int, Path]:
    """``{N: epoch_N.pt}`` of the folder (none when it does not exist)."""
    if not checkpoint_dir.is_dir():
        return {}
    found = {}
    for path in checkpoint_dir.iterdir():
        match = _EPOCH_FILE.fullmatch(path.name)
        if match and path.is_file():
            found[int(match.group(1))] = path
    return found


def newest_checkpoint(checkpoint_dir: Path) -> Path | None:
    """What ``--resume latest`` resumes: ``epoch_latest.pt``, else the highest
    ``epoch_N.pt``, else None (a fresh start)."""
    latest = checkpoint_dir / LATEST
    if latest.is_file():
        return latest
    epochs = epoch_checkpoints(checkpoint_dir)
    return epochs[max(epochs)] if epochs else None


def delete_previous_epoch_checkpoint(checkpoint_dir: Path, epoch: int) -> Path | None:
    """Deletes the newest ``epoch_K.pt`` with K < ``epoch`` (``epoch_{N-1}.pt`` when every
    epoch is saved); returns it, or None when there was none."""
    older = {k: p for k, p in epoch_checkpoints(checkpoint_dir).items() if k < epoch}
    if not older:
        return None
    previous = older[max(older)]
    previous.unlink(missing_ok=True)
    return previous


def remove_stale_latest(checkpoint_dir: Path) -> None:
    """Without ``--save-most-recent``: a newer ``epoch_N.pt`` was just written, so an
    ``epoch_latest.pt`` left by an earlier stop is older than it and must not be resumed."""
    (checkpoint_dir / LATEST).unlink(missing_ok=True)


__all__ = [
    "delete_previous_epoch_checkpoint",
    "epoch_checkpoints",
    "newest_checkpoint",
    "remove_stale_latest",
]
