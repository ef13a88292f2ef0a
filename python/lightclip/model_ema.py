"""An exponential moving average of the model's weights (timm's ``--model-ema``).

The average starts as a copy of the model and moves toward its weights after every optimizer
step: ``ema <- d_t * ema + (1 - d_t) * weights`` with ``d_t = min(decay, (1 + t) / (10 + t))``
after ``t`` updates, TensorFlow's ``ExponentialMovingAverage(num_updates=)`` warm-up. Early on
the average follows the weights closely, so runs shorter than ``1 / (1 - decay)`` steps are not
held back by the initialisation (with timm's 0.9998 the warm-up governs the first ~45,000
steps): at step t it spans roughly the last t / 9 steps. Every floating-point entry of the
state dict is averaged, parameters and batch-norm statistics alike; the others (batch counts)
are copied, and buffers outside the state dict (the text tower's causal mask) are constants.

Written here rather than with torch's ``AveragedModel``: that one averages every buffer (the
mask's -inf entries become NaN) and moves its update count to the device at each step (a
wait for the GPU).

A run with ``--model-ema`` evaluates and exports the average; its checkpoints hold both, the
trained weights to resume from and the average under ``state_dict_ema`` (timm's key).
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from .checkpoint import CheckpointError, model_state


def warmed_up_decay(decay: float, updates: int) -> float:
    """The decay of the update that follows ``updates`` earlier ones."""
    return min(decay, (1 + updates) / (10 + updates))


class ModelEma:
    """The average (``.module``, a copy of the model in eval mode, without gradients) and the
    number of updates it has taken (``.updates``)."""

    def __init__(self, model: torch.nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        """One step of the average toward ``model``'s current weights."""
        weight = 1.0 - warmed_up_decay(self.decay, self.updates)
        own = self.module.state_dict()
        averaged, current = [], []
        for name, value in model.state_dict().items():
            mine = own[name]
            if mine.is_floating_point():
                averaged.append(mine)
                current.append(value)
            else:
                mine.copy_(value)
        torch._foreach_lerp_(averaged, current, weight)
        self.updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], updates: int) -> None:
        self.module.load_state_dict(state)
        self.updates = updates


def restore_ema(ema: ModelEma, payload: dict[str, Any], source: str, print_fn: Any) -> None:
    """Loads a checkpoint's average into ``ema``. A checkpoint written without ``--model-ema``
    has none: the average then starts from the resumed weights, its warm-up counted from the
    checkpoint's step."""
    state = payload.get("state_dict_ema")
    updates = int(payload.get("ema_updates", payload["step"]))
    if state is None:
        print_fn(
            f"note: {source} holds no weight average (saved without --model-ema): the "
            "average starts from the resumed weights"
        )
        state = model_state(payload)
    try:
        ema.load_state_dict(state, updates)
    except RuntimeError as e:
        raise CheckpointError(
            f"{source}: its weight average does not fit this model ({e})"
        ) from None
