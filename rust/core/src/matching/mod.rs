//! Batched exact linear-sum-assignment (Hungarian) matching of image patches and words.
//!
//! * `solver` — one rectangular problem, shortest augmenting paths on f32 (exact optimum);
//! * `simd` — the solver's row scan, vectorised, AVX2 picked at run time;
//! * `batch` — many problems at once with per-item valid blocks, in parallel with rayon.

pub mod batch;
pub mod simd;
pub mod solver;

pub use batch::{match_batch, match_batch_in, BatchMatching, BatchShape};
pub use solver::{solve_dense, Workspace};

#[cfg(test)]
mod tests;
