"""Shared pieces of the tests that compare a LightCLIP model with open_clip or timm (imported
by tests/test_export.py, test_pretrained.py, test_model_api.py): BatchNorm layers that count,
and the fp32 tolerance two libraries' sums of the same products meet."""

from __future__ import annotations

import torch


def randomise_batch_norm(model: torch.nn.Module, seed: int) -> None:
    """Fresh BN layers are identities in eval mode; random statistics and affine weights make
    them count, so a comparison would see a layer that was mapped wrongly or left out."""
    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=gen))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=gen))


def assert_close_fp32(got: torch.Tensor, want: torch.Tensor) -> None:
    """Equal up to fp32 rounding, relative to the tensor's scale: the two models sum the same
    products in a different order (fused vs separate q/k/v, other conv algorithms), so single
    elements near zero can differ by more than a per-element rtol allows."""
    assert got.shape == want.shape
    scale = want.abs().max().item()
    err = (got - want).abs().max().item()
    assert err <= 1e-5 * scale + 1e-7, f"max error {err:.3g} at scale {scale:.3g}"
