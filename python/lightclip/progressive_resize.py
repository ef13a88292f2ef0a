"""Progressive resizing: the first part of a run trains on smaller images.

A convolutional tower's step costs about the square of the image side, and early in a run the
towers learn coarse features, which small images may teach as well (docs/experiments.md
measures whether they do on Flickr8k).
``--image-size-start S`` trains the first steps at S px; the side grows linearly with the
run's progress and reaches the training resolution (``--image-size``, or the model's) at
``--image-size-ramp-end`` of the run, from where the rest of the run and every evaluation use
the full size. Sides are snapped down to a multiple of 32, the towers' stride, so 96 → 128
over the first half of the run is 96 px until the half and 128 px after it.

The batch is resized on the device (bilinear, antialiased) after the pipeline has cropped and
augmented it at the full size, so the pipeline, its read-ahead and its resume state do not
depend on the step. The side is a pure function of the step, which keeps resume exact. The
token loss aligns the (side/32)^2 stage-4 tokens a smaller image has: 4 at 64 px, 1 at 32 px.

    >>> [image_size_at(p, start=64, full=128, ramp_end=0.5) for p in (0.0, 0.25, 0.49, 0.5, 0.9)]
    [64, 96, 96, 128, 128]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from .errors import InvalidInputError
from .models import resolve_model_config

if TYPE_CHECKING:
    from .config import TrainConfig

STRIDE = 32  # every image tower downsamples by 32; models/config.py asks sizes to be multiples
DEFAULT_RAMP_END = 0.5


def image_size_at(progress: float, *, start: int, full: int, ramp_end: float) -> int:
    """The training side at ``progress`` (0 at the first step, 1 at the end of the run)."""
    if progress >= ramp_end:
        return full
    side = start + (full - start) * progress / ramp_end
    return max(start, int(side) // STRIDE * STRIDE)


def training_side(config: TrainConfig, full: int, progress: float) -> int:
    """The side a step at ``progress`` trains at: ``full`` unless ``--image-size-start``."""
    if config.image_size_start is None:
        return full
    ramp_end = config.image_size_ramp_end or DEFAULT_RAMP_END
    return image_size_at(progress, start=config.image_size_start, full=full, ramp_end=ramp_end)


def check_image_size_start(config: TrainConfig) -> None:
    """A clear error, before a run folder is touched, for a start side at or above the size
    the model trains at (``--image-size``, or the model's own); TrainConfig checks the rest."""
    if config.image_size_start is None:
        return
    full = config.image_size or resolve_model_config(config.model).image_size
    if config.image_size_start >= full:
        raise InvalidInputError(
            f"--image-size-start must be below the training size {full} (--image-size, or "
            f"{config.model}'s own), got {config.image_size_start}"
        )


def resize_images(images: torch.Tensor, side: int) -> torch.Tensor:
    """``images`` [B, C, H, W] resized to side x side; unchanged when already that size. The
    memory format (channels-last or not) is kept."""
    if images.shape[-2:] == (side, side):
        return images
    channels_last = images.is_contiguous(memory_format=torch.channels_last)
    resized = F.interpolate(
        images.float(), size=(side, side), mode="bilinear", align_corners=False, antialias=True
    ).to(images.dtype)
    if channels_last:
        resized = resized.contiguous(memory_format=torch.channels_last)
    return resized
