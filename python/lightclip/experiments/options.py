"""The experiments' ``--train-opt`` / ``--model-opt`` KEY=VALUE flags."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError
from ..models import write_model_config


def key_values(pairs: list[str], flag: str) -> dict[str, Any]:
    """``KEY=VALUE`` strings to a dict; values are Python literals (or plain strings). A key
    given twice is refused rather than silently keeping one of the two values."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise InvalidInputError(f"{flag}: expected KEY=VALUE, got {pair!r}")
        if key in out:
            raise InvalidInputError(f"{flag}: {key} given twice")
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def preset_with_overrides(name: str, model_opt: list[str], out: Path) -> str:
    """``name``, or with ``--model-opt`` KEY=VALUE pairs the path of ``out/model.json``: the
    preset's config with them applied."""
    overrides = key_values(model_opt, "--model-opt")
    return write_model_config(name, overrides, out / "model.json") if overrides else name
