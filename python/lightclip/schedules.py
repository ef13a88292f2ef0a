"""Schedules as pure functions of the optimizer step: learning rate and training progress.

The learning-rate schedules are open_clip's (``--lr-scheduler``): ``cosine`` (:func:`lr_at`),
``const`` and ``const-cooldown``, all after the same linear warm-up.

Being pure (no state, no optimizer inside) is what makes resume exact: the step number alone
says where a run is.

    >>> from lightclip.schedules import lr_at, default_warmup
    >>> default_warmup(1000)
    50
    >>> [round(lr_at(s, base_lr=1.0, warmup_steps=4, total_steps=12), 3) for s in (0, 3, 4, 8, 11)]
    [0.25, 1.0, 1.0, 0.5, 0.038]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .config import TrainConfig

WARMUP_FRACTION = 0.05  # SPEC §2 Optimisation: warm-up over the first 5% of the steps


def default_warmup(total_steps: int) -> int:
    """Warm-up length used when none is given: 5% of the run, rounded."""
    return int(round(WARMUP_FRACTION * total_steps))


def _check(step: int, warmup_steps: int, total_steps: int) -> None:
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps], got {warmup_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")


def _warmup_lr(step: int, base_lr: float, warmup_steps: int) -> float:
    """The warm-up's rate at ``step`` (see :func:`lr_at`)."""
    return base_lr * (step + 1) / warmup_steps


def lr_at(
    step: int, *, base_lr: float, warmup_steps: int, total_steps: int, min_lr: float = 0.0
) -> float:
    """Learning rate for optimizer step ``step`` (0-based): linear warm-up, then cosine.

    Warm-up rises linearly from 0 and reaches ``base_lr`` on its last step; step ``s`` uses
    ``base_lr * (s + 1) / warmup_steps`` (open_clip's convention: the very first update is
    not wasted with a zero rate). Afterwards a half cosine goes from ``base_lr`` at the first
    post-warm-up step down to ``min_lr`` at ``total_steps``. Steps past the end keep
    ``min_lr``.
    """
    _check(step, warmup_steps, total_steps)
    if step < warmup_steps:
        return _warmup_lr(step, base_lr, warmup_steps)
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return base_lr
    t = min(step - warmup_steps, decay_steps) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * t)) * (base_lr - min_lr)


def const_lr_at(step: int, *, base_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The warm-up of :func:`lr_at`, then ``base_lr`` to the end (``--lr-scheduler const``).

    >>> [const_lr_at(s, base_lr=1.0, warmup_steps=2, total_steps=5) for s in range(5)]
    [0.5, 1.0, 1.0, 1.0, 1.0]
    """
    _check(step, warmup_steps, total_steps)
    return _warmup_lr(step, base_lr, warmup_steps) if step < warmup_steps else base_lr


def const_cooldown_lr_at(
    step: int,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    cooldown_steps: int,
    power: float = 1.0,
    end_lr: float = 0.0,
) -> float:
    """Warm-up, ``base_lr``, then over the last ``cooldown_steps`` steps a decay to ``end_lr``
    shaped ``(1 - t) ** power`` (linear for 1), t going from 0 at the cooldown's first step
    towards 1 at ``total_steps`` (``--lr-scheduler const-cooldown``). Warm-up wins where the
    two overlap; steps past the end keep ``end_lr``.

    >>> [const_cooldown_lr_at(s, base_lr=1.0, warmup_steps=1, total_steps=6, cooldown_steps=4)
    ...  for s in range(6)]
    [1.0, 1.0, 1.0, 0.75, 0.5, 0.25]
    """
    _check(step, warmup_steps, total_steps)
    if cooldown_steps < 1:
        raise ValueError(f"cooldown_steps must be at least 1, got {cooldown_steps}")
    if step < warmup_steps:
        return _warmup_lr(step, base_lr, warmup_steps)
    start = total_steps - cooldown_steps
    if step < start:
        return base_lr
    t = min((step - start) / cooldown_steps, 1.0)
    return (1.0 - t) ** power * (base_lr - end_lr) + end_lr


def lr_schedule(
    name: str,
    *,
    base_lr: float,
    warmup_steps: int,
    total_steps: int,
    cooldown_steps: int | None = None,
    cooldown_power: float = 1.0,
    cooldown_end_lr: float = 0.0,
) -> Callable[[int], float]:
    """``step -> lr`` for a ``--lr-scheduler`` name (``cooldown_*`` for const-cooldown only).

    >>> schedule = lr_schedule("const", base_lr=0.1, warmup_steps=0, total_steps=10)
    >>> schedule(9)
    0.1
    """
    common = dict(base_lr=base_lr, warmup_steps=warmup_steps, total_steps=total_steps)
    _check(0, warmup_steps, total_steps)  # a bad schedule fails when built, not at a step
    if name == "cosine":
        return partial(lr_at, **common)
    if name == "const":
        return partial(const_lr_at, **common)
    if name == "const-cooldown":
        if cooldown_steps is None:
            raise ValueError("const-cooldown needs cooldown_steps")
        if not 1 <= cooldown_steps <= total_steps:
            raise ValueError(
                f"cooldown_steps must be in [1, total_steps = {total_steps}], got {cooldown_steps}"
            )
        return partial(
            const_cooldown_lr_at,
            **common,
            cooldown_steps=cooldown_steps,
            power=cooldown_power,
            end_lr=cooldown_end_lr,
        )
    raise ValueError(f"unknown lr schedule {name!r}; known: cosine, const, const-cooldown")


def declared_epoch_steps(config: TrainConfig, data: Any) -> int | None:
    """Optimizer steps in an epoch of ``--train-num-samples`` samples (over all ranks), for
    data that cannot tell its own length (plain shards): open_clip's reading of the flag for
    webdataset shards, where it is how long an epoch is. None when the data knows its length
    (a folder, a table, synthetic or resampled data, which take the flag themselves) or the
    flag is not given."""
    try:
        len(data)
        return None
    except TypeError:
        pass
    if config.train_num_samples is None:
        return None
    world_size = getattr(data, "world_size", 1)
    return max(config.train_num_samples // (config.batch_size * world_size * config.accum_freq), 1)


def training_schedule(config: TrainConfig, data: Any) -> tuple[int, Callable[[int], float]]:
    """The run's length in optimizer steps (``--steps``, else ``--epochs`` passes over
    ``data``) and its ``step -> lr`` for ``--lr-scheduler``; const-cooldown's
    ``--epochs-cooldown`` counts optimizer steps per epoch, as open_clip's does."""
    steps_per_epoch = None
    with contextlib.suppress(TypeError):  # an iterable of unknown length
        steps_per_epoch = max(len(data) // config.accum_freq, 1)
    if steps_per_epoch is None:
        steps_per_epoch = declared_epoch_steps(config, data)
    if config.steps is not None:
        total_steps = config.steps
    elif steps_per_epoch is None:
        raise InvalidInputError(
            f"--train-data {config.train_data}: its length is not known up front; pass --steps "
            "or --train-num-samples"
        )
    else:
        total_steps = config.epochs * steps_per_epoch
    warmup = config.warmup if config.warmup is not None else default_warmup(total_steps)
    cooldown_steps = None
    if config.lr_scheduler == "const-cooldown":
        epochs = config.epochs_cooldown or 0
        if steps_per_epoch is None:
            raise InvalidInputError(
                f"--epochs-cooldown {epochs}: the epoch length of --train-data "
                f"{config.train_data} is not known (pass --train-num-samples)"
            )
        cooldown_steps = steps_per_epoch * epochs
        if cooldown_steps > total_steps:
            raise InvalidInputError(
                f"--epochs-cooldown {epochs} is {cooldown_steps} steps, more than the run's "
                f"{total_steps}"
            )
    return total_steps, lr_schedule(
        config.lr_scheduler,
        base_lr=config.lr,
        warmup_steps=min(warmup, total_steps),
        total_steps=total_steps,
        cooldown_steps=cooldown_steps,
        cooldown_power=config.lr_cooldown_power,
        cooldown_end_lr=config.lr_cooldown_end,
    )


def progress_at(step: int, total_steps: int) -> float:
    """Training progress p = step / total_steps in [0, 1], the clock of the label schedule."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    return min(max(step / total_steps, 0.0), 1.0)


__all__ = [
    "WARMUP_FRACTION",
    "const_cooldown_lr_at",
    "const_lr_at",
    "default_warmup",
    "lr_at",
    "lr_schedule",
    "progress_at",
    "training_schedule",
]
