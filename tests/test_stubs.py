"""`_core.pyi` must describe the compiled module exactly (mypy.stubtest)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

STUB = Path(__file__).resolve().parent.parent / "python" / "lightclip" / "_core.pyi"
ALLOWLIST = Path(__file__).resolve().parent / "stubtest_allowlist.txt"


def run_stubtest(mypypath: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if mypypath is not None:
        env["MYPYPATH"] = str(mypypath)
    return subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "lightclip._core", "--allowlist", str(ALLOWLIST)],
        capture_output=True,
        text=True,
        env=env,
    )


def test_stub_matches_the_compiled_module() -> None:
    result = run_stubtest()
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_drifted_stub_is_caught(tmp_path: Path) -> None:
    # Proves the check above can fail: rename a parameter in a copy of the stub.
    package = tmp_path / "lightclip"
    package.mkdir()
    (package / "__init__.pyi").write_text("")
    drifted = STUB.read_text().replace("positive_offset: int = 0", "offset: int = 0")
    assert drifted != STUB.read_text()
    (package / "_core.pyi").write_text(drifted)
    result = run_stubtest(mypypath=tmp_path)
    assert result.returncode != 0
    assert "offset" in result.stdout
