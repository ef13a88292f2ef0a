"""ResNet-18 image tower with CLIP's attention-pool head.

Trunk keys follow timm's ``resnet18`` (under ``visual.trunk.``): ``conv1``, ``bn1``,
``layer{1..4}.{0,1}.{conv1,bn1,conv2,bn2}``, ``layer{2..4}.0.downsample.{0,1}`` (no ``fc``).
The head (``visual.head.``) is :class:`AttentionPool2d` to ``embed_dim``.

Stages: layer1..layer4 at strides 4/8/16/32 with 64/128/256/512 channels. Lock groups (see
tower_lock.py): stem ``conv1``/``bn1``, stage1..4 ``layer1``..``layer4``, head.

Parameter count (224 px, 8 heads): trunk 11,176,512 + attention pool 1,338,880 with a 1024-d
head = 12,515,392 (paper: 12.51M), which is why ``lightclip-r18`` uses ``embed_dim`` 1024 (like
open_clip's RN50); with a 512-d head it is 12,252,736.
"""

from __future__ import annotations

import torch
from torch import nn

from .attention_pool import AttentionPool2d
from .config import LightCLIPConfig
from .tower_lock import LockableTower, LockGroup, run_maybe_checkpointed


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act2 = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        y = self.act1(self.bn1(self.conv1(x)))
        return self.act2(self.bn2(self.conv2(y)) + shortcut)


class ResNetTrunk(nn.Module):
    def __init__(
        self,
        widths: tuple[int, ...] = (64, 128, 256, 512),
        blocks: int = 2,
        zero_init_residual: bool = False,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.act1 = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            layer = nn.Sequential(
                *[
                    BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1)
                    for j in range(blocks)
                ]
            )
            self.add_module(f"layer{i + 1}", layer)
            cin = w
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if zero_init_residual and isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        """The stride-2 stem output before the max-pool (timm's first ``feature_info``)."""
        return self.act1(self.bn1(self.conv1(x)))

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.feature_maps(x)[1:]

    def feature_maps(self, x: torch.Tensor, last: int = 4) -> list[torch.Tensor]:
        """timm's ``resnet18`` feature maps up to index ``last``: the stem (0, stride 2), then
        layer1..layer4 (1-4)."""
        x = self.forward_stem(x)
        out = [x]
        x = self.maxpool(x)
        for layer in self.stages()[:last]:
            x = run_maybe_checkpointed(self.grad_checkpointing, layer, x)
            out.append(x)
        return out


class ResNetTower(LockableTower):
    """ResNet-18 + attention pool.

    ``forward_stages`` -> 4 maps; ``forward_head(stage4)`` -> [B, E];
    ``project_tokens(stage4)`` -> [B, h*w, E] (L_tok's image tokens in the joint space, see
    ``AttentionPool2d.project_tokens``)."""

    stage_channels = (64, 128, 256, 512)
    #: ``feature_maps`` gives 5 maps (stem, 4 stages), as timm's ``forward_intermediates``.
    num_feature_maps = 5

    def __init__(self, cfg: LightCLIPConfig) -> None:
        super().__init__()
        self.trunk = ResNetTrunk(self.stage_channels, zero_init_residual=cfg.zero_init_residual)
        self.head = AttentionPool2d(
            cfg.image_size // 32, self.stage_channels[-1], cfg.attn_heads, cfg.embed_dim
        )

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_stages(x)

    def feature_maps(self, x: torch.Tensor, last: int = 4) -> list[torch.Tensor]:
        return self.trunk.feature_maps(x, last)

    def lock_groups(self) -> list[LockGroup]:
        t = self.trunk
        return [[t.conv1, t.bn1], *[[layer] for layer in t.stages()], [self.head]]

    def forward_head(self, stage4: torch.Tensor) -> torch.Tensor:
        return self.head(stage4)

    def project_tokens(self, stage4: torch.Tensor) -> torch.Tensor:
        return self.head.project_tokens(stage4)

    def forward_head_and_tokens(self, stage4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(stage4), self.head.project_tokens(stage4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_stages(x)[-1])
