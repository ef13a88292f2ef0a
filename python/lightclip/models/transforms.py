"""open_clip's evaluation preprocessing for single images: the shorter side resized to the
model's size with Pillow's bicubic, a centre crop, CLIP normalisation.

This is what ``create_model_and_transforms`` hands out, the counterpart of open_clip's
``preprocess``. Pictures (PIL images, files, uint8 arrays and tensors) go through Pillow
itself, in the steps torchvision's ``Resize(size, BICUBIC)`` + ``CenterCrop`` take, so the
result equals open_clip's tensor exactly, whatever the picture's mode or file format (the same
JPEG decoder, the same handling of grey, palette and transparent images). The Rust pipeline's
evaluation transform reimplements the same resize and is tested against this one. Training
augmentation lives in the Rust data pipeline.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidDtypeError, InvalidInputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pillow() -> Any:
    try:
        from PIL import Image
    except ImportError as e:  # pragma: no cover - Pillow is present wherever open_clip is
        raise ImportError(
            "EvalTransform needs Pillow for pictures (PIL images, files, uint8 input): "
            "pip install Pillow"
        ) from e
    return Image


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision's ``Resize(size)`` output (height, width): the shorter side becomes
    ``size``, the longer one ``int(size * long / short)``.

        >>> resized_size(200, 300, 224)
        (224, 336)
    """
    if width <= height:
        return int(size * height / width), size
    return size, int(size * width / height)


def centre_crop_offset(length: int, crop: int) -> int:
    """torchvision's ``CenterCrop`` offset, Python's round (half to even) included.

    >>> centre_crop_offset(299, 224), centre_crop_offset(301, 224)
    (38, 38)
    """
    return int(round((length - crop) / 2.0))


class EvalTransform:
    """Picture -> float [3, size, size], CLIP-normalised, exactly as open_clip's preprocess.

    Takes a PIL image, a file path, an HxWx3 uint8 array or a [3, H, W] uint8 tensor (all
    resized by Pillow, as open_clip does), or a float [3, H, W] tensor / HxWx3 array in [0, 1]
    (resized with torch's antialiased bicubic, which is what open_clip's transform does to a
    float tensor).

        >>> t = EvalTransform(64)
        >>> tuple(t(torch.zeros(3, 100, 80, dtype=torch.uint8)).shape)
        (3, 64, 64)
    """

    def __init__(self, image_size: int) -> None:
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise InvalidInputError(f"image_size must be a positive integer, got {image_size!r}")
        self.image_size = image_size
        self.mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
        self.std = torch.tensor(CLIP_STD).view(3, 1, 1)

    def __call__(self, image: Any) -> torch.Tensor:
        if isinstance(image, (str, os.PathLike)):
            return self._from_pil(self._open(image))
        if hasattr(image, "convert") and hasattr(image, "resize"):  # a PIL image
            return self._from_pil(image)
        if isinstance(image, np.ndarray):
            return self._from_array(image)
        if isinstance(image, torch.Tensor):
            return self._from_tensor(image)
        raise InvalidInputError(
            "image: expected a PIL image, a file path, an HxWx3 array or a [3, H, W] tensor, "
            f"got {type(image).__name__}"
        )

    def _open(self, path: str | os.PathLike[str]) -> PILImage.Image:
        image_module = _pillow()
        try:
            with image_module.open(path) as image:
                image.load()
                return image
        except image_module.UnidentifiedImageError as e:
            raise InvalidInputError(
                f"image: {os.fspath(path)!r} is not a picture Pillow reads"
            ) from e
        except Exception as e:  # noqa: BLE001 - Pillow's decoders fail in many types, one meaning
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise InvalidInputError(f"image: cannot read {os.fspath(path)!r}: {reason}") from e

    def _from_array(self, array: np.ndarray) -> torch.Tensor:
        if array.ndim != 3 or array.shape[2] != 3:
            raise InvalidInputError(f"image: expected an RGB HxWx3 array, got shape {array.shape}")
        if array.dtype == np.uint8:
            return self._from_pil(_pillow().fromarray(np.ascontiguousarray(array)))
        return self._from_tensor(torch.from_numpy(array.copy()).permute(2, 0, 1))

    def _from_tensor(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3 or x.shape[0] != 3:
            raise InvalidInputError(
                f"image: expected a [3, H, W] tensor, got shape {tuple(x.shape)}"
            )
        if x.dtype == torch.uint8:
            pixels = x.detach().cpu().permute(1, 2, 0).contiguous().numpy()
            return self._from_pil(_pillow().fromarray(pixels))
        if not x.is_floating_point():
            raise InvalidDtypeError(
                f"image: expected a uint8 tensor (0-255) or a float one (0-1), got {x.dtype}"
            )
        return self._from_float(x.float())

    def _from_pil(self, image: PILImage.Image) -> torch.Tensor:
        size = self.image_size
        height, width = resized_size(image.height, image.width, size)
        if (height, width) != (image.height, image.width):
            # Resized in the picture's own mode, converted after, as open_clip orders it.
            image = image.resize((width, height), _pillow().BICUBIC)
        top, left = centre_crop_offset(height, size), centre_crop_offset(width, size)
        image = image.crop((left, top, left + size, top + size)).convert("RGB")
        x = torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)
        return self._normalise(x.float().div(255))

    def _from_float(self, x: torch.Tensor) -> torch.Tensor:
        size = self.image_size
        height, width = resized_size(x.shape[1], x.shape[2], size)
        if (height, width) != tuple(x.shape[1:]):
            x = F.interpolate(
                x[None], size=(height, width), mode="bicubic", antialias=True, align_corners=False
            )[0]
        top, left = centre_crop_offset(height, size), centre_crop_offset(width, size)
        return self._normalise(x[:, top : top + size, left : left + size])

    def _normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean.to(x.device)) / self.std.to(x.device)
