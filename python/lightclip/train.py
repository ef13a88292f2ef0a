"""Training, top to bottom: setup, model, data, optimizer, the loop, checkpoints.

    lightclip train --model lightclip-tiny-mnv2 --train-data synthetic --steps 200
    lightclip train --recipe clip ...                           # the plain CLIP baseline
    torchrun --nproc_per_node=2 -m lightclip train ...          # DDP: gloo on CPU, NCCL on GPU
    lightclip train --pretrained export/ --lock-image --lr-scheduler const ...  # open_clip's flags

or from Python / a notebook::

    from lightclip import train, TrainConfig
    result = train(TrainConfig(model="lightclip-tiny-mnv2", steps=100, batch_size=32))

The loss is L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm (SPEC §2); each step also logs the
collapse diagnostics of ``diagnostics.py`` (``img_cos``, ``txt_cos``, ``tok_img_cos``,
``tok_word_cos``). The heavy lifting happens
elsewhere: the Rust data pipeline yields ready tensors (augmented images, tokenized / masked
captions, word lengths), the Rust label schedule and Hungarian matcher run inside the losses.
This file is the loop; the pieces it wires together are in ``runtime.py`` (rank, device,
process group, precision, Ctrl-C), ``models`` (the model), ``data.py`` (the pipeline),
``losses`` (the loss), ``validation.py`` (evaluation) and ``openclip_export.py`` (the export).

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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import checkpoint as ckpt
from .checkpoint_files import (
    delete_previous_epoch_checkpoint,
    newest_checkpoint,
    remove_stale_latest,
)
from .config import TrainConfig, parse_args
from .data import build_pipeline
from .diagnostics import collapse_diagnostics
from .errors import DataError, InvalidInputError, NonFiniteLossError, run_command
from .losses import LightCLIPLoss
from .models import apply_model_options, build_model
from .openclip_export import export_inference_model
from .optim import build_optimizer, clamp_logit_scale, set_lr
from .run_folder import prepare_run_folder, run_name
from .run_log import RunLog, check_reporters
from .runtime import (
    Runtime,
    StopOnCtrlC,
    autocast_and_scaler,
    gather_objects,
    seed_everything,
    setup_runtime,
    teardown_runtime,
    this_ranks,
)
from .schedules import default_warmup, progress_at, training_lr_schedule
from .step_metrics import Accumulator, PendingSteps, non_finite_losses
from .validation import held_out_metrics, zero_shot_due, zero_shot_metrics


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    run_dir: Path
    step: int
    total_steps: int
    epoch: int
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step, this run
    checkpoint: Path | None = None
    export_path: Path | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


StepHook = Callable[[int, dict[str, float]], bool | None]


def train(config: TrainConfig, *, on_step: StepHook | None = None, data: Any = None) -> TrainResult:
    """Runs one training job described by ``config``; see the module docstring.

    ``on_step(step, metrics)`` is called on every rank after each optimizer step; returning
    True stops the run after that step as Ctrl-C does (checkpoint saved, ``interrupted``). Its
    metrics are read off the device every step, which makes the host wait for the GPU each
    step; without a hook they are read at log rows, epoch ends and the end (step_metrics.py),
    and ``result.history`` still has every step. ``data``
    replaces the pipeline built from ``config.train_data``: any iterable of batch dicts with
    DataPipeline's ``set_epoch``/``state_dict``/``load_state_dict`` (and ``__len__`` unless
    ``config.steps`` is set).
    """
    rt = setup_runtime(config)
    finished = False
    try:
        result = _train(config, rt, on_step, data)
        finished = True
        return result
    finally:
        teardown_runtime(rt, finished)


def _train(config: TrainConfig, rt: Runtime, on_step: StepHook | None, data: Any) -> TrainResult:
    # ------------------------------------------------------------------ setup
    config = dataclasses.replace(config, name=run_name(config))  # the caller's stays as it is
    run_dir = Path(config.logs) / config.name
    checkpoint_dir = run_dir / "checkpoints"
    if config.resume == "latest":  # epoch_latest.pt, else the newest epoch_N.pt
        resume_path = newest_checkpoint(checkpoint_dir)
    else:
        resume_path = ckpt.resolve_resume(config.resume, checkpoint_dir)
    check_reporters(config)
    prepare_run_folder(run_dir, config, rt)  # no earlier run overwritten unasked
    seed_everything(config.seed, rt.rank)

    # ------------------------------------------------------------------ model
    model = build_model(config)
    apply_model_options(model, config, rt.print)  # --pretrained, --lock-image/text, checkpointing
    model = model.to(rt.device)
    if config.precision == "bf16":
        model = model.to(torch.bfloat16)
    model_cfg = model.config
    image_size = config.image_size or model_cfg.image_size
    ddp_model = model
    if rt.world_size > 1:
        ddp_model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[rt.device.index] if rt.device.type == "cuda" else None
        )

    # ------------------------------------------------------------------ data
    train_data = (
        data
        if data is not None
        else build_pipeline(
            config,
            config.train_data,
            train=True,
            image_size=image_size,
            context_length=model_cfg.context_length,
            rank=rt.rank,
            world_size=rt.world_size,
            num_samples=config.train_num_samples,
            device=rt.device,
        )
    )
    micro_per_epoch = batches_per_epoch(train_data)
    if config.steps is not None:
        total_steps = config.steps
    elif micro_per_epoch is None:
        raise InvalidInputError(
            f"--train-data {config.train_data}: its length is not known up front; pass --steps "
            "or --train-num-samples"
        )
    else:
        total_steps = config.epochs * max(micro_per_epoch // config.accum_freq, 1)
    warmup = config.warmup if config.warmup is not None else default_warmup(total_steps)
    warmup = min(warmup, total_steps)
    steps_per_epoch = (
        None if micro_per_epoch is None else max(micro_per_epoch // config.accum_freq, 1)
    )
    lr_at_step = training_lr_schedule(
        config, warmup=warmup, total_steps=total_steps, steps_per_epoch=steps_per_epoch
    )

    # ------------------------------------------------------------------ optimizer and losses
    optimizer = build_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.wd,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    autocast, scaler = autocast_and_scaler(config.precision, rt.device)
    loss_fn = LightCLIPLoss.from_config(config, world_size=rt.world_size)

    # ------------------------------------------------------------------ resume
    step, epoch, data_state = 0, 0, None
    if resume_path is not None:
        payload = ckpt.load_checkpoint(resume_path, map_location=rt.device)
        ckpt.check_compatible(payload, model, config.model, f"--resume {resume_path}")
        model.load_state_dict(ckpt.model_state(payload))
        ckpt.load_optimizer_state(optimizer, payload, model, f"--resume {resume_path}")
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        step, epoch = payload["step"], payload["epoch"]
        data_state = this_ranks(payload.get("data"), payload, rt, "data pipeline position")
        if payload.get("rng") is not None:
            ckpt.set_rng_state(this_ranks(payload["rng"], payload, rt, "random state"))
        rt.print(f"resumed from {resume_path} at step {step} (epoch {epoch})")

    if rt.is_main:
        rt.print(
            f"run {run_dir}: {config.model} ({config.recipe}: soft_labels={config.soft_labels} "
            f"token_loss={config.token_loss} mlm={config.mlm} fusion={config.fusion}), "
            f"{total_steps} steps of {config.batch_size * rt.world_size * config.accum_freq} "
            f"samples on {rt.world_size}x {rt.device}"
        )

    # The last checkpoint written (or resumed from) and its step, for the divergence error.
    kept: tuple[Path, int] | None = (resume_path, step) if resume_path is not None else None

    def save(path_name: str, boundary: StepBoundary) -> Path:
        """Saves the state as of the last finished optimizer step; all ranks must call it."""
        nonlocal kept
        rngs = gather_objects(boundary.rng, rt)
        data_states = gather_objects(boundary.data, rt)
        path = checkpoint_dir / path_name
        if rt.is_main:
            ckpt.save_checkpoint(
                path,
                {
                    "epoch": boundary.epoch,
                    "step": boundary.step,
                    "name": run_dir.name,
                    "model_name": config.model,
                    "model_config": model_cfg.to_dict(),
                    "state_dict": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "trainable": ckpt.trainable_names(model),
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rngs,
                    "data": data_states,
                    "config": config.to_dict(),
                    "world_size": rt.world_size,
                },
            )
        kept = (path, boundary.step)
        return path

    # ------------------------------------------------------------------ the loop
    result = TrainResult(run_dir=run_dir, step=step, total_steps=total_steps, epoch=epoch)
    boundary = StepBoundary(step, epoch, ckpt.rng_state(), data_state)
    # Metrics stay on the device until read (step_metrics.py): every step when a hook wants
    # them, else at log steps, saves and the end, so the host does not wait for the GPU.
    pending = PendingSteps()
    zero_shot_step = -1  # the step of the last --zeroshot-data evaluation
    held_out_done = False  # --val-data evaluated at an epoch end of this run

    def report() -> None:
        for done, metrics in pending.resolve():
            result.history.append({"step": done, **metrics})
            log.step(done, metrics)
            # Every save and the export come after a report, so a non-finite loss found here
            # stops the run before anything of or after that step is written.
            bad = non_finite_losses(metrics)
            if bad:
                values = ", ".join(f"{k} = {v}" for k, v in bad.items())
                raise diverged(f"the loss became non-finite at step {done} ({values})")
            if on_step is not None and on_step(done, metrics):
                stop.requested = True  # the hook asked to stop, as Ctrl-C does

    def diverged(what: str) -> NonFiniteLossError:
        last = f"last checkpoint: {kept[0]}, step {kept[1]}" if kept else "no checkpoint yet"
        return NonFiniteLossError(
            f"{what}; stopped without saving it ({last}); a lower --lr or --grad-clip-norm "
            "may keep training finite"
        )

    def step_losses(out: dict[str, Any], batch: dict[str, Any], progress: float) -> Any:
        """The step's loss parts. The metrics are read off the device only now and then, so
        non-finite weights can reach a loss that refuses them (the token matcher rejects a
        NaN cost) before the loop has seen a NaN loss: then the loss or weights are named."""
        try:
            return loss_fn(out, batch, progress)
        except Exception:
            report()  # raises if a step not read yet had a non-finite loss
            broken = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
            if broken:
                raise diverged(
                    f"the weights became non-finite in the update of step {step} "
                    f"({broken[0]}{' and others' if len(broken) > 1 else ''}; its loss was "
                    "finite)"
                ) from None
            raise

    model.train()
    with (
        RunLog(
            run_dir, config, enabled=rt.is_main, total_steps=total_steps, start_step=step
        ) as log,
        StopOnCtrlC(rt) as stop,
    ):
        # --steps stops mid-epoch; --epochs runs whole passes (the last one ends the data).
        def more() -> bool:
            return step < total_steps if config.steps is not None else epoch < config.epochs

        while more() and not stop.requested:
            resumed_mid_epoch = data_state is not None
            batches = epoch_batches(train_data, epoch, data_state)
            data_state = None  # only the first epoch after a resume starts mid-way
            micro, accum = 0, Accumulator()
            t_data = time.perf_counter()
            for batch in batches:
                accum.data_time += time.perf_counter() - t_data
                batch = {
                    k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v
                    for k, v in batch.items()
                }
                if config.precision == "bf16":
                    batch["image"] = batch["image"].to(torch.bfloat16)
                lr = lr_at_step(step)
                set_lr(optimizer, lr)
                progress = progress_at(step, total_steps)
                last_micro = micro == config.accum_freq - 1
                sync = (
                    contextlib.nullcontext()
                    if last_micro or rt.world_size == 1
                    else ddp_model.no_sync()
                )
                with sync:
                    with autocast():
                        out = ddp_model(
                            batch["image"],
                            batch["text"],
                            masked_text=batch["masked_text"] if config.mlm else None,
                            mlm_labels=batch["mlm_labels"] if config.mlm else None,
                        )
                        total, parts = step_losses(out, batch, progress)
                    loss = total / config.accum_freq
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                # Detached device scalars (no wait for the GPU): is anything collapsing?
                accum.add(parts, total, batch["image"].shape[0], collapse_diagnostics(out))
                micro += 1
                if not last_micro:
                    t_data = time.perf_counter()
                    continue

                # One optimizer step every accum_freq micro-batches.
                if scaler is not None:
                    scaler.unscale_(optimizer)
                device_metrics = {}
                if config.grad_clip_norm is not None:
                    device_metrics["grad_norm"] = torch.nn.utils.clip_grad_norm_(
                        model.parameters(), config.grad_clip_norm
                    )
                if scaler is not None:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                clamp_logit_scale(model)
                step += 1
                boundary = StepBoundary(step, epoch, ckpt.rng_state(), train_data.state_dict())

                device_metrics["logit_scale"] = model.logit_scale.detach().exp()
                host_metrics = dict(lr=lr, progress=progress, epoch=epoch)
                if config.grad_clip_norm is None:
                    host_metrics["grad_norm"] = float("nan")
                pending.add(step, accum, rt, device=device_metrics, host=host_metrics)
                log.advance()
                saving = bool(config.save_every_n_steps) and step % config.save_every_n_steps == 0
                if on_step is not None or step % config.log_every_n_steps == 0 or saving:
                    report()
                if saving:
                    result.checkpoint = save(ckpt.LATEST, boundary)
                    pending.restart_clock()
                micro, accum = 0, Accumulator()
                stop.sync()  # every rank must leave the loop at the same step
                if stop.requested or (config.steps is not None and step >= total_steps):
                    break
                t_data = time.perf_counter()
            else:
                # The epoch ran out of data. A fresh pass that yields nothing at all is an
                # error, not an endless loop (a resumed one may start right at its end).
                if batches.count == 0 and not resumed_mid_epoch:
                    raise DataError(
                        f"--train-data {config.train_data}: the epoch yielded no batch "
                        f"(batch size {config.batch_size}; {stats_line(train_data)})"
                    )
                # A last, incomplete accumulation cycle is dropped, like drop_last.
                optimizer.zero_grad(set_to_none=True)
                report()
                epoch += 1
                boundary = StepBoundary(step, epoch, ckpt.rng_state(), None)
                if config.save_most_recent:
                    result.checkpoint = save(ckpt.LATEST, boundary)
                if config.save_frequency and epoch % config.save_frequency == 0:
                    saved = save(f"epoch_{epoch}.pt", boundary)
                    if rt.is_main and config.delete_previous_checkpoint:
                        delete_previous_epoch_checkpoint(checkpoint_dir, epoch)
                    if not config.save_most_recent:
                        result.checkpoint = saved
                        if rt.is_main:
                            remove_stale_latest(checkpoint_dir)
                metrics = {}
                if config.val_data and epoch % config.val_frequency == 0:
                    metrics.update(held_out_metrics(model, config, image_size, rt))
                    held_out_done = True
                if zero_shot_due(config, epoch):
                    metrics.update(zero_shot_metrics(model, config, image_size, rt))
                    zero_shot_step = step
                if metrics:
                    result.eval_metrics = metrics
                    log.eval(step, metrics, epoch=epoch)
                pending.restart_clock()

        # ------------------------------------------------------------------ the end
        report()
        result.interrupted = stop.requested and more()
        # Without --save-most-recent, epoch_latest.pt only holds a state no file holds yet.
        if config.save_most_recent or kept is None or kept[1] != boundary.step:
            result.checkpoint = save(ckpt.LATEST, boundary)
        if not result.interrupted:
            metrics = {}
            if config.val_data and not held_out_done:
                metrics.update(held_out_metrics(model, config, image_size, rt))
            if config.zeroshot_data and config.zeroshot_frequency and zero_shot_step != step:
                metrics.update(zero_shot_metrics(model, config, image_size, rt))
            if metrics:
                result.eval_metrics = metrics
                log.eval(step, metrics, epoch=epoch)
            if config.export and rt.is_main:
                result.export_path = export_inference_model(model, run_dir)
    result.step, result.epoch = step, epoch
    rt.print(
        ("interrupted; " if result.interrupted else "done; ")
        + f"step {step}/{total_steps}, checkpoint {result.checkpoint}"
    )
    return result


@dataclass
class StepBoundary:
    """Everything that must be saved together: the state right after one optimizer step."""

    step: int
    epoch: int
    rng: dict[str, Any]
    data: Any


def batches_per_epoch(pipeline: Any) -> int | None:
    try:
        return len(pipeline)
    except TypeError:
        return None


def epoch_batches(pipeline: Any, epoch: int, data_state: Any) -> CountingIterator:
    """One pass over the data: from the start of ``epoch``, or from a saved position."""
    if data_state is not None:
        pipeline.load_state_dict(data_state)
    else:
        pipeline.set_epoch(epoch)
    return CountingIterator(iter(pipeline))


class CountingIterator:
    def __init__(self, it: Any) -> None:
        self.it, self.count = it, 0

    def __iter__(self) -> CountingIterator:
        return self

    def __next__(self) -> Any:
        item = next(self.it)
        self.count += 1
        return item


def stats_line(pipeline: Any) -> str:
    try:
        return f"pipeline stats {pipeline.stats()}"
    except Exception:  # noqa: BLE001 - only decorates an error message
        return "no stats"


# ====================================================================== command line


def main(argv: list[str] | None = None) -> int:
    """``python -m lightclip.train`` / ``lightclip train``: errors as one line, exit 2."""

    def run() -> int:
        # argparse itself prints usage + one line and exits 2 on unknown flags.
        return 130 if train(parse_args(argv)).interrupted else 0

    return run_command("lightclip train", run)


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TrainConfig", "TrainResult", "main", "train"]
