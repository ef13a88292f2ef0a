"""Batched exact matching: `lightclip.match_tokens`.

Rust: rust/core/src/matching/, binding rust/py/src/matching.rs.

Optimality against scipy's linear_sum_assignment on thousands of matrices of many shapes (both
orientations, ties, structured costs) and against brute force on tiny ones (hypothesis);
one-to-one, sorted, padded output; valid blocks; dtypes, devices and numpy; errors; the GIL
released; the thread-count control.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import linear_sum_assignment

import lightclip
from gil_probe import assert_releases_gil


def totals(cost: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Total cost of each item's pairs (pairs with -1 skipped), in float64."""
    cost = np.asarray(cost, dtype=np.float64)
    out = np.zeros(cost.shape[0])
    for b in range(cost.shape[0]):
        keep = rows[b] >= 0
        out[b] = cost[b, rows[b][keep], cols[b][keep]].sum()
    return out


def scipy_totals(cost: np.ndarray, rows_valid=None, cols_valid=None) -> np.ndarray:
    cost = np.asarray(cost, dtype=np.float64)
    out = np.zeros(cost.shape[0])
    for b in range(cost.shape[0]):
        nr = cost.shape[1] if rows_valid is None else int(rows_valid[b])
        nc = cost.shape[2] if cols_valid is None else int(cols_valid[b])
        block = cost[b, :nr, :nc]
        if block.size:
            r, c = linear_sum_assignment(block)
            out[b] = block[r, c].sum()
    return out


def check_valid_output(rows, cols, shape, rows_valid=None, cols_valid=None) -> None:
    batch, n, m = shape
    k = min(n, m)
    assert rows.shape == cols.shape == (batch, k)
    for b in range(batch):
        nr = n if rows_valid is None else int(rows_valid[b])
        nc = m if cols_valid is None else int(cols_valid[b])
        pairs = min(nr, nc)
        r, c = rows[b], cols[b]
        assert (r[pairs:] == -1).all() and (c[pairs:] == -1).all()
        assert ((r[:pairs] >= 0) & (r[:pairs] < nr)).all()
        assert ((c[:pairs] >= 0) & (c[:pairs] < nc)).all()
        assert (np.diff(r[:pairs]) > 0).all(), "rows must be distinct and sorted"
        assert len(set(c[:pairs].tolist())) == pairs, "a column is used twice"


def assert_optimal(ours: np.ndarray, reference: np.ndarray) -> None:
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


SHAPES = [(1, 1), (1, 9), (9, 1), (3, 7), (7, 3), (16, 49), (49, 16), (32, 49), (49, 77), (77, 49)]


@pytest.mark.parametrize("shape", SHAPES)
def test_totals_equal_scipy_on_random_costs(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    n, m = shape
    batch = max(8, 3000 // (n * m) + 8)  # thousands of small matrices, fewer big ones
    cost = rng.uniform(0.0, 2.0, size=(batch, n, m)).astype(np.float32)
    rows, cols = lightclip.match_tokens(torch.from_numpy(cost))
    rows, cols = rows.numpy(), cols.numpy()
    check_valid_output(rows, cols, cost.shape)
    assert_optimal(totals(cost, rows, cols), scipy_totals(cost))


def test_a_large_batch_of_token_sized_problems_matches_scipy() -> None:
    rng = np.random.default_rng(11)
    tokens_img = rng.normal(size=(64, 196, 32))
    tokens_txt = rng.normal(size=(64, 77, 32))
    tokens_img /= np.linalg.norm(tokens_img, axis=-1, keepdims=True)
    tokens_txt /= np.linalg.norm(tokens_txt, axis=-1, keepdims=True)
    cost = 1.0 - tokens_img @ tokens_txt.transpose(0, 2, 1)  # [64, 196, 77], float64
    rows, cols = lightclip.match_tokens(torch.from_numpy(cost))
    check_valid_output(rows.numpy(), cols.numpy(), cost.shape)
    assert_optimal(totals(cost, rows.numpy(), cols.numpy()), scipy_totals(cost))


@pytest.mark.parametrize("shape", [(5, 5), (8, 20), (20, 8), (49, 16)])
def test_ties_everywhere_still_give_the_optimum(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(5)
    cost = rng.integers(0, 3, size=(200, *shape)).astype(np.float32)
    cost[:20] = 1.0  # all-equal matrices: every assignment is optimal
    rows, cols = lightclip.match_tokens(cost)
    check_valid_output(rows, cols, cost.shape)
    assert_optimal(totals(cost, rows, cols), scipy_totals(cost))


@pytest.mark.parametrize("shape", [(49, 16), (49, 77), (196, 77)])
def test_structured_all_words_want_the_same_patches(shape: tuple[int, int]) -> None:
    # Every word (column) ranks the patches (rows) the same way: the greedy choice collides
    # for every word and long augmenting paths are needed.
    rng = np.random.default_rng(9)
    n, m = shape
    appeal = rng.uniform(0, 1, size=(16, n, 1))
    cost = (1.0 - appeal + 0.01 * rng.uniform(0, 1, size=(16, n, m))).astype(np.float32)
    rows, cols = lightclip.match_tokens(torch.from_numpy(cost))
    check_valid_output(rows.numpy(), cols.numpy(), cost.shape)
    assert_optimal(totals(cost, rows.numpy(), cols.numpy()), scipy_totals(cost))


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 6),
    m=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
    integer=st.booleans(),
)
def test_brute_force_optimum_on_tiny_matrices(n: int, m: int, seed: int, integer: bool) -> None:
    rng = np.random.default_rng(seed)
    cost = rng.integers(-2, 3, size=(n, m)) if integer else rng.normal(size=(n, m))
    cost = cost.astype(np.float32)
    rows, cols = lightclip.match_tokens(cost[None])
    check_valid_output(rows, cols, (1, n, m))
    small, large = (n, m) if n <= m else (m, n)
    block = cost if n <= m else cost.T
    best = min(
        sum(float(block[i, p[i]]) for i in range(small))
        for p in itertools.permutations(range(large), small)
    )
    assert abs(totals(cost[None], rows, cols)[0] - best) <= 1e-5 * max(1.0, abs(best))


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 6),
    n=st.integers(1, 12),
    m=st.integers(1, 12),
    seed=st.integers(0, 2**32 - 1),
)
def test_valid_blocks_are_matched_alone(batch: int, n: int, m: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cost = rng.uniform(0, 2, size=(batch, n, m)).astype(np.float32)
    rows_valid = rng.integers(0, n + 1, size=batch)
    cols_valid = rng.integers(0, m + 1, size=batch)
    # Whatever lies outside the valid block must never be read, even NaN.
    for b in range(batch):
        cost[b, rows_valid[b] :, :] = np.nan
        cost[b, :, cols_valid[b] :] = np.inf
    rows, cols = lightclip.match_tokens(
        torch.from_numpy(cost), torch.from_numpy(rows_valid), torch.from_numpy(cols_valid)
    )
    rows, cols = rows.numpy(), cols.numpy()
    check_valid_output(rows, cols, cost.shape, rows_valid, cols_valid)
    assert_optimal(totals(cost, rows, cols), scipy_totals(cost, rows_valid, cols_valid))


def test_lengths_accept_lists_numpy_and_tensors_of_any_int_dtype() -> None:
    cost = torch.rand(3, 4, 5)
    want = lightclip.match_tokens(cost, [4, 2, 0], [5, 5, 3])
    for lengths in (np.array([5, 5, 3]), torch.tensor([5, 5, 3], dtype=torch.int32)):
        got = lightclip.match_tokens(cost, torch.tensor([4, 2, 0], dtype=torch.int16), lengths)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
    assert (want[0][2] == -1).all(), "an item with no valid rows has no pairs"


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_every_float_dtype_is_accepted(dtype: torch.dtype) -> None:
    cost = torch.rand(4, 6, 9, dtype=torch.float64).to(dtype)
    rows, cols = lightclip.match_tokens(cost)
    assert rows.dtype == cols.dtype == torch.int64
    assert rows.device == cost.device
    as_f64 = cost.double().numpy()
    check_valid_output(rows.numpy(), cols.numpy(), cost.shape)
    assert_optimal(totals(as_f64, rows.numpy(), cols.numpy()), scipy_totals(as_f64))


def test_numpy_in_numpy_out() -> None:
    cost = np.random.default_rng(0).uniform(size=(2, 3, 4))
    rows, cols = lightclip.match_tokens(cost)
    assert isinstance(rows, np.ndarray) and rows.dtype == np.int64 and rows.shape == (2, 3)
    assert_optimal(totals(cost, rows, cols), scipy_totals(cost))


def test_non_contiguous_and_grad_tensors_are_read_correctly() -> None:
    base = torch.rand(3, 9, 7, dtype=torch.float64, requires_grad=True)
    cost = base.transpose(1, 2)  # [3, 7, 9], non-contiguous, part of a graph
    rows, cols = lightclip.match_tokens(cost)
    c = cost.detach().numpy()
    assert_optimal(totals(c, rows.numpy(), cols.numpy()), scipy_totals(c))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_results_come_back_on_the_cost_device() -> None:
    cost = torch.rand(8, 49, 16, device="cuda")
    rows, cols = lightclip.match_tokens(cost, cols_valid=torch.full((8,), 10, device="cuda"))
    assert rows.device == cols.device == cost.device
    c = cost.cpu().numpy()
    cv = np.full(8, 10)
    r, k = rows.cpu().numpy(), cols.cpu().numpy()
    assert_optimal(totals(c, r, k), scipy_totals(c, None, cv))


def test_empty_batch_gives_empty_results() -> None:
    rows, cols = lightclip.match_tokens(torch.zeros(0, 3, 5))
    assert rows.shape == cols.shape == (0, 3)


@pytest.mark.parametrize(
    ("cost", "kwargs", "message"),
    [
        (torch.tensor([[[0.0, float("nan")]]]), {}, r"`cost`.*item 0.*NaN.*row 0, column 1"),
        (torch.tensor([[[0.0]], [[float("inf")]]]), {}, r"`cost`.*item 1.*inf"),
        (torch.zeros(2, 0, 3), {}, r"`cost`.*zero-size"),
        (torch.zeros(2, 3, 0), {}, r"`cost`.*zero-size"),
        (torch.zeros(3, 4), {}, r"`cost`.*3-D"),
        (torch.zeros(2, 3, 4, 5), {}, r"`cost`.*3-D"),
        (torch.zeros(2, 3, 4), {"rows_valid": [3]}, r"`rows_valid`.*1 entries.*2 items"),
        (torch.zeros(2, 3, 4), {"cols_valid": [4, 5]}, r"`cols_valid`.*item 1 is 5"),
        (torch.zeros(2, 3, 4), {"cols_valid": [4, -1]}, r"`cols_valid`.*item 1 is -1"),
        (torch.zeros(2, 3, 4), {"rows_valid": [[1, 2]]}, r"`rows_valid`.*1-D"),
        (torch.full((1, 2, 3), 3e38), {}, r"`cost`.*item 0.*too large"),
        (torch.full((1, 2, 3), 1e300, dtype=torch.float64), {}, r"`cost`.*item 0.*inf"),
    ],
)
def test_bad_input_is_a_value_error_naming_it(cost, kwargs, message) -> None:
    with pytest.raises(ValueError, match=message) as info:
        lightclip.match_tokens(cost, **kwargs)
    assert isinstance(info.value, lightclip.InvalidInputError)


def test_wrong_types_are_type_errors_naming_the_argument() -> None:
    with pytest.raises(TypeError, match="`cost` must be a floating-point") as info:
        lightclip.match_tokens(torch.zeros(1, 2, 2, dtype=torch.int64))
    assert isinstance(info.value, lightclip.InvalidDtypeError)
    assert isinstance(info.value, lightclip.LightclipError)
    with pytest.raises(TypeError, match="`cost` must be a torch.Tensor or a numpy.ndarray"):
        lightclip.match_tokens([[[0.0, 1.0]]])
    with pytest.raises(TypeError, match="`cols_valid` must hold integers"):
        lightclip.match_tokens(torch.zeros(1, 2, 2), cols_valid=torch.tensor([1.5]))


def test_extreme_but_accepted_values_never_hang() -> None:
    # Costs at the accepted limit, of both signs: solved exactly or refused, never a hang.
    rng = np.random.default_rng(4)
    cost = (rng.choice([-1.0, 1.0], size=(8, 9, 13)) * 1e30).astype(np.float32)
    start = time.perf_counter()
    try:
        rows, cols = lightclip.match_tokens(cost)
        check_valid_output(rows, cols, cost.shape)
        assert_optimal(totals(cost, rows, cols) / 1e30, scipy_totals(cost) / 1e30)
    except ValueError as error:
        assert "`cost`" in str(error)
    assert time.perf_counter() - start < 5.0


def test_thread_count_control_and_same_results_on_one_thread() -> None:
    rng = np.random.default_rng(2)
    cost = torch.from_numpy(rng.uniform(size=(64, 49, 20)).astype(np.float32))
    before = lightclip.get_num_threads()
    assert before >= 1
    try:
        want = lightclip.match_tokens(cost)
        lightclip.set_num_threads(1)
        assert lightclip.get_num_threads() == 1
        got = lightclip.match_tokens(cost)
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        lightclip.set_num_threads(3)
        assert lightclip.get_num_threads() == 3
        with pytest.raises(ValueError, match="`n`.*at least 1"):
            lightclip.set_num_threads(0)
    finally:
        lightclip.set_num_threads(before)
    assert lightclip.get_num_threads() == before


def test_gil_is_released_during_matching() -> None:
    # As in test_similarity: a worker makes one long call while this thread stamps the clock;
    # a held GIL would show as one gap as long as the call.
    rng = np.random.default_rng(3)
    appeal = rng.uniform(size=(512, 196, 1))
    cost = torch.from_numpy((1 - appeal + 0.01 * rng.uniform(size=(512, 196, 77))).astype("f4"))
    before = lightclip.get_num_threads()
    lightclip.set_num_threads(1)  # leave the other core to this thread
    try:
        assert_releases_gil(lambda: lightclip.match_tokens(cost))
    finally:
        lightclip.set_num_threads(before)
