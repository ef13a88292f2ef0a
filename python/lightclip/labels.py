"""Progressive soft labels for the instance-level contrastive loss (SPEC §2, L_ins).

The targets are built in Rust (``rust/py/src/labels.rs``) with libtorch ops on the logits'
own device; the schedule maths lives in the core crate (``rust/core/src/schedule.rs``). This
module is the Python face of both: :func:`soft_labels` and the :class:`LabelSchedule` config.

At progress ``p = step / total_steps`` the target of each row is

* ``p < r1``: hard, ``Y = I``;
* ``r1 <= p < r2``: uniform smoothing, ``Y = (1 - alpha) I + alpha / (N - 1) (1 - I)``;
* ``p >= r2``: negative-importance-aware, ``Y = (1 - alpha) I + alpha W`` with ``W`` the
  softmax of the detached logits over the negatives (row-wise for image→text, column-wise
  for text→image).

With ``ramp=True`` each switch becomes a linear blend across a window of width
``ramp_width`` centred on it: the smoothing mass rises from 0 to ``alpha`` across
``[r1 - w/2, r1 + w/2]`` and its share given to ``W`` rises from 0 to 1 across
``[r2 - w/2, r2 + w/2]``. Outside the windows the ramp equals the hard switches exactly.

    >>> import torch, lightclip
    >>> logits = torch.tensor([[10.0, 2.0, 1.0], [0.0, 9.0, 3.0], [1.0, 1.0, 8.0]])
    >>> i2t, t2i = lightclip.soft_labels(logits, 0.5)     # uniform phase
    >>> i2t[0]
    tensor([0.8000, 0.1000, 0.1000])
    >>> schedule = lightclip.LabelSchedule(ramp=True)
    >>> schedule.phase(0.9), schedule.weights(0.9)
    ('negative', LabelWeights(identity=0.8, uniform=0.0, negatives=0.2))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from . import _core
from ._core import soft_labels

__all__ = ["LabelSchedule", "LabelWeights", "soft_labels", "soft_label_rows"]


class LabelWeights(NamedTuple):
    """Weights of ``I``, the uniform matrix ``U`` and the negative-aware ``W``; they sum to 1."""

    identity: float
    uniform: float
    negatives: float


@dataclass(frozen=True)
class LabelSchedule:
    """The label schedule's configuration; the maths runs in Rust.

    Raises :class:`lightclip.InvalidInputError` (a ``ValueError``) on construction when
    ``0 <= r1 <= r2 <= 1``, ``0 <= alpha < 1`` or ``0 < ramp_width <= 1`` does not hold.
    """

    r1: float = 0.33
    r2: float = 0.66
    alpha: float = 0.2
    ramp: bool = False
    ramp_width: float = 0.1

    def __post_init__(self) -> None:
        _core.label_mix(0.0, **self._options())  # validates; the message names the argument

    def _options(self) -> dict:
        return {
            "r1": float(self.r1),
            "r2": float(self.r2),
            "alpha": float(self.alpha),
            "ramp": bool(self.ramp),
            "ramp_width": float(self.ramp_width),
        }

    def phase(self, progress: float) -> str:
        """The hard-switch phase at ``progress``: ``"hard"``, ``"uniform"`` or ``"negative"``."""
        return _core.label_phase(float(progress), **self._options())

    def weights(self, progress: float) -> LabelWeights:
        """The mixing weights at ``progress`` (ramped when ``ramp`` is on)."""
        return LabelWeights(*_core.label_mix(float(progress), **self._options()))

    def __call__(self, logits: torch.Tensor, progress: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``soft_labels(logits, progress)`` with this configuration."""
        return soft_labels(logits, float(progress), **self._options())

    def rows(self, logits: torch.Tensor, progress: float, positive_offset: int = 0) -> torch.Tensor:
        """Targets for a ``[n, M]`` block whose row i has its positive at column
        ``positive_offset + i`` (one rank's rows of the global logits under ``local_loss``)."""
        return _core.soft_label_rows(logits, float(progress), positive_offset, **self._options())


def soft_label_rows(
    logits: torch.Tensor,
    progress: float,
    positive_offset: int = 0,
    *,
    r1: float = 0.33,
    r2: float = 0.66,
    alpha: float = 0.2,
    ramp: bool = False,
    ramp_width: float = 0.1,
) -> torch.Tensor:
    """Row targets of a rectangular block; see :meth:`LabelSchedule.rows`."""
    return _core.soft_label_rows(
        logits,
        progress,
        positive_offset,
        r1=r1,
        r2=r2,
        alpha=alpha,
        ramp=ramp,
        ramp_width=ramp_width,
    )
