"""Shared test fixtures.

Flickr8k lives beside the repository (../shared/data/flickr8k) and is never copied in; tests
that use it skip with a clear reason where it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

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
