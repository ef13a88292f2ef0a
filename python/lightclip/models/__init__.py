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
:func:`add_model_config` adds presets of your own, as open_clip's does.

Weights come as open_clip's do: ``create_model(name, pretrained=...)`` with a tag registered by
``lightclip.register_pretrained`` or a path (see :mod:`lightclip.pretrained` for what loads), or
``create_model("local-dir:<export folder>")``; nothing is downloaded.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..errors import InvalidInputError
from .compile import compile_towers, to_channels_last
from .config import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID, VOCAB_SIZE, LightCLIPConfig
from .lightclip_model import TRAINING_ONLY_MODULES, LightCLIP
from .transforms import EvalTransform

if TYPE_CHECKING:  # config.py imports models.config, so not at run time
    from ..config import TrainConfig

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
#: Where presets come from: ours, then every ``add_model_config`` path (later ones win).
_CONFIG_PATHS: list[Path] = [CONFIG_DIR]

logger = logging.getLogger("lightclip.models")


def _configs_at(path: Path) -> list[LightCLIPConfig]:
    """The LightCLIP configs a file or folder holds. A folder's other JSON files (an export's
    ``open_clip_config.json``, say) are passed over, as open_clip passes over files that are
    not its model configs; a file named on its own must be one."""
    if path.is_file():
        return [LightCLIPConfig.from_json(path)]
    if not path.is_dir():
        raise InvalidInputError(f"model config not found: {path}")
    found = []
    for file in sorted(path.glob("*.json")):
        try:
            data = json.loads(file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read model config {file}: {exc}") from exc
        if isinstance(data, dict) and "image_tower" in data:
            found.append(LightCLIPConfig.from_json(file))
    return found


@cache
def _registry() -> dict[str, LightCLIPConfig]:
    presets: dict[str, LightCLIPConfig] = {}
    for cfg in (c for path in _CONFIG_PATHS for c in _configs_at(path)):
        presets[cfg.name] = cfg
        if cfg.name.startswith("lightclip-"):
            plain = cfg.as_plain_clip()
            presets[plain.name] = plain
    return presets


def add_model_config(path: str | os.PathLike[str]) -> list[str]:
    """Adds the LightCLIP model config in a JSON file (or every one in a folder) to the names
    :func:`create_model` knows, as ``open_clip.add_model_config`` does for its configs; returns
    the names added (a ``lightclip-*`` config also adds its ``clip-*`` twin). A config is a
    :class:`LightCLIPConfig` as JSON; its name is its ``name`` or else the file's stem.

        >>> import json, tempfile, lightclip
        >>> from pathlib import Path
        >>> path = Path(tempfile.mkdtemp()) / "clip-mnv2-text4.json"
        >>> _ = path.write_text(json.dumps({"image_tower": "mobilenetv2", "text_layers": 4}))
        >>> lightclip.add_model_config(path)
        ['clip-mnv2-text4']
        >>> lightclip.create_model("clip-mnv2-text4").config.text_layers
        4
    """
    path = Path(path)
    configs = _configs_at(path)  # errors now, not at the next create_model
    _CONFIG_PATHS.append(path)
    _registry.cache_clear()
    names = [c.name for c in configs]
    return names + [c.as_plain_clip().name for c in configs if c.name.startswith("lightclip-")]


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_registry())


def get_model_config(name: str, **overrides: Any) -> LightCLIPConfig:
    """The preset's config with ``overrides`` applied (a fresh copy)."""
    presets = _registry()
    if name not in presets:
        raise InvalidInputError(f"unknown model name {name!r}; known: {', '.join(sorted(presets))}")
    return presets[name].replace(**overrides)


def write_model_config(name: str, overrides: dict[str, Any], path: str | os.PathLike[str]) -> str:
    """Writes preset ``name`` with ``overrides`` applied as a JSON model config file (what
    ``--model`` takes besides a preset name) at ``path``; returns the path."""
    config = get_model_config(name, **overrides)
    Path(path).write_text(json.dumps({**config.to_dict(), "name": name}, indent=2))
    return str(path)


def create_model(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    *,
    device: str | torch.device | None = None,
    seed: int | None = None,
    output_dict: bool = False,
    **overrides: Any,
) -> LightCLIP:
    """Build a model from a preset name, randomly initialised or with ``pretrained`` weights.

    ``overrides`` replace config fields, e.g. ``create_model("lightclip-mnv2", image_size=128)``
    or ``text_layers=12`` for the 12-layer baseline. ``seed`` makes the initialisation
    reproducible without touching the global RNG. ``output_dict``: ``forward`` returns a dict
    instead of open_clip's tuple (see :meth:`LightCLIP.forward`).

    ``pretrained``: a tag registered for ``name`` (``lightclip.register_pretrained``) or a
    path that ``lightclip.load_pretrained`` reads (our checkpoints and exports, open_clip's
    checkpoints and ``local-dir:`` folders, timm image towers); what it did is logged to the
    ``lightclip.models`` logger, and a warning names what it left as initialised. For the
    text layer choice and the full report call ``load_pretrained`` yourself. ``name`` may also
    be ``local-dir:<folder>`` of a lightclip export: its config and weights (all of them).

        >>> import tempfile, torch, lightclip
        >>> from lightclip.openclip_export import export_openclip
        >>> trained = lightclip.create_model("clip-tiny-mnv2", seed=3)
        >>> out = export_openclip(trained, tempfile.mkdtemp())
        >>> a = lightclip.create_model("clip-tiny-mnv2", pretrained=out)
        >>> b = lightclip.create_model(f"local-dir:{out}")
        >>> bool(torch.equal(a.text.text_projection, b.text.text_projection))
        True
    """
    from ..pretrained import LOCAL_DIR, load_pretrained, resolve_pretrained

    if name.startswith(LOCAL_DIR):
        if pretrained is not None:
            raise InvalidInputError(
                f"pretrained={os.fspath(pretrained)!r} with model {name!r}: a local-dir: folder "
                "brings its own weights (open_clip ignores pretrained there; lightclip refuses "
                "to guess which you meant)"
            )
        cfg = _local_dir_config(name, Path(name[len(LOCAL_DIR) :])).replace(**overrides)
        source: str | None = name
    else:
        cfg = get_model_config(name, **overrides)
        source = None if pretrained is None else resolve_pretrained(name, pretrained)
    if seed is None:
        model = LightCLIP(cfg, output_dict=output_dict)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = LightCLIP(cfg, output_dict=output_dict)
    if source is not None:
        # A local-dir: folder was written for exactly this model: all of it must fit.
        report = load_pretrained(model, source, strict=source == name)
        logger.info("pretrained weights for %s:\n%s", name, report.summary())
        if report.missing:
            warnings.warn(
                f"create_model({name!r}, pretrained={source!r}): {len(report.missing)} tensors "
                f"of the model are not in {report.source} and keep their random "
                f"initialisation ({', '.join(report.missing[:3])}, ...); "
                "lightclip.load_pretrained(model, path) returns the full report",
                stacklevel=2,
            )
    return model if device is None else model.to(device)


def _local_dir_config(name: str, folder: Path) -> LightCLIPConfig:
    from ..openclip_export import LIGHTCLIP_CONFIG_FILE

    if not (folder / LIGHTCLIP_CONFIG_FILE).is_file():
        raise InvalidInputError(
            f"{name}: {folder} has no {LIGHTCLIP_CONFIG_FILE}, so it is no lightclip export. "
            "An open_clip folder's weights load into a lightclip model as "
            f"create_model(<lightclip model name>, pretrained={name!r})"
        )
    return LightCLIPConfig.from_json(folder / LIGHTCLIP_CONFIG_FILE)


def create_model_and_transforms(
    name: str, **kwargs: Any
) -> tuple[LightCLIP, Callable[[Any], torch.Tensor], Callable[[Any], torch.Tensor]]:
    """open_clip's ``(model, preprocess_train, preprocess_val)``. Training augmentation is the
    Rust pipeline's job (``lightclip.DataPipeline``), so both transforms are the eval one."""
    model = create_model(name, **kwargs)
    transform = EvalTransform(model.config.image_size)
    return model, transform, transform


def create_model_from_pretrained(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    *,
    return_transform: bool = True,
    **kwargs: Any,
) -> LightCLIP | tuple[LightCLIP, Callable[[Any], torch.Tensor]]:
    """open_clip's ``create_model_from_pretrained``: a model with weights (``pretrained``, or a
    ``local-dir:`` name), in eval mode, and its evaluation transform unless
    ``return_transform=False``. Without weights to load it is an error, not a random model.

        >>> import tempfile, lightclip
        >>> from lightclip.openclip_export import export_openclip
        >>> out = export_openclip(lightclip.create_model("clip-tiny-r18"), tempfile.mkdtemp())
        >>> model, preprocess = lightclip.create_model_from_pretrained(f"local-dir:{out}")
        >>> model.training, preprocess.image_size
        (False, 64)
    """
    from ..pretrained import LOCAL_DIR

    if pretrained is None and not name.startswith(LOCAL_DIR):
        raise InvalidInputError(
            f"create_model_from_pretrained({name!r}) needs pretrained= (a registered tag or a "
            "path) or a local-dir:<folder> name; create_model builds a random model"
        )
    model, _, transform = create_model_and_transforms(name, pretrained=pretrained, **kwargs)
    model.eval()
    return (model, transform) if return_transform else model


def resolve_model_config(model: str) -> LightCLIPConfig:
    """What ``--model`` names: a preset, or a JSON model config file."""
    if model.endswith(".json"):
        if not Path(model).is_file():
            raise InvalidInputError(f"--model: no such model config file: {model}")
        return LightCLIPConfig.from_json(model)
    if model in list_models():
        return get_model_config(model)
    raise InvalidInputError(
        f"--model: unknown model {model!r}; known: {', '.join(list_models())} "
        "(or a path to a .json model config)"
    )


def build_model(config: TrainConfig, teacher_dim: int | None = None) -> LightCLIP:
    """The model ``lightclip train`` trains: ``--model`` (a preset or a JSON model config
    file) with exactly the training-only heads the switches ask for; ``teacher_dim`` (the
    teacher's embedding width) sizes the feature-distillation projection that
    ``--w-distill-feature`` asks for.

    Heads that no loss uses are not built: they would cost compute, and DDP refuses
    parameters that receive no gradient.
    The same holds for the logit bias: only ``--siglip`` builds one (at -10, with the scale
    at 10, unless the model config brings its own).
    """
    preset = resolve_model_config(config.model)
    fusion_stages = (preset.fusion_stages or (2, 3)) if config.fusion else ()
    overrides: dict[str, Any] = dict(
        token_head=bool(config.token_loss), mlm=bool(config.mlm), fusion_stages=fusion_stages
    )
    if config.image_size is not None:
        overrides["image_size"] = config.image_size
    if config.token_space is not None:
        overrides["token_space"] = config.token_space
    if not config.siglip:
        overrides["init_logit_bias"] = None  # only the sigmoid loss reads a bias
    elif preset.init_logit_bias is None:
        # open_clip's --siglip initialisation (the SigLIP paper's); a config that brings its
        # own bias keeps its own scale and bias.
        overrides.update(init_logit_scale=math.log(10.0), init_logit_bias=-10.0)
    if config.w_distill_feature:
        if teacher_dim is None:
            raise InvalidInputError(
                "--w-distill-feature: the model's projection needs the teacher's embedding "
                "width (build_model(config, teacher_dim=...))"
            )
        overrides["distill_dim"] = teacher_dim
    # Seeded here, apart from the global RNG: every rank builds the same initial weights.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        return LightCLIP(preset.replace(**overrides), output_dict=True)


def apply_model_options(
    model: LightCLIP, config: TrainConfig, log: Callable[[str], None] = print
) -> None:
    """open_clip's model flags, in its order: ``--pretrained`` weights, then the tower locks
    (frozen parameters get ``requires_grad=False``, which keeps them out of the optimizer),
    then ``--grad-checkpointing``, ``--channels-last`` and ``--torchcompile``
    (``models/compile.py``)."""
    if config.pretrained:
        from ..pretrained import load_pretrained

        report = load_pretrained(
            model, config.pretrained, text_layers=config.pretrained_text_layers
        )
        log(f"--pretrained {config.pretrained}: {report.summary()}")
    if config.lock_image:
        model.lock_image_tower(
            unlocked_groups=config.lock_image_unlocked_groups,
            freeze_bn_stats=config.lock_image_freeze_bn_stats,
        )
    if config.lock_text:
        model.lock_text_tower(
            unlocked_layers=config.lock_text_unlocked_layers,
            freeze_layer_norm=config.lock_text_freeze_layer_norm,
        )
    if config.grad_checkpointing:
        model.set_grad_checkpointing(True)
    if config.channels_last:
        to_channels_last(model)
    if config.torchcompile:
        log(f"--torchcompile: {compile_towers(model)} tower blocks compile at their first call")


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
    "add_model_config",
    "create_model_from_pretrained",
    "build_model",
    "apply_model_options",
    "write_model_config",
    "resolve_model_config",
]
