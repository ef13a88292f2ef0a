"""The package as a user meets it: import, public names, the CLI, the demo."""

from __future__ import annotations

import subprocess
import sys

import torch

import lightclip


def test_public_names_are_exported() -> None:
    for name in lightclip.__all__:
        assert hasattr(lightclip, name), name
    assert lightclip.__version__.count(".") == 2


def test_importing_lightclip_loads_torch_first() -> None:
    # A fresh interpreter importing only lightclip must work: the extension relies on torch
    # having loaded libtorch.
    code = "import lightclip, sys; assert 'torch' in sys.modules; print(lightclip.__version__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == lightclip.__version__


def test_cli_info_runs_and_bad_command_exits_nonzero() -> None:
    ok = subprocess.run([sys.executable, "-m", "lightclip", "info"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "torch 2.11.0" in ok.stdout
    capability = torch.backends.cpu.get_cpu_capability()
    assert "\nmachine: " in ok.stdout and f", {capability} kernels, " in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "lightclip", "nope"], capture_output=True, text=True
    )
    assert bad.returncode != 0
    assert "Traceback" not in bad.stderr
