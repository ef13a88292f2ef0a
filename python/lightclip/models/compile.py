"""Options that change how the towers run, never what they compute: ``torch.compile`` of
their blocks (``--torchcompile``) and channels-last memory for the convolutions
(``--channels-last``).

Compilation is per block, in place (``nn.Module.compile``): the units are the towers' lock
groups (open_clip's: the stem, each stage or transformer block, the head), so that

* the training forward keeps its host-side steps (the one read of the token ids, the trim to
  the batch's last EOT, the masked-position selection) outside any graph, where they would
  break it or force a recompilation per caption length;
* a block runs compiled whichever path calls it (``forward``, ``forward_train``, the fused
  MLM pass, gradient checkpointing);
* ``state_dict`` keys, checkpoints and exports are those of the plain model.

    >>> import lightclip, torch
    >>> from lightclip.models.compile import compile_towers
    >>> model = lightclip.create_model("clip-tiny-mnv2", seed=0)
    >>> compile_towers(model, backend="eager") > 0   # the default backend is inductor
    True
    >>> sorted(model.state_dict()) == sorted(lightclip.create_model("clip-tiny-mnv2").state_dict())
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["compile_towers", "to_channels_last"]

# Modules whose compiled graph would be one or two ops: compiling them buys nothing.
_NOT_WORTH_COMPILING = (nn.Embedding, nn.LayerNorm, nn.modules.batchnorm._BatchNorm)


def compile_towers(model: nn.Module, **compile_kwargs: Any) -> int:
    """``torch.compile`` each block of the image and text towers in place; returns how many
    modules were compiled. ``compile_kwargs`` go to ``torch.compile`` (``backend``,
    ``mode``, ``dynamic``...)."""
    count = 0
    for tower in (getattr(model, "visual", None), getattr(model, "text", None)):
        if tower is None:
            continue
        for group in tower.lock_groups():
            for item in group:
                if isinstance(item, nn.Module) and not isinstance(item, _NOT_WORTH_COMPILING):
                    item.compile(**compile_kwargs)
                    count += 1
    return count


def to_channels_last(model: nn.Module) -> nn.Module:
    """Convolution kernels (every 4-D parameter and buffer) in channels-last memory format,
    in place. Feed images with ``images.contiguous(memory_format=torch.channels_last)`` so
    the first convolution needs no conversion."""
    return model.to(memory_format=torch.channels_last)
