"""Reading weights from wherever a user has them, into lightclip's key names.

A source is one of: a lightclip training checkpoint (``.pt``; a ``--model-ema`` run's gives
its weight average), a lightclip export (its folder
or ``.safetensors``), an open_clip checkpoint (``.pt`` / ``.bin`` / ``.pth`` / ``.safetensors``,
a plain state dict or open_clip's trainer's ``{"state_dict": ...}`` with ``module.`` prefixes),
an open_clip folder or ``local-dir:<folder>``, or a timm image model's state dict. Nothing is
unpickled beyond tensors and plain values (:func:`~lightclip.checkpoint.read_torch_file`), and
safetensors hold no code at all.

Key layouts, all mapped onto lightclip's (``models/lightclip_model.py``):

* open_clip's ``CLIP`` keeps the text tower at the top level (``token_embedding.weight``,
  ``transformer.resblocks.*``...); ours keeps it under ``text.``.
* open_clip's timm ``abs_attn`` pool fuses q/k/v (``visual.head.pool.qkv``); ours keeps them
  apart (the mapping an export reverses: ``openclip_export.lightclip_state_dict``).
* timm's models name what our trunks call ``visual.trunk.*`` without the prefix; their
  classifier (``classifier`` / ``fc`` / ``head``) has no place in a CLIP tower.

    >>> import tempfile, torch, lightclip
    >>> from pathlib import Path
    >>> path = Path(tempfile.mkdtemp()) / "text.bin"
    >>> torch.save({"module.ln_final.weight": torch.ones(64)}, path)
    >>> source = read_weights(path, lightclip.create_model("clip-tiny-mnv2"))
    >>> source.kind, list(source.state)
    ('open_clip checkpoint', ['text.ln_final.weight'])
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import CheckpointError, load_export, model_state, read_torch_file
from .openclip_export import CONFIG_FILE, LIGHTCLIP_CONFIG_FILE, lightclip_state_dict

if TYPE_CHECKING:
    from .models import LightCLIP

#: open_clip's scheme for a folder of weights and ``open_clip_config.json``.
LOCAL_DIR = "local-dir:"

#: Weight files open_clip looks for in a folder, most preferred first (its own order).
FOLDER_WEIGHTS = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "pytorch_model.pth",
    "model.pth",
)

#: open_clip ``CLIP``'s top-level text tower entries (ours are these under ``text.``).
OPENCLIP_TEXT_KEYS = (
    "token_embedding.",
    "positional_embedding",
    "transformer.",
    "ln_final.",
    "text_projection",
    "attn_mask",
)

#: First name parts of timm's classifiers; a CLIP tower pools into its own head instead.
TIMM_CLASSIFIERS = ("classifier", "fc", "head")


@dataclass
class WeightSource:
    """A source's tensors under lightclip's key names, and what could not be named so."""

    origin: str
    kind: str
    state: dict[str, torch.Tensor]
    #: Source keys dropped while mapping, with the reason (computed buffers, classifiers).
    skipped: dict[str, str] = field(default_factory=dict)
    #: The source's own model config where it came with one: open_clip's ``model_cfg`` or a
    #: lightclip config dict (``text_cfg`` / ``text_heads`` are what the loader checks).
    config: dict[str, Any] | None = None


def read_weights(source: str | os.PathLike[str], model: LightCLIP) -> WeightSource:
    """The tensors ``source`` holds, named as in ``model`` (whose image tower decides how
    open_clip's attention pool maps). Raises :class:`~lightclip.checkpoint.CheckpointError`
    for a missing, unreadable or unsafe source, naming it."""
    text = os.fspath(source)
    if text.startswith(LOCAL_DIR):
        path = Path(text[len(LOCAL_DIR) :])
        if not path.is_dir():
            raise CheckpointError(f"{text}: {path} is not a folder")
    else:
        path = Path(text)
    if not path.exists():
        raise CheckpointError(f"pretrained weights not found: {path}")
    folder = path if path.is_dir() else path.parent
    if (folder / LIGHTCLIP_CONFIG_FILE).is_file() and (
        path.is_dir() or path.suffix == ".safetensors"
    ):
        payload = load_export(path)
        return WeightSource(
            str(path), "lightclip export", payload["state_dict"], config=payload["model_config"]
        )
    config = _openclip_config(folder) if path.is_dir() or path.suffix == ".safetensors" else None
    weights = _weights_in_folder(path) if path.is_dir() else path
    if weights.suffix == ".safetensors":
        raw, kind = _read_safetensors(weights), "open_clip checkpoint"
    else:
        raw, kind, own_config = _read_torch(weights)
        config = own_config or config
    return _to_lightclip_layout(str(weights), kind, raw, config, model)


def _weights_in_folder(folder: Path) -> Path:
    for name in FOLDER_WEIGHTS:
        if (folder / name).is_file():
            return folder / name
    found = sorted(p.name for p in folder.iterdir())[:10]
    raise CheckpointError(
        f"{folder} holds none of the weight files open_clip looks for "
        f"({', '.join(FOLDER_WEIGHTS)}); it has: {', '.join(found) or 'nothing'}"
    )


def _openclip_config(folder: Path) -> dict[str, Any] | None:
    path = folder / CONFIG_FILE
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {e}") from None
    return config.get("model_cfg", config) if isinstance(config, dict) else None


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(path)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"could not read {path}: {e}") from None


def _read_torch(path: Path) -> tuple[dict[str, Any], str, dict[str, Any] | None]:
    """(state dict, kind, lightclip model config or None) of a ``torch.save`` file."""
    payload = read_torch_file(path)
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path} holds a {type(payload).__name__}, not a state dict")
    config = payload.get("model_config") if "state_dict" in payload else None
    config = config if isinstance(config, dict) else None
    # Only our trainer saves the model config beside the weights.
    kind = "lightclip checkpoint" if config is not None else "open_clip checkpoint"
    if config is not None and payload.get("state_dict_ema") is not None:  # --model-ema's average
        state = payload["state_dict_ema"]
    else:
        state = payload["state_dict"] if "state_dict" in payload else payload
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"{path} holds no state dict (no tensors)")
    not_tensors = [k for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path} is not a state dict: entries {not_tensors[:5]} are no tensors"
        )
    return state, kind, config


def _to_lightclip_layout(
    origin: str,
    kind: str,
    raw: dict[str, torch.Tensor],
    config: dict[str, Any] | None,
    model: LightCLIP,
) -> WeightSource:
    raw = model_state({"state_dict": raw})
    if kind == "lightclip checkpoint":
        return WeightSource(origin, kind, dict(raw), config=config)
    own = model.state_dict()
    ours_or_openclip = any(
        k.startswith(("visual.", "text.", "logit_scale", "logit_bias")) for k in raw
    )
    openclip_text = any(k.startswith(OPENCLIP_TEXT_KEYS) for k in raw)
    out = WeightSource(origin, kind, {}, config=config)
    if not ours_or_openclip and not openclip_text:
        # A bare image model: timm names, without the tower's prefix.
        out.kind = "timm image tower"
        for key, value in raw.items():
            if f"visual.trunk.{key}" not in own and key.split(".", 1)[0] in TIMM_CLASSIFIERS:
                out.skipped[key] = "timm classifier (a CLIP tower pools into its own head)"
            else:
                out.state[f"visual.trunk.{key}"] = value
        return out
    pool = "visual.head.pool."
    for key, value in raw.items():
        if key == "attn_mask" or key.endswith(".attn_mask"):
            out.skipped[key] = "buffer the model computes itself"
        elif key.startswith(OPENCLIP_TEXT_KEYS):
            out.state[f"text.{key}"] = value
        elif not key.startswith(pool) or model.config.image_tower != "resnet18":
            out.state[key] = value
    pooled = {k: v for k, v in raw.items() if k.startswith(pool)}
    if pooled and model.config.image_tower == "resnet18":
        try:
            out.state.update(lightclip_state_dict(pooled, model.config))
        except KeyError as e:
            raise CheckpointError(f"{origin}: attention pool without {e}") from None
    return out


__all__ = ["FOLDER_WEIGHTS", "LOCAL_DIR", "WeightSource", "read_weights"]
