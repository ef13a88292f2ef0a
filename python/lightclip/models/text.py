"""The CLIP-style text tower (causal transformer, pooled at the EOT token found by its id).

Parameter names follow open_clip's ``TextTransformer`` so an exported state dict loads there
(under ``text.``) with ``pool_type="eos", eos_id=49407``:

    token_embedding.weight            [vocab, width]
    positional_embedding              [context, width]
    transformer.resblocks.{i}.ln_1.{weight,bias}
    transformer.resblocks.{i}.attn.{in_proj_weight,in_proj_bias,out_proj.weight,out_proj.bias}
    transformer.resblocks.{i}.ln_2.{weight,bias}
    transformer.resblocks.{i}.mlp.c_fc.{weight,bias}
    transformer.resblocks.{i}.mlp.c_proj.{weight,bias}
    ln_final.{weight,bias}
    text_projection                   [width, embed_dim]  (x @ text_projection)
    attn_mask                         non-persistent buffer (causal, additive -inf)

The activation is ``nn.GELU`` (open_clip's default, not OpenAI's QuickGELU). The layers form 4
stages of equal depth; ``forward_tokens`` can call a hook after each stage, which is how the
training-only fusion module injects image tokens without the tower knowing about it.

Lock groups (``lock``, open_clip's ``lock_text_tower``): the embeddings (token and positional),
each block but the last, the last block with ``ln_final``, and ``text_projection``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import nn

from ..errors import InvalidInputError
from .config import EOT_TOKEN_ID, LightCLIPConfig
from .tower_lock import LockGroup, checked_unlocked_count, group_parameters, run_maybe_checkpointed

#: Called after text stage ``s`` (1-based) with the hidden states [B, L, width]; returns them.
StageHook = Callable[[int, torch.Tensor], torch.Tensor]


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block (open_clip's layout and names)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        hidden = int(width * mlp_ratio)
        self.ln_1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, hidden)),
                    ("gelu", nn.GELU()),
                    ("c_proj", nn.Linear(hidden, width)),
                ]
            )
        )

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int, mlp_ratio: float) -> None:
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList(
            [ResidualAttentionBlock(width, heads, mlp_ratio) for _ in range(layers)]
        )
        self.grad_checkpointing = False

    def run_block(self, i: int, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return run_maybe_checkpointed(self.grad_checkpointing, self.resblocks[i], x, mask)


def causal_mask(length: int) -> torch.Tensor:
    """Additive mask: position i may attend to positions j <= i only."""
    return torch.full((length, length), float("-inf")).triu_(1)


def eot_positions(text: torch.Tensor) -> torch.Tensor:
    """Index of the first EOT token per row, found by id (the mask token 49408 is larger, so
    ``argmax`` of the ids, as OpenAI CLIP does, would be wrong here)."""
    is_eot = text == EOT_TOKEN_ID
    if not bool(is_eot.any(dim=1).all()):
        rows = (~is_eot.any(dim=1)).nonzero().flatten()[:5].tolist()
        raise InvalidInputError(
            f"text: rows {rows} have no EOT token ({EOT_TOKEN_ID}); "
            "tokenize with lightclip.get_tokenizer()"
        )
    return is_eot.int().argmax(dim=1)


class TextTransformer(nn.Module):
    """Token embedding + causal transformer + final LayerNorm + EOT pooling + projection."""

    def __init__(self, cfg: LightCLIPConfig) -> None:
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.layers_per_stage = cfg.layers_per_stage
        width = cfg.text_width
        self.token_embedding = nn.Embedding(cfg.vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, width))
        self.transformer = Transformer(width, cfg.text_layers, cfg.text_heads, cfg.text_mlp_ratio)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, cfg.embed_dim))
        self.register_buffer("attn_mask", causal_mask(cfg.context_length), persistent=False)
        self.init_parameters()

    def init_parameters(self) -> None:
        # open_clip's initialisation: small embeddings, depth-scaled residual projections.
        width, layers = self.transformer.width, self.transformer.layers
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        proj_std = width**-0.5 * (2 * layers) ** -0.5
        for block in self.transformer.resblocks:
            nn.init.normal_(block.attn.in_proj_weight, std=width**-0.5)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.normal_(block.mlp.c_fc.weight, std=(2 * width) ** -0.5)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)
        nn.init.normal_(self.text_projection, std=width**-0.5)

    def check_ids(self, text: torch.Tensor, arg: str = "text") -> None:
        self.check_id_shape(text, arg)
        if text.numel() and (int(text.min()) < 0 or int(text.max()) >= self.vocab_size):
            raise InvalidInputError(f"{arg}: token ids must lie in [0, {self.vocab_size})")

    def check_id_shape(self, text: torch.Tensor, arg: str = "text") -> None:
        """The checks of ``check_ids`` that need no value of the tensor (no wait for a GPU)."""
        if text.dtype not in (torch.int64, torch.int32):
            raise InvalidInputError(f"{arg}: token ids must be int64, got {text.dtype}")
        if text.dim() != 2:
            raise InvalidInputError(
                f"{arg}: expected [batch, context] ids, got shape {tuple(text.shape)}"
            )
        if text.shape[1] > self.context_length:
            raise InvalidInputError(
                f"{arg}: {text.shape[1]} tokens per row exceed the model's "
                f"context_length {self.context_length}"
            )

    def checked_eot(
        self, text: torch.Tensor, masked_text: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, int]:
        """``text``'s EOT positions [B] and the largest of them, with the ids of ``text`` and
        ``masked_text`` checked as ``check_ids`` does, all in one read of the device: every
        value the host reads waits for the GPU, and a training step should wait once."""
        named = {"text": text, "masked_text": masked_text}
        named = {arg: t for arg, t in named.items() if t is not None}
        for arg, t in named.items():
            self.check_id_shape(t, arg)
        is_eot = text == EOT_TOKEN_ID
        eot = is_eot.int().argmax(dim=1)
        none = torch.zeros((), dtype=torch.int64, device=text.device)
        probes = [is_eot.any(dim=1).all(), eot.max() if eot.numel() else none]
        for t in named.values():
            probes += [t.min(), t.max()] if t.numel() else [none, none]
        values = torch.stack([p.to(torch.int64) for p in probes]).tolist()  # the one read
        if not values[0]:
            eot_positions(text)  # raises, naming the rows
        for k, (arg, t) in enumerate(named.items()):
            low, high = values[2 + 2 * k : 4 + 2 * k]
            if t.numel() and (low < 0 or high >= self.vocab_size):
                raise InvalidInputError(f"{arg}: token ids must lie in [0, {self.vocab_size})")
        return eot, values[1]

    def embed(self, text: torch.Tensor, arg: str = "text", checked: bool = False) -> torch.Tensor:
        """Token + positional embeddings [B, L, width] (the ids are checked, naming ``arg``,
        unless ``checked`` says ``checked_eot`` did that already)."""
        if not checked:
            self.check_ids(text, arg)
        return self.token_embedding(text) + self.positional_embedding[: text.shape[1]]

    def run_stages(
        self, x: torch.Tensor, first_stage: int = 1, stage_hook: StageHook | None = None
    ) -> torch.Tensor:
        """Run stages ``first_stage``..4 on hidden states (no ``ln_final``).

        ``stage_hook(s, x)`` runs after each stage s and may return new states. Starting later
        than stage 1 lets two passes that agree up to a stage share that prefix."""
        length = x.shape[1]
        mask = self.attn_mask[:length, :length].to(x.dtype)
        start = (first_stage - 1) * self.layers_per_stage
        for i in range(start, len(self.transformer.resblocks)):
            x = self.transformer.run_block(i, x, mask)
            if stage_hook is not None and (i + 1) % self.layers_per_stage == 0:
                x = stage_hook((i + 1) // self.layers_per_stage, x)
        return x

    def forward_tokens(
        self,
        text: torch.Tensor,
        stage_hook: StageHook | None = None,
        arg: str = "text",
        checked: bool = False,
    ) -> torch.Tensor:
        """Per-token final states [B, L, width] (after ``ln_final``)."""
        return self.ln_final(self.run_stages(self.embed(text, arg, checked), 1, stage_hook))

    def forward_stages(self, text: torch.Tensor, arg: str = "text") -> list[torch.Tensor]:
        """Hidden states [B, L, width] after each of the 4 stages (before ``ln_final``)."""
        states: list[torch.Tensor] = []

        def keep(stage: int, x: torch.Tensor) -> torch.Tensor:
            states.append(x)
            return x

        self.run_stages(self.embed(text, arg), 1, keep)
        return states

    def pool(
        self, states: torch.Tensor, text: torch.Tensor, eot: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Project the state at each row's EOT position to the joint space: [B, embed_dim]."""
        eot = eot_positions(text) if eot is None else eot
        pooled = states[torch.arange(states.shape[0], device=states.device), eot]
        return pooled @ self.text_projection

    def project_tokens(self, states: torch.Tensor) -> torch.Tensor:
        """Final states [B, L, width] to the joint space with the projection ``pool`` applies
        to the EOT state: [B, L, embed_dim], un-normalised (L_tok's word tokens)."""
        return states @ self.text_projection

    def forward_intermediates(
        self,
        text: torch.Tensor,
        take: list[int],
        stop_early: bool = False,
        normalize_intermediates: bool = False,
        intermediates_only: bool = False,
    ) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """open_clip's ``TextTransformer.forward_intermediates`` with the block indices already
        resolved: ``text_intermediates`` (the outputs [B, L, width] of the blocks in ``take``,
        through ``ln_final`` with ``normalize_intermediates``) and, unless
        ``intermediates_only``, ``text_features`` [B, embed_dim] (not normalised)."""
        eot, _ = self.checked_eot(text)
        x = self.embed(text, checked=True)
        mask = self.attn_mask[: x.shape[1], : x.shape[1]].to(x.dtype)
        blocks = len(self.transformer.resblocks)
        last = max(take) + 1 if stop_early and intermediates_only else blocks
        intermediates = []
        for i in range(last):
            x = self.transformer.run_block(i, x, mask)
            if i in take:
                intermediates.append(self.ln_final(x) if normalize_intermediates else x)
        out: dict[str, torch.Tensor | list[torch.Tensor]] = {"text_intermediates": intermediates}
        if not intermediates_only:
            out["text_features"] = self.pool(self.ln_final(x), text, eot)
        return out

    def lock_groups(self) -> list[LockGroup]:
        """open_clip's text lock groups, first to last (see the module docstring)."""
        blocks = list(self.transformer.resblocks)
        return [
            [self.token_embedding, self.positional_embedding],
            *[[block] for block in blocks[:-1]],
            [blocks[-1], self.ln_final],
            [self.text_projection],
        ]

    def lock(self, unlocked_layers: int = 0, freeze_layer_norm: bool = True) -> None:
        """Freeze all but the last ``unlocked_layers`` lock groups and leave those trainable
        (a count at or above the number of groups leaves the whole tower trainable). With
        ``freeze_layer_norm=False`` the LayerNorms of the frozen groups stay trainable, as
        open_clip's Hugging Face text towers do (its own text tower refuses the option)."""
        unlocked = checked_unlocked_count(unlocked_layers, "unlocked_layers")
        groups = self.lock_groups()
        split = max(len(groups) - unlocked, 0)
        for group in groups[:split]:
            for p in group_parameters(group):
                p.requires_grad = False
            if not freeze_layer_norm:
                for item in group:
                    if isinstance(item, nn.Module):
                        for m in item.modules():
                            if isinstance(m, nn.LayerNorm):
                                m.requires_grad_(True)
        for group in groups[split:]:
            for p in group_parameters(group):
                p.requires_grad = True

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, one more
        forward of the transformer); outputs and gradients are unchanged."""
        self.transformer.grad_checkpointing = bool(enable)

    def forward(self, text: torch.Tensor) -> torch.Tensor:
        # One read of the device for the checks and the EOTs, as in the training forward.
        eot, _ = self.checked_eot(text)
        return self.pool(self.forward_tokens(text, checked=True), text, eot)
