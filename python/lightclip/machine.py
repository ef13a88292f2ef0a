"""Which machine a result came from: the processor and the kernels torch picks on it.

Two CPUs that run the same code, seed and data do not compute the same floats: torch and its
libraries pick vector kernels by what the processor offers (AVX2, AVX-512), and a different
summation order grows, over a training run, into different weights and a different recall.
Results are comparable seed for seed only when they come from the same kernels, so the
experiments record this with every run and say when a table mixes machines.

    >>> machine = describe_machine()
    >>> sorted(machine) == sorted(MACHINE_FIELDS)
    True
    >>> machine_label({"cpu": "AMD EPYC", "cpu_capability": "AVX512", "torch": "2.11.0",
    ...                "threads": 2, "device": "cpu", "kernel_env": {}})
    'AMD EPYC, AVX512 kernels, 2 threads, torch 2.11.0'
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

MACHINE_FIELDS = ("cpu", "cpu_capability", "torch", "threads", "device", "kernel_env")
# Environment variables that choose the kernels torch and its libraries run (ATen's vector
# width, oneDNN's and MKL's instruction sets): with them one CPU computes another's floats.
KERNEL_ENV = (
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "DNNL_MAX_CPU_ISA",
    "MKL_ENABLE_INSTRUCTIONS",
    "MKL_CBWR",
)


def cpu_name() -> str:
    """The processor's model name as the kernel reports it, or Python's best guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def describe_machine(device: str | torch.device | None = None) -> dict[str, Any]:
    """What decides the floats of a run here: the CPU, the vector kernels ATen dispatches to,
    torch's version and thread count, the accelerator if ``device`` is one, and any kernel
    choices forced through the environment."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    accelerator = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda" and torch.cuda.is_available()
        else device.type
    )
    return {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": accelerator,
        "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if os.environ.get(k)},
    }


def machine_label(machine: dict[str, Any]) -> str:
    """One line for a table's notes."""
    parts = [str(machine.get("cpu", "unknown CPU"))]
    if machine.get("device") not in (None, "cpu"):
        parts.append(str(machine["device"]))
    parts.append(f"{machine.get('cpu_capability', '?')} kernels")
    parts.append(f"{machine.get('threads', '?')} threads")
    parts.append(f"torch {machine.get('torch', '?')}")
    forced = machine.get("kernel_env") or {}
    parts += [f"{k}={v}" for k, v in sorted(forced.items())]
    return ", ".join(parts)
