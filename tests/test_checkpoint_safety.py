"""A checkpoint that hides code runs none of it, through every way a user loads one; lightclip's
own checkpoints (RNG states included) load safely, and an old one you trust converts once."""

from __future__ import annotations

import builtins
import os
import random
import shlex
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from lightclip import checkpoint as ckpt
from lightclip.cli import main
from lightclip.models import create_model
from lightclip.openclip_export import WEIGHTS_FILE, export_openclip


class _Trojan:
    """Unpickling it creates a marker file: stands in for any code a crafted file could run,
    through a builtin, a shell command or arbitrary Python source."""

    def __init__(self, marker: Path, how: str) -> None:
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return (open, (str(self.marker), "w"))
        if self.how == "os.system":
            return (os.system, (f"touch {shlex.quote(str(self.marker))}",))
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


@pytest.fixture(params=["open", "os.system", "exec"])
def trojan(request, tmp_path: Path) -> tuple[Path, Path]:
    """An otherwise valid exported model of ``clip-tiny-mnv2`` (as lightclip once wrote it, a
    ``.pt``) with a trojan inside, and the marker file its code would create."""
    model = create_model("clip-tiny-mnv2")
    marker = tmp_path / "code-ran"
    path = tmp_path / "inference_model.pt"
    torch.save(
        {
            "model_name": model.config.name,
            "model_config": model.config.to_dict(),
            "state_dict": model.state_dict(),
            "payload": _Trojan(marker, request.param),
        },
        path,
    )
    return path, marker


def test_the_trojan_runs_when_unpickled_in_full(trojan: tuple[Path, Path]) -> None:
    # The fixture itself works: the unsafe loader does run it.
    path, marker = trojan
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_load_checkpoint_and_model_from_checkpoint_refuse_it(trojan: tuple[Path, Path]) -> None:
    path, marker = trojan
    for load in (ckpt.load_checkpoint, ckpt.model_from_checkpoint, ckpt.load_model_payload):
        with pytest.raises(
            ckpt.CheckpointError, match="could run code.*python -m lightclip.checkpoint --trust"
        ):
            load(path)
    assert not marker.exists()


def test_a_pickle_disguised_as_an_export_is_never_unpickled(
    trojan: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    path, marker = trojan
    folder = export_openclip(create_model("clip-tiny-mnv2"), tmp_path / "inference_model")
    shutil.copy(path, folder / WEIGHTS_FILE)
    for source in (folder, folder / WEIGHTS_FILE):
        with pytest.raises(ckpt.CheckpointError, match="could not read exported model"):
            ckpt.model_from_checkpoint(source)
        assert main(["eval", "--checkpoint", str(source), "--dataset", "synthetic:heldout"]) == 2
        assert "could not read exported model" in capsys.readouterr().err
    assert main(["export", "--checkpoint", str(folder), "--output", str(tmp_path / "out")]) == 2
    assert "could not read exported model" in capsys.readouterr().err
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
def test_the_command_line_refuses_it(
    argv: list[str], trojan: tuple[Path, Path], tmp_path: Path, capsys
) -> None:
    path, marker = trojan
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


def test_an_inference_model_pt_of_an_older_lightclip_still_loads(tmp_path: Path) -> None:
    # Older versions exported tensors and plain values only, which the safe loader reads.
    model = create_model("lightclip-tiny-mnv2", seed=0).export()
    path = tmp_path / "inference_model.pt"
    plain = {"model_config": model.config.to_dict(), "state_dict": model.state_dict()}
    torch.save({"model_name": model.config.name, **plain}, path)
    loaded = ckpt.model_from_checkpoint(path)
    assert loaded.config == model.config
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
