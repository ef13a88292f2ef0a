"""Pretrained weights into a LightCLIP model: our own checkpoints and exports, open_clip's
checkpoints and folders, timm image towers, and weight inheritance for the text tower.

:func:`load_pretrained` reads a source (see :mod:`lightclip.weight_sources`: nothing in it can
run code), maps it onto the model's tensors and says in a :class:`LoadReport` what it loaded,
resized, skipped, and left missing or unexpected. A source's text tower may be deeper than the
model's: as TinyCLIP does, the model's layers inherit a choice of the source's (``text_layers``),
the token embedding gains our ``<|mask|>`` row (which keeps the model's initialisation) and the
positional embedding is cut to the model's context length. Widths must match.

    >>> import tempfile, lightclip
    >>> from lightclip.openclip_export import export_openclip
    >>> trained = lightclip.create_model("clip-tiny-mnv2", seed=1)
    >>> folder = export_openclip(trained, tempfile.mkdtemp())
    >>> report = load_pretrained(lightclip.create_model("clip-tiny-mnv2"), folder, strict=True)
    >>> report.kind, len(report.missing), len(report.unexpected)
    ('lightclip export', 0, 0)

Inheriting from a real open_clip model (with internet; LAION's ViT-B-32 has a 12-layer text
tower of width 512 with 8 heads and GELU, as ``lightclip-mnv2``'s 8-layer one)::

    WEIGHTS=$(python -c "from open_clip.pretrained import download_pretrained, get_pretrained_cfg
    print(download_pretrained(get_pretrained_cfg('ViT-B-32', 'laion2b_s34b_b79k')))")
    lightclip train --model lightclip-mnv2 --pretrained "$WEIGHTS" --train-data ...

or a whole open_clip folder: ``huggingface-cli download laion/CLIP-ViT-B-32-laion2B-s34B-b79K
--local-dir vit-b-32`` and ``--pretrained local-dir:vit-b-32``. The image tower (a ViT there)
does not fit ours and stays as initialised (the report lists its keys as unexpected); from
Python, ``load_pretrained(model, path, text_layers="every-other")`` picks other layers.
Local weights get open_clip-style tags with :func:`register_pretrained` (kept in
:mod:`lightclip.pretrained_tags`), which ``create_model(name, pretrained=tag)`` and
:func:`list_pretrained` know; nothing is downloaded.
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from .checkpoint import CheckpointError
from .errors import InvalidInputError
from .pretrained_tags import list_pretrained, register_pretrained, resolve_pretrained
from .weight_sources import LOCAL_DIR, WeightSource, read_weights

if TYPE_CHECKING:
    from .models import LightCLIP

#: Named choices of ``text_layers`` (a list of source layer indices is the fourth way).
TEXT_LAYER_CHOICES = ("every-other", "first", "uniform")

_LAYER_KEY = re.compile(r"^text\.transformer\.resblocks\.(\d+)\.(.+)$")
_NOT_INHERITED = "source text layer not inherited (text_layers)"

#: Projections into the joint space and the axis of the joint width: a source with another
#: ``embed_dim`` leaves them as initialised instead of failing the whole load.
JOINT_PROJECTIONS = {
    "text.text_projection": 1,
    "visual.head.proj.weight": 0,
    "visual.head.c_proj.weight": 0,
    "visual.head.c_proj.bias": 0,
}

TextLayers = str | list[int] | tuple[int, ...] | None


@dataclass
class LoadReport:
    """What :func:`load_pretrained` did. Keys are the model's names except ``unexpected`` and
    ``skipped``, which name the source's tensors (in lightclip's layout)."""

    source: str
    kind: str
    #: Copied unchanged.
    loaded: list[str] = field(default_factory=list)
    #: The model's tensors this load did not set: they keep the values they had.
    missing: list[str] = field(default_factory=list)
    #: Source tensors the model has no place for.
    unexpected: list[str] = field(default_factory=list)
    #: Copied with another shape: key -> what was done.
    resized: dict[str, str] = field(default_factory=dict)
    #: Source tensors left out on purpose: key -> why.
    skipped: dict[str, str] = field(default_factory=dict)
    #: For each model text layer, the source layer it inherited (None: no text tower read).
    text_layers: list[int] | None = None
    #: How many text layers the source has (None: no text tower read).
    source_text_layers: int | None = None
    #: Anything else worth knowing (the layer choice made, an activation that differs).
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A few readable lines: counts, with the first keys of each list."""
        parts = Counter(k.split(".", 1)[0] for k in self.loaded)
        by_part = ", ".join(f"{part} {n}" for part, n in sorted(parts.items()))
        lines = [
            f"{self.kind} {self.source}",
            f"  loaded      {len(self.loaded)} tensors" + (f" ({by_part})" if by_part else ""),
        ]
        if self.text_layers is not None:
            left = sorted(set(range(self.source_text_layers or 0)) - set(self.text_layers))
            lines.append(
                f"  text layers model 0..{len(self.text_layers) - 1} <- source {self.text_layers}"
                f" of {self.source_text_layers}"
                + (f"; not inherited: {', '.join(map(str, left))}" if left else "")
            )
        if self.resized:
            lines += [f"  resized     {k}: {how}" for k, how in self.resized.items()]
        reasons: dict[str, list[str]] = defaultdict(list)
        for key, why in self.skipped.items():
            if why != _NOT_INHERITED:  # on the text layers line
                reasons[why].append(key)
        for why, keys in reasons.items():
            lines.append(f"  skipped     {len(keys)}: {why}: {_some(keys)}")
        for name, keys in (("missing", self.missing), ("unexpected", self.unexpected)):
            if keys:
                lines.append(f"  {name:<11} {len(keys)}: {_some(keys)}")
        lines += [f"  note        {n}" for n in self.notes]
        return "\n".join(lines)


def _some(keys: list[str], shown: int = 4) -> str:
    more = f" (+{len(keys) - shown} more)" if len(keys) > shown else ""
    return ", ".join(keys[:shown]) + more


def select_text_layers(spec: TextLayers, source_layers: int, model_layers: int) -> list[int]:
    """The source layer each model text layer inherits.

    ``"first"``: layers 0..N-1. ``"every-other"``: 0, 2, 4, ... (needs a source of at least
    2N-1 layers). ``"uniform"``: N layers spread evenly from the first to the last. A list (or
    a string ``"0,2,4,..."``) names them. ``None``: one to one when the depths are equal, else
    ``"uniform"``.

        >>> select_text_layers("uniform", 12, 8)
        [0, 2, 3, 5, 6, 8, 9, 11]
        >>> select_text_layers("every-other", 16, 8)
        [0, 2, 4, 6, 8, 10, 12, 14]
    """
    s, n = source_layers, model_layers
    if spec is None:
        spec = "first" if s == n else "uniform"
    if isinstance(spec, str) and re.fullmatch(r"\s*\d+(\s*,\s*\d+)*\s*", spec):
        spec = [int(i) for i in spec.split(",")]
    if isinstance(spec, str):
        if spec not in TEXT_LAYER_CHOICES:
            raise InvalidInputError(
                f"text_layers: {spec!r} is none of {', '.join(TEXT_LAYER_CHOICES)} "
                "or a list of source layer indices"
            )
        need = 2 * n - 1 if spec == "every-other" else n
        if s < need:
            raise InvalidInputError(
                f"text_layers={spec!r}: the model's {n} text layers need a source of at least "
                f"{need} layers, and it has {s}; choose "
                + ("'uniform', 'first' or " if spec == "every-other" else "")
                + f"a list of {n} source layer indices (repeats allowed)"
            )
        if spec == "first":
            return list(range(n))
        if spec == "every-other":
            return list(range(0, 2 * n - 1, 2))
        # Evenly spaced, rounded half up, so the first and the last layer are both kept.
        return [(2 * i * (s - 1) + (n - 1)) // (2 * (n - 1)) if n > 1 else 0 for i in range(n)]
    chosen = list(spec)
    if len(chosen) != n or not all(
        isinstance(i, int) and not isinstance(i, bool) and 0 <= i < s for i in chosen
    ):
        raise InvalidInputError(
            f"text_layers: expected {n} source layer indices in 0..{s - 1} (one per model "
            f"layer), got {chosen}"
        )
    return chosen


def load_pretrained(
    model: LightCLIP,
    source: str | os.PathLike[str],
    *,
    strict: bool = False,
    text_layers: TextLayers = None,
) -> LoadReport:
    """Loads the weights of ``source`` into ``model`` (in place) and reports what it did.

    ``source``: a lightclip training checkpoint or export, an open_clip checkpoint, folder or
    ``local-dir:<folder>``, or a timm image model's state dict (see the module docstring).
    ``strict``: refuse (before changing anything) when the model has tensors the source does
    not set, or the source has tensors the model has no place for. ``text_layers``: which
    source text layers the model's inherit (:func:`select_text_layers`).

    A tensor of another shape is a :class:`~lightclip.checkpoint.CheckpointError` naming it,
    except the resizes inheritance makes (token rows added, positions cut) and a projection to
    a joint space of another width (skipped); other widths of the text tower are refused
    naming both. Nothing of the model changes unless the whole load can go through.

        >>> import tempfile, timm, torch, lightclip
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "mnv2.pth"
        >>> torch.save(timm.create_model("mobilenetv2_050").state_dict(), path)
        >>> report = load_pretrained(lightclip.create_model("clip-tiny-mnv2"), path)
        >>> report.kind, report.skipped["classifier.weight"][:15]
        ('timm image tower', 'timm classifier')
    """
    src = read_weights(source, model)
    state = dict(src.state)
    report = LoadReport(src.origin, src.kind, skipped=dict(src.skipped))
    _check_text_tower(src, state, model)
    report.text_layers = _inherit_text_layers(state, report, model, text_layers)
    if report.text_layers is not None and (src.config or {}).get("quick_gelu"):
        report.notes.append(
            "the source's towers use QuickGELU (OpenAI's weights), the model's text tower "
            "GELU: its text embeddings differ from the source's until fine-tuned"
        )
    own = model.state_dict()
    copies: list[tuple[str, torch.Tensor]] = []
    for key, value in state.items():
        if key not in own:
            report.unexpected.append(key)
            continue
        target = own[key]
        if value.shape == target.shape:
            report.loaded.append(key)
            copies.append((key, value))
            continue
        fitted = _fit(key, value, target, model, report)
        if fitted is None:
            raise CheckpointError(
                f"{src.origin} does not fit model {model.config.name!r}: {key} has shape "
                f"{tuple(value.shape)} there, {tuple(target.shape)} in the model"
            )
        if fitted is not _SKIP:
            copies.append((key, fitted))
    done = set(report.loaded) | set(report.resized)
    report.missing = [k for k in own if k not in done]
    if not done:
        raise CheckpointError(
            f"no tensor of {src.origin} ({src.kind}) fits model {model.config.name!r}: "
            f"it holds {_some(sorted(state) or sorted(report.skipped))}"
        )
    if strict and (report.missing or report.unexpected):
        raise CheckpointError(
            f"{src.origin} does not fit model {model.config.name!r} exactly (strict): "
            f"{len(report.missing)} of its tensors missing ({_some(report.missing)}), "
            f"{len(report.unexpected)} unexpected ({_some(report.unexpected)})"
        )
    with torch.no_grad():
        for key, value in copies:
            target = own[key]
            target[tuple(slice(0, d) for d in value.shape)].copy_(value)
    return report


#: Marks a tensor :func:`_fit` skipped (recorded in the report) rather than refused.
_SKIP = torch.empty(0)


def _fit(
    key: str, value: torch.Tensor, target: torch.Tensor, model: LightCLIP, report: LoadReport
) -> torch.Tensor | None:
    """``value`` made to fit ``target`` (the part of ``target`` it fills, from the start),
    ``_SKIP`` when left out, None when it cannot fit."""
    same_width = value.dim() == target.dim() == 2 and value.shape[1] == target.shape[1]
    if key == "text.token_embedding.weight" and same_width and value.shape[0] < target.shape[0]:
        extra = target.shape[0] - value.shape[0]
        rows = f"row {value.shape[0]}" if extra == 1 else f"rows {value.shape[0]}.."
        report.resized[key] = (
            f"{tuple(value.shape)} -> {tuple(target.shape)}: {rows} (the <|mask|> token) "
            "keeps the model's initialisation"
        )
        return value
    if key == "text.positional_embedding" and same_width and value.shape[0] > target.shape[0]:
        report.resized[key] = (
            f"{tuple(value.shape)} -> {tuple(target.shape)}: the first {target.shape[0]} "
            "positions (the model's context_length)"
        )
        return value[: target.shape[0]]
    axis = JOINT_PROJECTIONS.get(key)
    if axis is not None and value.dim() == target.dim():
        others = [d for d in range(value.dim()) if d != axis]
        if all(value.shape[d] == target.shape[d] for d in others):
            report.skipped[key] = (
                f"projection to a joint space of another width (source "
                f"{value.shape[axis]}, model embed_dim {model.config.embed_dim}); the model's "
                "keeps its initialisation"
            )
            return _SKIP
    return None


def _check_text_tower(src: WeightSource, state: dict[str, torch.Tensor], model: LightCLIP) -> None:
    """Text weights carry over only between towers of one width and head count."""
    probe = next(
        (
            state[k].shape[-1]
            for k in (
                "text.token_embedding.weight",
                "text.positional_embedding",
                "text.ln_final.weight",
            )
            if k in state
        ),
        None,
    )
    cfg = model.config
    if probe is not None and probe != cfg.text_width:
        raise CheckpointError(
            f"{src.origin}: its text tower is {probe} wide, the model's {cfg.text_width} "
            f"(text_width of {cfg.name!r}); text weights inherit only between towers of one "
            f"width: build the model with text_width={probe} and that tower's head count"
        )
    heads = _source_text_heads(src.config)
    if probe is not None and heads is not None and heads != cfg.text_heads:
        raise CheckpointError(
            f"{src.origin}: its text tower has {heads} attention heads, the model's "
            f"{cfg.text_heads} (text_heads of {cfg.name!r}); the same weights split into "
            "other heads compute something else"
        )


def _source_text_heads(config: dict[str, Any] | None) -> int | None:
    if not config:
        return None
    if "text_cfg" in config:  # open_clip's model_cfg; its CLIPTextCfg defaults to 8 heads
        text = config["text_cfg"] or {}
        return int(text.get("heads", 8)) if "hf_model_name" not in text else None
    return int(config["text_heads"]) if "text_heads" in config else None


def _inherit_text_layers(
    state: dict[str, torch.Tensor], report: LoadReport, model: LightCLIP, spec: TextLayers
) -> list[int] | None:
    """Renames the chosen source layers to the model's indices (in ``state``), records the
    others as skipped; the source layer of each model layer, or None without a text tower."""
    layers: dict[int, dict[str, torch.Tensor]] = defaultdict(dict)
    for key in [k for k in state if _LAYER_KEY.match(k)]:
        found = _LAYER_KEY.match(key)
        assert found is not None
        layers[int(found.group(1))][found.group(2)] = state.pop(key)
    if not layers:
        if spec is not None:
            raise InvalidInputError(f"text_layers={spec!r}: {report.source} has no text layers")
        return None
    source_depth = max(layers) + 1
    report.source_text_layers = source_depth
    model_depth = model.config.text_layers
    chosen = select_text_layers(spec, source_depth, model_depth)
    for i, src_index in enumerate(chosen):
        for rest, value in layers[src_index].items():
            state[f"text.transformer.resblocks.{i}.{rest}"] = value
    for src_index in sorted(set(layers) - set(chosen)):
        for rest in layers[src_index]:
            report.skipped[f"text.transformer.resblocks.{src_index}.{rest}"] = _NOT_INHERITED
    if spec is None and source_depth != model_depth:
        report.notes.append(
            f"the source's text tower has {source_depth} layers, the model's {model_depth}: "
            "inherited the layers spread evenly (text_layers='uniform', the default then)"
        )
    return chosen


__all__ = [
    "JOINT_PROJECTIONS",
    "LOCAL_DIR",
    "TEXT_LAYER_CHOICES",
    "LoadReport",
    "list_pretrained",
    "load_pretrained",
    "register_pretrained",
    "resolve_pretrained",
    "select_text_layers",
]
