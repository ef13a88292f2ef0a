"""Which kernels computed a result: the processor, the vector kernels torch dispatches to on
it, and the accelerator with its libraries.

The same code, seed and data may not give the same floats on two machines: torch and its
libraries pick kernels by what the processor offers (AVX2, AVX-512), and a different summation
order grows, over a training run, into different weights and a different recall. A run
repeats digit for digit only on the same kernels, so the experiments record them with every
run and say when a table mixes setups.

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
    """The processor's model name as Linux reports it (x86's "model name", Arm's "Hardware"
    or "CPU part"), or Python's best guess."""
    try:
        fields = dict(
            (key.strip(), value.strip())
            for key, _, value in (
                line.partition(":") for line in Path("/proc/cpuinfo").read_text().splitlines()
            )
            if value.strip()
        )
    except OSError:
        fields = {}
    for key in ("model name", "Hardware", "CPU part"):
        if fields.get(key):
            return fields[key]
    return platform.processor() or platform.machine() or "unknown"


def describe_machine(device: str | torch.device | None = None) -> dict[str, Any]:
    """What decides the floats of a run on ``device`` (default: the GPU if there is one, else
    the CPU): the CPU and the vector kernels ATen dispatches to, torch's version and thread
    count, any kernel choices forced through the environment, and for a GPU its name, cuDNN's
    version and whether float32 matmuls may round through TF32."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    machine: dict[str, Any] = {
        "cpu": cpu_name(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": device.type,
        "kernel_env": {k: os.environ[k] for k in KERNEL_ENV if os.environ.get(k)},
    }
    if device.type == "cuda" and torch.cuda.is_available():
        machine["device"] = torch.cuda.get_device_name(device)
        machine["cudnn"] = torch.backends.cudnn.version()
        machine["tf32_matmul"] = torch.backends.cuda.matmul.allow_tf32
    return machine


def machine_label(machine: dict[str, Any]) -> str:
    """One line for a table's notes."""
    parts = [str(machine.get("cpu", "unknown CPU"))]
    if machine.get("device") not in (None, "cpu"):
        parts.append(str(machine["device"]))
        if machine.get("cudnn"):
            parts.append(f"cuDNN {machine['cudnn']}")
        if machine.get("tf32_matmul"):
            parts.append("TF32 matmuls")
    parts.append(f"{machine.get('cpu_capability', '?')} kernels")
    parts.append(f"{machine.get('threads', '?')} threads")
    parts.append(f"torch {machine.get('torch', '?')}")
    forced = machine.get("kernel_env") or {}
    parts += [f"{k}={v}" for k, v in sorted(forced.items())]
    return ", ".join(parts)
