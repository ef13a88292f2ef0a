"""Progressive soft labels (rust/core/src/schedule.rs, rust/py/src/labels.rs, lightclip/labels.py).

Every label kind is checked against a few lines of plain torch written here independently of
the Rust code; invariants (rows sum to 1, monotone softening, ramp end points) are property
tests; bad input must be a ValueError/TypeError naming the argument.
"""

from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import lightclip
from gil_probe import assert_releases_gil
from lightclip.labels import LabelSchedule, soft_label_rows

R1, R2, ALPHA = 0.33, 0.66, 0.2


# --- independent references ----------------------------------------------------------------------


def reference_weights(p, r1=R1, r2=R2, alpha=ALPHA, ramp=False, width=0.1):
    """The schedule as documented: (identity, uniform, negatives) weights."""
    if ramp:
        smooth = alpha * min(max((p - r1 + width / 2) / width, 0.0), 1.0)
        share = min(max((p - r2 + width / 2) / width, 0.0), 1.0)
    else:
        smooth = alpha if p >= r1 else 0.0
        share = 1.0 if p >= r2 else 0.0
    return 1.0 - smooth, smooth * (1.0 - share), smooth * share


def reference_negative_weights(z: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax over the off-diagonal entries, by explicit exponentials."""
    n = z.shape[0]
    off = 1.0 - torch.eye(n, dtype=z.dtype)
    shifted = z - z.max(dim=1, keepdim=True).values
    e = torch.exp(shifted) * off
    return e / e.sum(dim=1, keepdim=True)


def reference_targets(z: torch.Tensor, p: float, **schedule) -> tuple[torch.Tensor, torch.Tensor]:
    z = z.double()
    n = z.shape[0]
    eye = torch.eye(n, dtype=torch.float64)
    if n == 1:
        return eye, eye
    identity, uniform, negatives = reference_weights(p, **schedule)
    u = (1.0 - eye) / (n - 1)
    i2t = identity * eye + uniform * u + negatives * reference_negative_weights(z)
    t2i = identity * eye + uniform * u + negatives * reference_negative_weights(z.T)
    return i2t, t2i


def random_logits(n: int, seed: int = 0, scale: float = 14.0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    f = torch.nn.functional.normalize(torch.randn(n, 32, generator=gen, dtype=torch.float64), dim=1)
    g = torch.nn.functional.normalize(torch.randn(n, 32, generator=gen, dtype=torch.float64), dim=1)
    return scale * f @ g.T


# --- each label kind against plain torch ---------------------------------------------------------


@pytest.mark.parametrize(("progress", "kind"), [(0.1, "hard"), (0.5, "uniform"), (0.9, "negative")])
@pytest.mark.parametrize("n", [2, 3, 17, 64])
def test_each_label_kind_matches_plain_torch(progress, kind, n) -> None:
    z = random_logits(n, seed=n)
    i2t, t2i = lightclip.soft_labels(z, progress)
    ref_i2t, ref_t2i = reference_targets(z, progress)
    assert lightclip.LabelSchedule().phase(progress) == kind
    torch.testing.assert_close(i2t, ref_i2t, atol=1e-12, rtol=0)
    torch.testing.assert_close(t2i, ref_t2i, atol=1e-12, rtol=0)


def test_hard_and_uniform_labels_have_the_documented_values() -> None:
    z = random_logits(5)
    hard, hard_t = lightclip.soft_labels(z, 0.0)
    assert torch.equal(hard, torch.eye(5, dtype=z.dtype)) and torch.equal(hard_t, hard)
    uni, uni_t = lightclip.soft_labels(z, 0.4, schedule=LabelSchedule(alpha=0.3))
    assert torch.allclose(uni.diagonal(), torch.full((5,), 0.7, dtype=z.dtype))
    off = uni[~torch.eye(5, dtype=torch.bool)]
    assert torch.allclose(off, torch.full_like(off, 0.3 / 4))
    assert torch.equal(uni, uni_t)


def test_negative_weights_follow_the_similarity_direction() -> None:
    # Image 0 is far more similar to text 2 than to text 1; text 0 to image 1 than to image 2.
    z = torch.tensor([[10.0, 1.0, 5.0], [6.0, 10.0, 0.0], [2.0, 0.0, 10.0]])
    i2t, t2i = lightclip.soft_labels(z, 1.0)
    assert i2t[0, 2] > i2t[0, 1]  # row-wise over texts
    assert t2i[0, 1] > t2i[0, 2]  # column-wise over images
    expected = 0.2 * torch.softmax(torch.tensor([6.0, 2.0]), dim=0)
    torch.testing.assert_close(t2i[0, 1:], expected)


# --- invariants ----------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 24),
    progress=st.floats(0.0, 1.0),
    alpha=st.floats(0.0, 0.99),
    ramp=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rows_sum_to_one_and_match_the_reference(n, progress, alpha, ramp, seed) -> None:
    z = random_logits(n, seed=seed, scale=50.0)
    i2t, t2i = lightclip.soft_labels(z, progress, schedule=LabelSchedule(alpha=alpha, ramp=ramp))
    ref_i2t, ref_t2i = reference_targets(z, progress, alpha=alpha, ramp=ramp)
    for got, ref in ((i2t, ref_i2t), (t2i, ref_t2i)):
        assert (got >= 0).all()
        torch.testing.assert_close(got.sum(dim=1), torch.ones(n, dtype=got.dtype))
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=0)


@settings(max_examples=80, deadline=None)
@given(
    r1=st.floats(0.0, 1.0),
    gap=st.floats(0.0, 1.0),
    alpha=st.floats(0.0, 0.99),
    width=st.floats(0.01, 1.0),
    progress=st.floats(0.0, 1.0),
)
def test_weights_match_the_documented_schedule(r1, gap, alpha, width, progress) -> None:
    r2 = min(1.0, r1 + gap)
    for ramp in (False, True):
        schedule = lightclip.LabelSchedule(r1, r2, alpha, ramp=ramp, ramp_width=width)
        got = schedule.weights(progress)
        assert isinstance(got, tuple) and len(got) == 3
        expected = reference_weights(progress, r1, r2, alpha, ramp, width)
        assert got == pytest.approx(expected, abs=1e-12)
        assert sum(got) == pytest.approx(1.0, abs=1e-12)


def test_phase_boundaries() -> None:
    s = lightclip.LabelSchedule()
    eps = 1e-9
    assert [s.phase(p) for p in (0.0, R1 - eps, R1, R2 - eps, R2, 1.0)] == [
        "hard",
        "hard",
        "uniform",
        "uniform",
        "negative",
        "negative",
    ]
    z = random_logits(6)
    assert torch.equal(lightclip.soft_labels(z, R1 - eps)[0], torch.eye(6, dtype=z.dtype))
    torch.testing.assert_close(lightclip.soft_labels(z, R1)[0], reference_targets(z, 0.5)[0])
    torch.testing.assert_close(lightclip.soft_labels(z, R2)[0], reference_targets(z, 1.0)[0])


@pytest.mark.parametrize("width", [0.05, 0.1, 0.3, 0.4])
def test_ramp_end_points_equal_the_hard_phases(width) -> None:
    z = random_logits(9, seed=3)
    outside = [0.0, R1 - width / 2, R1 + width / 2, R2 - width / 2, R2 + width / 2, 1.0]
    if width > R2 - R1:  # overlapping windows skip the pure uniform phase
        outside = [0.0, R1 - width / 2, R2 + width / 2, 1.0]
    for p in outside:
        ramped = lightclip.soft_labels(z, p, schedule=LabelSchedule(ramp=True, ramp_width=width))
        hard = lightclip.soft_labels(z, p)
        for a, b in zip(ramped, hard, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0, msg=f"p={p}")
    # Inside a window the ramp lies strictly between its neighbouring phases.
    mid = lightclip.soft_labels(z, R1, schedule=LabelSchedule(ramp=True, ramp_width=width))[0]
    assert 1 - ALPHA < mid[0, 0].item() < 1.0


def test_single_pair_batch_is_identity_in_every_phase() -> None:
    for p in (0.0, 0.5, 1.0):
        for ramp in (False, True):
            schedule = LabelSchedule(ramp=ramp)
            i2t, t2i = lightclip.soft_labels(torch.tensor([[3.5]]), p, schedule=schedule)
            assert torch.equal(i2t, torch.ones(1, 1)) and torch.equal(t2i, torch.ones(1, 1))


# --- dtypes, devices, autograd -------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "atol"), [(torch.float16, 2e-3), (torch.bfloat16, 1e-2)])
@pytest.mark.parametrize("progress", [0.5, 0.9])
def test_half_precision_gives_finite_rows_in_the_input_dtype(dtype, atol, progress) -> None:
    # Scale 100 (the clamp) makes exp() overflow in float16 if computed there.
    z = random_logits(128, seed=5, scale=100.0)
    i2t, t2i = lightclip.soft_labels(z.to(dtype), progress)
    ref_i2t, ref_t2i = reference_targets(z.to(dtype).double(), progress)
    for got, ref in ((i2t, ref_i2t), (t2i, ref_t2i)):
        assert got.dtype == dtype
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), ref, atol=atol, rtol=0)
        torch.testing.assert_close(
            got.double().sum(1), torch.ones(128, dtype=torch.float64), atol=atol * 2, rtol=0
        )


def test_float32_matches_float64_reference() -> None:
    z = random_logits(50, seed=8, scale=100.0)
    i2t, t2i = lightclip.soft_labels(z.float(), 0.9)
    assert i2t.dtype == torch.float32
    ref_i2t, ref_t2i = reference_targets(z.float().double(), 0.9)
    torch.testing.assert_close(i2t.double(), ref_i2t, atol=1e-6, rtol=0)
    torch.testing.assert_close(t2i.double(), ref_t2i, atol=1e-6, rtol=0)


def test_targets_are_detached_and_the_input_is_untouched() -> None:
    z = random_logits(7).float().requires_grad_(True)
    before = z.detach().clone()
    for p in (0.1, 0.5, 0.9):
        i2t, t2i = lightclip.soft_labels(z, p)
        assert not i2t.requires_grad and not t2i.requires_grad
        assert i2t.grad_fn is None and t2i.grad_fn is None
        assert i2t.device == z.device
    assert torch.equal(z.detach(), before)


def test_non_contiguous_logits_give_the_same_targets() -> None:
    z = random_logits(11, seed=2)
    i2t, t2i = lightclip.soft_labels(z.T.contiguous().T, 0.9)  # a transposed (strided) view
    ref_i2t, ref_t2i = lightclip.soft_labels(z.contiguous(), 0.9)
    torch.testing.assert_close(i2t, ref_i2t)
    torch.testing.assert_close(t2i, ref_t2i)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_targets_stay_on_the_device_and_match_cpu() -> None:
    z = random_logits(256, seed=4, scale=50.0).float()
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        i2t, t2i = lightclip.soft_labels(z.to("cuda", dtype), 0.9)
        assert i2t.is_cuda and t2i.is_cuda and i2t.dtype == dtype
        ref = lightclip.soft_labels(z.to(dtype), 0.9)
        torch.testing.assert_close(i2t.cpu().float(), ref[0].float(), atol=1e-2, rtol=0)


# --- row blocks (local_loss) ---------------------------------------------------------------------


@pytest.mark.parametrize("progress", [0.1, 0.5, 0.9])
def test_row_blocks_equal_the_rows_of_the_full_targets(progress) -> None:
    z = random_logits(12, seed=6)
    i2t, t2i = lightclip.soft_labels(z, progress)
    for start, rows in ((0, 4), (4, 4), (8, 4), (3, 5)):
        block = soft_label_rows(z[start : start + rows], progress, start)
        torch.testing.assert_close(block, i2t[start : start + rows], atol=1e-12, rtol=0)
        block_t = soft_label_rows(
            z.T[start : start + rows], progress, start, schedule=LabelSchedule()
        )
        torch.testing.assert_close(block_t, t2i[start : start + rows], atol=1e-12, rtol=0)


@pytest.mark.parametrize("offset", [-1, 9])
def test_row_block_offset_out_of_range_is_refused(offset) -> None:
    with pytest.raises(ValueError, match="invalid `positive_offset`"):
        soft_label_rows(torch.zeros(4, 12), 0.9, offset)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("logits", "message"),
    [
        (torch.zeros(3, 4), r"invalid `logits`: must be square .*\[3, 4\]"),
        (torch.zeros(4), "invalid `logits`: must be a 2-D matrix"),
        (torch.zeros(2, 2, 2), "invalid `logits`: must be a 2-D matrix"),
        (torch.zeros(0, 0), "invalid `logits`: must have at least one row"),
    ],
)
def test_bad_logits_shapes_are_value_errors(logits, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        lightclip.soft_labels(logits, 0.5)
    assert isinstance(info.value, lightclip.InvalidInputError)


def test_integer_logits_are_a_type_error() -> None:
    with pytest.raises(TypeError, match="`logits` must be a floating-point tensor"):
        lightclip.soft_labels(torch.zeros(3, 3, dtype=torch.int64), 0.5)


@pytest.mark.parametrize("progress", [-0.01, 1.5, math.nan, math.inf])
def test_progress_outside_the_unit_interval_is_a_value_error(progress) -> None:
    with pytest.raises(ValueError, match="invalid `progress`: must lie in"):
        lightclip.soft_labels(torch.zeros(3, 3), progress)
    with pytest.raises(ValueError, match="invalid `progress`"):
        soft_label_rows(torch.zeros(2, 3), progress)
    for method in (LabelSchedule().phase, LabelSchedule().weights):
        with pytest.raises(ValueError, match="invalid `progress`"):
            method(progress)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.0}, r"invalid `alpha`: must lie in \[0, 1\)"),
        ({"alpha": -0.1}, "invalid `alpha`"),
        ({"alpha": math.nan}, "invalid `alpha`: must be a finite number"),
        ({"r1": 0.7, "r2": 0.6}, r"invalid `r1`: must not exceed `r2` \(0.6\)"),
        ({"r2": 1.2}, "invalid `r2`"),
        ({"ramp": True, "ramp_width": 0.0}, "invalid `ramp_width`"),
        ({"ramp_width": 1.5}, "invalid `ramp_width`"),  # checked with the ramp off too
    ],
)
def test_bad_schedules_are_refused_when_made(kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        LabelSchedule(**kwargs)
    assert isinstance(info.value, lightclip.InvalidInputError)


def test_schedule_argument_must_be_a_label_schedule() -> None:
    with pytest.raises(TypeError, match="'schedule'.*LabelSchedule"):
        lightclip.soft_labels(torch.zeros(3, 3), 0.5, schedule={"alpha": 0.3})  # type: ignore[arg-type]


def test_schedule_is_a_frozen_value_that_survives_pickling() -> None:
    s = LabelSchedule(0.2, 0.7, 0.3, ramp=True, ramp_width=0.25)
    assert (s.r1, s.r2, s.alpha, s.ramp, s.ramp_width) == (0.2, 0.7, 0.3, True, 0.25)
    assert repr(s) == "LabelSchedule(r1=0.2, r2=0.7, alpha=0.3, ramp=True, ramp_width=0.25)"
    assert s == LabelSchedule(0.2, 0.7, 0.3, True, 0.25) and s != LabelSchedule()
    for clone in (pickle.loads(pickle.dumps(s)), copy.deepcopy(s)):
        assert clone == s and clone.weights(0.6) == s.weights(0.6)
    with pytest.raises(AttributeError):
        s.alpha = 0.1  # type: ignore[misc]
    assert lightclip.LabelSchedule is LabelSchedule


@pytest.mark.parametrize("bad", [math.inf, math.nan])
def test_non_finite_logits_are_refused_where_they_are_read(bad) -> None:
    z = torch.zeros(3, 3)
    z[0, 1] = bad
    with pytest.raises(ValueError, match="invalid `logits`: contains inf or NaN"):
        lightclip.soft_labels(z, 0.9)
    with pytest.raises(ValueError, match="invalid `logits`: contains inf or NaN"):
        soft_label_rows(z[:2], 0.9, 0)  # row 0 holds the bad value as a negative
    # The hard and uniform phases never read the values.
    assert torch.isfinite(lightclip.soft_labels(z, 0.5)[0]).all()


def test_minus_inf_negative_gets_zero_weight_but_a_row_of_them_is_refused() -> None:
    z = torch.zeros(3, 3)
    z[0, 1] = -math.inf
    i2t, t2i = lightclip.soft_labels(z, 1.0)
    torch.testing.assert_close(i2t[0], torch.tensor([0.8, 0.0, 0.2]))
    torch.testing.assert_close(t2i[1], torch.tensor([0.0, 0.8, 0.2]))
    z[0, 2] = -math.inf  # image 0 now has no usable negative at all
    with pytest.raises(ValueError, match="invalid `logits`: contains inf or NaN"):
        lightclip.soft_labels(z, 1.0)


def test_huge_but_finite_logits_are_accepted() -> None:
    # Their sum overflows float32; the finiteness check must not mistake that for an inf.
    z = torch.full((4, 4), 3e38)
    z[0, 1] = 2e38
    i2t, _ = lightclip.soft_labels(z, 0.9)
    assert torch.isfinite(i2t).all()
    torch.testing.assert_close(i2t[1], torch.tensor([0.2 / 3, 0.8, 0.2 / 3, 0.2 / 3]))


# --- the GIL -------------------------------------------------------------------------------------


def test_gil_is_released_during_the_label_computation() -> None:
    z = torch.randn(2000, 2000) * 10
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert_releases_gil(lambda: [lightclip.soft_labels(z, 0.9) for _ in range(3)])
    finally:
        torch.set_num_threads(threads)
