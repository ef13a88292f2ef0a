"""A torch-only evaluation transform (resize the shorter side, centre-crop, CLIP-normalise).

Training augmentation lives in the Rust data pipeline; this is what ``create_model_and_transforms``
hands out for single images, open_clip style.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class EvalTransform:
    """PIL image, HxWx3 uint8 array, or [3, H, W] tensor (uint8, or float in [0, 1]) ->
    float [3, size, size], CLIP-normalised.

        >>> t = EvalTransform(64)
        >>> tuple(t(torch.zeros(3, 100, 80, dtype=torch.uint8)).shape)
        (3, 64, 64)
    """

    def __init__(self, image_size: int) -> None:
        self.image_size = image_size
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def to_tensor(self, image: Any) -> torch.Tensor:
        if isinstance(image, torch.Tensor):
            x = image
        else:
            if hasattr(image, "convert"):  # PIL
                image = image.convert("RGB")
            arr = np.asarray(image)
            if arr.ndim != 3 or arr.shape[2] != 3:
                raise InvalidInputError(
                    f"image: expected an RGB HxWx3 array, got shape {arr.shape}"
                )
            x = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        if x.dim() != 3 or x.shape[0] != 3:
            raise InvalidInputError(
                f"image: expected a [3, H, W] tensor, got shape {tuple(x.shape)}"
            )
        return x.float() / 255.0 if x.dtype == torch.uint8 else x.float()

    def __call__(self, image: Any) -> torch.Tensor:
        x = self.to_tensor(image)
        h, w = x.shape[-2:]
        scale = self.image_size / min(h, w)
        size = (max(self.image_size, round(h * scale)), max(self.image_size, round(w * scale)))
        x = F.interpolate(x[None], size=size, mode="bicubic", antialias=True, align_corners=False)[
            0
        ]
        top, left = (size[0] - self.image_size) // 2, (size[1] - self.image_size) // 2
        x = x[:, top : top + self.image_size, left : left + self.image_size].clamp(0, 1)
        return (x - self.mean) / self.std
