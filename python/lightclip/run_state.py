"""A training run's state: its parts, its position, and what it leaves behind (``TrainResult``).

A leaf module: ``train.py`` builds the ``Run`` and moves it on, and the modules that save,
resume and evaluate it (``run_checkpoints.py``, ``run_evaluation.py``) take it, without
importing the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import TrainConfig
from .losses import LightCLIPLoss
from .runtime import Runtime
from .step_metrics import PendingSteps


@dataclass
class TrainResult:
    """What a finished (or interrupted) run leaves behind."""

    run_dir: Path
    step: int
    total_steps: int
    epoch: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where it trained
    history: list[dict[str, float]] = field(default_factory=list)  # one row per step, this run
    checkpoint: Path | None = None
    export_path: Path | None = None
    eval_metrics: dict[str, float] = field(default_factory=dict)
    interrupted: bool = False


StepHook = Callable[[int, dict[str, float]], bool | None]


@dataclass
class StepBoundary:
    """Everything that must be saved together: the state right after one optimizer step."""

    step: int
    epoch: int
    rng: dict[str, Any]
    data: Any


@dataclass
class Run:
    """One run's parts, set up once in ``train._train``, and its position, moved on by plain
    functions of the run (rather than closures, so each reads on its own)."""

    config: TrainConfig
    rt: Runtime
    result: TrainResult
    on_step: StepHook | None
    model: Any  # the LightCLIP; ``ddp_model`` is it, wrapped under DDP
    ddp_model: Any
    data: Any
    optimizer: Any
    scaler: Any  # a GradScaler for fp16 autocast, else None
    autocast: Callable[[], Any]
    loss: LightCLIPLoss
    lr_at: Callable[[int], float]
    epoch_steps: int | None  # --train-num-samples's epoch, for data of unknown length
    image_size: int
    teacher: Any = None  # teacher_embeddings.distillation_teacher(): online, stored or None
    ema: Any = None  # model_ema.ModelEma under --model-ema, else None
    log: Any = None  # the RunLog and the StopOnCtrlC, entered around the epochs
    stop: Any = None
    step: int = 0
    epoch: int = 0
    boundary: StepBoundary | None = None
    kept: tuple[Path, int] | None = None  # the last checkpoint written (or resumed) and its step
    pending: PendingSteps = field(default_factory=PendingSteps)  # steps not read off the device
    held_out_done: bool = False  # --val-data evaluated at an epoch end of this run
    zero_shot_step: int = -1  # the step of the last --zeroshot-data evaluation

    @property
    def eval_model(self) -> Any:
        """The weights a run evaluates and exports: under ``--model-ema`` their average."""
        return self.model if self.ema is None else self.ema.module
