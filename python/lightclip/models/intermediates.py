"""The image half of ``LightCLIP.forward_intermediates`` and the index rule both halves share.

Intermediates are numbered as timm numbers them for the exported tower, so the same indices
pick the same maps here and in the open_clip model built from an export: ResNet-18 and
MobileNet-V2 have five (the stride-2 stem, then the four stages), Swin-Nano four (the stages);
the text tower has one per transformer block.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..errors import InvalidInputError
from .swin import SwinTower

#: Layouts an image intermediate can be returned in ("NLC": one token per location, row-major).
IMAGE_OUTPUT_FORMATS = ("NCHW", "NHWC", "NLC")


def take_indices(count: int, indices: int | Sequence[int] | None, arg: str) -> list[int]:
    """open_clip's rule for ``indices`` among ``count`` intermediates: None takes all, an int n
    the last n, a sequence those positions (negative ones count from the end)."""
    if indices is None:
        return list(range(count))
    if isinstance(indices, bool):
        raise InvalidInputError(f"{arg}: expected None, an int or a list of ints, got {indices!r}")
    if isinstance(indices, int):
        if not 0 < indices <= count:
            raise InvalidInputError(f"{arg}: last-n must lie in 1..{count}, got {indices}")
        return list(range(count - indices, count))
    taken = []
    for i in indices:
        if isinstance(i, bool) or not isinstance(i, int) or not -count <= i < count:
            raise InvalidInputError(
                f"{arg}: index {i!r} is out of range for {count} intermediates "
                f"(0..{count - 1}, or negative from the end)"
            )
        taken.append(i % count)
    if not taken:
        raise InvalidInputError(f"{arg}: an empty list takes no intermediate")
    return taken


def image_intermediates(
    visual: torch.nn.Module,
    images: torch.Tensor,
    take: list[int],
    stop_early: bool,
    normalize_intermediates: bool,
    intermediates_only: bool,
    output_fmt: str,
) -> dict[str, torch.Tensor | list[torch.Tensor]]:
    """``image_intermediates`` (the feature maps in ``take``, in ``output_fmt``) and, unless
    ``intermediates_only``, ``image_features`` [B, embed_dim] (not normalised).

    ``normalize_intermediates`` applies the trunk's final norm where one exists for the map
    (Swin's last stage, as timm does); the CNN towers have none. ``stop_early`` skips the
    stages after the last map taken, which only ``intermediates_only`` allows: the features
    need every stage."""
    if output_fmt not in IMAGE_OUTPUT_FORMATS:
        raise InvalidInputError(
            f"image_output_fmt: expected one of {', '.join(IMAGE_OUTPUT_FORMATS)}, "
            f"got {output_fmt!r}"
        )
    count = visual.num_feature_maps
    last = max(take) if stop_early and intermediates_only else count - 1
    maps = visual.feature_maps(images, last)
    picked = []
    for i in take:
        fmap = maps[i]
        if normalize_intermediates and isinstance(visual, SwinTower) and i == count - 1:
            fmap = visual.trunk.norm(fmap.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        if output_fmt == "NHWC":
            fmap = fmap.permute(0, 2, 3, 1)
        elif output_fmt == "NLC":
            fmap = fmap.flatten(2).transpose(1, 2)
        picked.append(fmap)
    out: dict[str, torch.Tensor | list[torch.Tensor]] = {"image_intermediates": picked}
    if not intermediates_only:
        out["image_features"] = visual.forward_head(maps[-1])
    return out
