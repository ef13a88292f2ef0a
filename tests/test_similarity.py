"""The tensor bridge, through `token_similarity` (rust/py/src/similarity.rs).

Values against torch's own cosine similarity, every float dtype, errors that name the
argument, autograd through the libtorch op, and the GIL released while Rust works.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import lightclip
from gil_probe import assert_releases_gil


def reference(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # Independent formulation: broadcast every pair and let torch compute each cosine.
    return F.cosine_similarity(a.unsqueeze(-2), b.unsqueeze(-3), dim=-1, eps=1e-8)


TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


@pytest.mark.parametrize("dtype", list(TOLERANCE))
def test_values_match_torch_for_every_float_dtype(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(3, 7, 16, generator=gen, dtype=torch.float64)
    b = torch.randn(3, 5, 16, generator=gen, dtype=torch.float64)
    out = lightclip.token_similarity(a.to(dtype), b.to(dtype))
    assert out.dtype == dtype
    assert out.shape == (3, 7, 5)
    torch.testing.assert_close(out.double(), reference(a, b), atol=TOLERANCE[dtype], rtol=0)


def test_two_dimensional_inputs_give_a_matrix() -> None:
    a, b = torch.randn(4, 8), torch.randn(6, 8)
    out = lightclip.token_similarity(a, b)
    assert out.shape == (4, 6)
    torch.testing.assert_close(out, reference(a, b))


def test_zero_vector_gives_zero_not_nan() -> None:
    a = torch.zeros(1, 2, 4)
    b = torch.randn(1, 3, 4)
    out = lightclip.token_similarity(a, b)
    assert torch.isfinite(out).all() and (out == 0).all()


def test_integer_tensor_is_a_type_error_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="`b` must be a floating-point tensor") as info:
        lightclip.token_similarity(torch.randn(2, 3, 4), torch.ones(2, 3, 4, dtype=torch.int64))
    assert isinstance(info.value, lightclip.InvalidDtypeError)
    assert isinstance(info.value, lightclip.LightclipError)


def test_mixed_dtypes_are_refused() -> None:
    with pytest.raises(TypeError, match="`a` is Float but `b` is Double"):
        lightclip.token_similarity(torch.randn(2, 3, 4), torch.randn(2, 3, 4, dtype=torch.float64))


@pytest.mark.parametrize(
    ("a_shape", "b_shape", "message"),
    [
        ((2, 3, 4), (3, 3, 4), "batch sizes differ"),
        ((2, 3, 4), (2, 3, 5), "feature sizes differ"),
        ((2, 3, 4), (3, 4), "must both be 2-D"),
        ((4,), (4,), "must both be 2-D"),
        ((2, 3, 0), (2, 3, 0), "at least 1"),
    ],
)
def test_bad_shapes_are_value_errors(a_shape, b_shape, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        lightclip.token_similarity(torch.randn(*a_shape), torch.randn(*b_shape))
    assert isinstance(info.value, lightclip.InvalidInputError)


def test_non_tensor_argument_is_a_type_error_naming_it() -> None:
    with pytest.raises(TypeError, match="'a'.*torch.Tensor"):
        lightclip.token_similarity([[1.0, 2.0]], torch.randn(2, 2))  # type: ignore[arg-type]


def test_autograd_flows_through_the_rust_op() -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(2, 4, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(2, 5, 3, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lightclip.token_similarity, (a, b))

    # And the gradient equals the one torch computes for its own formulation.
    weights = torch.randn(2, 4, 5, dtype=torch.float64, generator=gen)
    (lightclip.token_similarity(a, b) * weights).sum().backward()
    ga, gb = a.grad.clone(), b.grad.clone()
    a.grad = b.grad = None
    (reference(a, b) * weights).sum().backward()
    torch.testing.assert_close(ga, a.grad)
    torch.testing.assert_close(gb, b.grad)


def test_no_grad_of_the_caller_is_honoured() -> None:
    a = torch.randn(1, 2, 3, requires_grad=True)
    with torch.no_grad():
        assert not lightclip.token_similarity(a, a).requires_grad
    assert lightclip.token_similarity(a, a).requires_grad


def test_gil_is_released_during_the_rust_call() -> None:
    # A worker thread makes one long call (a few hundred ms of libtorch work) while this thread
    # keeps stamping the clock in Python. Were the GIL held during the call, this thread could
    # not run at all and its stamps would show a gap as long as the call.
    a = torch.randn(8, 1024, 512)
    b = torch.randn(8, 1024, 512)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # leave the other core to this thread
    try:
        assert_releases_gil(lambda: lightclip.token_similarity(a, b))
    finally:
        torch.set_num_threads(threads)
