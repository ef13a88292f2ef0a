"""MobileNet-V2 image tower.

Trunk keys follow timm's ``mobilenetv2_100`` (under ``visual.trunk.``): ``conv_stem``, ``bn1``,
``blocks.0.0.{conv_dw,bn1,conv_pw,bn2}`` (the depthwise-separable first block),
``blocks.{i}.{j}.{conv_pw,bn1,conv_dw,bn2,conv_pwl,bn3}``, ``conv_head``, ``bn2``. The head
(``visual.head.proj``, Linear without bias) matches open_clip's ``TimmModel`` with
``pool="avg", proj="linear"``: average-pool the 1280-channel ``conv_head`` output, project.

Stages are the block groups ending at strides 4/8/16/32: ``blocks.1`` (24 ch), ``blocks.2``
(32), ``blocks.4`` (96), ``blocks.6`` (320), as timm's ``features_only`` reports them; timm's
first feature map, ``blocks.0`` (16 ch, stride 2), comes before them in ``feature_maps``. Lock
groups (see tower_lock.py): stem ``conv_stem``/``bn1``, stage1 ``blocks.0-1``, stage2
``blocks.2``, stage3 ``blocks.3-4``, stage4 ``blocks.5-6`` with ``conv_head``/``bn2``, head.

Parameter count (width 1.0, embed 512): trunk 2,223,872 + projection 655,360 = 2,879,232.
The paper reports 2.45M; its head is not described. ``head_width`` (the ``conv_head``
channels) trades that off: ``head_width=768`` gives 2,446,592 (but no longer loads as timm's).
"""

from __future__ import annotations

import torch
from torch import nn

from .config import LightCLIPConfig
from .tower_lock import LockableTower, LockGroup, run_maybe_checkpointed

# (expansion, channels, repeats, first stride) — the MobileNet-V2 paper's table.
MBV2_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
# Indices into ``blocks`` whose outputs are the 4 stages (strides 4, 8, 16, 32).
STAGE_ENDS = (1, 2, 4, 6)
# ... and timm's feature maps: ``blocks.0`` (stride 2), then the 4 stages.
FEATURE_ENDS = (0, *STAGE_ENDS)


def make_divisible(v: float, divisor: int = 8) -> int:
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new_v + divisor if new_v < 0.9 * v else new_v


class DepthwiseSeparable(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv_pw = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn2(self.conv_pw(self.act(self.bn1(self.conv_dw(x)))))


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        mid = cin * expansion
        self.use_residual = stride == 1 and cin == cout
        self.conv_pw = nn.Conv2d(cin, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv_pwl = nn.Conv2d(mid, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.bn1(self.conv_pw(x)))
        y = self.act(self.bn2(self.conv_dw(y)))
        y = self.bn3(self.conv_pwl(y))
        return x + y if self.use_residual else y


class MobileNetV2Trunk(nn.Module):
    def __init__(
        self, width_mult: float = 1.0, head_width: int = 1280, zero_init_residual: bool = False
    ) -> None:
        super().__init__()
        stem = make_divisible(32 * width_mult)
        self.conv_stem = nn.Conv2d(3, stem, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.act = nn.ReLU6(inplace=True)
        groups: list[nn.Module] = []
        cin = stem
        channels = []
        for i, (t, c, n, s) in enumerate(MBV2_SETTINGS):
            cout = make_divisible(c * width_mult)
            if i == 0:
                group = nn.Sequential(DepthwiseSeparable(cin, cout, s))
            else:
                group = nn.Sequential(
                    *[
                        InvertedResidual(cin if j == 0 else cout, cout, s if j == 0 else 1, t)
                        for j in range(n)
                    ]
                )
            groups.append(group)
            channels.append(cout)
            cin = cout
        self.blocks = nn.Sequential(*groups)
        self.conv_head = nn.Conv2d(cin, head_width, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(head_width)
        self.num_features = head_width
        self.stage_channels = tuple(channels[i] for i in STAGE_ENDS)
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            if zero_init_residual and isinstance(m, InvertedResidual) and m.use_residual:
                nn.init.zeros_(m.bn3.weight)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.feature_maps(x)[1:]

    def feature_maps(self, x: torch.Tensor, last: int = 4) -> list[torch.Tensor]:
        """timm's ``mobilenetv2`` feature maps up to index ``last``: ``blocks.0`` (0, stride 2),
        then the 4 stages (1-4)."""
        x = self.act(self.bn1(self.conv_stem(x)))
        out = []
        for i, group in enumerate(self.blocks[: FEATURE_ENDS[last] + 1]):
            # Checkpointed per block group: a group is a few blocks at one resolution.
            x = run_maybe_checkpointed(self.grad_checkpointing, group, x)
            if i in FEATURE_ENDS:
                out.append(x)
        return out

    def forward_head_features(self, stage4: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn2(self.conv_head(stage4)))


class MobileNetV2Tower(LockableTower):
    """MobileNet-V2 + avg-pool/linear head.

    ``forward_stages`` -> 4 maps; ``forward_head(stage4)`` -> [B, E];
    ``project_tokens(stage4)`` -> [B, h*w, E] (L_tok's image tokens in the joint space)."""

    #: ``feature_maps`` gives 5 maps (``blocks.0``, 4 stages), as timm's
    #: ``forward_intermediates``.
    num_feature_maps = 5

    def __init__(self, cfg: LightCLIPConfig) -> None:
        super().__init__()
        self.trunk = MobileNetV2Trunk(cfg.width_mult, cfg.head_width, cfg.zero_init_residual)
        self.stage_channels = self.trunk.stage_channels
        self.head = nn.Sequential()
        self.head.add_module("proj", nn.Linear(self.trunk.num_features, cfg.embed_dim, bias=False))
        nn.init.normal_(self.head.proj.weight, std=self.trunk.num_features**-0.5)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_stages(x)

    def feature_maps(self, x: torch.Tensor, last: int = 4) -> list[torch.Tensor]:
        return self.trunk.feature_maps(x, last)

    def lock_groups(self) -> list[LockGroup]:
        t = self.trunk
        b = t.blocks
        return [
            [t.conv_stem, t.bn1],
            [b[0], b[1]],
            [b[2]],
            [b[3], b[4]],
            [b[5], b[6], t.conv_head, t.bn2],
            [self.head],
        ]

    def forward_head(self, stage4: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk.forward_head_features(stage4).mean(dim=(2, 3)))

    def project_tokens(self, stage4: torch.Tensor) -> torch.Tensor:
        """The head without the pooling: every stage-4 location in the joint space,
        [B, h*w, E], un-normalised. ``conv_head`` is 1x1 and ``proj`` linear without bias, so
        the mean of these tokens is ``forward_head(stage4)``."""
        return self.forward_head_and_tokens(stage4)[1]

    def forward_head_and_tokens(self, stage4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward_head(stage4), project_tokens(stage4))`` sharing one ``conv_head`` pass."""
        features = self.trunk.forward_head_features(stage4)
        tokens = self.head.proj(features.flatten(2).transpose(1, 2))
        return self.head(features.mean(dim=(2, 3))), tokens

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_stages(x)[-1])
