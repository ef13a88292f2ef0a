"""Image-to-text fusion for the fused MLM pass (training only; ``export()`` drops it).

For every fused stage s (default 2 and 3): the image tower's stage-s map goes through a 1x1
conv to the text width and is flattened to tokens; after text stage s, a residual
cross-attention block lets the (masked) text attend to them:

    x <- x + out_proj(MHA(q = ln_q(x), k = v = ln_kv(image_tokens)))

``out_proj`` starts at zero, so at initialisation the fused pass equals the text-only pass and
the fusion learns to contribute from there.

Keys (under ``fusion.``): ``image_proj.{s}.{weight,bias}``, ``blocks.{s}.{ln_q,ln_kv}``,
``blocks.{s}.attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}``.
"""

from __future__ import annotations

import torch
from torch import nn


class CrossAttentionBlock(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_q = nn.LayerNorm(width)
        self.ln_kv = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        nn.init.zeros_(self.attn.out_proj.weight)
        nn.init.zeros_(self.attn.out_proj.bias)

    def forward(self, text: torch.Tensor, image_tokens: torch.Tensor) -> torch.Tensor:
        kv = self.ln_kv(image_tokens)
        return text + self.attn(self.ln_q(text), kv, kv, need_weights=False)[0]


class ImageToTextFusion(nn.Module):
    def __init__(
        self, stages: tuple[int, ...], image_channels: tuple[int, ...], width: int, heads: int
    ) -> None:
        super().__init__()
        self.stages = tuple(stages)
        self.image_proj = nn.ModuleDict(
            {str(s): nn.Conv2d(image_channels[s - 1], width, 1) for s in self.stages}
        )
        self.blocks = nn.ModuleDict(
            {str(s): CrossAttentionBlock(width, heads) for s in self.stages}
        )

    def image_tokens(self, stage_maps: list[torch.Tensor]) -> dict[int, torch.Tensor]:
        """Stage maps [B, C_s, H_s, W_s] -> tokens [B, H_s*W_s, width] for each fused stage."""
        return {
            s: self.image_proj[str(s)](stage_maps[s - 1]).flatten(2).transpose(1, 2)
            for s in self.stages
        }

    def hook(self, tokens: dict[int, torch.Tensor]):
        """A text-tower stage hook that injects ``tokens`` after the fused stages."""

        def inject(stage: int, x: torch.Tensor) -> torch.Tensor:
            return self.blocks[str(stage)](x, tokens[stage]) if stage in tokens else x

        return inject
