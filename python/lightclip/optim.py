"""The optimizer as SPEC §2 sets it up: AdamW with two parameter groups, and the logit clamp.

Weight decay applies to weight matrices and convolution kernels only. Excluded, as open_clip
excludes them: every parameter of a normalisation layer, every bias, and the logit scale —
open_clip's rule is "ndim < 2, or a norm / bias / logit_scale name". We also exclude
embedding tables (token embeddings, positional embeddings, class embeddings): open_clip
decays 2-D embedding tables because they fall through its ndim test, but shrinking rarely
seen token rows towards zero is what decay should not do. Both rules look at module types
and parameter shapes, not at naming conventions of one model.

    >>> import torch
    >>> from lightclip.optim import parameter_groups
    >>> m = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4),
    ...                         torch.nn.LayerNorm(4))
    >>> decay, no_decay = parameter_groups(m, weight_decay=0.1)
    >>> [n for n, _ in decay["named"]], sorted(n for n, _ in no_decay["named"])
    (['1.weight'], ['0.weight', '1.bias', '2.bias', '2.weight'])
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .config import TrainConfig

LOGIT_SCALE_MAX = math.log(100.0)  # SPEC §2: the learned temperature is clamped to ln(100)

_NORMS = (nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.modules.batchnorm._NormBase)
if hasattr(nn, "RMSNorm"):
    _NORMS = (*_NORMS, nn.RMSNorm)


def _no_decay_names(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for module_name, module in model.named_modules():
        prefix = f"{module_name}." if module_name else ""
        if isinstance(module, (*_NORMS, nn.Embedding)):
            names.update(prefix + n for n, _ in module.named_parameters(recurse=False))
    for name, param in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        if param.ndim < 2 or leaf == "bias" or "logit_scale" in leaf or "embedding" in leaf:
            names.add(name)
    return names


def parameter_groups(
    model: nn.Module, weight_decay: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(decayed group, undecayed group), each with ``params`` and ``named`` (for inspection)."""
    exclude = _no_decay_names(model)
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if name in exclude else decay).append((name, param))
    return (
        {"named": decay, "params": [p for _, p in decay], "weight_decay": weight_decay},
        {"named": no_decay, "params": [p for _, p in no_decay], "weight_decay": 0.0},
    )


def build_optimizer(
    model: nn.Module,
    *,
    lr: float,
    weight_decay: float,
    betas: tuple[float, float],
    eps: float,
    fused: bool | None = None,
) -> torch.optim.AdamW:
    """AdamW over :func:`parameter_groups`.

    ``fused``: torch's fused AdamW kernel, one pass over all parameters instead of a loop of
    small ops per tensor (the update is the same; the order of floating-point operations is
    not). ``None`` uses it wherever torch has it for the parameters' device and dtype and
    falls back to torch's default implementation elsewhere; ``True`` insists (an error where
    it is missing); ``False`` is torch's default.
    """
    groups = [
        {k: v for k, v in g.items() if k != "named"}
        for g in parameter_groups(model, weight_decay)
        if g["params"]
    ]
    params = [p for g in groups for p in g["params"]]
    if fused is None:
        fused = _fused_kernel_covers(params)
    elif fused and not _fused_kernel_covers(params):
        devices = sorted({f"{p.device.type}/{p.dtype}" for p in params})
        raise InvalidInputError(
            f"--fused-adamw: torch has no fused AdamW for these parameters ({', '.join(devices)})"
        )
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=fused)


def optimizer_for(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """The optimizer ``lightclip train`` uses: ``--lr``, ``--wd``, ``--beta1/2``, ``--eps``,
    ``--fused-adamw``."""
    return build_optimizer(
        model,
        lr=config.lr,
        weight_decay=config.wd,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        fused=config.fused_adamw,
    )


def _fused_kernel_covers(params: list[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW takes every one of ``params`` (it checks lazily, at the
    first step; this asks the same question before the run starts)."""
    try:
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices
    except ImportError:  # a torch that moved it: stay with the default implementation
        return False
    devices = _get_fused_kernels_supported_devices()
    return all(p.device.type in devices and torch.is_floating_point(p) for p in params)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@torch.no_grad()
def clamp_logit_scale(model: nn.Module) -> None:
    """Keeps the log temperature in [0, ln 100] after each step (open_clip does the same)."""
    scale = getattr(model, "logit_scale", None)
    if isinstance(scale, torch.Tensor):
        scale.clamp_(0.0, LOGIT_SCALE_MAX)


__all__ = [
    "LOGIT_SCALE_MAX",
    "build_optimizer",
    "clamp_logit_scale",
    "optimizer_for",
    "parameter_groups",
    "set_lr",
]
