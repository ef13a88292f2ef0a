"""A run's folder (``<logs>/<name>/``) before training starts in it.

Starting a run under a name that already has results would silently replace them (its
checkpoint, its metrics, its export), so that needs ``--resume`` or an explicit
``--overwrite``, as open_clip refuses to reuse an experiment's name. And a run killed while
it was saving leaves the temporary file of that atomic write behind (``.epoch_latest.pt.*.tmp``,
as large as a checkpoint); the next start of the same run deletes such files.

    >>> import tempfile
    >>> from pathlib import Path
    >>> run = Path(tempfile.mkdtemp()) / "run"
    >>> (run / "checkpoints").mkdir(parents=True)
    >>> _ = (run / "checkpoints" / "epoch_latest.pt").write_bytes(b"...")
    >>> [p.name for p in earlier_results(run)]
    ['epoch_latest.pt']
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import torch.distributed as dist

from .config import TrainConfig
from .errors import InvalidInputError, RunExistsError
from .runtime import Runtime

# What a run writes into its folder, by name (see train.py, run_log.py and the export).
_CHECKPOINTS = "checkpoints"
_METRICS = "metrics.csv"
_OWN_FILES = ("config.json", _METRICS)
_OWN_FOLDERS = (_CHECKPOINTS, "tensorboard")
_EXPORT_PREFIX = "inference_model"


def run_name(config: TrainConfig) -> str:
    """``--name``, else ``<timestamp>-<model>-<recipe>``; the config is left as it is."""
    if config.name:
        return config.name
    if config.resume == "latest":
        raise InvalidInputError("--resume latest needs --name (which run to resume)")
    # Every rank must agree on the folder, so the name comes from rank 0's clock.
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    if dist.is_initialized() and dist.get_world_size() > 1:
        holder = [stamp]
        dist.broadcast_object_list(holder, src=0)
        stamp = holder[0]
    return f"{stamp}-{config.model}-{config.recipe}"


def prepare_run_folder(run_dir: Path, config: TrainConfig, rt: Runtime) -> None:
    """Rank 0 refuses (or, with ``--overwrite``, clears) an earlier run's results and deletes
    stale temporary files; under DDP every rank then raises the same refusal, so none is left
    waiting for the others."""
    refusal = None
    if rt.is_main:
        try:
            refuse_or_clear(run_dir, resuming=config.resume is not None, overwrite=config.overwrite)
        except RunExistsError as e:
            refusal = str(e)
        else:
            stale = remove_stale_temp_files(run_dir)
            if stale:
                rt.print(
                    f"removed {len(stale)} temporary file(s) from {run_dir} that a save "
                    "killed mid-write left behind"
                )
    if rt.world_size > 1:
        holder = [refusal]
        dist.broadcast_object_list(holder, src=0)
        refusal = holder[0]
    if refusal is not None:
        raise RunExistsError(refusal)


def earlier_results(run_dir: Path) -> list[Path]:
    """What an earlier run left in ``run_dir`` that a new start would replace: checkpoints,
    metric rows, an exported model. A config and an empty metrics file (a run that failed
    before its first log row) are not results."""
    if not run_dir.is_dir():
        return []
    found = sorted((run_dir / _CHECKPOINTS).glob("*.pt"))
    metrics = run_dir / _METRICS
    if metrics.is_file() and metrics.stat().st_size > 0:
        found.append(metrics)
    found += sorted(run_dir.glob(f"{_EXPORT_PREFIX}*"))
    return found


def refuse_or_clear(run_dir: Path, *, resuming: bool, overwrite: bool) -> None:
    """Refuses to start a fresh run over an earlier one's results; with ``overwrite`` deletes
    what a run writes there (and only that: other files in the folder stay)."""
    if resuming:
        return
    found = earlier_results(run_dir)
    if not found:
        return
    if not overwrite:
        raise RunExistsError(
            f"run folder {run_dir} already holds an earlier run "
            f"({', '.join(str(p.relative_to(run_dir)) for p in found[:3])}"
            f"{', ...' if len(found) > 3 else ''}); pass --resume latest to continue it, "
            "a new --name to start another, or --overwrite to replace it"
        )
    for name in _OWN_FILES:
        (run_dir / name).unlink(missing_ok=True)
    for path in [*(run_dir / n for n in _OWN_FOLDERS), *run_dir.glob(f"{_EXPORT_PREFIX}*")]:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Deletes the temporary files that atomic writes (``.NAME.*.tmp``, see
    ``checkpoint.save_checkpoint``) left in the run folder or its sub-folders when the process
    was killed mid-write; returns them."""
    if not run_dir.is_dir():
        return []
    stale = [p for p in [*run_dir.glob(".*.tmp"), *run_dir.glob("*/.*.tmp")] if p.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


__all__ = [
    "earlier_results",
    "prepare_run_folder",
    "refuse_or_clear",
    "remove_stale_temp_files",
    "run_name",
]
