//! A batch of assignment problems, solved in parallel: one cost matrix per item, each matched
//! on its top-left `rows_valid × cols_valid` block, with the smaller side as the solver's rows.
//!
//! Results use the caller's orientation: pair k of item b is (row in cost, column in cost),
//! sorted by row, `-1` after the item's `min(rows_valid, cols_valid)` pairs. Items run on the
//! calling thread and a rayon pool's threads (the binding passes its own), each thread
//! reusing one `Workspace`.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use rayon::ThreadPool;

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

/// Solves every item of `cost` (`shape.batch × shape.rows × shape.cols` values) on the calling
/// thread helped by rayon's global pool. `rows_valid` / `cols_valid` give each item's valid
/// block (default: all). An error names the first offending item; no partial result is
/// returned.
pub fn match_batch(
    cost: &[f32],
    shape: BatchShape,
    rows_valid: Option<&[i64]>,
    cols_valid: Option<&[i64]>,
) -> Result<BatchMatching> {
    match_batch_with(Helpers::Global, cost, shape, rows_valid, cols_valid)
}

/// [`match_batch`] with the helpers taken from `pool` (None: the calling thread alone). The
/// calling thread always works too, so `pool` of n threads means n threads in all.
pub fn match_batch_in(
    pool: Option<&ThreadPool>,
    cost: &[f32],
    shape: BatchShape,
    rows_valid: Option<&[i64]>,
    cols_valid: Option<&[i64]>,
) -> Result<BatchMatching> {
    let helpers = pool.map_or(Helpers::None, Helpers::Pool);
    match_batch_with(helpers, cost, shape, rows_valid, cols_valid)
}

#[derive(Clone, Copy)]
enum Helpers<'p> {
    None,
    Global,
    Pool(&'p ThreadPool),
}

impl Helpers<'_> {
    fn threads(self) -> usize {
        match self {
            Helpers::None => 1,
            Helpers::Global => rayon::current_num_threads(),
            Helpers::Pool(pool) => pool.current_num_threads(),
        }
    }

    /// Runs `work` on this thread and on `extra` pool tasks at once, returning when all end.
    fn run<'w>(self, extra: usize, work: &'w (dyn Fn() + Sync + 'w)) {
        let spawn_all = |s: &rayon::Scope<'w>| {
            for _ in 0..extra {
                s.spawn(|_| work());
            }
            work();
        };
        match self {
            Helpers::None => work(),
            Helpers::Global => rayon::in_place_scope(spawn_all),
            Helpers::Pool(pool) => pool.in_place_scope(spawn_all),
        }
    }
}

thread_local! {
    /// One solver workspace per thread, kept between calls: a training step's batch reuses
    /// the buffers the last one grew.
    static WORKSPACE: RefCell<Workspace> = RefCell::new(Workspace::new());
}

/// Why not a plain `par_iter` on the pool: a batch takes well under a millisecond, so waking
/// a sleeping pool and handing the whole job to it (`install`) costs a visible share of it,
/// while the calling thread sits idle. Here the caller starts at once and helpers join as
/// they wake, all claiming blocks of items from one counter (dynamic balance: items cost
/// very different times).
fn match_batch_with(
    helpers: Helpers<'_>,
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

    let threads = helpers.threads().max(1);
    // Small blocks balance the load; a few items each keep the counter off the hot path.
    let block = (batch / (threads * 16)).clamp(1, 16);
    let blocks: Vec<Mutex<(&mut [i64], &mut [i64])>> = out
        .rows
        .chunks_mut(block * k)
        .zip(out.cols.chunks_mut(block * k))
        .map(Mutex::new)
        .collect();
    let next = AtomicUsize::new(0);
    let first_error: Mutex<Option<(usize, CoreError)>> = Mutex::new(None);

    let solve_item =
        |ws: &mut Workspace, item: usize, out_rows: &mut [i64], out_cols: &mut [i64]| {
            let matrix = &cost[item * rows * cols..(item + 1) * rows * cols];
            let valid = (rows_valid[item], cols_valid[item]);
            let transposed = load(ws, matrix, cols, valid, item)?;
            ws.solve().map_err(|e| match e {
                CoreError::InvalidArgument { argument, reason } => {
                    CoreError::invalid(argument, format!("item {item}: {reason}"))
                }
                other => other,
            })?;
            store(ws, transposed, out_rows, out_cols);
            Ok::<(), CoreError>(())
        };
    let work = || {
        WORKSPACE.with(|cell| {
            let mut ws = cell.borrow_mut();
            loop {
                // Blocks are claimed in increasing order and a claimed block is always
                // finished, so every item before a failing one is solved: the error kept
                // (the smallest item) is the first bad item, as in a sequential run.
                let b = next.fetch_add(1, Ordering::Relaxed);
                if b >= blocks.len() || lock(&first_error).is_some() {
                    return;
                }
                let mut guard = lock(&blocks[b]);
                let (out_rows, out_cols) = &mut *guard;
                let items = b * block..((b + 1) * block).min(batch);
                for (i, item) in items.enumerate() {
                    let span = i * k..(i + 1) * k;
                    let result = solve_item(
                        &mut ws,
                        item,
                        &mut out_rows[span.clone()],
                        &mut out_cols[span],
                    );
                    if let Err(e) = result {
                        let mut slot = lock(&first_error);
                        if slot.as_ref().is_none_or(|(at, _)| item < *at) {
                            *slot = Some((item, e));
                        }
                        return;
                    }
                }
            }
        })
    };
    let extra = (threads - 1).min(blocks.len() - 1);
    helpers.run(extra, &work);

    drop(blocks);
    match first_error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(out),
    }
}

/// Locks a mutex, ignoring poisoning: a worker that panicked left no half-written state
/// behind that the others read (the panic itself reaches the caller through the scope).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
