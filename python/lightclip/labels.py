"""Progressive soft labels for the instance-level contrastive loss (SPEC §2, L_ins).

:class:`LabelSchedule` is the schedule's configuration, checked once when it is made; the
weights come from the core crate (``rust/core/src/schedule.rs``) and the targets are built by
:func:`soft_labels` / :func:`soft_label_rows` (``rust/py/src/labels.rs``) with libtorch ops on
the logits' own device, detached.

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
    >>> i2t, t2i = lightclip.soft_labels(logits, 0.5)     # default schedule: uniform phase
    >>> i2t[0]
    tensor([0.8000, 0.1000, 0.1000])
    >>> schedule = lightclip.LabelSchedule(alpha=0.1, ramp=True)
    >>> schedule.phase(0.9), schedule.weights(0.9)       # (identity, uniform, negatives)
    ('negative', (0.9, 0.0, 0.1))
    >>> i2t, t2i = lightclip.soft_labels(logits, 0.9, schedule=schedule)
"""

from ._core import LabelSchedule, soft_label_rows, soft_labels

__all__ = ["LabelSchedule", "soft_labels", "soft_label_rows"]
