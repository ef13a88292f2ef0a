"""A run's checkpoints: ``--resume`` into the run, and its saves by open_clip's ``--save-*``
rules into ``<run>/checkpoints``.

What is saved is always ``run.boundary``: the model, optimizer and grad scaler as they are
after the last finished optimizer step, with the RNG states and the data pipeline's position
taken at that same moment (``mark_boundary``), so a resumed run replays the same samples. The
file format is ``checkpoint.py``'s; which files a run keeps is ``checkpoint_files.py``'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import checkpoint as ckpt
from .checkpoint_files import delete_previous_epoch_checkpoint, remove_stale_latest
from .model_ema import restore_ema
from .run_state import Run, StepBoundary
from .runtime import gather_objects, this_ranks


def resume(run: Run, path: Path | None) -> Any:
    """Loads the checkpoint at ``path`` into the run's model, optimizer, scaler, random
    generators and position, then marks the run's starting boundary. Returns this rank's data
    position to continue from: None for a fresh run, or one resumed at an epoch end."""
    data_state = None
    if path is not None:
        rt = run.rt
        payload = ckpt.load_checkpoint(path, map_location=rt.device)
        source = f"--resume {path}"
        ckpt.restore_training_state(
            payload, run.model, run.optimizer, run.scaler, run.config.model, source
        )
        if run.ema is not None:
            restore_ema(run.ema, payload, source, rt.print)
        elif payload.get("state_dict_ema") is not None:
            rt.print(f"note: {source} holds a weight average; without --model-ema it is dropped")
        run.step, run.epoch = payload["step"], payload["epoch"]
        data_state = this_ranks(payload.get("data"), payload, rt, "data pipeline position")
        if payload.get("rng") is not None:
            ckpt.set_rng_state(this_ranks(payload["rng"], payload, rt, "random state"))
        run.kept = (path, run.step)
        rt.print(f"resumed from {path} at step {run.step} (epoch {run.epoch})")
    mark_boundary(run, data_state)
    return data_state


def mark_boundary(run: Run, data_state: Any) -> None:
    """Records the state the next save writes: right after an optimizer step, or an epoch end
    (``data_state`` None: the next epoch starts its pass from the beginning)."""
    run.boundary = StepBoundary(run.step, run.epoch, ckpt.rng_state(), data_state)


def save(run: Run, file_name: str) -> Path:
    """Saves the state at ``run.boundary``. Every rank must call it: the RNG states and data
    positions of all ranks are gathered."""
    config, rt, boundary = run.config, run.rt, run.boundary
    rngs, data_states = gather_objects(boundary.rng, rt), gather_objects(boundary.data, rt)
    path = run.result.run_dir / "checkpoints" / file_name
    if rt.is_main:
        at = dict(step=boundary.step, epoch=boundary.epoch, world_size=rt.world_size)
        payload = ckpt.training_payload(
            run.model, run.optimizer, run.scaler, config, rng=rngs, data=data_states, **at
        )
        if run.ema is not None:  # timm's key; the update count drives the warm-up
            payload.update(state_dict_ema=run.ema.state_dict(), ema_updates=run.ema.updates)
        ckpt.save_checkpoint(path, payload)
    run.kept = (path, boundary.step)
    return path


def save_at_epoch_end(run: Run) -> None:
    """``--save-most-recent``, ``--save-frequency`` and ``--delete-previous-checkpoint`` after
    epoch ``run.epoch``; ``result.checkpoint`` names the file that holds the newest state."""
    config, rt, result = run.config, run.rt, run.result
    checkpoint_dir = result.run_dir / "checkpoints"
    if config.save_most_recent:
        result.checkpoint = save(run, ckpt.LATEST)
    if config.save_frequency and run.epoch % config.save_frequency == 0:
        saved = save(run, f"epoch_{run.epoch}.pt")
        if rt.is_main and config.delete_previous_checkpoint:
            delete_previous_epoch_checkpoint(checkpoint_dir, run.epoch)
        if not config.save_most_recent:
            result.checkpoint = saved
            if rt.is_main:
                remove_stale_latest(checkpoint_dir)


def save_at_end(run: Run) -> None:
    """The last state of the run (or of its interrupted part) into ``epoch_latest.pt``; without
    ``--save-most-recent`` only when no file holds that state yet."""
    if run.config.save_most_recent or run.kept is None or run.kept[1] != run.boundary.step:
        run.result.checkpoint = save(run, ckpt.LATEST)


def last_checkpoint(run: Run) -> str:
    """The newest checkpoint written or resumed, for messages."""
    if run.kept is None:
        return "no checkpoint yet"
    return f"last checkpoint: {run.kept[0]}, step {run.kept[1]}"
