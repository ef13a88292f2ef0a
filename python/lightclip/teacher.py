"""The distillation teacher: a frozen CLIP model run beside the student on the same batch.

:meth:`Teacher.load` builds it from ``--distill-model`` / ``--distill-pretrained`` (open_clip's
names): one of our presets with weights, a lightclip export (``local-dir:`` with a
``lightclip_config.json``), an open_clip ``local-dir:`` folder, or any open_clip model name with
a local checkpoint. Its weights never change: ``requires_grad`` is off, it stays in eval mode
(``train()`` cannot switch it back), and it runs under ``torch.no_grad()``.

Each step the teacher sees the student's batch, fitted to it on the device:

* images are resized to the teacher's resolution (bicubic, antialiased) and renormalised if its
  mean/std differ. The resize is on the device, not a second view from the data pipeline,
  because a second view would decode and augment every image twice on the CPU, the part of a
  step that already limits small models, while the resize is one cheap kernel on the device;
  the teacher also sees the student's very crop, which is what the two distributions compare.
* token ids are padded with zeros or truncated to the teacher's context length; a truncated
  row keeps its end-of-text token last, as open_clip's tokenizer does. Both use open_clip's BPE
  vocabulary; a teacher with another vocabulary is refused, not fed ids that mean other words.

    >>> import tempfile, torch, lightclip
    >>> from lightclip.openclip_export import export_openclip
    >>> model = lightclip.create_model("clip-tiny-mnv2", seed=1)
    >>> folder = export_openclip(model, tempfile.mkdtemp())
    >>> teacher = Teacher.load(f"local-dir:{folder}", None, device="cpu")
    >>> images = torch.randn(2, 3, 48, 48)                 # the student's 48 px batch
    >>> text = lightclip.get_tokenizer()(["a dog", "a cat"], context_length=20)
    >>> out = teacher(images, text)
    >>> out.image_features.shape, out.image_features.requires_grad
    (torch.Size([2, 128]), False)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .data import CLIP_MEAN, CLIP_STD
from .errors import InvalidInputError
from .models.config import EOT_TOKEN_ID, MASK_TOKEN_ID, SOT_TOKEN_ID
from .weight_sources import LOCAL_DIR

#: open_clip's BPE vocabulary; ours adds one mask token after it.
BPE_VOCAB_SIZE = MASK_TOKEN_ID


@dataclass
class TeacherOutput:
    """The teacher's L2-normalised embeddings of one batch and its (exponentiated) logit scale."""

    image_features: torch.Tensor
    text_features: torch.Tensor
    logit_scale: torch.Tensor


class Teacher(nn.Module):
    """``teacher(images, text) -> TeacherOutput``; ``images`` are the student's normalised batch
    ``[N, 3, H, W]``, ``text`` its token ids ``[N, L]``."""

    pixel_scale: torch.Tensor
    pixel_shift: torch.Tensor

    def __init__(self, model: Any, *, name: str = "teacher") -> None:
        super().__init__()
        self.name = name
        self.model: Any = model  # a LightCLIP or an open_clip CLIP: the same encode_* API
        vocab = getattr(model, "vocab_size", None)
        if vocab not in (BPE_VOCAB_SIZE, BPE_VOCAB_SIZE + 1):
            raise InvalidInputError(
                f"--distill-model {name}: its text tower has a vocabulary of {vocab} tokens; the "
                f"student's is open_clip's BPE ({BPE_VOCAB_SIZE}), so the batch's token ids "
                "would mean other words to it. Use a teacher with open_clip's BPE tokenizer"
            )
        self.context_length = int(self.model.context_length)
        self.image_size = _image_size(model)
        mean, std = _mean_std(model)
        # Student batch -> [0, 1] pixels -> the teacher's normalisation, folded into one affine.
        scale = torch.tensor(CLIP_STD) / torch.tensor(std)
        shift = (torch.tensor(CLIP_MEAN) - torch.tensor(mean)) / torch.tensor(std)
        self.renormalise = not (torch.allclose(scale, torch.ones(3)) and shift.abs().max() < 1e-7)
        self.register_buffer("pixel_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_shift", shift.view(1, 3, 1, 1), persistent=False)
        model.requires_grad_(False)
        super().train(False)

    def train(self, mode: bool = True) -> Teacher:
        return super().train(False)  # frozen: BatchNorm statistics and dropout stay as loaded

    @classmethod
    def load(
        cls, model: str, pretrained: str | None, *, device: str | torch.device = "cpu"
    ) -> Teacher:
        """The teacher ``--distill-model model --distill-pretrained pretrained`` names, on
        ``device``: our presets and exports through ``lightclip.create_model``, everything
        else through ``open_clip.create_model`` (``weights_only`` loading, no pickled code).

        Building it draws from no random stream of the caller: a student seeded with
        ``--seed`` starts from the same weights with a teacher as without one."""
        with torch.random.fork_rng(devices=[]):  # its throwaway init, overwritten by its weights
            built = _build(model, pretrained)
        return cls(built, name=model).to(device)

    @classmethod
    def from_config(cls, config: Any, device: str | torch.device) -> Teacher | None:
        """The teacher of a training config, or None when it distils from none."""
        if config.distill_model is None:
            return None
        return cls.load(config.distill_model, config.distill_pretrained, device=device)

    @property
    def embed_dim(self) -> int:
        """The width of the teacher's embeddings. Read off one short caption's embedding,
        since open_clip's models do not all say it (a text projection may be a tensor, a
        Linear or absent)."""
        text = torch.zeros(1, self.context_length, dtype=torch.long)
        text[0, 0], text[0, 1] = SOT_TOKEN_ID, EOT_TOKEN_ID
        with torch.no_grad():
            return int(self.model.encode_text(text.to(self.pixel_scale.device)).shape[-1])

    def output_for(self, batch: dict[str, Any]) -> TeacherOutput:
        """The teacher's output of a training batch (already on the teacher's device)."""
        return self(batch["image"], batch["text"])

    def images_for_teacher(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[-2:] != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            images = F.interpolate(
                images.float(), size=size, mode="bicubic", antialias=True, align_corners=False
            )
        if self.renormalise:
            images = images * self.pixel_scale + self.pixel_shift
        return images

    def text_for_teacher(self, text: torch.Tensor) -> torch.Tensor:
        length = text.shape[1]
        if length < self.context_length:
            return F.pad(text, (0, self.context_length - length))
        if length == self.context_length:
            return text
        cut = text[:, : self.context_length].clone()
        has_end = (cut == EOT_TOKEN_ID).any(dim=1)
        cut[~has_end, -1] = EOT_TOKEN_ID
        return cut

    @torch.no_grad()
    def forward(self, images: torch.Tensor, text: torch.Tensor) -> TeacherOutput:
        return TeacherOutput(
            image_features=self.embed_images(images),
            text_features=self.embed_text(self.text_for_teacher(text)),
            logit_scale=self.logit_scale(),
        )

    def embed_images(self, images: torch.Tensor) -> torch.Tensor:
        """The teacher's normalised float32 embeddings of a student's images (any size)."""
        return self.model.encode_image(self.images_for_teacher(images), normalize=True).float()

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """The teacher's normalised float32 embeddings of token ids at its context length."""
        return self.model.encode_text(tokens, normalize=True).float()

    def logit_scale(self) -> torch.Tensor:
        """The teacher's exponentiated logit scale, float32."""
        return self.model.logit_scale.detach().exp().float()


def _build(model: str, pretrained: str | None) -> nn.Module:
    import lightclip

    if model.startswith(LOCAL_DIR):
        folder = Path(model[len(LOCAL_DIR) :])
        if not folder.is_dir():
            raise InvalidInputError(f"--distill-model {model}: no such folder {folder}")
        from .openclip_export import LIGHTCLIP_CONFIG_FILE

        if (folder / LIGHTCLIP_CONFIG_FILE).is_file():
            return lightclip.create_model(model).export()
        return _open_clip_model(model, None)
    if model in lightclip.list_models():
        return lightclip.create_model(model, pretrained=pretrained).export()
    return _open_clip_model(model, pretrained)


def _open_clip_model(model: str, pretrained: str | None) -> nn.Module:
    try:
        import open_clip  # type: ignore[import-untyped]
    except ImportError:
        raise InvalidInputError(
            f"--distill-model {model}: not a lightclip model, and open_clip is not installed "
            "(pip install open_clip_torch)"
        ) from None
    if model.startswith(LOCAL_DIR):
        from .openclip_export import register_timm_towers

        register_timm_towers(model[len(LOCAL_DIR) :])  # an export's timm image tower, if any
    elif model not in open_clip.list_models():
        raise InvalidInputError(
            f"--distill-model {model!r}: neither a lightclip model (lightclip.list_models()), "
            "an open_clip model (open_clip.list_models()) nor a local-dir: folder"
        )
    elif pretrained is not None and not os.path.isfile(pretrained):
        tags = [tag for name, tag in open_clip.list_pretrained() if name == model]
        if pretrained not in tags:
            raise InvalidInputError(
                f"--distill-pretrained {pretrained}: no such file, nor a pretrained tag of "
                f"{model} ({', '.join(tags) or 'none'})"
            )
    try:
        return open_clip.create_model(model, pretrained=pretrained)
    except (RuntimeError, OSError, ValueError, json.JSONDecodeError) as e:
        raise InvalidInputError(f"--distill-model {model}: open_clip cannot build it: {e}") from e


def _image_size(model: nn.Module) -> int:
    config = getattr(model, "config", None)
    size = getattr(config, "image_size", None) or getattr(model.visual, "image_size", None)
    if isinstance(size, (tuple, list)):
        if size[0] != size[1]:
            raise InvalidInputError(f"teacher image size {tuple(size)}: only square images")
        size = size[0]
    if not isinstance(size, int):
        raise InvalidInputError("the teacher model does not say its image size")
    return size


def _mean_std(model: nn.Module) -> tuple[tuple[float, ...], tuple[float, ...]]:
    cfg = getattr(getattr(model, "visual", None), "preprocess_cfg", None) or {}
    return tuple(cfg.get("mean", CLIP_MEAN)), tuple(cfg.get("std", CLIP_STD))


__all__ = ["Teacher", "TeacherOutput"]
