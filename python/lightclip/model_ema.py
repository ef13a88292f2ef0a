"""An exponential moving average of the model's weights (timm's ``--model-ema``).

After every optimizer step the average moves toward the trained weights,
``ema <- decay_t * ema + (1 - decay_t) * weights``, over parameters and floating-point buffers
(batch-norm statistics) alike. ``decay_t = min(decay, (1 + t) / (10 + t))`` after ``t``
updates, TensorFlow's ``ExponentialMovingAverage(num_updates=)`` warm-up: early on the average
follows the weights closely, so it is not held back by the random initialisation in runs
shorter than ``1 / (1 - decay)`` steps (with timm's 0.9998 the warm-up governs the first
~45,000 steps). The averaging itself is torch's ``AveragedModel``.

A run with ``--model-ema`` evaluates and exports the averaged weights; its checkpoints hold
both, the trained ones to resume from and the average under ``state_dict_ema`` (timm's key).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import CheckpointError


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of update number ``updates + 1``: ``decay``, or less while ``updates`` is small."""
    return min(decay, (1 + updates) / (10 + updates))


class ModelEma:
    """The averaged copy of ``model`` (``.module``, a model of the same class, in eval mode and
    without gradients) and the number of updates it has taken (``.updates``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        # The average starts as a copy of the weights; AveragedModel copies again at its first
        # update, which is the same thing.
        self._averaged = AveragedModel(model, multi_avg_fn=self._average, use_buffers=True)
        self._averaged.eval().requires_grad_(False)

    @property
    def module(self) -> torch.nn.Module:
        return self._averaged.module

    def _average(self, averaged: list, current: list, num_averaged: Any) -> None:
        # The decay is read from the host-side count, so an update never waits for the GPU.
        get_ema_multi_avg_fn(warmed_up_decay(self.decay, self.updates))(
            averaged, current, num_averaged
        )

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average toward ``model``'s current weights."""
        self._averaged.update_parameters(model)
        self.updates += 1

    def restart(self, updates: int) -> None:
        """The next update copies the weights, as the first one does, and the warm-up goes on
        from ``updates``."""
        self._averaged.n_averaged.zero_()
        self.updates = updates

    def state_dict(self) -> dict[str, Any]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, Any], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates
        # AveragedModel copies the weights over the average at its first update; a restored
        # average has been updated already.
        self._averaged.n_averaged.fill_(max(updates, 1))


def restore_ema(ema: ModelEma, payload: dict[str, Any], source: str, print_fn: Any) -> None:
    """Loads a checkpoint's average into ``ema``. A checkpoint written without ``--model-ema``
    has none: the average then starts from the resumed weights at the next update, its warm-up
    counted from the checkpoint's step."""
    state = payload.get("state_dict_ema")
    if state is None:
        print_fn(
            f"note: {source} holds no weight average (saved without --model-ema): the "
            "average starts from the resumed weights"
        )
        ema.restart(updates=int(payload["step"]))
        return
    try:
        ema.load_state_dict(state, int(payload["ema_updates"]))
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(
            f"{source}: its weight average does not fit this model ({e})"
        ) from None
