"""Schedules as pure functions of the optimizer step: learning rate and training progress.

Being pure (no state, no optimizer inside) is what makes resume exact: the step number alone
says where a run is.

    >>> from lightclip.schedules import lr_at, default_warmup
    >>> default_warmup(1000)
    50
    >>> [round(lr_at(s, base_lr=1.0, warmup_steps=4, total_steps=12), 3) for s in (0, 3, 4, 8, 11)]
    [0.25, 1.0, 1.0, 0.5, 0.038]
"""

from __future__ import annotations

import math

WARMUP_FRACTION = 0.05  # SPEC §2 Optimisation: warm-up over the first 5% of the steps


def default_warmup(total_steps: int) -> int:
    """Warm-up length used when none is given: 5% of the run, rounded."""
    return int(round(WARMUP_FRACTION * total_steps))


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
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    if not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"warmup_steps must be in [0, total_steps], got {warmup_steps}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if step < warmup_steps:
        return base_lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps
    if decay_steps <= 0:
        return base_lr
    t = min(step - warmup_steps, decay_steps) / decay_steps
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * t)) * (base_lr - min_lr)


def progress_at(step: int, total_steps: int) -> float:
    """Training progress p = step / total_steps in [0, 1], the clock of the label schedule."""
    if total_steps < 1:
        raise ValueError(f"total_steps must be at least 1, got {total_steps}")
    return min(max(step / total_steps, 0.0), 1.0)


__all__ = ["WARMUP_FRACTION", "default_warmup", "lr_at", "progress_at"]
