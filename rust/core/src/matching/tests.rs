//! Solver and batch tests against independent references: brute force over permutations for
//! tiny matrices, `pathfinding`'s Kuhn–Munkres (integer costs) for larger ones, and the
//! one-to-one invariants as properties.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;
use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::simd::Kernel;
use super::*;

/// Minimum total over every injective map rows → cols (rows ≤ cols), by enumeration.
fn brute_force(cost: &[f32], rows: usize, cols: usize) -> f64 {
    fn go(cost: &[f32], rows: usize, cols: usize, row: usize, used: &mut Vec<bool>) -> f64 {
        if row == rows {
            return 0.0;
        }
        let mut best = f64::INFINITY;
        for c in 0..cols {
            if !used[c] {
                used[c] = true;
                let rest = go(cost, rows, cols, row + 1, used);
                best = best.min(cost[row * cols + c] as f64 + rest);
                used[c] = false;
            }
        }
        best
    }
    go(cost, rows, cols, 0, &mut vec![false; cols])
}

fn total(cost: &[f32], cols: usize, col_of_row: &[u32]) -> f64 {
    col_of_row
        .iter()
        .enumerate()
        .map(|(r, &c)| cost[r * cols + c as usize] as f64)
        .sum()
}

fn assert_one_to_one(col_of_row: &[u32], cols: usize) {
    let mut seen = vec![false; cols];
    for &c in col_of_row {
        assert!((c as usize) < cols, "column {c} out of range");
        assert!(!seen[c as usize], "column {c} used twice");
        seen[c as usize] = true;
    }
}

fn solve_with(kernel: Kernel, cost: &[f32], rows: usize, cols: usize) -> Vec<u32> {
    let mut ws = Workspace::with_kernel(kernel);
    let buf = ws.reset(rows, cols);
    let stride = buf.len() / rows.max(1);
    for r in 0..rows {
        buf[r * stride..r * stride + cols].copy_from_slice(&cost[r * cols..(r + 1) * cols]);
    }
    ws.solve().unwrap();
    ws.col_of_row().to_vec()
}

/// Small integer-valued costs make exact ties common — the hard case for tie handling.
fn small_matrix() -> impl Strategy<Value = (usize, usize, Vec<f32>)> {
    (1usize..=6, 0usize..=3).prop_flat_map(|(rows, extra)| {
        let cols = rows + extra;
        (
            Just(rows),
            Just(cols),
            prop::collection::vec(
                prop_oneof![(0i32..4).prop_map(|x| x as f32), -5.0f32..5.0],
                rows * cols,
            ),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(600))]

    #[test]
    fn optimal_like_brute_force((rows, cols, cost) in small_matrix()) {
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let assignment = solve_with(kernel, &cost, rows, cols);
            prop_assert_eq!(assignment.len(), rows);
            assert_one_to_one(&assignment, cols);
            let want = brute_force(&cost, rows, cols);
            let got = total(&cost, cols, &assignment);
            prop_assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0), "got {got}, optimum {want}");
        }
    }

    #[test]
    fn batch_pairs_are_one_to_one_sorted_and_padded(
        seed in any::<u64>(), batch in 1usize..6, rows in 1usize..12, cols in 1usize..12,
    ) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let cost: Vec<f32> = (0..batch * rows * cols).map(|_| rng.gen_range(0.0..2.0)).collect();
        let rv: Vec<i64> = (0..batch).map(|_| rng.gen_range(0..=rows) as i64).collect();
        let cv: Vec<i64> = (0..batch).map(|_| rng.gen_range(0..=cols) as i64).collect();
        let shape = BatchShape { batch, rows, cols };
        let out = match_batch(&cost, shape, Some(&rv), Some(&cv)).unwrap();
        let k = shape.pairs();
        for b in 0..batch {
            let (nr, nc) = (rv[b] as usize, cv[b] as usize);
            let pairs = nr.min(nc);
            let r = &out.rows[b * k..(b + 1) * k];
            let c = &out.cols[b * k..(b + 1) * k];
            prop_assert!(r[pairs..].iter().chain(&c[pairs..]).all(|&x| x == -1));
            prop_assert!(r[..pairs].windows(2).all(|w| w[0] < w[1]), "rows not sorted: {:?}", r);
            let mut used = vec![false; nc];
            for p in 0..pairs {
                prop_assert!((r[p] as usize) < nr && (c[p] as usize) < nc);
                prop_assert!(!used[c[p] as usize]);
                used[c[p] as usize] = true;
            }
            // Same optimum as brute force on the valid block, in its smaller orientation.
            if pairs > 0 && nr.max(nc) <= 7 {
                let block: Vec<f32> = (0..nr).flat_map(|i| (0..nc).map(move |j| (i, j)))
                    .map(|(i, j)| cost[b * rows * cols + i * cols + j]).collect();
                let want = if nr <= nc {
                    brute_force(&block, nr, nc)
                } else {
                    let t: Vec<f32> = (0..nc).flat_map(|j| (0..nr).map(move |i| (i, j)))
                        .map(|(i, j)| block[i * nc + j]).collect();
                    brute_force(&t, nc, nr)
                };
                let got: f64 = (0..pairs).map(|p| block[r[p] as usize * nc + c[p] as usize] as f64).sum();
                prop_assert!((got - want).abs() <= 1e-4 * want.abs().max(1.0));
            }
        }
    }
}

#[test]
fn matches_kuhn_munkres_on_integer_costs_of_many_shapes() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for case in 0..400 {
        let rows = rng.gen_range(1..40);
        let cols = rows + rng.gen_range(0..40);
        let range = if case % 3 == 0 { 3 } else { 1000 }; // few distinct values → many ties
        let ints: Vec<i64> = (0..rows * cols).map(|_| rng.gen_range(0..range)).collect();
        let (want, _) = kuhn_munkres_min(&Matrix::from_vec(rows, cols, ints.clone()).unwrap());
        let cost: Vec<f32> = ints.iter().map(|&x| x as f32).collect();
        for kernel in [Kernel::Portable, Kernel::detect()] {
            let assignment = solve_with(kernel, &cost, rows, cols);
            assert_one_to_one(&assignment, cols);
            assert_eq!(
                total(&cost, cols, &assignment),
                want as f64,
                "case {case} {rows}×{cols}"
            );
        }
    }
}

#[test]
fn structured_case_all_words_want_the_same_patches() {
    // Every row prefers the same few columns, by the same margins: the greedy start matches
    // one row and all the others must be found by long augmenting paths.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for (rows, cols) in [(16, 49), (32, 49), (49, 77), (77, 196)] {
        let base: Vec<i64> = (0..cols).map(|_| rng.gen_range(0..1000)).collect();
        let ints: Vec<i64> = (0..rows * cols)
            .map(|i| base[i % cols] * 10 + rng.gen_range(0..10))
            .collect();
        let (want, _) = kuhn_munkres_min(&Matrix::from_vec(rows, cols, ints.clone()).unwrap());
        let cost: Vec<f32> = ints.iter().map(|&x| x as f32).collect();
        let assignment = solve_dense(&cost, rows, cols).unwrap();
        assert_eq!(
            total(&cost, cols, &assignment),
            want as f64,
            "{rows}×{cols}"
        );
    }
}

#[test]
fn batch_transposes_tall_items_and_reports_cost_coordinates() {
    // 3 rows × 2 cols: rows 0 and 2 are the cheap ones for cols 1 and 0.
    let cost = [5.0, 5.0, 9.0, 0.0, 0.0, 9.0];
    let out = match_batch(
        &cost,
        BatchShape {
            batch: 1,
            rows: 3,
            cols: 2,
        },
        None,
        None,
    )
    .unwrap();
    assert_eq!(out.rows, vec![1, 2]);
    assert_eq!(out.cols, vec![1, 0]);
}

#[test]
fn batch_errors_name_the_argument_and_item() {
    let shape = BatchShape {
        batch: 2,
        rows: 2,
        cols: 3,
    };
    let mut cost = vec![0.5f32; 12];
    cost[6 + 4] = f32::NAN; // item 1, row 1, column 1
    let e = match_batch(&cost, shape, None, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`cost`") && e.contains("item 1") && e.contains("row 1, column 1"),
        "{e}"
    );
    // A NaN outside the valid block is never read.
    assert!(match_batch(&cost, shape, None, Some(&[3, 1])).is_ok());
    let e = match_batch(&cost, shape, Some(&[1]), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`rows_valid`") && e.contains("2 items"), "{e}");
    let e = match_batch(&cost, shape, None, Some(&[3, 4]))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("`cols_valid`") && e.contains("item 1 is 4"),
        "{e}"
    );
    cost[6 + 4] = 2e30;
    let e = match_batch(&cost, shape, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("too large") && e.contains("item 1"), "{e}");
    let e = BatchShape::check(&[2, 0, 3], "cost")
        .unwrap_err()
        .to_string();
    assert!(e.contains("zero-size"), "{e}");
    let e = BatchShape::check(&[2, 3], "cost").unwrap_err().to_string();
    assert!(e.contains("3-D"), "{e}");
}

#[test]
fn huge_values_give_an_error_not_a_hang() {
    let cost = [
        f32::MAX,
        -f32::MAX,
        -f32::MAX,
        f32::MAX,
        f32::MAX,
        -f32::MAX,
    ];
    // Either solved or refused, but it must return.
    let _ = solve_dense(&cost, 2, 3);
    let e = solve_dense(&[1.0, f32::INFINITY], 1, 2)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inf"), "{e}");
}

/// The caller-plus-helpers scheme: every thread count gives the calling thread's own answer,
/// item for item, and blocks of items never mix up their outputs.
#[test]
fn batch_results_do_not_depend_on_the_thread_count() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let shape = BatchShape {
        batch: 203, // not a multiple of any block size
        rows: 9,
        cols: 14,
    };
    let cost: Vec<f32> = (0..shape.batch * shape.rows * shape.cols)
        .map(|_| rng.gen_range(0.0..2.0))
        .collect();
    let rv: Vec<i64> = (0..shape.batch).map(|_| rng.gen_range(0..=9)).collect();
    let alone = match_batch_in(None, &cost, shape, Some(&rv), None).unwrap();
    for threads in [1, 2, 3, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let helped = match_batch_in(Some(&pool), &cost, shape, Some(&rv), None).unwrap();
        assert_eq!(helped, alone, "{threads} threads");
    }
    // Each item alone is the same problem as inside the batch.
    let per = shape.rows * shape.cols;
    let k = shape.pairs();
    for item in [0, 101, 202] {
        let one = BatchShape { batch: 1, ..shape };
        let out = match_batch_in(
            None,
            &cost[item * per..(item + 1) * per],
            one,
            Some(&rv[item..item + 1]),
            None,
        )
        .unwrap();
        assert_eq!(out.rows, alone.rows[item * k..(item + 1) * k]);
        assert_eq!(out.cols, alone.cols[item * k..(item + 1) * k]);
    }
}

#[test]
fn the_first_bad_item_is_reported_whatever_the_threads() {
    let shape = BatchShape {
        batch: 300,
        rows: 4,
        cols: 6,
    };
    let mut cost = vec![0.25f32; shape.batch * 24];
    for item in [37, 38, 250, 299] {
        cost[item * 24 + 5] = f32::INFINITY; // row 0, column 5
    }
    for threads in [1, 2, 4, 8] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        for _ in 0..20 {
            let e = match_batch_in(Some(&pool), &cost, shape, None, None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("item 37 ") && e.contains("row 0, column 5"),
                "{e}"
            );
        }
    }
}
