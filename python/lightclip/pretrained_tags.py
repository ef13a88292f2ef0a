"""Local pretrained tags, open_clip's ``pretrained=<tag>`` without downloads: a tag names a
file or folder on this machine (anything :func:`lightclip.load_pretrained` reads), registered
per model name. ``create_model(name, pretrained=...)`` resolves tags and paths here.

    >>> import tempfile, lightclip
    >>> from lightclip.pretrained_tags import resolve_pretrained
    >>> folder = tempfile.mkdtemp()
    >>> resolve_pretrained("clip-tiny-mnv2", folder) == folder
    True
"""

from __future__ import annotations

import os
from pathlib import Path

from .checkpoint import CheckpointError
from .errors import InvalidInputError
from .weight_sources import LOCAL_DIR

_REGISTERED: dict[tuple[str, str], str] = {}


def register_pretrained(model_name: str, tag: str, path: str | os.PathLike[str]) -> None:
    """Makes ``create_model(model_name, pretrained=tag)`` load ``path`` (any source
    :func:`load_pretrained` reads), as open_clip's built-in tags do with downloads.

        >>> import tempfile, lightclip
        >>> from lightclip.openclip_export import export_openclip
        >>> out = export_openclip(lightclip.create_model("clip-tiny-r18"), tempfile.mkdtemp())
        >>> register_pretrained("clip-tiny-r18", "my-run", out)
        >>> ("clip-tiny-r18", "my-run") in list_pretrained()
        True
    """
    from .models import get_model_config

    get_model_config(model_name)  # an unknown name is an error listing the known ones
    if not isinstance(tag, str) or not tag.strip():
        raise InvalidInputError(f"register_pretrained: tag must be a non-empty string, got {tag!r}")
    text = os.fspath(path)
    location = Path(text.removeprefix(LOCAL_DIR))
    if not location.exists():
        raise CheckpointError(f"register_pretrained: {location} not found")
    # Absolute, so the tag still finds the weights after a change of working directory.
    prefix = LOCAL_DIR if text.startswith(LOCAL_DIR) else ""
    _REGISTERED[(model_name, tag)] = prefix + str(location.resolve())


def list_pretrained(as_str: bool = False) -> list[tuple[str, str]] | list[str]:
    """The registered ``(model_name, tag)`` pairs (``"name:tag"`` strings with ``as_str``),
    as open_clip's ``list_pretrained``; lightclip ships no downloadable weights."""
    pairs = sorted(_REGISTERED)
    return [f"{m}:{t}" for m, t in pairs] if as_str else pairs


def resolve_pretrained(model_name: str, pretrained: str | os.PathLike[str]) -> str:
    """The weights ``pretrained`` means for ``model_name``: a tag registered for it, else an
    existing file, folder or ``local-dir:<folder>``. Anything else is an error naming what is
    registered."""
    text = os.fspath(pretrained)
    if (model_name, text) in _REGISTERED:
        return _REGISTERED[(model_name, text)]
    if Path(text.removeprefix(LOCAL_DIR)).exists():
        return text
    tags = [t for m, t in sorted(_REGISTERED) if m == model_name]
    everything = ", ".join(f"{m}:{t}" for m, t in sorted(_REGISTERED)) or "nothing"
    raise InvalidInputError(
        f"pretrained={text!r} for model {model_name!r} is neither a tag registered for it "
        f"(its tags: {', '.join(tags) or 'none'}) nor an existing file or folder. lightclip "
        "downloads nothing: register local weights with lightclip.register_pretrained("
        f"model_name, tag, path). Registered: {everything}"
    )


__all__ = ["list_pretrained", "register_pretrained", "resolve_pretrained"]
