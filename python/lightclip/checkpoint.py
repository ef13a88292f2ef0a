"""Checkpoints: written atomically, loaded with a check that they fit the model.

A checkpoint is an open_clip-shaped dict (``epoch``, ``state_dict``, ``optimizer``, ...) plus
everything an exact resume needs: the optimizer step, the grad scaler, the random number
generators of Python, NumPy and torch, and the data pipeline's position.

Writing goes to a temporary file in the same folder, is fsync'ed, then ``os.replace``'d over
the target, so a run killed while saving leaves the previous checkpoint intact, never a
truncated one.

    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from lightclip.checkpoint import save_checkpoint, load_checkpoint
    >>> path = Path(tempfile.mkdtemp()) / "epoch_latest.pt"
    >>> save_checkpoint(path, {"epoch": 1, "step": 7, "model_name": "m", "state_dict": {}})
    >>> load_checkpoint(path)["step"]
    7
"""

from __future__ import annotations

import errno
import os
import pickle
import random
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import LightclipError

LATEST = "epoch_latest.pt"


class CheckpointError(LightclipError):
    """A checkpoint is missing, unreadable, or belongs to a different model."""


def save_checkpoint(path: str | os.PathLike[str], payload: dict[str, Any]) -> None:
    """Writes ``payload`` to ``path`` atomically (temp file in the same folder + rename).

    A failed write leaves the previous file as it was. A full disk (or another OS error) is a
    :class:`CheckpointError` saying so, a Ctrl-C mid-write a ``KeyboardInterrupt``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _save_failure(e, path) or e from None
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        # Also on Ctrl-C mid-write: never leave a half-written temp file behind.
        Path(tmp).unlink(missing_ok=True)
        failure = _save_failure(e, path)
        if failure is None:
            raise
        raise failure from None
    # The rename itself is durable only once the directory entry is flushed.
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _save_failure(error: BaseException, path: Path) -> BaseException | None:
    """What a failed save means to its user, or None to let ``error`` through as it is.

    torch's zip writer hides the cause of a failed write (a full disk, a second Ctrl-C) behind
    its own ``RuntimeError: ... unexpected pos``; the cause is kept as its ``__context__``.
    """
    causes: list[BaseException] = []
    seen: BaseException | None = error
    while seen is not None and seen not in causes:
        causes.append(seen)
        seen = seen.__cause__ or seen.__context__
    unchanged = f"the previous {path.name} there is unchanged"
    if any(isinstance(c, KeyboardInterrupt) for c in causes):
        return KeyboardInterrupt(f"while writing {path}; {unchanged}")
    for c in causes:
        if isinstance(c, OSError) and c.errno in (errno.ENOSPC, errno.EDQUOT):
            return CheckpointError(
                f"could not save {path}: no space left on device; {unchanged}. Free some space "
                "and run again (a training run continues with --resume latest)"
            )
        if isinstance(c, OSError):
            return CheckpointError(f"could not save {path}: {c.strerror or c}; {unchanged}")
    return None


def load_checkpoint(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, trust: bool = False
) -> dict[str, Any]:
    """Reads a checkpoint written by :func:`save_checkpoint` (or any open_clip-style dict).

    Only tensors and plain values (dicts, lists, numbers, strings) are read: a pickle can run
    code while it loads, and checkpoints are downloaded and shared, so one that holds any
    other Python object is refused before anything in it runs. ``trust=True`` lifts that for
    a file you made yourself (one that keeps NumPy's RNG state as an array, say);
    :func:`convert_trusted_checkpoint` rewrites such a file once.
    """
    payload = read_torch_file(path, map_location, trust=trust)
    if not isinstance(payload, dict) or "state_dict" not in payload:
        raise CheckpointError(f"{path} is not a lightclip/open_clip checkpoint (no state_dict)")
    return payload


def read_torch_file(
    path: str | os.PathLike[str], map_location: Any = "cpu", *, trust: bool = False
) -> Any:
    """Whatever a ``torch.save`` file holds, read as :func:`load_checkpoint` reads it: only
    tensors and plain values unless ``trust``; a file holding any other Python object is a
    :class:`CheckpointError` before anything in it runs. Also reads plain state dicts (the
    ``.bin`` / ``.pth`` files open_clip and timm publish), which :func:`load_checkpoint`
    refuses for want of a ``state_dict`` entry."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location=map_location, weights_only=not trust)
    except pickle.UnpicklingError as e:
        # torch words it two ways: a global not allowed, or one from a blocked module (os...).
        found = re.search(r"[Uu]nsupported (?:global: )?GLOBAL (\S+)", str(e))
        if trust or found is None:
            reason = re.search(r"WeightsUnpickler error: (.+)", str(e))
            why = reason.group(1) if reason else str(e)
            raise CheckpointError(f"could not read checkpoint {path}: {why}") from None
        raise CheckpointError(
            f"refusing to load {path}: it holds a Python object ({found.group(1)}) other "
            "than tensors and plain values, and loading one could run code hidden in the "
            "file. If you made it yourself with an older lightclip, convert it once: "
            f"python -m lightclip.checkpoint --trust {path} NEW_PATH"
        ) from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure means the same to a user
        raise CheckpointError(f"could not read checkpoint {path}: {e}") from None


def convert_trusted_checkpoint(
    source: str | os.PathLike[str], target: str | os.PathLike[str]
) -> None:
    """Rewrites a checkpoint you trust (one that :func:`load_checkpoint` refuses) so that it
    holds only tensors and plain values. It is unpickled in full: run it only on your own
    files."""
    payload = load_checkpoint(source, trust=True)
    if isinstance(payload.get("rng"), dict):
        payload["rng"] = _plain_rng(payload["rng"])
    elif isinstance(payload.get("rng"), list):
        payload["rng"] = [_plain_rng(r) if isinstance(r, dict) else r for r in payload["rng"]]
    save_checkpoint(target, payload)
    load_checkpoint(target)  # the converted file must now load safely


def resolve_resume(resume: str | None, checkpoint_dir: Path) -> Path | None:
    """The file ``--resume`` points at; None for a fresh start.

    ``latest`` means this run's newest state (``checkpoint_files.newest_checkpoint``:
    ``epoch_latest.pt``, else the highest ``epoch_N.pt``); when there is none yet the run
    starts fresh (open_clip's behaviour, so a preemptible job can always pass
    ``--resume latest``). Any other value must be an existing file.
    """
    if resume is None:
        return None
    if resume == "latest":
        from .checkpoint_files import newest_checkpoint  # it imports this module

        return newest_checkpoint(checkpoint_dir)
    path = Path(resume)
    if not path.is_file():
        raise CheckpointError(f"--resume: checkpoint not found: {path}")
    return path


def check_compatible(
    payload: dict[str, Any], model: torch.nn.Module, model_name: str, source: str
) -> None:
    """Refuses a checkpoint written for another model, naming both and the first mismatch."""
    written_for = payload.get("model_name")
    if written_for is not None and written_for != model_name:
        raise CheckpointError(
            f"{source} was written by model {written_for!r}, but this run builds "
            f"{model_name!r}; pass --model {written_for} or another checkpoint"
        )
    state = _strip_ddp_prefix(payload["state_dict"])
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(
            f"{source} does not fit model {model_name!r} ({detail}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected tensors) - was it trained "
            "with other LightCLIP switches (--token-loss/--token-space/--mlm/--fusion/"
            "--w-distill-feature, or --siglip, whose logit_bias a model gets from "
            "init_logit_bias)?"
        )
    for key, value in own.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise CheckpointError(
                f"{source} does not fit model {model_name!r}: {key} has shape "
                f"{tuple(state[key].shape)} in the checkpoint, {tuple(value.shape)} in the model"
            )


def trainable_names(model: torch.nn.Module) -> list[str]:
    """The parameters the optimizer holds (``requires_grad``), in its order: a checkpoint
    records them so a resume can tell its optimizer state belongs to the same ones."""
    return [name for name, p in model.named_parameters() if p.requires_grad]


def load_optimizer_state(
    optimizer: torch.optim.Optimizer, payload: dict[str, Any], model: torch.nn.Module, source: str
) -> None:
    """Restores the optimizer state of ``payload`` after checking it was saved for the same
    trainable parameters. torch maps the state by position only, so frozen towers that
    differ (other --lock-image / --lock-text flags) with the same count of trainable tensors
    would otherwise hand one parameter another's moments, silently or as a shape error at the
    first step."""
    saved = payload.get("trainable")
    now = trainable_names(model)
    if saved is not None and list(saved) != now:
        trained_there = [n for n in saved if n not in set(now)]
        trained_here = [n for n in now if n not in set(saved)]
        raise CheckpointError(
            f"{source} trained other parameters than this run does: trained there only "
            f"{trained_there[:3]} ({len(trained_there)}), here only {trained_here[:3]} "
            f"({len(trained_here)}); resume with the --lock-image / --lock-text flags it was "
            "saved with"
        )
    try:
        optimizer.load_state_dict(payload["optimizer"])
    except ValueError as e:  # a checkpoint without the list: other parameter groups
        raise CheckpointError(
            f"{source}: its optimizer state does not fit this run's trainable parameters "
            f"({e}); resume with the --lock-image / --lock-text flags it was saved with"
        ) from None


def training_payload(
    model: Any,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    config: Any,
    *,
    step: int,
    epoch: int,
    rng: list[Any],
    data: list[Any],
    world_size: int,
) -> dict[str, Any]:
    """A training checkpoint: open_clip's keys plus what an exact resume needs, the optimizer
    step, the grad scaler and one RNG state and data position per rank."""
    return {
        "epoch": epoch,
        "step": step,
        "name": config.name,
        "model_name": config.model,
        "model_config": model.config.to_dict(),
        "state_dict": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "trainable": trainable_names(model),
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng": rng,
        "data": data,
        "config": config.to_dict(),
        "world_size": world_size,
    }


def restore_training_state(
    payload: dict[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: Any,
    model_name: str,
    source: str,
) -> None:
    """Loads a training checkpoint's model, optimizer and grad-scaler state into this run's,
    after checking that it was written for the same model and trainable parameters."""
    check_compatible(payload, model, model_name, source)
    model.load_state_dict(model_state(payload))
    load_optimizer_state(optimizer, payload, model, source)
    if scaler is not None and payload.get("scaler"):
        scaler.load_state_dict(payload["scaler"])


def _strip_ddp_prefix(state: dict[str, Any]) -> dict[str, Any]:
    """State dicts saved from a DDP-wrapped model carry ``module.``; accept both."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def model_state(payload: dict[str, Any]) -> dict[str, Any]:
    return _strip_ddp_prefix(payload["state_dict"])


def inference_state(payload: dict[str, Any]) -> dict[str, Any]:
    """The weights to use a checkpoint's model with: the average a ``--model-ema`` run kept
    (``state_dict_ema``, the weights it evaluated and exported), else the trained weights."""
    if payload.get("state_dict_ema") is not None:
        return _strip_ddp_prefix(payload["state_dict_ema"])
    return model_state(payload)


def load_export(path: str | os.PathLike[str]) -> dict[str, Any]:
    """An exported inference model (the folder training or ``lightclip export`` writes, or
    the ``.safetensors`` file in it) as a checkpoint-shaped dict on the CPU: ``model_name``,
    ``model_config`` and ``state_dict`` in lightclip's key layout. It is safetensors and JSON,
    which hold no code, so any such file is safe to read."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .models import LightCLIPConfig
    from .openclip_export import LIGHTCLIP_CONFIG_FILE, WEIGHTS_FILE, lightclip_state_dict

    path = Path(path)
    folder, weights = (path, path / WEIGHTS_FILE) if path.is_dir() else (path.parent, path)
    if not weights.is_file():
        raise CheckpointError(f"exported model not found: {weights}")
    if not (folder / LIGHTCLIP_CONFIG_FILE).is_file():
        raise CheckpointError(
            f"{folder} has no {LIGHTCLIP_CONFIG_FILE}, so it is no lightclip export "
            "(a plain open_clip folder loads with open_clip)"
        )
    config = LightCLIPConfig.from_json(folder / LIGHTCLIP_CONFIG_FILE)
    try:
        state = lightclip_state_dict(load_file(weights), config)
    except (OSError, SafetensorError) as e:
        raise CheckpointError(f"could not read exported model {weights}: {e}") from None
    except KeyError as e:
        why = f"{weights} does not fit model {config.name!r}: it has no tensor {e}"
        raise CheckpointError(why) from None
    return {"model_name": config.name, "model_config": config.to_dict(), "state_dict": state}


def load_model_payload(path: str | os.PathLike[str], map_location: Any = "cpu") -> dict[str, Any]:
    """What a training checkpoint (``.pt``, :func:`load_checkpoint`) or an exported inference
    model (a folder or its ``.safetensors``, :func:`load_export`) holds; neither runs code."""
    path = Path(path)
    if path.is_dir() or path.suffix == ".safetensors":
        return load_export(path)
    return load_checkpoint(path, map_location)


def model_from_checkpoint(
    source: str | os.PathLike[str] | dict[str, Any],
    map_location: Any = "cpu",
    *,
    average: bool = True,
) -> torch.nn.Module:
    """The model a training checkpoint (``epoch_*.pt``) or an exported inference model (its
    folder or ``.safetensors``) describes, with its weights: built from the model config saved
    with it, so the training-only heads it was trained with (or their absence) need not be
    repeated by the caller. A ``--model-ema`` run's checkpoint gives its weight average, or
    with ``average=False`` its trained weights (an export holds only the weights exported).
    Reading either runs no code hidden in the file.

        >>> import tempfile, lightclip
        >>> from lightclip.openclip_export import export_openclip
        >>> out = export_openclip(lightclip.create_model("clip-tiny-r18"), tempfile.mkdtemp())
        >>> model_from_checkpoint(out).config.image_tower
        'resnet18'
    """
    from .models import LightCLIP, LightCLIPConfig

    payload = source if isinstance(source, dict) else load_model_payload(source, map_location)
    name = str(source) if not isinstance(source, dict) else "checkpoint"
    if "model_config" not in payload:
        raise CheckpointError(f"{name} has no model_config; build the model with create_model")
    config = dict(payload["model_config"])
    if "token_space" not in config and any(
        k.split(".", 1)[0] == "token_proj_image" for k in model_state(payload)
    ):
        # Saved before token_space existed: its token heads were the only token space then.
        config["token_space"] = "heads"
    model = LightCLIP(LightCLIPConfig.from_dict(config))
    check_compatible(payload, model, payload.get("model_name", model.config.name), name)
    model.load_state_dict(inference_state(payload) if average else model_state(payload))
    return model.to(map_location) if map_location is not None else model


# --- random number generators ------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from (Python, NumPy, torch CPU and CUDA), as
    tensors and plain values only (what :func:`load_checkpoint` reads)."""
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global one is what others draw from
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return _plain_rng(state)


def _plain_rng(state: dict[str, Any]) -> dict[str, Any]:
    """NumPy's state tuple (which holds an array) as a dict of a tensor and numbers."""
    numpy_state = state.get("numpy")
    if isinstance(numpy_state, tuple):
        name, keys, pos, has_gauss, cached = numpy_state
        numpy_state = {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        }
    return {**state, "numpy": numpy_state}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    numpy_state = state["numpy"]
    if isinstance(numpy_state, dict):
        keys = numpy_state["keys"].cpu().numpy().astype(np.uint32)
        numpy_state = (
            numpy_state["name"],
            keys,
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    np.random.set_state(numpy_state)  # noqa: NPY002
    # torch takes RNG states only as CPU byte tensors, and a checkpoint loaded with
    # map_location="cuda" (as a GPU run resumes) has moved them to the device.
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


def main(argv: list[str] | None = None) -> int:
    """``python -m lightclip.checkpoint --trust OLD NEW``: convert a checkpoint you trust."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m lightclip.checkpoint",
        description="Rewrite a checkpoint you trust so that lightclip loads it safely.",
    )
    parser.add_argument(
        "--trust",
        action="store_true",
        required=True,
        help="confirm that you trust the file: it is unpickled in full, which can run code",
    )
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args(argv)
    try:
        convert_trusted_checkpoint(args.source, args.target)
    except LightclipError as e:
        print(f"lightclip.checkpoint: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.target}")
    return 0


__all__ = [
    "LATEST",
    "CheckpointError",
    "convert_trusted_checkpoint",
    "check_compatible",
    "inference_state",
    "load_checkpoint",
    "load_export",
    "load_model_payload",
    "load_optimizer_state",
    "model_from_checkpoint",
    "model_state",
    "read_torch_file",
    "resolve_resume",
    "restore_training_state",
    "rng_state",
    "save_checkpoint",
    "trainable_names",
    "training_payload",
    "set_rng_state",
]


if __name__ == "__main__":
    raise SystemExit(main())
