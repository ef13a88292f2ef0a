"""Export a lightclip model in open_clip's format, and the timm plug-in some towers need.

``export_openclip(model, out_dir)`` writes the inference model (training-only parts dropped)
as a folder that open_clip loads with its own ``local-dir:`` schema::

    out_dir/open_clip_config.json        {"model_cfg": {...}, "preprocess_cfg": {...}}
    out_dir/open_clip_model.safetensors  the state dict in open_clip's ``CLIP`` key layout
    out_dir/<name>.json                  the bare model config, for
                                         ``open_clip.add_model_config`` + ``pretrained=<file>``
    out_dir/lightclip_config.json        lightclip's own model config, from which
                                         ``model_from_checkpoint(out_dir)`` rebuilds it exactly

    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:out_dir")

This folder is also the inference model a training run exports: weights and configs only,
so reading it back runs no code (a pickled ``.pt`` can). A tower open_clip cannot express
(below) is refused by ``lightclip export``; the end of training still writes its weights and
``lightclip_config.json`` (``strict=False``), without the two open_clip JSON files.

How each tower maps (open_clip 3.x builds image towers from timm by ``timm_model_name``):

* text: open_clip's own ``TextTransformer`` (8 or 12 layers, any width), ``vocab_size`` 49409
  (the appended mask token), ``pool_type="eos"`` with ``eos_id=49407`` (we pool at EOT found by
  id, not by ``argmax`` of ids), plain GELU. Keys ``text.*`` become the top-level keys of
  open_clip's ``CLIP``. Loads in stock open_clip.
* MobileNet-V2 (width 1.0, 1280-channel head; or width 0.5 / 0.75): timm's
  ``mobilenetv2_100`` (``_050``, ``_075``) with ``timm_pool="avg", timm_proj="linear"``. Our
  trunk has timm's key names, so the state dict is copied as is. Loads in stock open_clip.
* ResNet-18 with the attention-pool head at 224 px and 8 heads: timm's ``resnet18`` with
  ``timm_pool="abs_attn", timm_proj="none"`` (timm's ``AttentionPool2d``: our ``q/k/v_proj``
  are concatenated into its ``qkv``, ``c_proj`` becomes ``proj``). Loads in stock open_clip.
  At other image sizes the head's positional embedding has another grid than the 7x7 that
  open_clip reads from timm's ``resnet18`` config, so the export names a plug-in timm model
  ``lightclip_resnet18_pool{S}`` (same network, ``pool_size`` S x S).
* Swin-Nano: timm has no Swin of this size, so the export names a plug-in timm model
  ``lightclip_swin_e{dim}_d{depths}_h{heads}_w{window}_i{size}`` built from timm's own
  ``SwinTransformer``. Exact only where every stage map is a multiple of the window (224 px
  with window 7): on other sizes timm pads windows without masking the padding, we mask it.

Plug-in names are registered with timm by :func:`register_timm_towers` (done by
:func:`load_openclip`), which must run before open_clip builds the model::

    import lightclip.openclip_export as ex
    ex.register_timm_towers("out_dir")   # no-op for exports that need no plug-in
    model, _, preprocess = open_clip.create_model_and_transforms("local-dir:out_dir")
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from .errors import InvalidInputError, LightclipError
from .models.config import EOT_TOKEN_ID, LightCLIPConfig

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_model.safetensors"
LIGHTCLIP_CONFIG_FILE = "lightclip_config.json"
PLUGIN_KEY = "lightclip_timm_plugin"

#: MobileNet-V2 width multipliers that timm registers with the 1280-channel head.
_TIMM_MOBILENETV2 = {1.0: "mobilenetv2_100", 0.5: "mobilenetv2_050", 0.75: "mobilenetv2_075"}


class ExportError(LightclipError):
    """The model cannot be expressed as an open_clip model; the message says why."""


# --------------------------------------------------------------------------- config


def _image_tower_cfg(cfg: LightCLIPConfig) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(open_clip vision_cfg, plug-in spec or None)."""
    size = cfg.image_size
    if cfg.image_tower == "mobilenetv2":
        name = _TIMM_MOBILENETV2.get(cfg.width_mult)
        if name is None or cfg.head_width != 1280:
            raise ExportError(
                f"{cfg.name}: MobileNet-V2 with width_mult={cfg.width_mult}, "
                f"head_width={cfg.head_width} has no timm model (timm has width "
                f"{sorted(_TIMM_MOBILENETV2)} with a 1280-channel head)"
            )
        vision = {"timm_model_name": name, "timm_pool": "avg", "timm_proj": "linear"}
        plugin = None
    elif cfg.image_tower == "resnet18":
        if 512 // cfg.attn_heads != 64 or 512 % cfg.attn_heads:
            raise ExportError(
                f"{cfg.name}: attn_heads={cfg.attn_heads}; open_clip builds timm's attention "
                "pool with 64-channel heads, i.e. 8 heads on ResNet-18's 512 channels"
            )
        pool = size // 32
        if pool == 7:
            name, plugin = "resnet18", None
        else:
            name = f"lightclip_resnet18_pool{pool}"
            plugin = {"kind": "resnet18", "name": name, "pool_size": pool, "image_size": size}
        vision = {"timm_model_name": name, "timm_pool": "abs_attn", "timm_proj": "none"}
    else:
        maps = [size // 4 // 2**i for i in range(4)]
        if size % 32 or any(m % cfg.window_size for m in maps):
            raise ExportError(
                f"{cfg.name}: Swin at {size} px has stage maps {maps}, not all multiples of "
                f"window {cfg.window_size}; timm pads such windows without masking the padding "
                "(lightclip masks it), so the two would compute different embeddings"
            )
        name = (
            f"lightclip_swin_e{cfg.swin_embed_dim}_d{'-'.join(map(str, cfg.swin_depths))}"
            f"_h{'-'.join(map(str, cfg.swin_heads))}_w{cfg.window_size}_i{size}"
        )
        plugin = {
            "kind": "swin",
            "name": name,
            "image_size": size,
            "embed_dim": cfg.swin_embed_dim,
            "depths": list(cfg.swin_depths),
            "num_heads": list(cfg.swin_heads),
            "window_size": cfg.window_size,
        }
        vision = {"timm_model_name": name, "timm_pool": "avg", "timm_proj": "linear"}
    vision.update(image_size=size, timm_proj_bias=False, timm_model_pretrained=False)
    return vision, plugin


def openclip_config(cfg: LightCLIPConfig) -> dict[str, Any]:
    """The ``open_clip_config.json`` content for a model config."""
    vision, plugin = _image_tower_cfg(cfg)
    model_cfg: dict[str, Any] = {
        "embed_dim": cfg.embed_dim,
        "quick_gelu": False,
        "vision_cfg": vision,
        "text_cfg": {
            "context_length": cfg.context_length,
            "vocab_size": cfg.vocab_size,
            "width": cfg.text_width,
            "heads": cfg.text_heads,
            "layers": cfg.text_layers,
            "mlp_ratio": cfg.text_mlp_ratio,
            "pool_type": "eos",
            "eos_id": EOT_TOKEN_ID,
            "proj_bias": False,
        },
    }
    if cfg.init_logit_bias is not None:
        model_cfg["init_logit_bias"] = cfg.init_logit_bias
    out: dict[str, Any] = {
        "model_cfg": model_cfg,
        "preprocess_cfg": {
            "size": cfg.image_size,
            "mode": "RGB",
            "mean": list(CLIP_MEAN),
            "std": list(CLIP_STD),
            "interpolation": "bicubic",
            "resize_mode": "shortest",
        },
    }
    if plugin is not None:
        out[PLUGIN_KEY] = plugin
    return out


# --------------------------------------------------------------------------- weights


def openclip_state_dict(model: Any) -> dict[str, torch.Tensor]:
    """Our inference state dict renamed to open_clip's ``CLIP`` layout (fp32, contiguous)."""
    cfg: LightCLIPConfig = model.config
    state = model.state_dict()
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("text."):
            out[key[len("text.") :]] = value
        elif key.startswith("visual.head.") and cfg.image_tower == "resnet18":
            continue  # renamed below
        elif key.startswith(("visual.", "logit_scale", "logit_bias")):
            out[key] = value
        else:
            raise ExportError(f"{cfg.name}: unexpected tensor {key!r} in an inference model")
    if cfg.image_tower == "resnet18":
        head = "visual.head."
        out["visual.head.pool.qkv.weight"] = torch.cat(
            [state[f"{head}{p}_proj.weight"] for p in "qkv"], dim=0
        )
        out["visual.head.pool.qkv.bias"] = torch.cat([state[f"{head}{p}_proj.bias"] for p in "qkv"])
        out["visual.head.pool.proj.weight"] = state[f"{head}c_proj.weight"]
        out["visual.head.pool.proj.bias"] = state[f"{head}c_proj.bias"]
        out["visual.head.pool.pos_embed"] = state[f"{head}positional_embedding"]
    return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in out.items()}


def lightclip_state_dict(
    weights: dict[str, torch.Tensor], cfg: LightCLIPConfig
) -> dict[str, torch.Tensor]:
    """The inverse of :func:`openclip_state_dict`: open_clip's key layout back to ours."""
    pool, head = "visual.head.pool.", "visual.head."
    resnet = cfg.image_tower == "resnet18"
    out = {
        key if key.startswith(("visual.", "logit_scale", "logit_bias")) else f"text.{key}": value
        for key, value in weights.items()
        if not (resnet and key.startswith(pool))
    }
    if resnet:
        for part in ("weight", "bias"):
            for p, chunk in zip("qkv", weights[f"{pool}qkv.{part}"].chunk(3), strict=True):
                out[f"{head}{p}_proj.{part}"] = chunk.contiguous()
            out[f"{head}c_proj.{part}"] = weights[f"{pool}proj.{part}"]
        out[f"{head}positional_embedding"] = weights[f"{pool}pos_embed"]
    return out


def export_openclip(model: Any, out_dir: str | Path, *, strict: bool = True) -> Path:
    """Writes ``model`` (training-only parts dropped) as an open_clip ``local-dir`` folder,
    plus ``lightclip_config.json``.

    A model whose towers open_clip cannot express raises :class:`ExportError`; with
    ``strict=False`` its weights and ``lightclip_config.json`` are written all the same
    (lightclip reads them back; open_clip cannot).

        >>> import tempfile, lightclip
        >>> from lightclip.checkpoint import model_from_checkpoint
        >>> out = export_openclip(lightclip.create_model("clip-tiny-mnv2"), tempfile.mkdtemp())
        >>> model_from_checkpoint(out).config.name
        'clip-tiny-mnv2'
    """
    from safetensors.torch import save

    if getattr(model.config, "has_training_heads", False):
        model = model.export()
    try:
        config: dict[str, Any] | None = openclip_config(model.config)
    except ExportError:
        if strict:
            raise
        config = None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # Each file replaces its old version whole: a run killed while exporting leaves no
    # half-written file for a reader to trip over.
    _write_atomically(out / WEIGHTS_FILE, save(openclip_state_dict(model)))
    files = {LIGHTCLIP_CONFIG_FILE: model.config.to_dict()}
    if config is not None:
        files[CONFIG_FILE] = config
        files[f"{model.config.name}.json"] = dict(config["model_cfg"])
    else:
        (out / CONFIG_FILE).unlink(missing_ok=True)  # a stale one would describe other weights
    for name, content in files.items():
        _write_atomically(out / name, (json.dumps(content, indent=2) + "\n").encode())
    return out


#: The folder in a training run's directory that holds its exported inference model.
INFERENCE_MODEL_DIR = "inference_model"


def export_inference_model(model: Any, run_dir: str | Path) -> Path:
    """A trained LightCLIP's inference model (training-only heads dropped) as
    ``run_dir/inference_model/``: safetensors weights with JSON configs, an open_clip
    ``local-dir`` folder where open_clip can express the towers (:func:`export_openclip`).

    Its model is the plain-CLIP version of the towers (``clip-tiny-mnv2`` for
    ``lightclip-tiny-mnv2``), whose ``create_model`` has exactly these tensors; its
    ``lightclip_config.json`` rebuilds it exactly, resolution included
    (``model_from_checkpoint(folder)``).
    """
    return export_openclip(model.export(), Path(run_dir) / INFERENCE_MODEL_DIR, strict=False)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- timm plug-in


def _plugin_entrypoint(spec: dict[str, Any]):
    import timm

    size = int(spec["image_size"])

    def build(pretrained: bool = False, **kwargs: Any) -> torch.nn.Module:
        if pretrained:
            raise InvalidInputError(f"{spec['name']} has no pretrained weights")
        # timm.create_model passes its pretrained-config plumbing to every entrypoint.
        for key in ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir"):
            kwargs.pop(key, None)
        if spec["kind"] == "resnet18":
            model = timm.create_model("resnet18", pretrained=False, **kwargs)
            pool = int(spec["pool_size"])
            cfg = dict(model.pretrained_cfg, pool_size=(pool, pool), input_size=(3, size, size))
        else:
            from timm.models.swin_transformer import SwinTransformer

            model = SwinTransformer(
                img_size=size,
                patch_size=4,
                window_size=int(spec["window_size"]),
                embed_dim=int(spec["embed_dim"]),
                depths=tuple(spec["depths"]),
                num_heads=tuple(spec["num_heads"]),
                **kwargs,
            )
            cfg = {"input_size": (3, size, size), "pool_size": None, "num_classes": 1000}
        model.pretrained_cfg = model.default_cfg = cfg
        return model

    build.__name__ = build.__qualname__ = spec["name"]
    build.__module__ = __name__
    return build


def register_timm_towers(export_dir: str | Path) -> str | None:
    """Registers the plug-in timm model an export names (if any) and returns its name.

    Safe to call repeatedly; exports of stock-timm towers need nothing and return None.
    """
    path = Path(export_dir) / CONFIG_FILE
    try:
        config = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"cannot read {path}: {e}") from e
    spec = config.get(PLUGIN_KEY)
    if spec is None:
        return None
    import timm
    from timm.models import register_model

    if not timm.is_model(spec["name"]):
        register_model(_plugin_entrypoint(spec))
    return str(spec["name"])


def load_openclip(export_dir: str | Path, **kwargs: Any):
    """``open_clip.create_model_and_transforms`` on an export, plug-in registered first."""
    import open_clip

    register_timm_towers(export_dir)
    return open_clip.create_model_and_transforms(f"local-dir:{Path(export_dir)}", **kwargs)


__all__ = [
    "INFERENCE_MODEL_DIR",
    "ExportError",
    "export_inference_model",
    "export_openclip",
    "lightclip_state_dict",
    "load_openclip",
    "openclip_config",
    "openclip_state_dict",
    "register_timm_towers",
]
