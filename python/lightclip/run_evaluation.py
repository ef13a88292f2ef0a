"""When a run evaluates: ``--val-data`` every ``--val-frequency`` epochs, ``--zeroshot-data`` by
open_clip's rule (``validation.zero_shot_due``); at the end of a complete run, ``--val-data``
if no epoch end of this run evaluated it and ``--zeroshot-data`` if the last step was not
evaluated yet. The metrics themselves are ``validation.py``'s; each evaluation is logged as one
eval row. Under ``--model-ema`` the weights evaluated are the average (``Run.eval_model``).
"""

from __future__ import annotations

from .run_state import Run
from .validation import held_out_metrics, zero_shot_due, zero_shot_metrics


def evaluate_at_epoch_end(run: Run) -> None:
    """The evaluations due after epoch ``run.epoch``."""
    config = run.config
    held_out = bool(config.val_data) and run.epoch % config.val_frequency == 0
    zero_shot = zero_shot_due(config, run.epoch)
    evaluate(run, held_out=held_out, zero_shot=zero_shot)
    run.held_out_done |= held_out
    if zero_shot:
        run.zero_shot_step = run.step


def evaluate_at_end(run: Run) -> None:
    """After the last step of a complete run: what no epoch end has evaluated at this state."""
    config = run.config
    zero_shot = config.zeroshot_data and config.zeroshot_frequency
    evaluate(
        run,
        held_out=bool(config.val_data) and not run.held_out_done,
        zero_shot=bool(zero_shot) and run.zero_shot_step != run.step,
    )


def evaluate(run: Run, *, held_out: bool, zero_shot: bool) -> None:
    """``--val-data`` and ``--zeroshot-data`` as asked, logged as one eval row."""
    metrics = {}
    if held_out:
        metrics.update(held_out_metrics(run.eval_model, run.config, run.image_size, run.rt))
    if zero_shot:
        metrics.update(zero_shot_metrics(run.eval_model, run.config, run.image_size, run.rt))
    if metrics:
        run.result.eval_metrics = metrics
        run.log.eval(run.step, metrics, epoch=run.epoch)
