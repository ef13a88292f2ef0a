"""Training, top to bottom: setup, model, data, optimizer, resume, the epochs, the end.

    lightclip train --model lightclip-tiny-mnv2 --train-data synthetic --steps 200
    lightclip train --recipe clip ...                           # the plain CLIP baseline
    torchrun --nproc_per_node=2 -m lightclip train ...          # DDP: gloo on CPU, NCCL on GPU
    lightclip train --pretrained export/ --lock-image --lr-scheduler const ...  # open_clip's flags

or from Python / a notebook::

    from lightclip import train, TrainConfig
    result = train(TrainConfig(model="lightclip-tiny-mnv2", steps=100, batch_size=32))

The loss is L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm (``losses.LightCLIPLoss``), plus
w_distill L_distill (and w_distill_feature L_distill_feature) against a frozen teacher with
``--distill-model`` (``teacher.py``) or its stored embeddings with ``--distill-embeddings``
(``teacher_embeddings/``); each step also logs the training diagnostics of
``diagnostics.py``. This file is the loop; the pieces it wires together live where a reader
looks for them: the model in ``models``, the Rust data pipeline in ``data.py``, the run's
length and learning rate in ``schedules.py``, rank / device / precision / Ctrl-C in
``runtime.py``, the per-step metrics in ``step_metrics.py``, the run's state in
``run_state.py``, resume and the ``--save-*`` rules in ``run_checkpoints.py``, when to evaluate
in ``run_evaluation.py`` (how: ``validation.py``), the NaN guard in ``run_divergence.py``, the
``--model-ema`` weight average (what a run then evaluates and exports) in ``model_ema.py``, the
export in ``openclip_export.py``.

Resume is exact: a checkpoint holds the model, the optimizer, the grad scaler, the step, the
RNG states and the data pipeline's position, all taken at the same optimizer-step boundary, so
``--resume latest`` replays the same samples and the same loss curve as a run that was never
stopped. Ctrl-C asks the loop to stop after the current step and save; a second Ctrl-C stops
at once without saving. A loss that becomes NaN or infinite stops the run with an error naming
the step, before anything of that step is saved or exported.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from . import run_checkpoints as checkpoints
from .checkpoint import LATEST, resolve_resume
from .config import TrainConfig, parse_args
from .data import build_pipeline
from .diagnostics import training_diagnostics
from .errors import DataError, run_command
from .losses import LightCLIPLoss
from .model_ema import ModelEma
from .models import apply_model_options, build_model
from .openclip_export import export_inference_model
from .optim import clamp_logit_scale, optimizer_for, set_lr
from .progressive_resize import check_image_size_start, resize_images, training_side
from .run_divergence import stop_on_non_finite_loss, stop_on_non_finite_weights
from .run_evaluation import evaluate_at_end, evaluate_at_epoch_end
from .run_folder import prepare_run_folder, run_name
from .run_log import RunLog, check_reporters
from .run_state import Run, StepHook, TrainResult
from .runtime import (
    Runtime,
    StopOnCtrlC,
    autocast_and_scaler,
    batch_on_device,
    place_model,
    seed_everything,
    training_runtime,
)
from .schedules import declared_epoch_steps, progress_at, training_schedule
from .step_metrics import Accumulator
from .teacher_embeddings import distillation_teacher


def train(config: TrainConfig, *, on_step: StepHook | None = None, data: Any = None) -> TrainResult:
    """Runs one training job described by ``config``; see the module docstring.

    ``on_step(step, metrics)`` is called on every rank after each optimizer step; returning
    True stops the run after that step as Ctrl-C does (checkpoint saved, ``interrupted``). Its
    metrics are read off the device every step, which makes the host wait for the GPU each
    step; without a hook they are read at log rows, epoch ends and the end (step_metrics.py),
    and ``result.history`` still has every step. ``data`` replaces the pipeline built from
    ``config.train_data``: any iterable of batch dicts with DataPipeline's ``set_epoch`` /
    ``state_dict`` / ``load_state_dict`` (and ``__len__`` unless ``config.steps`` is set).
    """
    with training_runtime(config) as rt:
        return _train(config, rt, on_step, data)


def _train(config: TrainConfig, rt: Runtime, on_step: StepHook | None, data: Any) -> TrainResult:
    # ------------------------------------------------------------------ setup
    config = dataclasses.replace(config, name=run_name(config))  # the caller's stays as it is
    run_dir = Path(config.logs) / config.name
    resume_path = resolve_resume(config.resume, run_dir / "checkpoints")
    check_reporters(config)
    check_image_size_start(config)
    prepare_run_folder(run_dir, config, rt)  # no earlier run overwritten unasked
    seed_everything(config.seed, rt.rank)

    # ------------------------------------------------------------------ model
    teacher = distillation_teacher(config, rt.device)  # frozen or stored; None: no teacher
    # --w-distill-feature's projection, part of the model, is as wide as the teacher's space.
    model = build_model(config, teacher_dim=None if teacher is None else teacher.embed_dim)
    apply_model_options(model, config, rt.print)  # --pretrained, --lock-*, checkpointing
    model, ddp_model = place_model(model, rt, config.precision)  # ddp_model: DDP-wrapped
    image_size = config.image_size or model.config.image_size

    # ------------------------------------------------------------------ data, optimizer, loss
    if data is None:
        data = build_pipeline(
            config,
            config.train_data,
            train=True,
            image_size=image_size,
            context_length=model.config.context_length,
            rank=rt.rank,
            world_size=rt.world_size,
            num_samples=config.train_num_samples,
            device=rt.device,
        )
    total_steps, lr_at = training_schedule(config, data)
    optimizer = optimizer_for(model, config)
    autocast, scaler = autocast_and_scaler(config.precision, rt.device)
    run = Run(
        config=config,
        rt=rt,
        result=TrainResult(
            run_dir=run_dir, step=0, total_steps=total_steps, epoch=0, device=rt.device
        ),
        on_step=on_step,
        model=model,
        ddp_model=ddp_model,
        data=data,
        optimizer=optimizer,
        scaler=scaler,
        autocast=autocast,
        loss=LightCLIPLoss.from_config(config, world_size=rt.world_size),
        lr_at=lr_at,
        epoch_steps=declared_epoch_steps(config, data),
        image_size=image_size,
        teacher=teacher,
        ema=ModelEma(model, config.model_ema_decay) if config.model_ema else None,
    )

    # ------------------------------------------------------------------ resume
    data_state = checkpoints.resume(run, resume_path)  # where in the epoch; None: its start
    rt.print(
        f"run {run_dir}: {config.model} ({config.recipe}: soft_labels={config.soft_labels} "
        f"token_loss={config.token_loss} mlm={config.mlm} fusion={config.fusion}), "
        f"{total_steps} steps of {config.batch_size * rt.world_size * config.accum_freq} "
        f"samples on {rt.world_size}x {rt.device}"
    )

    # ------------------------------------------------------------------ the epochs
    model.train()
    log = RunLog(run_dir, config, enabled=rt.is_main, total_steps=total_steps, start_step=run.step)
    with log as run.log, StopOnCtrlC(rt) as run.stop:
        while _more_to_do(run) and not run.stop.requested:
            if not train_one_epoch(run, data_state):
                break  # stopped mid-epoch: Ctrl-C, the hook, or --steps reached
            data_state = None  # only the first epoch after a resume starts mid-way
            end_epoch(run)
        finish(run)
    return run.result


def _more_to_do(run: Run) -> bool:
    # --steps stops mid-epoch; --epochs runs whole passes (the last one ends the data).
    if run.config.steps is not None:
        return run.step < run.result.total_steps
    return run.epoch < run.config.epochs


def train_one_epoch(run: Run, data_state: Any) -> bool:
    """One pass over the data from the start of ``run.epoch``, or from a saved position (a
    resume). True when the data ran out; False when the run stopped before that."""
    config = run.config
    if data_state is not None:
        run.data.load_state_dict(data_state)
    else:
        run.data.set_epoch(run.epoch)
    batches, micro, accum = 0, 0, Accumulator()
    t_data = time.perf_counter()
    for batch in run.data:
        batches += 1
        accum.data_time += time.perf_counter() - t_data
        batch = batch_on_device(batch, run.rt, config.precision, config.channels_last)
        lr = run.lr_at(run.step)
        set_lr(run.optimizer, lr)
        progress = progress_at(run.step, run.result.total_steps)
        images = resize_images(batch["image"], training_side(config, run.image_size, progress))
        last_micro = micro == config.accum_freq - 1
        # DDP all-reduces the gradients once per optimizer step, on its last micro-batch.
        no_sync = not last_micro and run.rt.world_size > 1
        with run.ddp_model.no_sync() if no_sync else contextlib.nullcontext():
            with run.autocast():
                out = run.ddp_model(
                    images,
                    batch["text"],
                    masked_text=batch["masked_text"] if config.mlm else None,
                    mlm_labels=batch["mlm_labels"] if config.mlm else None,
                    other_text=other_captions(batch, config),
                )
                if run.teacher is not None:  # same batch, no gradient, or its stored rows
                    out["teacher"] = run.teacher.output_for(batch)
                total, parts = step_loss(run, out, batch, progress)
            loss = total / config.accum_freq
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        # Detached device scalars (no wait for the GPU): is anything collapsing, does fusion
        # carry anything?
        accum.add(parts, total, batch["image"].shape[0], training_diagnostics(out))
        micro += 1
        if last_micro:
            optimizer_step(run, accum, lr, progress)
            micro, accum = 0, Accumulator()
            run.stop.sync()  # every rank must leave the loop at the same step
            if run.stop.requested or not _more_to_do(run):
                return False
            if run.epoch_steps is not None and run.step >= (run.epoch + 1) * run.epoch_steps:
                return True  # --train-num-samples samples make an epoch of plain shards
        t_data = time.perf_counter()
    # A fresh pass that yields nothing at all is an error, not an endless loop (a resumed one
    # may start right at its end).
    if batches == 0 and data_state is None:
        raise DataError(
            f"--train-data {config.train_data}: the epoch yielded no batch "
            f"(batch size {config.batch_size}; {_stats(run.data)})"
        )
    if run.epoch_steps is not None and run.step < (run.epoch + 1) * run.epoch_steps:
        # As open_clip's, the epoch ends with the data; the schedule still counts the declared
        # length, so the run ends short of it.
        run.rt.print(
            f"warning: --train-data {config.train_data} ran out at step {run.step}, before the "
            f"{(run.epoch + 1) * run.epoch_steps} that --train-num-samples "
            f"{config.train_num_samples} makes by the end of epoch {run.epoch}"
        )
    return True


def other_captions(batch: dict, config: TrainConfig) -> Any:
    """``--captions-per-sample``'s other captions, refused when a batch does not bring them
    (a ``data=`` iterable of its own)."""
    if config.captions_per_sample == 1:
        return None
    others = batch.get("other_text")
    wanted = config.captions_per_sample - 1
    if others is None or others.dim() != 3 or others.shape[1] != wanted:
        got = "none" if others is None else f"shape {tuple(others.shape)}"
        raise DataError(
            f"--captions-per-sample {config.captions_per_sample}: a batch must bring "
            f"other_text [batch, {wanted}, context], got {got}"
        )
    return others


def step_loss(run: Run, out: dict, batch: dict, progress: float) -> tuple[Any, dict[str, Any]]:
    """The micro-batch's loss and its parts; a loss that refuses non-finite input names the
    step that diverged, if one did (run_divergence.py)."""
    try:
        return run.loss(out, batch, progress)
    except Exception:
        report(run)  # raises if a step not read yet had a non-finite loss
        stop_on_non_finite_weights(run)
        raise


def optimizer_step(run: Run, accum: Accumulator, lr: float, progress: float) -> None:
    """One optimizer step every ``accum_freq`` micro-batches, then its metrics and saves."""
    config, optimizer, scaler = run.config, run.optimizer, run.scaler
    if scaler is not None:
        scaler.unscale_(optimizer)
    device_metrics = {}
    if config.grad_clip_norm is not None:
        device_metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
            run.model.parameters(), config.grad_clip_norm
        )
    if scaler is not None:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    clamp_logit_scale(run.model)
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    checkpoints.mark_boundary(run, run.data.state_dict())

    device_metrics["logit_scale"] = run.model.logit_scale.detach().exp()
    if run.model.logit_bias is not None:
        device_metrics["logit_bias"] = run.model.logit_bias.detach()
    host_metrics = dict(lr=lr, progress=progress, epoch=run.epoch)
    if config.grad_clip_norm is None:
        host_metrics["grad_norm"] = float("nan")
    if config.image_size_start is not None:
        host_metrics["image_size"] = training_side(config, run.image_size, progress)
    run.pending.add(run.step, accum, run.rt, device=device_metrics, host=host_metrics)
    run.log.advance()
    saving = bool(config.save_every_n_steps) and run.step % config.save_every_n_steps == 0
    if run.on_step is not None or run.step % config.log_every_n_steps == 0 or saving:
        report(run)
    if saving:
        run.result.checkpoint = checkpoints.save(run, LATEST)
        run.pending.restart_clock()


def end_epoch(run: Run) -> None:
    """After a whole pass: the ``--save-*`` checkpoints, then the due evaluations."""
    run.optimizer.zero_grad(set_to_none=True)  # a last, incomplete accumulation is dropped
    report(run)
    run.epoch += 1
    checkpoints.mark_boundary(run, None)
    checkpoints.save_at_epoch_end(run)
    evaluate_at_epoch_end(run)
    run.pending.restart_clock()


def finish(run: Run) -> None:
    """The end of the run, or of its interrupted part: the last metrics and checkpoint, then,
    when the run is complete, the evaluations not done yet and the export."""
    result = run.result
    if hasattr(run.data, "close"):
        run.data.close()  # it reads ahead into an epoch this run will not train
    report(run)
    result.interrupted = run.stop.requested and _more_to_do(run)
    checkpoints.save_at_end(run)
    if not result.interrupted:
        evaluate_at_end(run)
        if run.config.export and run.rt.is_main:
            result.export_path = export_inference_model(run.eval_model, result.run_dir)
    result.step, result.epoch = run.step, run.epoch
    run.rt.print(
        ("interrupted; " if result.interrupted else "done; ")
        + f"step {run.step}/{result.total_steps}, checkpoint {result.checkpoint}"
    )


def report(run: Run) -> None:
    """Reads the steps not read yet off the device into the history, the log and the hook.
    Every save and the export come after a report, so a non-finite loss found here stops the
    run before anything of or after that step is written."""
    for done, metrics in run.pending.resolve():
        run.result.history.append({"step": done, **metrics})
        run.log.step(done, metrics)
        stop_on_non_finite_loss(run, done, metrics)
        if run.on_step is not None and run.on_step(done, metrics):
            run.stop.requested = True  # the hook asked to stop, as Ctrl-C does


def _stats(data: Any) -> str:
    try:
        return f"pipeline stats {data.stats()}"
    except Exception:  # noqa: BLE001 - only decorates an error message
        return "no stats"


# ====================================================================== command line


def main(argv: list[str] | None = None) -> int:
    """``python -m lightclip.train`` / ``lightclip train``: errors as one line, exit 2."""
    # argparse itself prints usage + one line and exits 2 on unknown flags.
    return run_command("lightclip train", lambda: 130 if train(parse_args(argv)).interrupted else 0)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TrainConfig", "TrainResult", "main", "train"]
