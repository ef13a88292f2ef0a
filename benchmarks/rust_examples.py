"""Builds the core crate's timing programs (rust/core/examples/bench_*.rs) that some
benchmarks run beside their Python measurements: a baseline crate, or the core with no Python
in the way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def cargo_target_dir() -> str:
    """The Makefile's target dir (shared with `make build`), so nothing compiles twice."""
    if "CARGO_TARGET_DIR" in os.environ:
        return os.environ["CARGO_TARGET_DIR"]
    venv = str(Path(sys.executable).parent.parent)
    checksum = subprocess.run(["cksum"], input=venv, capture_output=True, text=True, check=True)
    return str(Path.home() / ".cache" / "lightclip" / f"target-{checksum.stdout.split()[0]}")


def build_example(name: str) -> Path | None:
    """`cargo build --release --example NAME` of lightclip-core; None (and why, on stderr)
    when cargo is missing or the build fails."""
    target = cargo_target_dir()
    cmd = ["cargo", "build", "--release", "-q", "-p", "lightclip-core", "--example", name]
    env = dict(os.environ, CARGO_TARGET_DIR=target)
    try:
        subprocess.run(cmd, cwd=REPO, env=env, check=True, capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError) as error:
        detail = getattr(error, "stderr", "") or error
        print(f"{name} unavailable (cargo build failed): {detail}", file=sys.stderr)
        return None
    return Path(target) / "release" / "examples" / name
