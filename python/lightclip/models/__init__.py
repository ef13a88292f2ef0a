"""Models: lightweight image towers, the text tower, LightCLIP's training-only heads, and a
registry of presets named like open_clip's.

    >>> import lightclip
    >>> "lightclip-mnv2" in lightclip.list_models()
    True
    >>> model = lightclip.create_model("clip-tiny-mnv2")
    >>> model.config.context_length, model.config.image_size
    (32, 64)

Every ``lightclip-*`` preset (``configs/*.json``) has a ``clip-*`` twin: the same towers with
the token head, fusion and MLM head switched off, i.e. what ``LightCLIP.export()`` yields.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from .config import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID, VOCAB_SIZE, LightCLIPConfig
from .lightclip_model import TRAINING_ONLY_MODULES, LightCLIP
from .transforms import EvalTransform

CONFIG_DIR = Path(__file__).resolve().parent / "configs"


@cache
def _registry() -> dict[str, LightCLIPConfig]:
    presets: dict[str, LightCLIPConfig] = {}
    for path in sorted(CONFIG_DIR.glob("*.json")):
        cfg = LightCLIPConfig.from_json(path)
        presets[cfg.name] = cfg
        if cfg.name.startswith("lightclip-"):
            plain = cfg.as_plain_clip()
            presets[plain.name] = plain
    return presets


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_registry())


def get_model_config(name: str, **overrides: Any) -> LightCLIPConfig:
    """The preset's config with ``overrides`` applied (a fresh copy)."""
    presets = _registry()
    if name not in presets:
        raise InvalidInputError(f"unknown model name {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name].replace(**overrides)


def create_model(
    name: str,
    *,
    device: str | torch.device | None = None,
    seed: int | None = None,
    **overrides: Any,
) -> LightCLIP:
    """Build a fresh (randomly initialised) model from a preset name.

    ``overrides`` replace config fields, e.g. ``create_model("lightclip-mnv2", image_size=128)``
    or ``text_layers=12`` for the 12-layer baseline. ``seed`` makes the initialisation
    reproducible without touching the global RNG."""
    cfg = get_model_config(name, **overrides)
    if seed is None:
        model = LightCLIP(cfg)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LightCLIP(cfg)
    return model if device is None else model.to(device)


def create_model_and_transforms(
    name: str, **kwargs: Any
) -> tuple[LightCLIP, Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """open_clip's ``(model, preprocess_train, preprocess_val)``. Training augmentation is the
    Rust pipeline's job (``lightclip.DataPipeline``), so both transforms are the eval one."""
    model = create_model(name, **kwargs)
    transform = EvalTransform(model.config.image_size)
    return model, transform, transform


__all__ = [
    "CONFIG_DIR",
    "EOT_TOKEN_ID",
    "MASK_TOKEN_ID",
    "SOT_TOKEN_ID",
    "TRAINING_ONLY_MODULES",
    "VOCAB_SIZE",
    "EvalTransform",
    "LightCLIP",
    "LightCLIPConfig",
    "create_model",
    "create_model_and_transforms",
    "get_model_config",
    "list_models",
]
