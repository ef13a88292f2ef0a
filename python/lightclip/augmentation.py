"""Training-image augmentation settings: open_clip's ``--aug-cfg KEY=VALUE ...``.

The keys are open_clip's ``AugmentationCfg`` names where it has one (``scale``, ``ratio``,
``color_jitter``, ``color_jitter_prob``, ``gray_scale_prob``) plus the parts of SPEC §2's
MoCo-v2 recipe that open_clip does not have (``blur_prob``, ``blur_sigma``, ``flip_prob``).
Values are Python literals, read with ``ast.literal_eval`` (never executed)::

    lightclip train ... --aug-cfg scale='(0.6, 1.0)' color_jitter_prob=0.3 gray_scale_prob=0

    >>> from lightclip.augmentation import apply_aug_cfg, parse_aug_cfg
    >>> from lightclip.data import augmentation_defaults
    >>> cfg = parse_aug_cfg(["scale=(0.6, 1.0)", "color_jitter=0.3", "blur_prob=0"])
    >>> cfg
    {'scale': (0.6, 1.0), 'color_jitter': 0.3, 'blur_prob': 0.0}
    >>> aug = apply_aug_cfg(cfg, augmentation_defaults("train.tar", 224))
    >>> aug.jitter, aug.blur_p, aug.grayscale_p
    ((0.3, 0.3, 0.3, 0.0), 0.0, 0.2)

A key left out keeps the source's default (:func:`lightclip.data.augmentation_defaults`).
"""

from __future__ import annotations

import ast
import math
from collections.abc import Iterable, Mapping
from typing import Any

from ._core import AugmentationConfig
from .errors import InvalidInputError

__all__ = ["AUG_KEYS", "apply_aug_cfg", "parse_aug_cfg"]

#: Key -> (what it is, the AugmentationConfig field it sets).
AUG_KEYS: dict[str, tuple[str, str]] = {
    "scale": ("RandomResizedCrop area range (lo, hi), 0 < lo <= hi <= 1", "crop_scale"),
    "ratio": ("RandomResizedCrop aspect-ratio range (lo, hi), 0 < lo <= hi", "crop_ratio"),
    "color_jitter": (
        "colour jitter strength: one number (brightness = contrast = saturation, hue 0) "
        "or (brightness, contrast, saturation, hue)",
        "jitter",
    ),
    "color_jitter_prob": ("probability of applying the colour jitter", "jitter_p"),
    "gray_scale_prob": ("probability of grayscale", "grayscale_p"),
    "blur_prob": ("probability of Gaussian blur", "blur_p"),
    "blur_sigma": ("Gaussian blur sigma range (lo, hi)", "blur_sigma"),
    "flip_prob": ("probability of a horizontal flip (swaps left/right in the caption)", "flip_p"),
}
_PROBABILITIES = ("color_jitter_prob", "gray_scale_prob", "blur_prob", "flip_prob")
_RANGES = ("scale", "ratio", "blur_sigma")


def _bad(key: str, why: str) -> InvalidInputError:
    return InvalidInputError(f"--aug-cfg {key}: {why}")


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(key, f"expected a number, got {value!r}")
    if not math.isfinite(value):
        raise _bad(key, f"must be finite, got {value!r}")
    return float(value)


def _check(key: str, value: Any) -> Any:
    """The value of one setting, shaped as the key takes it; its bounds are
    AugmentationConfig's own (one place for them), reported under the key's name."""
    if key not in AUG_KEYS:
        raise _bad(key, f"unknown key; known: {', '.join(AUG_KEYS)}")
    checked: Any
    if key in _RANGES:
        if not isinstance(value, (tuple, list)) or len(value) != 2:
            raise _bad(key, f"expected a pair (lo, hi), got {value!r}")
        checked = tuple(_number(key, v) for v in value)
    elif key in _PROBABILITIES:
        checked = _number(key, value)
    elif isinstance(value, (tuple, list)):  # color_jitter: one strength or four
        if len(value) != 4:
            raise _bad(key, f"expected 1 or 4 values, got {len(value)}")
        checked = tuple(_number(key, v) for v in value)
    else:
        checked = _number(key, value)
    try:
        apply_aug_cfg({key: checked}, AugmentationConfig())
    except InvalidInputError as e:
        raise _bad(key, str(e)) from None
    return checked


def parse_aug_cfg(value: str | Iterable[str] | Mapping[str, Any] | None) -> dict[str, Any]:
    """Checked augmentation settings from ``KEY=VALUE`` strings (a list, or one string with
    the pairs separated by spaces) or from a mapping; ``None`` gives ``{}``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        items = list(value.items())
    else:
        pairs = value.split() if isinstance(value, str) else list(value)
        items = []
        for pair in pairs:
            key, sep, text = str(pair).partition("=")
            if not sep or not key:
                raise InvalidInputError(f"--aug-cfg: expected KEY=VALUE, got {pair!r}")
            try:
                literal = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise _bad(key, f"not a Python literal: {text!r}") from None
            if any(key == seen for seen, _ in items):
                raise _bad(key, "given twice")
            items.append((key, literal))
    return {key: _check(key, v) for key, v in items}


def apply_aug_cfg(cfg: Mapping[str, Any], base: AugmentationConfig) -> AugmentationConfig:
    """``base`` (the source's default augmentation) with checked settings
    (:func:`parse_aug_cfg`) in place of its own."""
    changes: dict[str, Any] = {}
    for key, value in cfg.items():
        if key == "color_jitter" and not isinstance(value, tuple):
            value = (value, value, value, 0.0)
        changes[AUG_KEYS[key][1]] = value
    return base.replace(**changes)
