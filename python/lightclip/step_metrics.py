"""Per-step training metrics, kept on the device until someone reads them.

Reading a GPU value on the host (``float(loss)``) waits for every kernel queued before it. A
loop that does that after each step leaves the GPU idle while the host fetches the next batch
and launches the next forward pass. So a step's losses stay device tensors, and the steps
since the last read are resolved together, in one copy, only when something needs the numbers:
a log row, an ``on_step`` hook (which sees every step, so it is read every step), or the end of
the run.

Each step still gets its own row. ``step_time`` and ``samples_per_s`` are averaged over the
steps resolved together (a step's own host time says little when the host runs ahead of the
GPU); ``data_time`` is each step's own wait for the data pipeline.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist

from .runtime import Runtime


class Accumulator:
    """Sums the loss parts (logged as ``loss_<part>``), the total (``loss``) and any
    diagnostics (logged under their own names, e.g. ``img_cos``) over the micro-batches of one
    step, on their device."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.micro = 0
        self.samples = 0
        self.data_time = 0.0

    def add(
        self,
        parts: dict[str, torch.Tensor],
        total: torch.Tensor,
        samples: int,
        diagnostics: dict[str, torch.Tensor] | None = None,
    ) -> None:
        values = {f"loss_{k}": v.detach().float() for k, v in parts.items()}
        values["loss"] = total.detach().float()
        values.update({k: v.detach().float() for k, v in (diagnostics or {}).items()})
        for k, v in values.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.micro += 1
        self.samples += samples

    def losses(self, rt: Runtime) -> tuple[list[str], torch.Tensor]:
        """The step's mean losses and diagnostics, averaged across ranks, still on the device
        (with NCCL the all-reduce is queued like any kernel; with gloo it runs on the host)."""
        keys = sorted(self.sums)
        values = torch.stack([self.sums[k] for k in keys]) / self.micro
        if rt.world_size > 1:
            dist.all_reduce(values)
            values = values / rt.world_size
        return keys, values


@dataclass
class _Step:
    step: int
    keys: list[str]
    device_values: torch.Tensor  # losses, then the extra device scalars, in `keys` order
    host_values: dict[str, float]
    samples: int
    data_time: float


@dataclass
class PendingSteps:
    """The steps whose metrics have not been read yet, and the clock of their window."""

    steps: list[_Step] = field(default_factory=list)
    window_start: float = field(default_factory=time.perf_counter)

    def add(
        self,
        step: int,
        accum: Accumulator,
        rt: Runtime,
        device: dict[str, torch.Tensor],
        host: dict[str, float],
    ) -> None:
        """Step `step`: its losses from `accum`, scalars still on the device (`device`, e.g.
        the gradient norm) and numbers the host already has (`host`, e.g. the learning rate)."""
        keys, losses = accum.losses(rt)
        extra = [v.detach().float().reshape(1).to(losses.device) for v in device.values()]
        self.steps.append(
            _Step(
                step=step,
                keys=keys + list(device),
                device_values=torch.cat([losses, *extra]),
                host_values=host,
                samples=accum.samples * rt.world_size,
                data_time=accum.data_time,
            )
        )

    def resolve(self) -> list[tuple[int, dict[str, float]]]:
        """Every pending step's metrics as floats, in step order (one wait for the device)."""
        if not self.steps:
            return []
        values = torch.stack([s.device_values for s in self.steps]).cpu().tolist()
        now = time.perf_counter()
        elapsed = max(now - self.window_start, 1e-9)
        samples = sum(s.samples for s in self.steps)
        rows = []
        for s, row in zip(self.steps, values, strict=True):
            metrics = dict(zip(s.keys, row, strict=True))
            metrics.update(s.host_values)
            metrics.update(
                samples_per_s=samples / elapsed,
                step_time=elapsed / len(self.steps),
                data_time=s.data_time,
            )
            rows.append((s.step, metrics))
        self.steps.clear()
        self.window_start = now
        return rows

    def restart_clock(self) -> None:
        """Leaves the time since the last read out of the next window (a checkpoint save or
        an evaluation is not training throughput)."""
        self.window_start = time.perf_counter()


def non_finite_losses(metrics: dict[str, float]) -> dict[str, float]:
    """The losses of one step's row that are NaN or infinite: the parts (``loss_ins``,
    ``loss_tok``, ``loss_mlm``) first, then the total (``loss``).

    >>> non_finite_losses({"loss": float("nan"), "loss_tok": float("nan"), "loss_ins": 1.0})
    {'loss_tok': nan, 'loss': nan}
    """
    names = sorted((k for k in metrics if k.startswith("loss")), key=lambda k: (k == "loss", k))
    return {k: metrics[k] for k in names if not math.isfinite(metrics[k])}


__all__ = ["Accumulator", "PendingSteps", "non_finite_losses"]
