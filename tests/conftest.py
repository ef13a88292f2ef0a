"""Shared test fixtures.

Flickr8k lives beside the repository (../shared/data/flickr8k) and is never copied in; tests
that use it skip with a clear reason where it is absent.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parent.parent
FLICKR8K = Path(os.environ.get("LIGHTCLIP_FLICKR8K", REPO.parent / "shared" / "data" / "flickr8k"))


@pytest.fixture(scope="session")
def flickr8k_dir() -> Path:
    if not (FLICKR8K / "dev-000000.tar").exists():
        pytest.skip(f"Flickr8k shards not found at {FLICKR8K}")
    return FLICKR8K


@pytest.fixture
def one_torch_thread():
    """Bit-exact comparisons need the same reduction order in every run; one thread also keeps
    the training tests quick on a 2-core machine. Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def open_clip_tokenizer_module() -> ModuleType:
    """open_clip's ``tokenizer.py`` loaded on its own from the distribution's files, the
    reference the tokenizer tests compare with (importing the open_clip package would also
    import torchvision and its models)."""
    try:
        dist = importlib.metadata.distribution("open-clip-torch")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("open-clip-torch is not installed (make setup installs it)")
    path = Path(str(dist.locate_file("open_clip/tokenizer.py")))
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer_reference", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
