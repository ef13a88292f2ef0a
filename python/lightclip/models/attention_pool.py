"""CLIP's attention-pool head (as in OpenAI CLIP's ModifiedResNet): the mean of the feature map
is prepended as a query token, every position gets a learned positional embedding, and one
multi-head attention layer with the mean token as the only query produces the embedding.

``project_tokens`` gives every spatial token in the joint space (MaskCLIP's reading: value and
output projections only), the image tokens of L_tok.

Keys (under ``visual.head.``): ``positional_embedding`` [(S*S)+1, C], ``q_proj``, ``k_proj``,
``v_proj`` (C -> C), ``c_proj`` (C -> embed_dim); OpenAI CLIP's ``attnpool`` names.

The positional embedding is learned for the configured image size; at another input size
(any multiple of 32) the spatial part is resized bicubically, as open_clip does for ViTs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class AttentionPool2d(nn.Module):
    def __init__(self, spatial: int, channels: int, heads: int, output_dim: int) -> None:
        super().__init__()
        self.spatial = spatial
        self.heads = heads
        self.positional_embedding = nn.Parameter(
            torch.randn(spatial * spatial + 1, channels) / channels**0.5
        )
        self.q_proj = nn.Linear(channels, channels)
        self.k_proj = nn.Linear(channels, channels)
        self.v_proj = nn.Linear(channels, channels)
        self.c_proj = nn.Linear(channels, output_dim)
        std = channels**-0.5
        for lin in (self.q_proj, self.k_proj, self.v_proj, self.c_proj):
            nn.init.normal_(lin.weight, std=std)
            nn.init.zeros_(lin.bias)

    def positional(self, h: int, w: int) -> torch.Tensor:
        if (h, w) == (self.spatial, self.spatial):
            return self.positional_embedding
        cls_pos, grid = self.positional_embedding[:1], self.positional_embedding[1:]
        c = grid.shape[1]
        grid = grid.reshape(1, self.spatial, self.spatial, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(h * w, c)])

    def project_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Every spatial token in the joint space, as MaskCLIP reads the pool: the token with
        its positional embedding (as ``forward`` adds it) through ``v_proj`` then ``c_proj``,
        skipping the query/key attention that mixes them. [B, C, h, w] -> [B, h*w, E]."""
        _, _, h, w = x.shape
        x = x.flatten(2).transpose(1, 2) + self.positional(h, w)[1:].to(x.dtype)
        return self.c_proj(self.v_proj(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        x = x.flatten(2).transpose(1, 2)  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional(h, w).to(x.dtype)
        q = self.q_proj(x[:, :1])
        k, v = self.k_proj(x), self.v_proj(x)
        split = lambda t: t.reshape(b, t.shape[1], self.heads, c // self.heads).transpose(1, 2)  # noqa: E731
        out = F.scaled_dot_product_attention(split(q), split(k), split(v))  # [B, heads, 1, C/heads]
        return self.c_proj(out.transpose(1, 2).reshape(b, c))
