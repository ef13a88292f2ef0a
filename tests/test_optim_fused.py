"""The fused AdamW option of ``build_optimizer``: the same updates as torch's default AdamW,
used where torch has the kernel, refused or skipped where it does not."""

from __future__ import annotations

import importlib

import pytest
import torch
from torch import nn

from lightclip.errors import InvalidInputError
from lightclip.optim import build_optimizer


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Embedding(50, 8), nn.Linear(8, 8), nn.LayerNorm(8), nn.Linear(8, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: int = 5) -> None:
    ids = torch.randint(0, 50, (16, 4), generator=torch.Generator().manual_seed(1))
    target = torch.randint(0, 3, (16,), generator=torch.Generator().manual_seed(2))
    for _ in range(steps):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(ids).mean(1), target)
        loss.backward()
        optimizer.step()


def _kwargs() -> dict:
    return dict(lr=1e-2, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)


def test_fused_by_default_on_cpu_and_same_updates_as_torch_default() -> None:
    fused_model, plain_model = _model(), _model()
    fused = build_optimizer(fused_model, **_kwargs())
    assert fused.defaults["fused"] is True
    # The reference: torch's AdamW with its default implementation over the same groups.
    plain = build_optimizer(plain_model, fused=False, **_kwargs())
    assert not plain.defaults["fused"]
    _train(fused_model, fused)
    _train(plain_model, plain)
    for (name, a), (_, b) in zip(
        fused_model.named_parameters(), plain_model.named_parameters(), strict=True
    ):
        assert not torch.equal(a, _model().state_dict()[name]), name  # it trained
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_without_the_kernel_auto_falls_back_and_insisting_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A device torch has no fused kernel for: simulated by emptying torch's list of them.
    foreach_utils = importlib.import_module("torch.utils._foreach_utils")
    monkeypatch.setattr(foreach_utils, "_get_fused_kernels_supported_devices", lambda: [])
    optimizer = build_optimizer(_model(), **_kwargs())
    assert not optimizer.defaults["fused"]
    with pytest.raises(InvalidInputError, match="fused AdamW"):
        build_optimizer(_model(), fused=True, **_kwargs())
