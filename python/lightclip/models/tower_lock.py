"""LiT-style locking and gradient checkpointing, shared by the image towers and the text tower.

Every image tower splits into the same six lock groups, in forward order:

    0 stem      the layers before the first stage (ResNet ``conv1``/``bn1``, MobileNet
                ``conv_stem``/``bn1``, Swin ``patch_embed``)
    1-4 stage1..stage4
                the four stages at strides 4/8/16/32 (see each tower); the last one also holds
                what runs between it and the head (MobileNet ``conv_head``/``bn2``, Swin
                ``norm``), as open_clip puts a ViT's ``ln_post`` with its last block
    5 head      pooling/projection to the joint space (``visual.head``)

``lock(unlocked_groups=k)`` freezes every group but the last ``k`` (open_clip's
``lock_image_tower``): ``k=0`` freezes the whole tower, ``k=1`` leaves only the head
trainable. Unlike open_clip's timm adapter, whose projection head always stays trainable and
whose groups are timm's single blocks, ``k=0`` here is the fully locked tower of LiT.

With ``freeze_bn_stats`` the BatchNorm layers of the frozen groups keep their running
statistics: they stay in eval mode even after ``model.train()``. (open_clip swaps them for
torchvision's ``FrozenBatchNorm2d``; keeping the modules keeps the state dict, the export and
``load_state_dict`` unchanged.)

Gradient checkpointing (:func:`checkpointed`) recomputes a stage's activations in the backward
pass instead of keeping them. BatchNorm in training mode would otherwise update its running
statistics a second time during that recomputation; here the recomputation leaves them alone,
so a checkpointed step changes the model exactly as a plain one does.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils.checkpoint import checkpoint

from ..errors import InvalidInputError

#: A lock group: modules and bare parameters that are frozen or left trainable together.
LockGroup = Sequence[nn.Module | nn.Parameter]

#: Names of the image towers' lock groups, first to last.
IMAGE_LOCK_GROUPS = ("stem", "stage1", "stage2", "stage3", "stage4", "head")


def group_parameters(group: LockGroup) -> Iterator[nn.Parameter]:
    for item in group:
        if isinstance(item, nn.Parameter):
            yield item
        else:
            yield from item.parameters()


def checked_unlocked_count(value: object, arg: str) -> int:
    """``value`` as a count of trailing groups to leave trainable (a non-negative int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidInputError(f"{arg}: expected a non-negative int, got {value!r}")
    return value


def keep_in_eval(module: nn.Module) -> None:
    """Marks ``module`` to stay in eval mode through ``train()`` (see :class:`LockableTower`)."""
    module.lightclip_keep_eval = True  # type: ignore[assignment]
    module.eval()


@contextmanager
def no_running_stat_updates(module: nn.Module) -> Iterator[None]:
    """BatchNorm layers in ``module`` run exactly as they would (the same saved tensors, which
    the checkpoint compares), and their running statistics and batch counters are put back
    afterwards."""
    buffers = [
        b
        for m in module.modules()
        if isinstance(m, _BatchNorm) and m.track_running_stats
        for b in (m.running_mean, m.running_var, m.num_batches_tracked)
        if b is not None
    ]
    saved = [b.clone() for b in buffers]
    try:
        yield
    finally:
        with torch.no_grad():
            for b, old in zip(buffers, saved, strict=True):
                b.copy_(old)


def checkpointed(module: nn.Module, *args: Any) -> Any:
    """``module(*args)`` with its activations recomputed in the backward pass (non-reentrant
    ``torch.utils.checkpoint``), without a second BatchNorm statistics update."""

    def contexts() -> tuple[AbstractContextManager[None], AbstractContextManager[None]]:
        return nullcontext(), no_running_stat_updates(module)

    return checkpoint(module, *args, use_reentrant=False, context_fn=contexts)


def run_maybe_checkpointed(enabled: bool, module: nn.Module, *args: Any) -> Any:
    """``checkpointed(module, *args)`` when ``enabled`` and autograd records, else the call."""
    if enabled and torch.is_grad_enabled():
        return checkpointed(module, *args)
    return module(*args)


class LockableTower(nn.Module):
    """Base of the image towers: ``lock``, ``set_grad_checkpointing`` and a ``train`` that keeps
    frozen BatchNorm layers in eval mode. A tower lists its groups in ``lock_groups``."""

    trunk: nn.Module

    def lock_groups(self) -> list[LockGroup]:
        """The six groups of :data:`IMAGE_LOCK_GROUPS`, in that order."""
        raise NotImplementedError

    def lock(self, unlocked_groups: int = 0, freeze_bn_stats: bool = False) -> None:
        """Freeze all but the last ``unlocked_groups`` groups (a count at or above the number
        of groups freezes nothing, as open_clip's slicing does); with ``freeze_bn_stats`` the
        frozen groups' BatchNorm layers also keep their running statistics."""
        unlocked = checked_unlocked_count(unlocked_groups, "unlocked_groups")
        groups = self.lock_groups()
        frozen = groups[: max(len(groups) - unlocked, 0)]
        for group in frozen:
            for p in group_parameters(group):
                p.requires_grad = False
            if freeze_bn_stats:
                for item in group:
                    if isinstance(item, nn.Module):
                        for m in item.modules():
                            if isinstance(m, _BatchNorm):
                                keep_in_eval(m)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each stage's activations in the backward pass (less memory, one more
        forward of the trunk); outputs and gradients are unchanged."""
        self.trunk.grad_checkpointing = bool(enable)

    def train(self, mode: bool = True) -> LockableTower:
        super().train(mode)
        for m in self.modules():
            if getattr(m, "lightclip_keep_eval", False):
                m.eval()
        return self
