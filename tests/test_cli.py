"""`lightclip train` on bad input: one clear line on stderr and a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightclip.checkpoint import save_checkpoint
from lightclip.cli import main
from lightclip.demo import DEMO_STEPS
from lightclip.models import create_model

BASE = ["train", "--steps", "2", "--batch-size", "4", "--no-progress", "--workers", "1"]


def _fails(capsys, argv: list[str], *needles: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lightclip: error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_unknown_model_lists_the_known_ones(capsys, tmp_path: Path) -> None:
    _fails(
        capsys,
        [*BASE, "--logs", str(tmp_path), "--model", "nope"],
        "--model",
        "'nope'",
        "lightclip-tiny-mnv2",
    )


def test_missing_and_empty_data(capsys, tmp_path: Path) -> None:
    _fails(
        capsys,
        [*BASE, "--logs", str(tmp_path), "--train-data", str(tmp_path / "no.tar")],
        "--train-data",
        "no such file",
    )
    _fails(
        capsys,
        [
            *BASE,
            "--logs",
            str(tmp_path),
            "--train-data",
            str(tmp_path / "gone" / "train-{000000..000003}.tar"),
        ],
        "no such folder",
    )
    (tmp_path / "empty").mkdir()
    _fails(
        capsys, [*BASE, "--logs", str(tmp_path), "--train-data", str(tmp_path / "empty")], "empty"
    )
    table = tmp_path / "empty.csv"
    table.write_text("filepath,title\n")
    _fails(capsys, [*BASE, "--logs", str(tmp_path), "--train-data", str(table)], "no rows")


def test_bad_values_and_resume_misuse(capsys, tmp_path: Path) -> None:
    _fails(capsys, [*BASE, "--logs", str(tmp_path), "--batch-size", "0"], "--batch-size")
    _fails(capsys, [*BASE, "--logs", str(tmp_path), "--resume", "latest"], "--name")
    _fails(
        capsys, [*BASE, "--logs", str(tmp_path), "--resume", str(tmp_path / "x.pt")], "not found"
    )


def test_checkpoint_of_another_model_is_refused(capsys, tmp_path: Path) -> None:
    other = create_model("clip-tiny-r18")
    path = tmp_path / "r18.pt"
    save_checkpoint(
        path,
        {"epoch": 0, "step": 1, "model_name": "clip-tiny-r18", "state_dict": other.state_dict()},
    )
    _fails(
        capsys,
        [*BASE, "--logs", str(tmp_path), "--train-num-samples", "16", "--resume", str(path)],
        "written by model 'clip-tiny-r18'",
        "lightclip-tiny-mnv2",
    )


def test_unknown_flag_is_a_usage_error(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["train", "--bogus-flag"])
    assert exc.value.code == 2
    assert "unrecognized arguments: --bogus-flag" in capsys.readouterr().err


def test_demo_help_states_the_demos_own_step_count(capsys) -> None:
    # The help must name the step count the demo actually runs, not a copy of it.
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    assert f"(default {DEMO_STEPS})" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("module", ["lightclip", "lightclip.train"])
def test_entry_points_print_one_line_not_a_traceback(module: str, tmp_path: Path) -> None:
    argv = ["train"] if module == "lightclip" else []
    out = subprocess.run(
        [sys.executable, "-m", module, *argv, "--model", "nope", "--logs", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    assert "unknown model 'nope'" in out.stderr
