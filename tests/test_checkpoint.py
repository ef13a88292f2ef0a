"""Checkpoints: atomic writes, RNG round trips, and refusing another model's checkpoint."""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from lightclip import checkpoint as ckpt


def test_save_load_round_trip_and_no_temp_files_left(tmp_path: Path) -> None:
    path = tmp_path / "run" / "epoch_latest.pt"
    payload = {"epoch": 2, "step": 17, "model_name": "m", "state_dict": {"w": torch.arange(3.0)}}
    ckpt.save_checkpoint(path, payload)
    loaded = ckpt.load_checkpoint(path)
    assert loaded["step"] == 17 and torch.equal(loaded["state_dict"]["w"], torch.arange(3.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch_latest.pt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "epoch_latest.pt"
    ckpt.save_checkpoint(path, {"step": 1, "state_dict": {}})
    real_save = torch.save

    def dies_half_way(obj, f) -> None:
        real_save({"step": 2, "state_dict": {}}, f)
        f.truncate(10)  # a partly written file ...
        raise KeyboardInterrupt  # ... and the user presses Ctrl-C

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"step": 2, "state_dict": {}})
    monkeypatch.setattr(torch, "save", real_save)
    assert ckpt.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["epoch_latest.pt"]


def test_load_errors_are_specific(tmp_path: Path) -> None:
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.load_checkpoint(tmp_path / "nope.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ckpt.CheckpointError, match="could not read"):
        ckpt.load_checkpoint(garbage)
    torch.save({"weights": 1}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointError, match="no state_dict"):
        ckpt.load_checkpoint(tmp_path / "other.pt")


def test_resolve_resume(tmp_path: Path) -> None:
    assert ckpt.resolve_resume(None, tmp_path) is None
    assert ckpt.resolve_resume("latest", tmp_path) is None  # nothing yet: fresh start
    ckpt.save_checkpoint(tmp_path / ckpt.LATEST, {"state_dict": {}})
    assert ckpt.resolve_resume("latest", tmp_path) == tmp_path / ckpt.LATEST
    with pytest.raises(ckpt.CheckpointError, match="not found"):
        ckpt.resolve_resume(str(tmp_path / "missing.pt"), tmp_path)


def test_check_compatible_names_the_mismatch() -> None:
    model = nn.Sequential(nn.Linear(4, 3))
    good = {"model_name": "a", "state_dict": model.state_dict()}
    ckpt.check_compatible(good, model, "a", "ckpt")
    ddp_style = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    ckpt.check_compatible(ddp_style, model, "a", "ckpt")
    with pytest.raises(ckpt.CheckpointError, match="written by model 'b'.*builds 'a'"):
        ckpt.check_compatible({**good, "model_name": "b"}, model, "a", "ckpt")
    other = nn.Sequential(nn.Linear(4, 5))
    with pytest.raises(ckpt.CheckpointError, match=r"0\.weight has shape \(5, 4\)"):
        ckpt.check_compatible(
            {"model_name": "a", "state_dict": other.state_dict()}, model, "a", "ckpt"
        )
    bigger = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 3))
    with pytest.raises(ckpt.CheckpointError, match="unexpected"):
        ckpt.check_compatible({"state_dict": bigger.state_dict()}, model, "a", "ckpt")


def test_rng_state_round_trip_restores_every_generator(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(1), torch.manual_seed(1)  # noqa: NPY002
    state = ckpt.rng_state()
    path = tmp_path / "rng.pt"
    ckpt.save_checkpoint(path, {"state_dict": {}, "rng": state})
    first = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    random.seed(99), np.random.seed(99), torch.manual_seed(99)  # noqa: NPY002
    ckpt.set_rng_state(ckpt.load_checkpoint(path)["rng"])
    again = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert first[0] == again[0] and first[1] == again[1] and torch.equal(first[2], again[2])


def test_save_is_durable_rename_in_same_folder(tmp_path: Path, monkeypatch) -> None:
    # The temp file must live next to the target (os.replace is atomic only within one
    # file system) and be fsync'ed before the rename.
    seen: list[tuple[str, str]] = []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(
        os, "replace", lambda a, b: (seen.append(("replace", str(a))), real_replace(a, b))[1]
    )
    monkeypatch.setattr(os, "fsync", lambda fd: (seen.append(("fsync", "")), real_fsync(fd))[1])
    ckpt.save_checkpoint(tmp_path / "x.pt", {"state_dict": {}})
    kinds = [k for k, _ in seen]
    assert kinds.index("fsync") < kinds.index("replace")
    tmp = next(a for k, a in seen if k == "replace")
    assert Path(tmp).parent == tmp_path
