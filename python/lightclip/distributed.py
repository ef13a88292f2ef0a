"""All-gathering features across ranks so the contrastive loss sees the global batch.

The two switches follow open_clip's ``ClipLoss``:

* ``gather_with_grad=False``: the other ranks' features arrive as constants and this rank's
  own slice is put back as the local tensor, so gradients reach the local features only.
  With ``local_loss=False`` every rank computes the whole loss and its gradient with respect
  to the local features is exactly the global loss's; DDP then averages the ranks' gradients,
  so the gathered losses (contrastive, soft-target distillation) reach the parameters at
  1/world_size of their weight, as in open_clip. The per-rank losses (token, MLM, feature
  distillation) keep theirs, so with more than one loss this switch shifts their balance.
* ``gather_with_grad=True``: ``torch.distributed.nn.all_gather`` keeps the graph across ranks;
  its backward sums the gradients of every rank's loss into each rank's local features.

Local batch sizes must be equal on every rank (``drop_last`` in training); they are checked
with one small extra collective so a mismatch is a clear error on every rank, not a hang.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.distributed as dist

from .errors import InvalidInputError

__all__ = ["DistributedContext", "current_context", "gather_features"]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1


def current_context() -> DistributedContext:
    """Rank and world size of the initialised default process group, else (0, 1)."""
    if dist.is_available() and dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size())
    return DistributedContext()


def _check_equal_local_batches(local: torch.Tensor, world_size: int) -> None:
    size = torch.tensor([local.shape[0]], dtype=torch.long, device=local.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    if len(set(counts)) != 1:
        raise InvalidInputError(
            f"invalid `image_features`: every rank must hold the same number of samples to "
            f"all-gather, got {counts} per rank (drop the last incomplete batch)"
        )


def _gather(local: torch.Tensor, ctx: DistributedContext, *, with_grad: bool, keep_local: bool):
    if with_grad:
        # Imported here: torch.distributed.nn pulls in the RPC machinery, which a
        # single-process run never needs.
        from torch.distributed.nn.functional import all_gather as all_gather_with_grad

        return torch.cat(all_gather_with_grad(local), dim=0)
    parts = [torch.empty_like(local) for _ in range(ctx.world_size)]
    dist.all_gather(parts, local.detach().contiguous())
    if keep_local:
        # Put the local tensor itself back so autograd reaches this rank's features.
        parts[ctx.rank] = local
    return torch.cat(parts, dim=0)


def gather_features(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    *,
    local_loss: bool = False,
    gather_with_grad: bool = False,
    context: DistributedContext | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All-gathers both feature matrices along the batch axis, ordered by rank.

    Returns the inputs unchanged when not distributed. With ``local_loss`` and without
    ``gather_with_grad`` the gathered copies carry no gradient at all: the local rows of the
    logits are then built from the local tensors by the caller (as open_clip does).
    """
    ctx = context if context is not None else current_context()
    if not ctx.is_distributed:
        return image_features, text_features
    if image_features.shape[0] != text_features.shape[0]:
        raise InvalidInputError(
            f"invalid `text_features`: {text_features.shape[0]} rows but `image_features` has "
            f"{image_features.shape[0]}"
        )
    _check_equal_local_batches(image_features, ctx.world_size)
    keep_local = not local_loss
    return (
        _gather(image_features, ctx, with_grad=gather_with_grad, keep_local=keep_local),
        _gather(text_features, ctx, with_grad=gather_with_grad, keep_local=keep_local),
    )
