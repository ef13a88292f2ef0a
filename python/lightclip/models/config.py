"""The model configuration: one dataclass, read from the JSON presets in ``configs/``.

A preset names the image tower and sizes both towers; the LightCLIP training-only parts (the
token outputs for L_tok, image-to-text fusion, MLM head) are switched by ``token_head``,
``fusion_stages`` and ``mlm``, the feature-distillation projection by ``distill_dim``. A plain
CLIP baseline is the same config with all of them off (``as_plain_clip()``), which is also
exactly what ``LightCLIP.export()`` builds.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidInputError

#: The CLIP BPE vocabulary plus the appended ``<|mask|>`` token (id 49408).
VOCAB_SIZE = 49409
SOT_TOKEN_ID = 49406
EOT_TOKEN_ID = 49407
MASK_TOKEN_ID = 49408

IMAGE_TOWERS = ("resnet18", "mobilenetv2", "swin")
#: Where L_tok compares tokens: "joint" maps them with each tower's own projection into the
#: joint embedding space (no extra parameters); "heads" uses two training-only Linear heads to
#: ``d_tok`` (another reading of SPEC §2, whose positives-only loss can collapse: every token
#: one direction, see ``lightclip.diagnostics``).
TOKEN_SPACES = ("joint", "heads")


@dataclass
class LightCLIPConfig:
    """Every size and switch of a :class:`~lightclip.models.LightCLIP` model.

    Image tower options (``image_tower``): ``"resnet18"`` (``attn_heads`` for the attention-pool
    head), ``"mobilenetv2"`` (``width_mult``, ``head_width`` for its 1x1 ``conv_head``),
    ``"swin"`` (``swin_embed_dim``, ``swin_depths``, ``swin_heads``, ``window_size``).
    ``zero_init_residual`` starts the last BatchNorm of every residual branch (ResNet-18,
    MobileNet-V2) at zero, so each block starts as the identity (Goyal et al., 2017).
    ``trim_padding`` runs the training text passes only up to the batch's last EOT (exact,
    since the text mask is causal); ``fusion_stages`` lists the text stages (1..3) after which
    image stage s is injected.
    """

    name: str = "custom"
    image_tower: str = "mobilenetv2"
    image_size: int = 224
    embed_dim: int = 512
    # --- image tower specifics
    attn_heads: int = 8
    width_mult: float = 1.0
    head_width: int = 1280
    zero_init_residual: bool = False
    swin_embed_dim: int = 48
    swin_depths: tuple[int, ...] = (2, 2, 6, 2)
    swin_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 7
    # --- text tower
    context_length: int = 77
    vocab_size: int = VOCAB_SIZE
    text_width: int = 512
    text_heads: int = 8
    text_layers: int = 8
    text_mlp_ratio: float = 4.0
    # Run training text passes only up to the batch's last EOT (exact: the mask is causal).
    trim_padding: bool = True
    # --- LightCLIP training-only parts
    token_head: bool = True
    token_space: str = "joint"
    d_tok: int = 256
    fusion_stages: tuple[int, ...] = (2, 3)
    fusion_heads: int = 8
    mlm: bool = True
    # The teacher's embedding width for feature distillation (--w-distill-feature): a
    # training-only Linear(embed_dim -> distill_dim); 0: none.
    distill_dim: int = 0
    init_logit_scale: float = field(default_factory=lambda: math.log(1 / 0.07))
    max_logit_scale: float = field(default_factory=lambda: math.log(100.0))
    # SigLIP's learned bias of every logit (open_clip's init_logit_bias; ``lightclip train
    # --siglip`` starts it at -10); None: no bias, as in CLIP.
    init_logit_bias: float | None = None

    def __post_init__(self) -> None:
        self.swin_depths = tuple(self.swin_depths)
        self.swin_heads = tuple(self.swin_heads)
        self.fusion_stages = tuple(self.fusion_stages)
        self.validate()

    @property
    def text_stages(self) -> int:
        """The text tower is cut into 4 stages of equal depth (the paper's reading)."""
        return 4

    @property
    def layers_per_stage(self) -> int:
        return self.text_layers // self.text_stages

    @property
    def has_training_heads(self) -> bool:
        """Whether the model has any training-only output (the joint token space adds no
        module, but its token outputs are still training-only)."""
        return self.token_head or bool(self.fusion_stages) or self.mlm or self.distill_dim > 0

    def validate(self) -> None:
        def bad(field_name: str, why: str) -> InvalidInputError:
            return InvalidInputError(f"model config {self.name!r}: {field_name} {why}")

        if self.image_tower not in IMAGE_TOWERS:
            raise bad("image_tower", f"must be one of {IMAGE_TOWERS}, got {self.image_tower!r}")
        if self.token_space not in TOKEN_SPACES:
            raise bad("token_space", f"must be one of {TOKEN_SPACES}, got {self.token_space!r}")
        if self.image_size <= 0 or self.image_size % 32:
            raise bad("image_size", f"must be a positive multiple of 32, got {self.image_size}")
        if self.text_layers % self.text_stages:
            raise bad("text_layers", f"must be a multiple of 4 (4 stages), got {self.text_layers}")
        if self.text_width % self.text_heads:
            raise bad("text_width", f"{self.text_width} is not divisible by text_heads")
        if self.context_length < 3:
            raise bad(
                "context_length",
                f"must be at least 3 (SOT, a word, EOT), got {self.context_length}",
            )
        if self.distill_dim < 0:
            raise bad("distill_dim", f"must be >= 0 (0: no projection), got {self.distill_dim}")
        if self.vocab_size <= MASK_TOKEN_ID:
            raise bad("vocab_size", f"must include the mask token id {MASK_TOKEN_ID}")
        for s in self.fusion_stages:
            if not 1 <= s <= 3:
                # Stage 4 is the last text stage: injecting after it would skip the MLM tower.
                raise bad("fusion_stages", f"entries must be in 1..3, got {self.fusion_stages}")
        if self.text_width % self.fusion_heads and self.fusion_stages:
            raise bad("fusion_heads", f"must divide text_width {self.text_width}")
        if self.image_tower == "swin" and len(self.swin_depths) != 4:
            raise bad("swin_depths", f"must have 4 stages, got {self.swin_depths}")
        if self.image_tower == "swin" and len(self.swin_heads) != 4:
            raise bad("swin_heads", f"must have 4 stages, got {self.swin_heads}")

    def replace(self, **overrides: Any) -> LightCLIPConfig:
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise InvalidInputError(
                f"unknown model option(s) {unknown} for {self.name!r}; known: {sorted(known)}"
            )
        return dataclasses.replace(self, **overrides)

    def as_plain_clip(self) -> LightCLIPConfig:
        """The same towers with every training-only part switched off."""
        name = self.name.replace("lightclip-", "clip-", 1)
        return self.replace(name=name, token_head=False, fusion_stages=(), mlm=False, distill_dim=0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for k in ("swin_depths", "swin_heads", "fusion_stages"):
            d[k] = list(d[k])
        if d["init_logit_bias"] is None:
            # Left out when unused, so the exports of models without a bias (all CLIP ones)
            # still load in lightclip versions that predate the field.
            del d["init_logit_bias"]
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LightCLIPConfig:
        return cls().replace(**data)

    @classmethod
    def from_json(cls, path: str | Path) -> LightCLIPConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InvalidInputError(f"cannot read model config {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise InvalidInputError(f"model config {path} must hold a JSON object")
        data.setdefault("name", path.stem)
        return cls.from_dict(data)
