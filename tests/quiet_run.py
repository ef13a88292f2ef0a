"""The training config the loop tests start from (imported by tests/test_train_*.py and
test_cuda.py): the tiny MobileNet model, batches of 4, the run in ``tmp_path/run``, no
progress bar, no export, a log row every step. Each test file fixes what it varies with
``functools.partial(quiet_config, ...)``; a call's own keywords win."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightclip


def quiet_config(tmp_path: Path, **overrides: Any) -> lightclip.TrainConfig:
    values: dict[str, Any] = dict(
        model="lightclip-tiny-mnv2",
        batch_size=4,
        logs=str(tmp_path),
        name="run",
        progress=False,
        export=False,
        log_every_n_steps=1,
    )
    values.update(overrides)
    return lightclip.TrainConfig(**values)
