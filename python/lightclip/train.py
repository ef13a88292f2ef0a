"""Training, top to bottom: setup, model, data, optimizer, the loop, checkpoints.

    lightclip train --model lightclip-tiny-mnv2 --train-data synthetic --steps 200
    python -m lightclip.train --recipe clip ...                 # the plain CLIP baseline
    torchrun --nproc_per_node=2 -m lightclip.train ...          # DDP: gloo on CPU, NCCL on GPU

or from Python / a notebook::

    from lightclip import train, TrainConfig
    result = train(TrainConfig(model="lightclip-tiny-mnv2", steps=100, batch_size=32))

The loss is L = w_ins L_ins + w_tok L_tok + w_mlm L_mlm (SPEC §2). The heavy lifting happens
elsewhere: the Rust data pipeline yields ready tensors (augmented images, tokenized / masked
captions, word lengths), the Rust label schedule and Hungarian matcher run inside the losses.
This file only wires them together.

Resume is exact: a checkpoint holds the model, the optimizer, the grad scaler, the step, the
RNG states and the data pipeline's position, all taken at the same optimizer-step boundary, so
``--resume latest`` replays the same samples and the same loss curve as a run that was never
stopped. Ctrl-C asks the loop to stop after the current step and save; a second Ctrl-C stops
at once without saving.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .config import TrainConfig, parse_args
from .errors import DataError, InvalidInputError, LightclipError
from .optim import build_optimizer, clamp_logit_scale, set_lr
from .run_log import RunLog
from .schedules import default_warmup, lr_at, progress_at


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
    True stops the run after that step as Ctrl-C does (checkpoint saved, ``interrupted``). ``data``
    replaces the pipeline built from ``config.train_data``: any iterable of batch dicts with
    DataPipeline's ``set_epoch``/``state_dict``/``load_state_dict`` (and ``__len__`` unless
    ``config.steps`` is set).
    """
    rt = _setup_runtime(config)
    finished = False
    try:
        result = _train(config, rt, on_step, data)
        finished = True
        return result
    finally:
        _teardown_runtime(rt, finished)


def _train(config: TrainConfig, rt: Runtime, on_step: StepHook | None, data: Any) -> TrainResult:
    # ------------------------------------------------------------------ setup
    run_dir = Path(config.logs) / _run_name(config)
    checkpoint_dir = run_dir / "checkpoints"
    resume_path = ckpt.resolve_resume(config.resume, checkpoint_dir)
    _seed_everything(config.seed, rt.rank)

    # ------------------------------------------------------------------ model
    model = _build_model(config).to(rt.device)
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
        else _build_pipeline(
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
    micro_per_epoch = _batches_per_epoch(train_data)
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

    # ------------------------------------------------------------------ optimizer and losses
    optimizer = build_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.wd,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
    )
    autocast, scaler = _precision(config.precision, rt.device)
    losses = _build_losses(config)

    # ------------------------------------------------------------------ resume
    step, epoch, data_state = 0, 0, None
    if resume_path is not None:
        payload = ckpt.load_checkpoint(resume_path, map_location=rt.device)
        ckpt.check_compatible(payload, model, config.model, f"--resume {resume_path}")
        model.load_state_dict(ckpt.model_state(payload))
        optimizer.load_state_dict(payload["optimizer"])
        if scaler is not None and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
        step, epoch = payload["step"], payload["epoch"]
        data_state = _this_ranks(payload.get("data"), payload, rt, "data pipeline position")
        if payload.get("rng") is not None:
            ckpt.set_rng_state(_this_ranks(payload["rng"], payload, rt, "random state"))
        rt.print(f"resumed from {resume_path} at step {step} (epoch {epoch})")

    if rt.is_main:
        rt.print(
            f"run {run_dir}: {config.model} ({config.recipe}: soft_labels={config.soft_labels} "
            f"token_loss={config.token_loss} mlm={config.mlm} fusion={config.fusion}), "
            f"{total_steps} steps of {config.batch_size * rt.world_size * config.accum_freq} "
            f"samples on {rt.world_size}x {rt.device}"
        )

    def save(path_name: str, boundary: StepBoundary) -> Path:
        """Saves the state as of the last finished optimizer step; all ranks must call it."""
        rngs = _gather_objects(boundary.rng, rt)
        data_states = _gather_objects(boundary.data, rt)
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
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "rng": rngs,
                    "data": data_states,
                    "config": config.to_dict(),
                    "world_size": rt.world_size,
                },
            )
        return path

    # ------------------------------------------------------------------ the loop
    result = TrainResult(run_dir=run_dir, step=step, total_steps=total_steps, epoch=epoch)
    boundary = StepBoundary(step, epoch, ckpt.rng_state(), data_state)
    model.train()
    with (
        RunLog(
            run_dir, config, enabled=rt.is_main, total_steps=total_steps, start_step=step
        ) as log,
        _StopOnCtrlC(rt) as stop,
    ):
        # --steps stops mid-epoch; --epochs runs whole passes (the last one ends the data).
        def more() -> bool:
            return step < total_steps if config.steps is not None else epoch < config.epochs

        while more() and not stop.requested:
            resumed_mid_epoch = data_state is not None
            batches = _epoch_batches(train_data, epoch, data_state)
            data_state = None  # only the first epoch after a resume starts mid-way
            micro, accum = 0, _Accumulator()
            t_data = time.perf_counter()
            for batch in batches:
                accum.data_time += time.perf_counter() - t_data
                batch = {
                    k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v
                    for k, v in batch.items()
                }
                if config.precision == "bf16":
                    batch["image"] = batch["image"].to(torch.bfloat16)
                lr = lr_at(step, base_lr=config.lr, warmup_steps=warmup, total_steps=total_steps)
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
                        parts = _loss_parts(out, batch, losses, config, progress, rt)
                        total = sum(getattr(config, f"w_{k}") * v for k, v in parts.items())
                    loss = total / config.accum_freq
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                accum.add(parts, total, batch["image"].shape[0])
                micro += 1
                if not last_micro:
                    t_data = time.perf_counter()
                    continue

                # One optimizer step every accum_freq micro-batches.
                if scaler is not None:
                    scaler.unscale_(optimizer)
                grad_norm = float("nan")
                if config.grad_clip_norm is not None:
                    grad_norm = float(
                        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
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

                metrics = accum.reduce(rt)
                metrics.update(
                    lr=lr,
                    progress=progress,
                    epoch=epoch,
                    grad_norm=grad_norm,
                    logit_scale=float(model.logit_scale.detach().exp()),
                )
                result.history.append({"step": step, **metrics})
                log.step(step, metrics)
                if on_step is not None and on_step(step, metrics):
                    stop.requested = True  # the hook asked to stop, as Ctrl-C does
                if config.save_every_n_steps and step % config.save_every_n_steps == 0:
                    result.checkpoint = save(ckpt.LATEST, boundary)
                micro, accum = 0, _Accumulator()
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
                        f"(batch size {config.batch_size}; {_stats_line(train_data)})"
                    )
                # A last, incomplete accumulation cycle is dropped, like drop_last.
                optimizer.zero_grad(set_to_none=True)
                epoch += 1
                boundary = StepBoundary(step, epoch, ckpt.rng_state(), None)
                result.checkpoint = save(ckpt.LATEST, boundary)
                if config.save_frequency and epoch % config.save_frequency == 0:
                    save(f"epoch_{epoch}.pt", boundary)
                if config.val_data and epoch % config.val_frequency == 0:
                    result.eval_metrics = _evaluate(model, config, image_size, rt)
                    log.eval(step, result.eval_metrics)

        # ------------------------------------------------------------------ the end
        result.interrupted = stop.requested and more()
        result.checkpoint = save(ckpt.LATEST, boundary)
        if not result.interrupted:
            if config.val_data and not result.eval_metrics:
                result.eval_metrics = _evaluate(model, config, image_size, rt)
                log.eval(step, result.eval_metrics)
            if config.export and rt.is_main:
                result.export_path = _export(model, config, run_dir)
    result.step, result.epoch = step, epoch
    rt.print(
        ("interrupted; " if result.interrupted else "done; ")
        + f"step {step}/{total_steps}, checkpoint {result.checkpoint}"
    )
    return result


# ====================================================================== the pieces, in order


@dataclass
class Runtime:
    rank: int
    world_size: int
    device: torch.device
    owns_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def print(self, message: str) -> None:
        if self.is_main:
            print(message, file=sys.stderr, flush=True)


def _setup_runtime(config: TrainConfig) -> Runtime:
    """Device and process group. torchrun's env vars (RANK, WORLD_SIZE, LOCAL_RANK) mean DDP."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if config.device == "auto":
        device = torch.device(f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(config.device)
        except RuntimeError:
            raise InvalidInputError(f"--device: not a device: {config.device!r}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInputError("--device cuda: no CUDA device is available")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", local_rank)
    if device.type == "cuda":
        visible = torch.cuda.device_count()
        if device.index is not None and device.index >= visible:
            # torchrun gives rank r the device cuda:LOCAL_RANK; more processes than GPUs would
            # otherwise fail deep inside CUDA with "invalid device ordinal".
            raise InvalidInputError(
                f"--device: {device} does not exist, {visible} CUDA device(s) are visible; "
                f"run at most {visible} process(es) per node (torchrun --nproc_per_node)"
            )
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Runtime(rank=rank, world_size=world_size, device=device, owns_process_group=owns)


def _teardown_runtime(rt: Runtime, finished: bool) -> None:
    # A group this run created is closed by it; after a failure without the barrier, since
    # the other ranks may be gone.
    if rt.owns_process_group and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


def _run_name(config: TrainConfig) -> str:
    if config.name:
        return config.name
    if config.resume == "latest":
        raise InvalidInputError("--resume latest needs --name (which run to resume)")
    # Every rank must agree on the folder, so the name comes from rank 0's clock.
    stamp = time.strftime("%Y_%m_%d-%H_%M_%S")
    if dist.is_initialized() and dist.get_world_size() > 1:
        holder = [stamp]
        dist.broadcast_object_list(holder, src=0)
        stamp = holder[0]
    config.name = f"{stamp}-{config.model}-{config.recipe}"
    return config.name


def _seed_everything(seed: int, rank: int) -> None:
    # Same torch seed on every rank: the model starts identical everywhere (DDP would
    # broadcast rank 0's weights anyway). Python/NumPy draws, if any, differ per rank.
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)  # noqa: NPY002 - seeds the global RNG others use


def _build_model(config: TrainConfig) -> torch.nn.Module:
    """The named model (or a JSON model config file) with exactly the training-only heads the
    switches ask for.

    Heads that no loss uses are not built: they would cost compute, and DDP refuses
    parameters that receive no gradient.
    """
    from .models import LightCLIP, LightCLIPConfig, get_model_config, list_models

    if config.model.endswith(".json"):
        if not Path(config.model).is_file():
            raise InvalidInputError(f"--model: no such model config file: {config.model}")
        preset = LightCLIPConfig.from_json(config.model)
    elif config.model in list_models():
        preset = get_model_config(config.model)
    else:
        raise InvalidInputError(
            f"--model: unknown model {config.model!r}; known: {', '.join(list_models())} "
            "(or a path to a .json model config)"
        )
    fusion_stages = (preset.fusion_stages or (2, 3)) if config.fusion else ()
    overrides: dict[str, Any] = dict(
        token_head=bool(config.token_loss), mlm=bool(config.mlm), fusion_stages=fusion_stages
    )
    if config.image_size is not None:
        overrides["image_size"] = config.image_size
    # Seeded here, apart from the global RNG: every rank builds the same initial weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LightCLIP(preset.replace(**overrides))


def _build_pipeline(
    config: TrainConfig,
    source: str,
    *,
    train: bool,
    image_size: int,
    context_length: int,
    rank: int,
    world_size: int,
    num_samples: int | None,
    device: torch.device,
) -> Any:
    from .data import DataPipeline

    source = _resolve_source(source, config.dataset_type, "--train-data" if train else "--val-data")
    kwargs: dict[str, Any] = dict(
        batch_size=config.batch_size,
        image_size=image_size,
        train=train,
        seed=config.seed,
        threads=config.workers,
        context_length=context_length,
        rank=rank,
        world_size=world_size,
    )
    if train:
        kwargs.update(eda_prob=config.eda_prob, mlm=bool(config.mlm))
    if device.type == "cuda":
        # uint8 images from pinned memory: a quarter of the bytes over PCIe, copied
        # asynchronously, and normalised on the GPU instead of on the pipeline's cores.
        kwargs.update(image_dtype="uint8", pin_memory=True, device=device)
    if num_samples is not None and source.startswith("synthetic"):
        kwargs["num_samples"] = num_samples
    return DataPipeline(source, **kwargs)


def _resolve_source(source: str, dataset_type: str, flag: str) -> str:
    """Checks the path exists (one clear line instead of a reader's error) and applies
    ``--dataset-type synthetic``."""
    if dataset_type == "synthetic" and not source.startswith("synthetic"):
        return f"synthetic:{source}"
    if source.startswith("synthetic"):
        return source
    first = source.split("::")[0]
    if "{" not in first and not Path(first).exists():
        raise InvalidInputError(f"{flag}: no such file or folder: {first}")
    if "{" in first and not Path(first.split("{")[0]).parent.exists():
        raise InvalidInputError(f"{flag}: no such folder: {Path(first.split('{')[0]).parent}")
    return source


def _batches_per_epoch(pipeline: Any) -> int | None:
    try:
        return len(pipeline)
    except TypeError:
        return None


def _epoch_batches(pipeline: Any, epoch: int, data_state: Any) -> _CountingIterator:
    """One pass over the data: from the start of ``epoch``, or from a saved position."""
    if data_state is not None:
        pipeline.load_state_dict(data_state)
    else:
        pipeline.set_epoch(epoch)
    return _CountingIterator(iter(pipeline))


def _this_ranks(states: Any, payload: dict[str, Any], rt: Runtime, what: str) -> Any:
    """Checkpoints hold one data position / RNG state per rank; pick ours."""
    if states is None:
        return None
    if not isinstance(states, list):
        states = [states]
    if len(states) != rt.world_size:
        raise ckpt.CheckpointError(
            f"the checkpoint was written by a {len(states)}-rank run and holds one {what} per "
            f"rank; resume it with {len(states)} ranks, not {rt.world_size}"
        )
    return states[rt.rank]


class _CountingIterator:
    def __init__(self, it: Iterator[Any]) -> None:
        self.it, self.count = it, 0

    def __iter__(self) -> _CountingIterator:
        return self

    def __next__(self) -> Any:
        item = next(self.it)
        self.count += 1
        return item


def _stats_line(pipeline: Any) -> str:
    try:
        return f"pipeline stats {pipeline.stats()}"
    except Exception:  # noqa: BLE001 - only decorates an error message
        return "no stats"


def _precision(precision: str, device: torch.device) -> tuple[Callable[[], Any], Any]:
    """(autocast context factory, GradScaler or None). fp16 autocast needs a scaler; on CPU
    'amp' means bf16 autocast, which does not."""
    kind = device.type
    if precision == "amp" and kind == "cuda":
        scaler = torch.amp.GradScaler("cuda")
        return (lambda: torch.autocast(kind, dtype=torch.float16)), scaler
    if precision in ("amp", "amp_bf16"):
        return (lambda: torch.autocast(kind, dtype=torch.bfloat16)), None
    return contextlib.nullcontext, None


@dataclass
class _Losses:
    ins: Any
    tok: Any
    mlm: Any


def _build_losses(config: TrainConfig) -> _Losses:
    from .labels import LabelSchedule
    from .losses.mlm import MaskedLanguageModelLoss
    from .losses.soft_clip import SoftClipLoss
    from .losses.token_alignment import TokenAlignmentLoss

    if config.soft_labels:
        schedule = LabelSchedule(
            r1=config.r1,
            r2=config.r2,
            alpha=config.alpha,
            ramp=config.label_ramp,
            ramp_width=config.label_ramp_width,
        )
    else:
        # alpha = 0 gives the identity target in every phase: plain CLIP's hard labels.
        schedule = LabelSchedule(r1=1.0, r2=1.0, alpha=0.0)
    ins = SoftClipLoss(
        schedule, local_loss=config.local_loss, gather_with_grad=config.gather_with_grad
    )
    return _Losses(
        ins=ins,
        tok=TokenAlignmentLoss() if config.token_loss else None,
        mlm=MaskedLanguageModelLoss() if config.mlm else None,
    )


def _loss_parts(
    out: dict[str, Any],
    batch: dict[str, Any],
    losses: _Losses,
    config: TrainConfig,
    progress: float,
    rt: Runtime,
) -> dict[str, torch.Tensor]:
    parts = {
        "ins": losses.ins(out["image_features"], out["text_features"], out["logit_scale"], progress)
    }
    if losses.tok is not None:
        lengths = out.get("word_lengths")
        if lengths is None:
            lengths = batch["word_lengths"]
        parts["tok"] = losses.tok(out["image_tokens"], out["word_tokens"], lengths)
    if losses.mlm is not None:
        # The model returns logits at the masked positions only, with their labels.
        labels = out["mlm_labels"] if out.get("mlm_labels") is not None else batch["mlm_labels"]
        # Normalise by the global masked-token count (see MaskedLanguageModelLoss).
        count = (labels != -100).sum().to(torch.float32)
        if rt.world_size > 1:
            count = count.clone()
            dist.all_reduce(count)
            count = count / rt.world_size
        parts["mlm"] = losses.mlm(
            out["mlm_logits_text"], out.get("mlm_logits_fused"), labels, num_masked=count
        )
    return parts


class _Accumulator:
    """Sums the loss parts over the micro-batches of one step, then averages across ranks."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.micro = 0
        self.samples = 0
        self.data_time = 0.0
        self.start = time.perf_counter()

    def add(self, parts: dict[str, torch.Tensor], total: torch.Tensor, samples: int) -> None:
        values = {f"loss_{k}": v.detach().float() for k, v in parts.items()}
        values["loss"] = total.detach().float()
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.micro += 1
        self.samples += samples

    def reduce(self, rt: Runtime) -> dict[str, float]:
        keys = sorted(self.sums)
        values = torch.tensor([self.sums[k] / self.micro for k in keys], dtype=torch.float64)
        samples = self.samples
        if rt.world_size > 1:
            values = values.to(rt.device)
            dist.all_reduce(values)
            values = values.cpu() / rt.world_size
            samples *= rt.world_size
        elapsed = time.perf_counter() - self.start
        metrics = {k: float(v) for k, v in zip(keys, values.tolist(), strict=True)}
        metrics.update(
            samples_per_s=samples / max(elapsed, 1e-9), step_time=elapsed, data_time=self.data_time
        )
        return metrics


@dataclass
class StepBoundary:
    """Everything that must be saved together: the state right after one optimizer step."""

    step: int
    epoch: int
    rng: dict[str, Any]
    data: Any


def _gather_objects(obj: Any, rt: Runtime) -> list[Any]:
    if rt.world_size == 1:
        return [obj]
    out: list[Any] = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


class _StopOnCtrlC:
    """First Ctrl-C (or SIGTERM, which torchrun and schedulers send on shutdown): finish the
    current step, save, exit. A second Ctrl-C stops at once. Under DDP the request is shared
    at every step boundary, so all ranks stop at the same step even if one was signalled."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.requested = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.rt.print(
            "\nCtrl-C: stopping after this step and saving a checkpoint "
            "(Ctrl-C again to stop at once)"
        )

    def sync(self) -> None:
        if self.rt.world_size > 1:
            flag = torch.tensor([float(self.requested)], device=self.rt.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self.requested = bool(flag.item())

    def __enter__(self) -> _StopOnCtrlC:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)


def _evaluate(
    model: torch.nn.Module, config: TrainConfig, image_size: int, rt: Runtime
) -> dict[str, float]:
    """Held-out metrics, computed on rank 0 and shared with the others."""
    from .validation import evaluate_held_out

    metrics: dict[str, float] = {}
    if rt.is_main:
        was_training = model.training
        model.eval()
        metrics = evaluate_held_out(
            model,
            _resolve_source(config.val_data or "", config.dataset_type, "--val-data"),
            image_size=image_size,
            batch_size=config.batch_size,
            threads=config.workers,
            num_samples=config.val_num_samples,
            seed=config.seed,
        )
        model.train(was_training)
        rt.print("eval: " + "  ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
    if rt.world_size > 1:
        holder = [metrics]
        dist.broadcast_object_list(holder, src=0)
        metrics = holder[0]
    return metrics


def _export(model: torch.nn.Module, config: TrainConfig, run_dir: Path) -> Path:
    """The inference model (training-only heads dropped), as a plain open_clip-style file.

    Its ``model_name`` is the plain-CLIP name of the towers (``clip-tiny-mnv2`` for
    ``lightclip-tiny-mnv2``), whose ``create_model`` has exactly these tensors; the saved
    ``model_config`` rebuilds it exactly, resolution included (``model_from_checkpoint``).
    """
    exported = model.export()
    path = run_dir / "inference_model.pt"
    ckpt.save_checkpoint(
        path,
        {
            "model_name": exported.config.name,
            "model_config": exported.config.to_dict(),
            "state_dict": exported.state_dict(),
        },
    )
    return path


# ====================================================================== command line


def main(argv: list[str] | None = None) -> int:
    """``python -m lightclip.train`` / ``lightclip train``: errors as one line, exit 2."""
    try:
        # argparse itself prints usage + one line and exits 2 on unknown flags.
        result = train(parse_args(argv))
    except LightclipError as e:
        print(f"lightclip train: error: {e}", file=sys.stderr)
        return 2
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["TrainConfig", "TrainResult", "main", "train"]
