"""A run that diverges stops at once: a loss that becomes NaN or infinite, or weights an update
made non-finite, raise ``NonFiniteLossError`` naming the step and the loss part (or the
weights), before anything of that step is saved or exported, so the last checkpoint is still a
good one.

The losses are read off the device only now and then (``step_metrics.py``), so a later
micro-batch can meet non-finite weights before the loop has seen the NaN loss that made them:
a loss that refuses them (the token matcher rejects a NaN cost) raises first, and then the
steps not read yet and the weights are checked, to name the cause rather than the symptom.
"""

from __future__ import annotations

import torch

from .errors import NonFiniteLossError
from .run_checkpoints import last_checkpoint
from .run_state import Run
from .step_metrics import non_finite_losses


def stop_on_non_finite_loss(run: Run, step: int, metrics: dict[str, float]) -> None:
    """Raises if step ``step``'s row has a NaN or infinite loss (its parts first)."""
    bad = non_finite_losses(metrics)
    if bad:
        values = ", ".join(f"{k} = {v}" for k, v in bad.items())
        raise diverged(run, f"the loss became non-finite at step {step} ({values})")


def stop_on_non_finite_weights(run: Run) -> None:
    """Raises if the last update (step ``run.step``) left a weight NaN or infinite."""
    broken = [n for n, p in run.model.named_parameters() if not torch.isfinite(p).all()]
    if broken:
        what = f"{broken[0]}{' and others' if len(broken) > 1 else ''}; its loss was finite"
        raise diverged(
            run, f"the weights became non-finite in the update of step {run.step} ({what})"
        ) from None


def diverged(run: Run, what: str) -> NonFiniteLossError:
    return NonFiniteLossError(
        f"{what}; stopped without saving it ({last_checkpoint(run)}); a lower --lr or "
        "--grad-clip-norm may keep training finite"
    )
