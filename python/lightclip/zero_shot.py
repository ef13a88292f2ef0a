"""Zero-shot classifiers: class names x prompt templates -> one text embedding per class.

The classifier is built the way open_clip's ``build_zero_shot_classifier`` builds it, so numbers
are comparable: every prompt ``template.format(name)`` is encoded and L2-normalised, the prompts
of a class are averaged, and the average is L2-normalised again. The result is [E, C]; the
scores of normalised image embeddings are ``image_features @ classifier``.

Two template lists ship with lightclip (written for it, in the style of the CLIP paper's prompt
ensembles): :data:`GENERIC_TEMPLATES`, a handful of neutral phrasings that suit any labelled
set (the bundled synthetic shapes included), and :data:`IMAGENET_TEMPLATES`, a larger ensemble
for photo collections like ImageNet that varies quality, rendering and framing.

    >>> from lightclip.zero_shot import expand_prompts
    >>> expand_prompts(["cat", "dog"], ["a photo of a {}.", "{} in the wild"])[1]
    ['a photo of a dog.', 'dog in the wild']
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .errors import InvalidInputError

#: A template is a ``str.format`` string with one ``{}`` slot, or a callable name -> prompt.
Template = str | Callable[[str], str]

GENERIC_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a picture of a {}.",
    "an image showing a {}.",
    "a {}.",
    "a close-up photo of a {}.",
)

IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a photo of a {}.",
    "a snapshot of the {}.",
    "an out-of-focus photo of a {}.",
    "a photo of a {} taken at night.",
    "an overexposed photo of a {}.",
    "a noisy photo of a {}.",
    "a tiny, pixelated photo of a {}.",
    "a photo with part of a {} cut off.",
    "a detailed close-up of a {}.",
    "a photo of a {} far away.",
    "a photo of a {} filling the frame.",
    "a photo of several {}.",
    "a greyscale photo of a {}.",
    "a pencil drawing of a {}.",
    "an oil painting of a {}.",
    "a rough sketch of a {}.",
    "a cartoon of a {}.",
    "a plastic toy {}.",
    "a statue of a {}.",
    "a 3d render of a {}.",
    "a {} stitched in fabric.",
    "a {} printed on a t-shirt.",
    "my photo of a {}.",
    "a nice photo of a {}.",
)

TEMPLATE_SETS: dict[str, tuple[str, ...]] = {
    "generic": GENERIC_TEMPLATES,
    "imagenet": IMAGENET_TEMPLATES,
}


def resolve_templates(templates: str | Sequence[Template]) -> Sequence[Template]:
    """A template set by name (``"generic"``, ``"imagenet"``) or a sequence of templates."""
    if isinstance(templates, str):
        if templates not in TEMPLATE_SETS:
            raise InvalidInputError(
                f"templates: unknown template set {templates!r}; known: {sorted(TEMPLATE_SETS)} "
                "(or pass a list of strings with one '{}' slot)"
            )
        return TEMPLATE_SETS[templates]
    templates = list(templates)
    if not templates:
        raise InvalidInputError("templates is empty")
    for i, t in enumerate(templates):
        if isinstance(t, str) and t.count("{}") != 1:
            raise InvalidInputError(f"templates[{i}] = {t!r} must contain exactly one '{{}}' slot")
        if not isinstance(t, str) and not callable(t):
            raise InvalidInputError(f"templates[{i}] is neither a string nor a callable")
    return templates


def expand_prompts(class_names: Sequence[str], templates: Sequence[Template]) -> list[list[str]]:
    """``prompts[c][t]``: template t filled with class name c."""
    if isinstance(class_names, str) or not class_names:
        raise InvalidInputError("class_names must be a non-empty list of strings")
    return [
        [t.format(name) if isinstance(t, str) else t(name) for t in templates]
        for name in class_names
    ]


@torch.no_grad()
def build_zero_shot_classifier(
    model: Any,
    tokenizer: Callable[[list[str]], torch.Tensor],
    class_names: Sequence[str],
    templates: str | Sequence[Template] = "generic",
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
    "IMAGENET_TEMPLATES",
    "TEMPLATE_SETS",
    "Template",
    "build_zero_shot_classifier",
    "expand_prompts",
    "resolve_templates",
]
