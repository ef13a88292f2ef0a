"""The built wheels are ones PyPI accepts, and they install and work in clean virtualenvs.

`make test` builds one wheel per CPython version and passes them in: LIGHTCLIP_WHEEL for the
interpreter running the tests, LIGHTCLIP_WHEEL_312 with the CPython 3.12 it was built by in
LIGHTCLIP_PYTHON_312, and uv (which installs torch from its cache in seconds) in LIGHTCLIP_UV.
Run by hand without them, each test says why it skips.

The reference for "PyPI would accept it" is PyPA's auditwheel: the manylinux tag the wheel
claims must be the one its symbol versions allow, and the only libraries outside the manylinux
policy must be torch's, which the installed torch package provides (bundling them would ship a
second libtorch next to torch's own).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest

UV = os.environ.get("LIGHTCLIP_UV")


@dataclass(frozen=True)
class WheelUnderTest:
    """A wheel and the CPython it is for; `missing` says why there is none."""

    version: str
    wheel: str | None
    python: str | None
    missing: str

    @property
    def cp_tag(self) -> str:
        return "cp" + self.version.replace(".", "")


HERE = f"{sys.version_info.major}.{sys.version_info.minor}"
WHEELS = [
    WheelUnderTest(
        HERE,
        os.environ.get("LIGHTCLIP_WHEEL") or None,
        sys.executable,
        "run through `make test` (it builds the wheel and passes its path in LIGHTCLIP_WHEEL)",
    ),
    WheelUnderTest(
        "3.12",
        os.environ.get("LIGHTCLIP_WHEEL_312") or None,
        os.environ.get("LIGHTCLIP_PYTHON_312") or None,
        "no CPython 3.12 to build and check a wheel with: `make test` looks for python3.12 "
        "on PATH and in pyenv; point PYTHON312=... at one"
        if not os.environ.get("LIGHTCLIP_PYTHON_312")
        else "LIGHTCLIP_PYTHON_312 is set but LIGHTCLIP_WHEEL_312 is not (`make wheel-312`)",
    ),
]
WHEEL_IDS = [w.version for w in WHEELS]


def need(case: WheelUnderTest) -> str:
    if case.wheel is None or case.python is None:
        pytest.skip(case.missing)
    return str(Path(case.wheel).resolve())


def wheel_tags(wheel: str) -> list[str]:
    """The `Tag:` lines of the wheel's own WHEEL metadata file (what installers match on)."""
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if re.fullmatch(r"[^/]+\.dist-info/WHEEL", n)]
        text = zf.read(name).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Tag:")]


@pytest.mark.parametrize("case", WHEELS, ids=WHEEL_IDS)
def test_wheel_is_tagged_manylinux_for_its_cpython(case: WheelUnderTest) -> None:
    wheel = need(case)
    tags = wheel_tags(wheel)
    assert len(tags) == 1, tags
    python_tag, abi_tag, platform_tag = tags[0].split("-")
    assert (python_tag, abi_tag) == (case.cp_tag, case.cp_tag), tags
    assert re.fullmatch(r"manylinux_2_\d+_x86_64", platform_tag), tags
    # The file name carries the same tag (pip and PyPI read the name, uv the metadata).
    assert Path(wheel).name.endswith(f"-{tags[0]}.whl"), (wheel, tags)
    with zipfile.ZipFile(wheel) as zf:
        extensions = [n for n in zf.namelist() if n.endswith(".so")]
    assert extensions == [
        f"lightclip/_core.{case.cp_tag.replace('cp', 'cpython-')}-x86_64-linux-gnu.so"
    ]


@pytest.mark.parametrize("case", WHEELS, ids=WHEEL_IDS)
def test_wheel_bundles_no_torch_library(case: WheelUnderTest) -> None:
    wheel = need(case)
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    bundled = [n for n in names if re.search(r"(^|/)lib(torch|c10)[^/]*\.so", n)]
    assert bundled == [], bundled
    # auditwheel / maturin repair would put copied libraries in a `<package>.libs/` folder.
    assert not [n for n in names if n.split("/")[0].endswith(".libs")], names


@pytest.mark.parametrize("case", WHEELS, ids=WHEEL_IDS)
def test_wheel_carries_the_notice_of_the_jpeg_code_it_links(case: WheelUnderTest) -> None:
    # libjpeg-turbo's BSD licence and the IJG's terms ask binary copies to carry them.
    with zipfile.ZipFile(need(case)) as zf:
        notice = zf.read("lightclip/THIRD_PARTY_NOTICES.txt").decode()
    assert "based in part on the work of the Independent JPEG Group" in notice
    assert "Redistributions in binary form must reproduce" in notice


@pytest.mark.parametrize("case", WHEELS, ids=WHEEL_IDS)
def test_manylinux_tag_is_what_auditwheel_finds(case: WheelUnderTest, tmp_path: Path) -> None:
    wheel = need(case)
    auditwheel = Path(sys.executable).with_name("auditwheel")
    if not auditwheel.exists():
        pytest.skip("auditwheel is not installed (it is in the dev extras: make setup)")
    out = subprocess.run(
        [str(auditwheel), "show", "--json", wheel], capture_output=True, text=True, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (platform_tag,) = {tag.split("-")[2] for tag in wheel_tags(wheel)}
    # The symbol versions (glibc, libstdc++, libgcc) allow exactly the tag the wheel claims:
    # not more (a false claim pip would act on), not less (a needlessly narrow wheel).
    assert report["sym_tag"] == platform_tag, report["versioned_symbols"]
    # Outside the manylinux policy: torch's libraries only, found at run time through the
    # extension's rpath into the installed torch package.
    assert report["external_libs"], report
    foreign = [lib for lib in report["external_libs"] if not re.match(r"lib(torch|c10)", lib)]
    assert foreign == [], foreign


# In the clean venv: the extension's own rpath must find torch's libraries before anything
# imports torch (ctypes loads the bare .so, so no torch import can have loaded them first),
# then the package must work.
CHECK = """
import ctypes, glob, os, sys, sysconfig
assert "LD_LIBRARY_PATH" not in os.environ
site = os.path.realpath(sysconfig.get_paths()["platlib"])
(core,) = glob.glob(os.path.join(site, "lightclip", "_core.*.so"))
ctypes.CDLL(core)
with open("/proc/self/maps") as maps:
    loaded = {os.path.realpath(line.split()[-1]) for line in maps if "libtorch_cpu.so" in line}
assert loaded == {os.path.join(site, "torch", "lib", "libtorch_cpu.so")}, loaded
import torch, lightclip
assert lightclip.__file__.startswith(sys.prefix), lightclip.__file__
eye = torch.eye(3)
i2t, _ = lightclip.soft_labels(torch.randn(3, 3), 0.5)  # a tensor through libtorch in Rust
torch.testing.assert_close(i2t, 0.8 * eye + 0.1 * (1 - eye))
import tempfile  # a run ends with an export: its dependencies come with the wheel
from lightclip.checkpoint import model_from_checkpoint
from lightclip.openclip_export import export_openclip
out = export_openclip(lightclip.create_model("clip-tiny-mnv2"), tempfile.mkdtemp())
assert model_from_checkpoint(out).config.name == "clip-tiny-mnv2"
print("ok", lightclip.__version__, "%d.%d" % sys.version_info[:2])
"""


@pytest.mark.slow
@pytest.mark.parametrize("case", WHEELS, ids=WHEEL_IDS)
def test_wheel_installs_and_imports_in_a_clean_venv(case: WheelUnderTest, tmp_path: Path) -> None:
    wheel = need(case)
    if not UV:
        pytest.skip("run through `make test` (it passes uv in LIGHTCLIP_UV)")
    venv = tmp_path / "venv"
    subprocess.run([UV, "venv", "-q", "--python", str(case.python), str(venv)], check=True)
    python = venv / "bin" / "python"
    # Resolved from the index as a user's install is: the wheel's own torch==2.11.0 pin.
    subprocess.run([UV, "pip", "install", "-q", "--python", str(python), wheel], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "PYTHONPATH")}
    env.pop("VIRTUAL_ENV", None)
    # Run from an empty directory so the repository's python/ cannot be picked up.
    out = subprocess.run(
        [str(python), "-c", CHECK], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert out.returncode == 0, out.stderr
    ok, _lightclip_version, python_version = out.stdout.split()
    assert (ok, python_version) == ("ok", case.version), out.stdout
