"""Swin-Nano image tower: a Swin Transformer with four stages, written for any input size
divisible by 32 (windows are clamped to small maps and padded, with masking, on odd ones).

Keys follow timm's ``SwinTransformer`` (>= 0.9; under ``visual.trunk.``): ``patch_embed.proj``,
``patch_embed.norm``, ``layers.{i}.downsample.{norm,reduction}`` (i >= 1, merging at the start of
the stage), ``layers.{i}.blocks.{j}.{norm1, attn.qkv, attn.proj,
attn.relative_position_bias_table, norm2, mlp.fc1, mlp.fc2}``, ``norm``. The head
(``visual.head.proj``, Linear without bias) is open_clip's ``pool="avg", proj="linear"``.

"Swin-Nano" is not a published config; ours is Swin-T's layout at half width: embed 48,
depths (2, 2, 6, 2), heads (3, 6, 12, 24) (head dim 16), window 7, MLP ratio 4, patch 4.
Stage channels 48/96/192/384 at strides 4/8/16/32. Parameters with a 512-d head: 6,914,634
trunk + 196,608 projection = 7,111,242 (paper: 7.11M). ``feature_maps`` gives the 4 stage maps
(NCHW), as timm's ``forward_intermediates``. Lock groups (see tower_lock.py): stem
``patch_embed``, stage1..4 ``layers.0``..``layers.3`` (the last with ``norm``), head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import LightCLIPConfig
from .tower_lock import LockableTower, LockGroup, run_maybe_checkpointed


def relative_position_index(ws: int, table_window: int) -> torch.Tensor:
    """[ws*ws, ws*ws] indices into a (2*table_window-1)^2 bias table; a window smaller than the
    table's uses the central part, so one learned table serves every input size."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(
        1
    )
    rel = coords[:, :, None] - coords[:, None, :] + (table_window - 1)
    return rel[0] * (2 * table_window - 1) + rel[1]


class WindowAttention(nn.Module):
    def __init__(self, dim: int, heads: int, window: int) -> None:
        super().__init__()
        self.heads = heads
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: torch.Tensor, ws: int, mask: torch.Tensor | None) -> torch.Tensor:
        """x: [B, nW, N, C] windows; mask: [nW, N, N] additive or None."""
        b, nw, n, c = x.shape
        qkv = self.qkv(x).reshape(b, nw, n, 3, self.heads, c // self.heads)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).reshape(3, b, nw * self.heads, n, c // self.heads)
        idx = relative_position_index(ws, self.window).to(x.device)
        bias = (
            self.relative_position_bias_table[idx.flatten()]
            .reshape(n, n, self.heads)
            .permute(2, 0, 1)
        )
        bias = bias.unsqueeze(0).expand(nw, -1, -1, -1)
        if mask is not None:
            bias = bias + mask.unsqueeze(1)
        bias = bias.reshape(1, nw * self.heads, n, n).to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, nW*heads, N, d]
        out = out.reshape(b, nw, self.heads, n, -1).transpose(2, 3).reshape(b, nw, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


def window_labels(h: int, w: int, hp: int, wp: int, ws: int, shift: int) -> torch.Tensor:
    """Per-cell labels on the padded, shifted grid; cells attend only to equal labels.

    Shifted windows mix regions that are not neighbours in the image (the cyclic roll), and
    padded cells are not image at all: both get their own labels."""
    labels = torch.zeros(hp, wp, dtype=torch.long)
    if shift:
        spans = ((0, -ws), (-ws, -shift), (-shift, None))
        for i, (h0, h1) in enumerate(spans):
            for j, (w0, w1) in enumerate(spans):
                labels[h0:h1, w0:w1] = i * 3 + j
    pad = torch.zeros(hp, wp, dtype=torch.bool)
    pad[h:, :] = True
    pad[:, w:] = True
    pad = torch.roll(pad, (-shift, -shift), (0, 1))
    return torch.where(pad, torch.full_like(labels, 9), labels)


class SwinBlock(nn.Module):
    def __init__(
        self, dim: int, heads: int, window: int, shifted: bool, mlp_ratio: float = 4.0
    ) -> None:
        super().__init__()
        self.window = window
        self.shifted = shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [B, H, W, C]."""
        b, h, w, c = x.shape
        ws = min(self.window, h, w)
        # As in Swin: no shift once one window covers the whole (smaller) map.
        shift = ws // 2 if self.shifted and min(h, w) > self.window else 0
        hp, wp = -(-h // ws) * ws, -(-w // ws) * ws
        y = F.pad(self.norm1(x), (0, 0, 0, wp - w, 0, hp - h))
        if shift:
            y = torch.roll(y, (-shift, -shift), (1, 2))
        nh, nw_ = hp // ws, wp // ws
        windows = (
            y.reshape(b, nh, ws, nw_, ws, c)
            .permute(0, 1, 3, 2, 4, 5)
            .reshape(b, nh * nw_, ws * ws, c)
        )
        mask = None
        if shift or hp != h or wp != w:
            lab = window_labels(h, w, hp, wp, ws, shift).to(x.device)
            lab = lab.reshape(nh, ws, nw_, ws).permute(0, 2, 1, 3).reshape(nh * nw_, ws * ws)
            mask = torch.zeros(lab.shape[0], ws * ws, ws * ws, device=x.device)
            mask.masked_fill_(lab[:, :, None] != lab[:, None, :], float("-inf"))
        y = self.attn(windows, ws, mask)
        y = y.reshape(b, nh, nw_, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
        if shift:
            y = torch.roll(y, (shift, shift), (1, 2))
        x = x + y[:, :h, :w]
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, h, w, c = x.shape
        x = x.reshape(b, h // 2, 2, w // 2, 2, c).permute(0, 1, 3, 4, 2, 5).flatten(3)
        return self.reduction(self.norm(x))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, heads: int, window: int, downsample: bool) -> None:
        super().__init__()
        self.downsample = PatchMerging(dim // 2) if downsample else nn.Identity()
        self.blocks = nn.Sequential(
            *[SwinBlock(dim, heads, window, shifted=j % 2 == 1) for j in range(depth)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int = 4) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, patch, patch)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


class SwinTrunk(nn.Module):
    def __init__(self, cfg: LightCLIPConfig) -> None:
        super().__init__()
        dims = [cfg.swin_embed_dim * 2**i for i in range(4)]
        self.patch_embed = PatchEmbed(dims[0])
        self.layers = nn.Sequential(
            *[
                SwinStage(dims[i], cfg.swin_depths[i], cfg.swin_heads[i], cfg.window_size, i > 0)
                for i in range(4)
            ]
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.num_features = dims[-1]
        self.stage_channels = tuple(dims)
        self.grad_checkpointing = False
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.feature_maps(x)

    def feature_maps(self, x: torch.Tensor, last: int = 3) -> list[torch.Tensor]:
        """The outputs of stages 1..``last`` + 1, NCHW."""
        x = self.patch_embed(x)
        out = []
        for stage in self.layers[: last + 1]:
            x = run_maybe_checkpointed(self.grad_checkpointing, stage, x)
            out.append(x.permute(0, 3, 1, 2))
        return out


class SwinTower(LockableTower):
    """Swin-Nano + norm/avg-pool/linear head. Stage outputs are NCHW like the CNN towers';
    ``project_tokens(stage4)`` -> [B, h*w, E] (L_tok's image tokens in the joint space)."""

    num_feature_maps = 4

    def __init__(self, cfg: LightCLIPConfig) -> None:
        super().__init__()
        self.trunk = SwinTrunk(cfg)
        self.stage_channels = self.trunk.stage_channels
        self.head = nn.Sequential()
        self.head.add_module("proj", nn.Linear(self.trunk.num_features, cfg.embed_dim, bias=False))
        nn.init.normal_(self.head.proj.weight, std=self.trunk.num_features**-0.5)

    def forward_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.trunk.forward_stages(x)

    def feature_maps(self, x: torch.Tensor, last: int = 3) -> list[torch.Tensor]:
        return self.trunk.feature_maps(x, last)

    def lock_groups(self) -> list[LockGroup]:
        t = self.trunk
        return [
            [t.patch_embed],
            *[[stage] for stage in t.layers[:3]],
            [t.layers[3], t.norm],
            [self.head],
        ]

    def forward_head(self, stage4: torch.Tensor) -> torch.Tensor:
        pooled = self.trunk.norm(stage4.permute(0, 2, 3, 1)).mean(dim=(1, 2))
        return self.head(pooled)

    def project_tokens(self, stage4: torch.Tensor) -> torch.Tensor:
        """The head without the pooling: ``norm`` then ``proj`` at every stage-4 location,
        [B, h*w, E] (row-major, as ``stage4.flatten(2)``), un-normalised."""
        return self.head.proj(self.trunk.norm(stage4.permute(0, 2, 3, 1)).flatten(1, 2))

    def forward_head_and_tokens(self, stage4: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.forward_head(stage4), self.project_tokens(stage4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_stages(x)[-1])
