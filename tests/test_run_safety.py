"""A run's folder survives its user: kills while resuming or saving, a reused --name, a full
disk and a second Ctrl-C during a save.

Kills are real SIGKILLs of a child process, sent by the child itself at a fixed point of the
run (an ``on_step`` hook, or a write inside ``torch.save``), so nothing depends on timing.
"""

from __future__ import annotations

import csv
import errno
import os
import signal
import subprocess
import sys
import textwrap
from functools import partial
from pathlib import Path

import pytest
import torch

import lightclip
from lightclip import checkpoint as ckpt
from lightclip.checkpoint import LATEST, load_checkpoint
from lightclip.cli import main
from lightclip.errors import LightclipError, RunExistsError
from quiet_run import quiet_config
from train_fakes import FakePipeline

TESTS = Path(__file__).resolve().parent
CLI = ["--batch-size", "4", "--no-progress", "--workers", "1", "--train-num-samples", "16"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")

_config = partial(quiet_config, steps=6, warmup=1)


def _data() -> FakePipeline:
    return FakePipeline(num_samples=16, batch_size=4)


def _csv_steps(run_dir: Path) -> list[str]:
    with (run_dir / "metrics.csv").open(newline="") as f:
        return [row["step"] for row in csv.DictReader(f)]


def _stop_at(step: int):
    return lambda done, _metrics: done == step  # True: stop after this step, as Ctrl-C does


# A child process that trains the run in argv[1] with the stand-in data and kills itself
# (SIGKILL, no clean-up of any kind) where argv[2] says.
CHILD = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    import lightclip
    from quiet_run import quiet_config
    from train_fakes import FakePipeline

    torch.set_num_threads(1)
    logs, where = sys.argv[1], sys.argv[2]
    real_save = torch.save

    class DiesMidWrite:
        def __init__(self, f):
            self.f, self.written = f, 0

        def write(self, data):
            self.written += len(data)
            if self.written > 4096:
                os.kill(os.getpid(), signal.SIGKILL)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    def on_step(step, _metrics):
        if where == "first-resumed-step":
            os.kill(os.getpid(), signal.SIGKILL)

    if where == "mid-save":
        torch.save = lambda obj, f, **kw: real_save(obj, DiesMidWrite(f), **kw)
    config = quiet_config(
        logs, steps=6, warmup=1, resume="latest", log_every_n_steps=100, save_every_n_steps=1
    )
    lightclip.train(config, data=FakePipeline(num_samples=16, batch_size=4), on_step=on_step)
    sys.exit("the child was meant to kill itself")
    """
)


def _run_child_until_killed(logs: Path, where: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
    }
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(logs), where],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr


# --- a resumed run keeps the earlier metrics ------------------------------------------------


def test_a_resumed_run_killed_before_its_first_log_row_keeps_the_earlier_rows(tmp_path) -> None:
    first = lightclip.train(_config(tmp_path), data=_data(), on_step=_stop_at(3))
    assert first.interrupted and first.step == 3
    run_dir = tmp_path / "run"
    assert _csv_steps(run_dir) == ["1", "2", "3"]

    # The resumed child logs every 100 steps, so it writes no row of its own before the kill.
    _run_child_until_killed(tmp_path, "first-resumed-step")
    assert _csv_steps(run_dir) == ["1", "2", "3"]


def test_resume_keeps_the_rows_up_to_the_resume_point_on_disk_at_once(tmp_path) -> None:
    # Rows past the resume point (steps 5, 6 of a run killed before saving them) are dropped;
    # the rest is on disk as soon as the log is opened, in the same columns.
    from lightclip.run_log import RunLog

    config = _config(tmp_path)
    run_dir = tmp_path / "run"
    with RunLog(run_dir, config, enabled=True, total_steps=6) as log:
        for step in range(1, 7):
            log.step(step, {"loss": float(step), "lr": 0.1})
        log.eval(4, {"val_loss": 1.0})
    with RunLog(run_dir, config, enabled=True, total_steps=6, start_step=4):
        rows = (run_dir / "metrics.csv").read_text().splitlines()
        assert [r.split(",")[0] for r in rows] == ["step", "1", "2", "3", "4", "4"]
        assert rows[0] == "step,kind,loss,lr"
        assert [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")] == []


def test_resume_drops_a_results_line_cut_short_by_a_kill(tmp_path) -> None:
    # A run killed while appending to results.jsonl leaves half a line; resuming keeps the
    # whole evaluations up to the resume point and drops the cut one and any after it.
    import json

    from lightclip.run_log import RunLog

    config = _config(tmp_path)
    run_dir = tmp_path / "run"
    with RunLog(run_dir, config, enabled=True, total_steps=6) as log:
        log.eval(2, {"val_loss": 2.0}, epoch=1)
        log.eval(4, {"val_loss": 1.0}, epoch=2)
        log.eval(6, {"val_loss": 0.5}, epoch=3)
    results = run_dir / "results.jsonl"
    whole = results.read_text()
    results.write_text(whole + whole.splitlines()[-1][:9])  # the kill, mid-line
    with RunLog(run_dir, config, enabled=True, total_steps=6, start_step=4):
        rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert [(r["step"], r["epoch"], r["val_loss"]) for r in rows] == [(2, 1, 2.0), (4, 2, 1.0)]


# --- reusing --name is refused unless resuming or overwriting -----------------------------------


def test_reusing_a_name_without_resume_is_refused_and_the_run_is_untouched(tmp_path) -> None:
    lightclip.train(_config(tmp_path, steps=3), data=_data())
    run_dir = tmp_path / "run"
    before = (run_dir / "metrics.csv").read_text()
    with pytest.raises(RunExistsError) as info:
        lightclip.train(_config(tmp_path, steps=2), data=_data())
    message = str(info.value)
    assert str(run_dir) in message
    assert "--resume" in message and "--name" in message and "--overwrite" in message
    assert isinstance(info.value, LightclipError) and isinstance(info.value, FileExistsError)
    assert load_checkpoint(run_dir / "checkpoints" / LATEST)["step"] == 3
    assert (run_dir / "metrics.csv").read_text() == before


def test_overwrite_replaces_the_earlier_run(tmp_path) -> None:
    lightclip.train(_config(tmp_path, steps=5, save_frequency=1), data=_data())
    run_dir = tmp_path / "run"
    assert (run_dir / "checkpoints" / "epoch_1.pt").is_file()  # step 4 ended epoch 0 ...
    result = lightclip.train(_config(tmp_path, steps=1, overwrite=True), data=_data())
    assert result.step == 1
    assert load_checkpoint(run_dir / "checkpoints" / LATEST)["step"] == 1
    assert _csv_steps(run_dir) == ["1"]
    # ... the earlier run's other checkpoints went with it.
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [LATEST]


def test_a_folder_without_results_is_not_an_earlier_run(tmp_path) -> None:
    # A run that failed before its first log row (bad data, say) left only its config and an
    # empty metrics file: the corrected command must simply run.
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    (run_dir / "metrics.csv").write_text("")
    assert lightclip.train(_config(tmp_path, steps=1), data=_data()).step == 1


def test_the_command_line_refuses_a_reused_name_in_one_line(tmp_path, capsys) -> None:
    argv = ["train", *CLI, "--steps", "1", "--logs", str(tmp_path), "--name", "again"]
    assert main(argv) == 0
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lightclip: error: "), err
    assert str(tmp_path / "again") in lines[0] and "--overwrite" in lines[0]
    assert main([*argv, "--overwrite"]) == 0
    assert main([*argv, "--resume", "latest", "--steps", "2"]) == 0


def test_demo_and_ablation_rows_retrain_over_their_own_folders(tmp_path, monkeypatch) -> None:
    # Both deliberately retrain a fixed folder (logs/demo, <out>/row-...): they ask to.
    from lightclip import demo
    from lightclip.experiments import ablation

    class Stop(Exception):
        pass

    seen: list[lightclip.TrainConfig] = []

    def fake_train(config, **_kw):
        seen.append(config)
        raise Stop

    monkeypatch.setattr(demo, "train", fake_train)
    monkeypatch.setattr(ablation, "train", fake_train)
    with pytest.raises(Stop):
        demo.run_demo(steps=1, logs=str(tmp_path))
    args = ablation.parse_args(["--data-dir", str(tmp_path), "--out", str(tmp_path)])
    with pytest.raises(Stop):
        ablation.run_one("clip", 0, args, "lightclip-tiny-mnv2", ("a", "b"))
    assert [c.overwrite for c in seen] == [True, True]


# --- a full disk, a second Ctrl-C and a kill during a save -------------------------------------


class _Writer:
    """Passes writes through to ``f`` until ``limit`` bytes, then calls ``then()``."""

    def __init__(self, f, limit: int, then) -> None:
        self.f, self.limit, self.then, self.written = f, limit, then, 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            self.then()
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _break_save_number(monkeypatch, n: int, then) -> None:
    """The n-th torch.save from now on (1-based) hits `then` after its first 4 KiB, as a real
    write does: inside torch's zip writer, which hides the cause behind its own error."""
    real_save = torch.save
    calls = []

    def save(obj, f, **kw):
        calls.append(1)
        return real_save(obj, _Writer(f, 4096, then) if len(calls) == n else f, **kw)

    monkeypatch.setattr(torch, "save", save)


def test_disk_full_while_saving_is_one_clear_error_and_keeps_the_file(tmp_path, monkeypatch):
    path = tmp_path / LATEST
    ckpt.save_checkpoint(path, {"step": 1, "state_dict": {"w": torch.zeros(4)}})
    _break_save_number(monkeypatch, 1, _disk_full)
    with pytest.raises(ckpt.CheckpointError) as info:
        ckpt.save_checkpoint(path, {"step": 2, "state_dict": {"w": torch.zeros(100_000)}})
    assert "no space left on device" in str(info.value) and str(path) in str(info.value)
    assert "\n" not in str(info.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == [LATEST]


def test_a_run_that_fills_the_disk_stops_with_the_last_checkpoint_kept(tmp_path, monkeypatch):
    _break_save_number(monkeypatch, 2, _disk_full)  # the save at step 4
    with pytest.raises(ckpt.CheckpointError, match="no space left on device"):
        lightclip.train(_config(tmp_path, save_every_n_steps=2, save_frequency=0), data=_data())
    monkeypatch.undo()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / LATEST)["step"] == 2
    assert [p.name for p in checkpoints.iterdir()] == [LATEST]


def test_disk_full_on_the_command_line_is_one_line(tmp_path, monkeypatch, capsys) -> None:
    _break_save_number(monkeypatch, 1, _disk_full)
    code = main(["train", *CLI, "--steps", "1", "--logs", str(tmp_path), "--name", "full"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and "RuntimeError" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith("lightclip: error: ") and "no space left on device" in last, err


@pytest.mark.parametrize("entry", ["lightclip", "lightclip.train"])
def test_disk_full_outside_a_save_is_one_line_too(entry, tmp_path, monkeypatch, capsys) -> None:
    from lightclip.run_log import RunLog

    def full(self, row) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "metrics.csv"))

    monkeypatch.setattr(RunLog, "_write_row", full)
    argv = [*CLI, "--steps", "1", "--log-every-n-steps", "1", "--logs", str(tmp_path)]
    code = main(["train", *argv]) if entry == "lightclip" else _train_main(argv)
    err = capsys.readouterr().err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert code == 2 and "Traceback" not in err, err
    assert "error: no space left on device writing" in last and "metrics.csv" in last, err


def _train_main(argv: list[str]) -> int:
    from lightclip.train import main as train_main

    return train_main(argv)


@pytest.mark.parametrize("entry", ["lightclip", "lightclip.train"])
def test_a_second_ctrl_c_during_a_save_exits_130_in_one_line(entry, tmp_path, monkeypatch, capsys):
    presses = []

    def ctrl_c() -> None:
        if len(presses) < 2:  # the first asks to stop after the step, the second stops now
            presses.append(1)
            os.kill(os.getpid(), signal.SIGINT)

    # Save 1 (step 1) goes through; save 2 (step 2) is interrupted twice mid-write.
    _break_save_number(monkeypatch, 2, ctrl_c)
    argv = [*CLI, "--steps", "3", "--save-every-n-steps", "1", "--logs", str(tmp_path)]
    argv += ["--name", "run", "--save-frequency", "0"]
    code = main(["train", *argv]) if entry == "lightclip" else _train_main(argv)
    err = capsys.readouterr().err
    assert code == 130 and len(presses) == 2, err
    assert "Traceback" not in err and "RuntimeError" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith(("lightclip: interrupted", "lightclip train: interrupted")), err
    monkeypatch.undo()
    checkpoints = tmp_path / "run" / "checkpoints"
    assert load_checkpoint(checkpoints / LATEST)["step"] == 1
    assert [p.name for p in checkpoints.iterdir()] == [LATEST]


def test_temp_files_of_a_save_killed_mid_write_are_removed_at_the_next_start(tmp_path) -> None:
    lightclip.train(_config(tmp_path), data=_data(), on_step=_stop_at(2))
    checkpoints = tmp_path / "run" / "checkpoints"
    _run_child_until_killed(tmp_path, "mid-save")  # resumes, then dies inside its first save
    left = [p.name for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert len(left) == 1 and left[0].startswith(f".{LATEST}."), left
    assert load_checkpoint(checkpoints / LATEST)["step"] == 2  # the kill did not touch it

    # Another run's folder is not this run's business.
    other = tmp_path / "other" / "checkpoints"
    other.mkdir(parents=True)
    (other / left[0]).write_bytes(b"x")
    resumed = lightclip.train(_config(tmp_path, resume="latest"), data=_data())
    assert resumed.step == 6
    assert not [p for p in checkpoints.iterdir() if p.name.endswith(".tmp")]
    assert (other / left[0]).exists()
