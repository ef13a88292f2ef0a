"""Zero-shot classifiers: class names x prompt templates -> one text embedding per class.

The classifier is built the way open_clip's ``build_zero_shot_classifier`` builds it, so numbers
are comparable: every prompt is encoded and L2-normalised, the prompts of a class are averaged,
and the average is L2-normalised again. The result is [E, C]; the scores of normalised image
embeddings are ``image_features @ classifier``.

A template is a string with one slot for the class name, written ``{}`` (``str.format``) or
``{c}`` (CLIP_benchmark's spelling), or a callable name -> prompt (open_clip's). Templates
come from :func:`resolve_templates`:

* ``"generic"``: :data:`GENERIC_TEMPLATES`, a handful of neutral phrasings written for
  lightclip that suit any labelled set;
* ``"imagenet"``: OpenAI's 80 ImageNet prompts, read from the installed open_clip
  (``open_clip.zero_shot_metadata.OPENAI_IMAGENET_TEMPLATES``), so they are exactly the ones
  open_clip and CLIP_benchmark use; without open_clip this is a clear error;
* a path to a text file with one template per line, as CLIP_benchmark's
  ``zeroshot_classification_templates.txt``;
* a list of templates.

    >>> from lightclip.zero_shot import expand_prompts
    >>> expand_prompts(["cat", "sea lion"], ["a photo of a {}.", "a {c} in the wild"])[1]
    ['a photo of a sea lion.', 'a sea lion in the wild']
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InvalidInputError

#: A ``str`` with one ``{}`` or ``{c}`` slot, or a callable name -> prompt.
Template = str | Callable[[str], str]

GENERIC_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
    "a {}.",
    "a close-up photo of a {}.",
)

#: The template sets :func:`resolve_templates` knows by name.
TEMPLATE_SETS: tuple[str, ...] = ("generic", "imagenet")


def openai_imagenet_templates() -> tuple[Callable[[str], str], ...]:
    """OpenAI's 80 ImageNet prompts, as the installed open_clip ships them."""
    try:
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
    except ImportError:
        raise InvalidInputError(
            "templates 'imagenet' are OpenAI's ImageNet prompts, read from open_clip, which is "
            "not installed: pip install open_clip_torch (or use 'generic' or a templates file)"
        ) from None
    return tuple(OPENAI_IMAGENET_TEMPLATES)


def read_templates_file(path: str | os.PathLike[str]) -> list[str]:
    """One template per line, stripped, as CLIP_benchmark reads its
    ``zeroshot_classification_templates.txt``; a blank line is refused (CLIP_benchmark would
    read it as the prompt "")."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) else "not UTF-8 text"
        raise InvalidInputError(f"templates: cannot read {path}: {reason}") from None
    if not lines:
        raise InvalidInputError(f"templates: {path} holds no template")
    if "" in lines:
        raise InvalidInputError(
            f"templates: line {lines.index('') + 1} of {path} is blank (remove it; it would be "
            "an empty prompt)"
        )
    return lines


def _slots(template: str) -> int:
    return template.count("{}") + template.count("{c}")


def resolve_templates(templates: str | os.PathLike[str] | Sequence[Template]) -> Sequence[Template]:
    """A template set by name (``"generic"``, ``"imagenet"``), a templates file (one per line),
    or a sequence of templates; each string must have exactly one ``{}`` or ``{c}`` slot."""
    if isinstance(templates, os.PathLike):
        templates = read_templates_file(templates)
    elif isinstance(templates, str):
        if templates == "generic":
            return GENERIC_TEMPLATES
        if templates == "imagenet":
            return openai_imagenet_templates()
        if not os.path.isfile(templates):
            raise InvalidInputError(
                f"templates: {templates!r} is neither a template set ({', '.join(TEMPLATE_SETS)}) "
                "nor a templates file"
            )
        templates = read_templates_file(templates)
    templates = list(templates)
    if not templates:
        raise InvalidInputError("templates is empty")
    for i, t in enumerate(templates):
        if isinstance(t, str) and _slots(t) != 1:
            raise InvalidInputError(
                f"templates[{i}] = {t!r} must contain exactly one '{{}}' or '{{c}}' slot"
            )
        if not isinstance(t, str) and not callable(t):
            raise InvalidInputError(f"templates[{i}] is neither a string nor a callable")
    return templates


def format_prompt(template: Template, name: str) -> str:
    """``template`` filled with ``name``: ``{c}`` as CLIP_benchmark fills it, ``{}`` as
    ``str.format``, a callable called."""
    if not isinstance(template, str):
        return template(name)
    if "{c}" in template:
        return template.format(c=name)
    return template.format(name)


def expand_prompts(class_names: Sequence[str], templates: Sequence[Template]) -> list[list[str]]:
    """``prompts[c][t]``: template t filled with class name c."""
    if isinstance(class_names, str) or not class_names:
        raise InvalidInputError("class_names must be a non-empty list of strings")
    return [[format_prompt(t, name) for t in templates] for name in class_names]


@torch.no_grad()
def build_zero_shot_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: str | os.PathLike[str] | Sequence[Template] = "generic",
    *,
    classes_per_batch: int = 16,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Ensembled zero-shot weights [E, C] for ``class_names`` (one column per class).

    ``model`` needs ``encode_text(ids, normalize=True)``; ``tokenizer(list[str])`` returns the
    ids. Classes are encoded ``classes_per_batch`` at a time (all their prompts in one forward).
    """
    templates = resolve_templates(templates)
    prompts = expand_prompts(class_names, templates)
    if classes_per_batch < 1:
        raise InvalidInputError(f"classes_per_batch must be >= 1, got {classes_per_batch}")
    if device is None:
        device = next(iter(model.parameters())).device if hasattr(model, "parameters") else "cpu"
    n_templates = len(templates)
    columns = []
    for start in range(0, len(prompts), classes_per_batch):
        chunk = prompts[start : start + classes_per_batch]
        ids = tokenizer([p for per_class in chunk for p in per_class]).to(device)
        emb = model.encode_text(ids, normalize=True).float()
        # normalise each prompt (done by encode_text), average per class, renormalise
        emb = emb.reshape(len(chunk), n_templates, -1).mean(dim=1)
        columns.append(F.normalize(emb, dim=-1).t())
    return torch.cat(columns, dim=1)


__all__ = [
    "GENERIC_TEMPLATES",
    "TEMPLATE_SETS",
    "Template",
    "build_zero_shot_classifier",
    "expand_prompts",
    "format_prompt",
    "openai_imagenet_templates",
    "read_templates_file",
    "resolve_templates",
]
