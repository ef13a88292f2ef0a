"""Where a training process runs: its rank, device and process group (torchrun's variables
mean DDP: gloo on CPU, NCCL on GPU), its precision, its seeds, and a Ctrl-C that stops every
rank at the same step; where the model and each batch go. Used by ``lightclip.train``."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from . import checkpoint as ckpt
from .config import TrainConfig
from .errors import InvalidInputError


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


def setup_runtime(config: TrainConfig) -> Runtime:
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
                f"run at most {visible} process(es) per node (torchrun --nproc_per_node), "
                "or train on the CPU with --device cpu"
            )
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Runtime(rank=rank, world_size=world_size, device=device, owns_process_group=owns)


def teardown_runtime(rt: Runtime, finished: bool) -> None:
    # A group this run created is closed by it; after a failure without the barrier, since
    # the other ranks may be gone.
    if rt.owns_process_group and dist.is_initialized():
        if finished:
            dist.barrier()
        dist.destroy_process_group()


@contextlib.contextmanager
def training_runtime(config: TrainConfig) -> Iterator[Runtime]:
    """``setup_runtime`` for one run, ``teardown_runtime`` after it, finished or failed."""
    rt = setup_runtime(config)
    finished = False
    try:
        yield rt
        finished = True
    finally:
        teardown_runtime(rt, finished)


def seed_everything(seed: int, rank: int) -> None:
    # Same torch seed on every rank: the model starts identical everywhere (DDP would
    # broadcast rank 0's weights anyway). Python/NumPy draws, if any, differ per rank.
    torch.manual_seed(seed)
    random.seed(seed + rank)
    np.random.seed((seed + rank) % 2**32)  # noqa: NPY002 - seeds the global RNG others use


def autocast_and_scaler(precision: str, device: torch.device) -> tuple[Callable[[], Any], Any]:
    """(autocast context factory, GradScaler or None). fp16 autocast needs a scaler; on CPU
    'amp' means bf16 autocast, which does not."""
    kind = device.type
    if precision == "amp" and kind == "cuda":
        scaler = torch.amp.GradScaler("cuda")
        return (lambda: torch.autocast(kind, dtype=torch.float16)), scaler
    if precision in ("amp", "amp_bf16"):
        return (lambda: torch.autocast(kind, dtype=torch.bfloat16)), None
    return contextlib.nullcontext, None


def place_model(model: torch.nn.Module, rt: Runtime, precision: str) -> tuple[Any, Any]:
    """``model`` on this rank's device (in bfloat16 throughout under ``--precision bf16``), and
    the module the loop calls: the model itself, or under DDP the model wrapped."""
    model = model.to(device=rt.device, dtype=torch.bfloat16 if precision == "bf16" else None)
    if rt.world_size == 1:
        return model, model
    device_ids = [rt.device.index] if rt.device.type == "cuda" else None
    return model, torch.nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


def batch_on_device(
    batch: dict[str, Any], rt: Runtime, precision: str, channels_last: bool = False
) -> dict[str, Any]:
    """The pipeline puts batches on CUDA itself; a ``data=`` iterable may hand over host
    tensors, moved here (a no-op for tensors already there). With ``channels_last`` the
    images get the memory format of ``--channels-last`` kernels."""
    batch = {
        k: v.to(rt.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()
    }
    if precision == "bf16":
        batch["image"] = batch["image"].to(torch.bfloat16)
    if channels_last:
        batch["image"] = batch["image"].contiguous(memory_format=torch.channels_last)
    return batch


def gather_objects(obj: Any, rt: Runtime) -> list[Any]:
    if rt.world_size == 1:
        return [obj]
    out: list[Any] = [None] * rt.world_size
    dist.all_gather_object(out, obj)
    return out


def this_ranks(states: Any, payload: dict[str, Any], rt: Runtime, what: str) -> Any:
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


class StopOnCtrlC:
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

    def __enter__(self) -> StopOnCtrlC:
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = {
                sig: signal.signal(sig, self._handler) for sig in (signal.SIGINT, signal.SIGTERM)
            }
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in (self._previous or {}).items():
            signal.signal(sig, handler)
