"""What a run records of the machine whose kernels computed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightclip.machine import KERNEL_ENV, machine_label


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


def _cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


@pytest.mark.skipif(not Path("/proc/cpuinfo").is_file(), reason="needs Linux's /proc/cpuinfo")
def test_the_recorded_kernels_are_the_widest_this_cpu_offers() -> None:
    flags = _cpu_flags()
    expected = (
        "AVX512"
        if {"avx512bw", "avx512vl", "avx512dq", "fma"} <= flags
        else "AVX2"
        if {"avx2", "fma"} <= flags
        else None
    )
    if expected is None:
        pytest.skip("an x86 CPU with AVX2 or AVX-512 is needed to know what ATen picks")
    machine = _described_in_a_process_with({})
    assert machine["cpu_capability"] == expected
    assert machine["kernel_env"] == {}
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    assert machine["device"] == (gpu or "cpu")


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
