"""What a run records of the machine whose kernels computed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from lightclip.machine import KERNEL_ENV, MACHINE_FIELDS, describe_machine, machine_label


def _described_in_a_process_with(env: dict[str, str]) -> dict:
    """``describe_machine()`` in a fresh interpreter: torch picks its kernels once, at import."""
    code = "import json, lightclip.machine as m; print(json.dumps(m.describe_machine()))"
    clean = {k: v for k, v in os.environ.items() if k not in KERNEL_ENV}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return json.loads(out.stdout)


def test_describes_this_process_as_torch_sees_it() -> None:
    machine = describe_machine()
    assert tuple(machine) == MACHINE_FIELDS
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert machine["torch"] == torch.__version__
    assert machine["threads"] == torch.get_num_threads()
    assert machine["device"] == "cpu" and machine["cpu"]


def test_kernels_forced_through_the_environment_are_recorded() -> None:
    machine = _described_in_a_process_with(
        {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    )
    # ATen obeyed: its vector kernels are the portable ones, whatever this CPU offers.
    assert machine["cpu_capability"] == "DEFAULT"
    assert machine["kernel_env"] == {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "AVX2"}
    assert machine_label(machine).endswith("ATEN_CPU_CAPABILITY=default, ONEDNN_MAX_CPU_ISA=AVX2")
    assert "DEFAULT kernels" in machine_label(machine)


def test_label_names_an_accelerator_and_leaves_out_what_is_unset() -> None:
    machine = dict(
        cpu="Intel Xeon",
        cpu_capability="AVX2",
        torch="2.11.0",
        threads=16,
        device="NVIDIA H100 80GB HBM3",
        kernel_env={},
    )
    assert machine_label(machine) == (
        "Intel Xeon, NVIDIA H100 80GB HBM3, AVX2 kernels, 16 threads, torch 2.11.0"
    )
