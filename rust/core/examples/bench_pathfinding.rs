//! Times `pathfinding`'s Kuhn–Munkres on a batch of cost matrices, for
//! `benchmarks/bench_matching.py` (the baseline column of its table).
//!
//! Usage: `bench_pathfinding FILE BATCH ROWS COLS REPEATS` where FILE holds BATCH × ROWS × COLS
//! little-endian float32 costs. Kuhn–Munkres wants integer weights and rows ≤ columns, so each
//! matrix is scaled by 1e6, rounded, and transposed when tall — outside the timed loop, as a
//! caller with integer costs would not pay for it. Items run one after another on one thread,
//! like scipy looped over the batch. Prints one line: `ms_per_batch total_cost`.

use std::time::Instant;

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

const SCALE: f64 = 1e6;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: {} FILE BATCH ROWS COLS REPEATS", args[0]);
        std::process::exit(2);
    }
    let number = |i: usize| -> usize {
        args[i].parse().unwrap_or_else(|_| {
            eprintln!(
                "argument {i} must be a non-negative integer, got {:?}",
                args[i]
            );
            std::process::exit(2)
        })
    };
    let (batch, rows, cols, repeats) = (number(2), number(3), number(4), number(5).max(1));
    let bytes = std::fs::read(&args[1]).unwrap_or_else(|e| {
        eprintln!("cannot read {}: {e}", args[1]);
        std::process::exit(2)
    });
    if bytes.len() != batch * rows * cols * 4 {
        eprintln!(
            "{} has {} bytes, expected {}",
            args[1],
            bytes.len(),
            batch * rows * cols * 4
        );
        std::process::exit(2);
    }
    let costs: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let (r, c) = (rows.min(cols), rows.max(cols));
    let matrices: Vec<Matrix<i64>> = costs
        .chunks_exact(rows * cols)
        .map(|m| {
            let at = |i: usize, j: usize| {
                if rows <= cols {
                    m[i * cols + j]
                } else {
                    m[j * cols + i]
                }
            };
            let values = (0..r).flat_map(|i| (0..c).map(move |j| (i, j)));
            let ints = values
                .map(|(i, j)| (at(i, j) as f64 * SCALE).round() as i64)
                .collect();
            Matrix::from_vec(r, c, ints).expect("shape checked above")
        })
        .collect();
    let mut best = f64::INFINITY;
    let mut total = 0i64;
    for _ in 0..repeats {
        let start = Instant::now();
        total = matrices.iter().map(|m| kuhn_munkres_min(m).0).sum();
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("{:.4} {:.6}", best * 1e3, total as f64 / SCALE);
}
