"""open_clip's own `SimpleTokenizer`, the reference the text and pipeline benchmarks time
lightclip against. Loaded from the installed `open-clip-torch` distribution's
`open_clip/tokenizer.py` alone: importing the `open_clip` package would pull in torchvision
and timm."""

from __future__ import annotations

import importlib.metadata
import importlib.util
from pathlib import Path


def simple_tokenizer():
    dist = importlib.metadata.distribution("open-clip-torch")
    path = Path(str(dist.locate_file("open_clip/tokenizer.py")))
    spec = importlib.util.spec_from_file_location("open_clip_tokenizer_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.SimpleTokenizer()
