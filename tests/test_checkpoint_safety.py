"""A checkpoint that hides code runs none of it, through every way a user loads one; lightclip's
own checkpoints (RNG states included) load safely, and an old one you trust converts once."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from lightclip import checkpoint as ckpt
from lightclip.cli import main
from lightclip.models import create_model


class _Trojan:
    """Unpickling it creates a marker file: stands in for any code a crafted file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _trojan_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """An otherwise valid exported model of ``clip-tiny-mnv2`` with a trojan inside."""
    model = create_model("clip-tiny-mnv2")
    marker = tmp_path / "code-ran"
    path = tmp_path / "inference_model.pt"
    torch.save(
        {
            "model_name": model.config.name,
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "payload": _Trojan(marker),
        },
        path,
    )
    return path, marker


def test_the_trojan_runs_when_unpickled_in_full(tmp_path: Path) -> None:
    # The fixture itself works: the unsafe loader does run it.
    path, marker = _trojan_checkpoint(tmp_path)
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_and_model_from_checkpoint_refuse_it(tmp_path: Path) -> None:
    path, marker = _trojan_checkpoint(tmp_path)
    for load in (ckpt.load_checkpoint, ckpt.model_from_checkpoint):
        with pytest.raises(ckpt.CheckpointError, match="could run code"):
            load(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["eval", "--checkpoint", "{ckpt}", "--dataset", "synthetic:heldout"],
        ["export", "--checkpoint", "{ckpt}", "--output", "{out}"],
        [
            "train",
            "--model",
            "clip-tiny-mnv2",
            "--recipe",
            "clip",
            "--steps",
            "2",
            "--batch-size",
            "4",
            "--train-num-samples",
            "8",
            "--no-progress",
            "--workers",
            "1",
            "--logs",
            "{out}",
            "--resume",
            "{ckpt}",
        ],
    ],
    ids=["eval", "export", "train-resume"],
)
def test_the_command_line_refuses_it(argv: list[str], tmp_path: Path, capsys) -> None:
    path, marker = _trojan_checkpoint(tmp_path)
    out = tmp_path / "out"
    argv = [a.format(ckpt=path, out=out) for a in argv]
    assert main(argv) == 2
    assert "could run code" in capsys.readouterr().err
    assert not marker.exists()


def test_our_rng_states_load_safely_and_restore_every_generator(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)  # noqa: NPY002
    path = tmp_path / "c.pt"
    ckpt.save_checkpoint(path, {"state_dict": {}, "rng": ckpt.rng_state()})
    expected = (random.random(), np.random.random(), torch.rand(1))  # noqa: NPY002
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"])  # the safe loader reads it
    assert (random.random(), np.random.random(), torch.rand(1)) == expected  # noqa: NPY002


def test_an_old_checkpoint_is_refused_with_the_way_out_and_converts(tmp_path: Path) -> None:
    random.seed(4), np.random.seed(5), torch.manual_seed(6)  # noqa: NPY002
    old_rng = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - as lightclip stored it before
        "torch": torch.get_rng_state(),
    }
    old = tmp_path / "old.pt"
    torch.save({"step": 3, "state_dict": {"w": torch.ones(2)}, "rng": [old_rng]}, old)
    with pytest.raises(ckpt.CheckpointError, match="python -m lightclip.checkpoint --trust"):
        ckpt.load_checkpoint(old)
    new = tmp_path / "new.pt"
    assert ckpt.main(["--trust", str(old), str(new)]) == 0
    converted = ckpt.load_checkpoint(new)
    assert converted["step"] == 3 and torch.equal(converted["state_dict"]["w"], torch.ones(2))
    expected = np.random.random()  # noqa: NPY002 - right after np.random.seed(5)
    ckpt.set_rng_state(converted["rng"][0])
    assert np.random.random() == expected  # noqa: NPY002
