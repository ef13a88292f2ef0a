"""The built wheel installs into a clean virtualenv and works there.

`make test` builds the wheel first and passes its path in LIGHTCLIP_WHEEL (and uv, which
installs torch from its cache in seconds, in LIGHTCLIP_UV). Run by hand without them, the test
says why it skips.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

WHEEL = os.environ.get("LIGHTCLIP_WHEEL")
UV = os.environ.get("LIGHTCLIP_UV")

CHECK = """
import os, sys, torch, lightclip
assert "LD_LIBRARY_PATH" not in os.environ
assert lightclip.__file__.startswith(sys.prefix), lightclip.__file__
a, b = torch.randn(2, 5, 8), torch.randn(2, 3, 8)
ref = torch.nn.functional.cosine_similarity(a[:, :, None], b[:, None], dim=-1)
torch.testing.assert_close(lightclip.token_similarity(a, b), ref)
print("ok", lightclip.__version__)
"""


@pytest.mark.slow
@pytest.mark.skipif(not (WHEEL and UV), reason="run through `make test` (needs the built wheel)")
def test_wheel_installs_and_imports_in_a_clean_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", sys.executable, str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([UV, "pip", "install", "-q", "--python", str(python), WHEEL], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    env.pop("VIRTUAL_ENV", None)
    # Run from an empty directory so the repository's python/ cannot be picked up.
    out = subprocess.run(
        [str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok ")
