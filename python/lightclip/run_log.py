"""What a training run reports: a progress bar, a CSV file, the evaluations as JSON lines,
TensorBoard when installed, Weights & Biases when asked for.

Only rank 0 reports (``enabled=False`` elsewhere). The CSV (``<run>/metrics.csv``) gets one
row every ``log_every_n_steps`` steps and one per evaluation; its columns are fixed by the
first row it writes, later keys that did not exist then are dropped rather than shifting
columns. Every evaluation (held-out retrieval, ``--zeroshot-data``) is also one line of
``<run>/results.jsonl`` with all its keys, as open_clip writes its ``results.jsonl``.
TensorBoard and wandb get ``train/<key>`` every log row and ``val/<key>`` per evaluation
(open_clip's names). The progress bar is tqdm's when tqdm is installed, otherwise a plain
line per log row.
"""

from __future__ import annotations

import csv
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from .config import TrainConfig
from .errors import InvalidInputError


def check_reporters(config: TrainConfig) -> None:
    """Refuses ``--report-to wandb`` without the wandb package before the run starts (an
    optional dependency; TensorBoard's absence only warns, as the CSV holds the same)."""
    if "wandb" not in config.reporters:
        return
    try:
        import wandb  # noqa: F401
    except ImportError:
        raise InvalidInputError(
            "--report-to wandb: the wandb package is not installed (pip install wandb; "
            "WANDB_MODE=offline logs without an account)"
        ) from None


_BAR_KEYS = ("loss", "loss_ins", "loss_tok", "loss_mlm", "loss_distill", "lr", "samples_per_s")
_SHORT = {
    "loss_ins": "ins",
    "loss_tok": "tok",
    "loss_mlm": "mlm",
    "loss_distill": "distill",
    "samples_per_s": "smp/s",
}


class RunLog:
    def __init__(
        self,
        run_dir: Path,
        config: TrainConfig,
        *,
        enabled: bool,
        total_steps: int,
        start_step: int = 0,
    ) -> None:
        self.enabled = enabled
        self.every = config.log_every_n_steps
        self.bar: Any = None
        self.tensorboard: Any = None
        self.wandb: Any = None
        self._results: Path | None = None
        self._csv_file: Any = None
        self._csv: Any = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(config.to_json())
        if "csv" in config.reporters:
            path = run_dir / "metrics.csv"
            self._csv_fields: list[str] | None = None
            fields, rows = _read_csv_until(path, start_step) if start_step > 0 else ([], [])
            if fields:
                # Resuming: keep the earlier rows up to the resume point, same columns. They
                # are rewritten atomically before anything is appended, so a run killed at
                # any moment leaves either the old file or the cut one, never fewer rows.
                _replace_atomically(path, lambda f: _write_csv(f, fields, rows))
                self._csv_fields = fields
                self._csv_file = path.open("a", newline="")
                self._csv = csv.DictWriter(self._csv_file, self._csv_fields, extrasaction="ignore")
            else:
                self._csv_file = path.open("w", newline="")
        self._results = run_dir / "results.jsonl"
        _keep_results_until(self._results, start_step)
        if "wandb" in config.reporters:
            import wandb

            # The run folder's name is the wandb id, as open_clip uses --name: a resumed run
            # continues its wandb run instead of starting a second one half-way.
            self.wandb = wandb.init(
                project=config.wandb_project_name,
                name=run_dir.name,
                id=run_dir.name,
                resume="allow" if start_step > 0 else None,
                dir=str(run_dir),
                config=config.to_dict(),
            )
        if "tensorboard" in config.reporters:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tensorboard = SummaryWriter(str(run_dir / "tensorboard"))
            except ImportError:
                warnings.warn(
                    "--report-to tensorboard: the tensorboard package is not installed; "
                    "logging to CSV only (pip install tensorboard)",
                    stacklevel=2,
                )
        if config.progress:
            try:
                from tqdm import tqdm

                self.bar = tqdm(
                    total=total_steps,
                    initial=start_step,
                    unit="step",
                    dynamic_ncols=True,
                    file=sys.stderr,
                )
            except ImportError:
                self.bar = None

    def advance(self) -> None:
        """One more optimizer step done (the bar moves; its numbers come with `step`)."""
        if self.enabled and self.bar is not None:
            self.bar.update(1)

    def step(self, step: int, metrics: dict[str, float]) -> None:
        """Step `step`'s metrics, once read from the device (see step_metrics.py)."""
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(_short_line(metrics), refresh=False)
        if step % self.every:
            return
        self._write_row({"step": step, "kind": "train", **metrics})
        if self.tensorboard is not None:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(f"train/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"train/{k}": v for k, v in metrics.items()}, step=step)
        if self.bar is None:
            print(f"step {step}  {_short_line(metrics)}", file=sys.stderr, flush=True)

    def eval(self, step: int, metrics: dict[str, float], *, epoch: int | None = None) -> None:
        if not self.enabled or not metrics:
            return
        self._write_row({"step": step, "kind": "eval", **metrics})
        if self._results is not None:
            with self._results.open("a") as f:
                f.write(json.dumps({"step": step, "epoch": epoch, **metrics}) + "\n")
        if self.tensorboard is not None:
            for k, v in metrics.items():
                self.tensorboard.add_scalar(f"val/{k}", v, step)
        if self.wandb is not None:
            self.wandb.log({f"val/{k}": v for k, v in metrics.items()}, step=step)

    def _write_row(self, row: dict[str, Any]) -> None:
        if self._csv_file is None:
            return
        if self._csv is None:
            self._csv_fields = list(row)
            self._csv = csv.DictWriter(self._csv_file, self._csv_fields, extrasaction="ignore")
            self._csv.writeheader()
        self._csv.writerow(row)
        self._csv_file.flush()

    def __enter__(self) -> RunLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self._csv_file is not None:
            self._csv_file.close()
        if self.wandb is not None:
            self.wandb.finish()
        self.bar = self.tensorboard = self._csv_file = self.wandb = None


def _short_line(metrics: dict[str, float]) -> str:
    parts = []
    for k in _BAR_KEYS:
        if k in metrics:
            v = metrics[k]
            parts.append(
                f"{_SHORT.get(k, k)} {v:.2e}"
                if k == "lr"
                else f"{_SHORT.get(k, k)} {v:.1f}"
                if k == "samples_per_s"
                else f"{_SHORT.get(k, k)} {v:.4f}"
            )
    return " ".join(parts)


def _replace_atomically(path: Path, write: Callable[[TextIO], object]) -> None:
    """Writes the new content (``write(file)``) to a temporary file beside ``path``, fsyncs
    it and renames it over, so a run killed at any moment leaves the old file or the new."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", newline="") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_csv(f: TextIO, fields: list[str], rows: list[dict[str, str]]) -> None:
    writer = csv.DictWriter(f, fields, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)


def _keep_results_until(path: Path, step: int) -> None:
    """A fresh run starts ``results.jsonl`` empty; a resumed one keeps the lines up to its
    step (rewritten atomically, like the CSV). A line that does not parse was cut short by a
    run killed while writing it, and goes."""
    if step == 0 or not path.exists():
        path.unlink(missing_ok=True)
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    _replace_atomically(path, lambda f: f.writelines(kept))


def _read_csv_until(path: Path, step: int) -> tuple[list[str], list[dict[str, str]]]:
    if not path.exists():
        return [], []
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        fields = list(reader.fieldnames or [])
        rows = [r for r in reader if int(r["step"]) <= step]
    return fields, rows


__all__ = ["RunLog", "check_reporters"]
