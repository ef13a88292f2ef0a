//! A batch of assignment problems, solved in parallel: one cost matrix per item, each matched
//! on its top-left `rows_valid × cols_valid` block, with the smaller side as the solver's rows.
//!
//! Results use the caller's orientation: pair k of item b is (row in cost, column in cost),
//! sorted by row, `-1` after the item's `min(rows_valid, cols_valid)` pairs. Items run on the
//! current rayon pool (the binding installs its own), each worker reusing one `Workspace`.

use rayon::prelude::*;

use super::solver::Workspace;
use crate::error::{CoreError, Result};

/// Largest accepted |cost|: far beyond any similarity-based cost, and small enough that the
/// potentials (sums and differences of costs along paths) cannot overflow float32.
pub const MAX_ABS_COST: f32 = 1e30;

/// Whether a cost value is usable: finite and within `MAX_ABS_COST` (NaN compares false).
fn accepted(x: f32) -> bool {
    x.abs() <= MAX_ABS_COST
}

/// Shape of a batch of cost matrices stored as `[batch, rows, cols]`, row-major.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchShape {
    pub batch: usize,
    pub rows: usize,
    pub cols: usize,
}

impl BatchShape {
    /// Accepts a 3-D shape with non-empty matrices; names `argument` in the error.
    pub fn check(shape: &[i64], argument: &str) -> Result<BatchShape> {
        if shape.len() != 3 {
            return Err(CoreError::invalid(
                argument,
                format!(
                    "must be 3-D [batch, rows, cols], got {} dimension(s) {shape:?}",
                    shape.len()
                ),
            ));
        }
        if shape[1] == 0 || shape[2] == 0 {
            return Err(CoreError::invalid(
                argument,
                format!("has a zero-size side: shape {shape:?} (rows and cols must be ≥ 1)"),
            ));
        }
        Ok(BatchShape {
            batch: shape[0] as usize,
            rows: shape[1] as usize,
            cols: shape[2] as usize,
        })
    }

    /// Pairs per item in the output: `min(rows, cols)`.
    pub fn pairs(&self) -> usize {
        self.rows.min(self.cols)
    }
}

/// Row and column indices of the matched pairs, each `[batch, pairs]` row-major.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchMatching {
    pub rows: Vec<i64>,
    pub cols: Vec<i64>,
}

/// Checks per-item valid lengths: `batch` values in `0..=limit`. `None` means "all".
fn valid_lengths(
    given: Option<&[i64]>,
    batch: usize,
    limit: usize,
    argument: &str,
) -> Result<Vec<usize>> {
    let Some(given) = given else {
        return Ok(vec![limit; batch]);
    };
    if given.len() != batch {
        return Err(CoreError::invalid(
            argument,
            format!(
                "has {} entries but the batch has {batch} items",
                given.len()
            ),
        ));
    }
    given
        .iter()
        .enumerate()
        .map(|(item, &n)| {
            if n < 0 || n as usize > limit {
                Err(CoreError::invalid(
                    argument,
                    format!("item {item} is {n}, outside 0..={limit}"),
                ))
            } else {
                Ok(n as usize)
            }
        })
        .collect()
}

/// Copies item's valid block into the workspace (transposed when it has more rows than
/// columns), checking every value on the way.
fn load(
    ws: &mut Workspace,
    matrix: &[f32],
    cols: usize,
    valid: (usize, usize),
    item: usize,
) -> Result<bool> {
    let (nr, nc) = valid;
    if nr == 0 || nc == 0 {
        ws.reset(0, 0);
        return Ok(false);
    }
    let transposed = nr > nc;
    let (rows, solver_cols) = if transposed { (nc, nr) } else { (nr, nc) };
    let kernel = ws.kernel();
    let buf = ws.reset(rows, solver_cols);
    let stride = buf.len().checked_div(rows).unwrap_or(0);
    let in_range = if transposed {
        kernel.transpose(matrix, cols, (nr, nc), buf, stride, MAX_ABS_COST)
    } else {
        let mut in_range = true;
        for r in 0..nr {
            let line = &matrix[r * cols..r * cols + nc];
            // A counting pass (no early exit) vectorises; `accepted` is false for NaN and ±inf.
            in_range &= line.iter().map(|&x| u32::from(!accepted(x))).sum::<u32>() == 0;
            buf[r * stride..r * stride + nc].copy_from_slice(line);
        }
        in_range
    };
    if !in_range {
        // Rare: find the first bad value (row-major) for the message.
        for r in 0..nr {
            if let Some(c) = matrix[r * cols..r * cols + nc]
                .iter()
                .position(|&x| !accepted(x))
            {
                return Err(bad_value(item, r, c, matrix[r * cols + c]));
            }
        }
    }
    Ok(transposed)
}

fn bad_value(item: usize, r: usize, c: usize, x: f32) -> CoreError {
    let what = if x.is_finite() {
        format!("a value too large in magnitude ({x:e}; |cost| must be ≤ {MAX_ABS_COST:e})")
    } else {
        format!("a non-finite value {x}")
    };
    CoreError::invalid(
        "cost",
        format!("item {item} has {what} at row {r}, column {c}"),
    )
}

/// Writes the item's pairs, sorted by cost row, into its output rows (already `-1`).
fn store(ws: &Workspace, transposed: bool, out_rows: &mut [i64], out_cols: &mut [i64]) {
    if transposed {
        // Solver rows are cost columns; walking solver columns (= cost rows) in order gives
        // the pairs sorted by cost row.
        let matched = ws
            .row_of_col()
            .iter()
            .enumerate()
            .filter(|(_, &r)| r != u32::MAX);
        for (k, (cost_row, &cost_col)) in matched.enumerate() {
            out_rows[k] = cost_row as i64;
            out_cols[k] = cost_col as i64;
        }
    } else {
        for (k, &col) in ws.col_of_row().iter().enumerate() {
            out_rows[k] = k as i64;
            out_cols[k] = col as i64;
        }
    }
}

/// Solves every item of `cost` (`shape.batch × shape.rows × shape.cols` values) on the current
/// rayon pool. `rows_valid` / `cols_valid` give each item's valid block (default: all).
/// An error names the first offending item; no partial result is returned.
pub fn match_batch(
    cost: &[f32],
    shape: BatchShape,
    rows_valid: Option<&[i64]>,
    cols_valid: Option<&[i64]>,
) -> Result<BatchMatching> {
    let BatchShape { batch, rows, cols } = shape;
    if cost.len() != batch * rows * cols {
        return Err(CoreError::invalid(
            "cost",
            format!(
                "has {} values, expected {batch} × {rows} × {cols}",
                cost.len()
            ),
        ));
    }
    let rows_valid = valid_lengths(rows_valid, batch, rows, "rows_valid")?;
    let cols_valid = valid_lengths(cols_valid, batch, cols, "cols_valid")?;
    let k = shape.pairs();
    let mut out = BatchMatching {
        rows: vec![-1; batch * k],
        cols: vec![-1; batch * k],
    };
    if k == 0 || batch == 0 {
        return Ok(out);
    }
    let outcomes: Vec<Result<()>> = cost
        .par_chunks(rows * cols)
        .zip(out.rows.par_chunks_mut(k))
        .zip(out.cols.par_chunks_mut(k))
        .enumerate()
        .with_min_len(4)
        .map_init(
            Workspace::new,
            |ws, (item, ((matrix, out_rows), out_cols))| {
                let valid = (rows_valid[item], cols_valid[item]);
                let transposed = load(ws, matrix, cols, valid, item)?;
                ws.solve().map_err(|e| match e {
                    CoreError::InvalidArgument { argument, reason } => {
                        CoreError::invalid(argument, format!("item {item}: {reason}"))
                    }
                    other => other,
                })?;
                store(ws, transposed, out_rows, out_cols);
                Ok(())
            },
        )
        .collect();
    outcomes.into_iter().collect::<Result<Vec<()>>>()?;
    Ok(out)
}
