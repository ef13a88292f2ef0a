//! Exact rectangular linear sum assignment on f32 costs: shortest augmenting paths
//! (Jonker–Volgenant / Crouse 2016, the algorithm behind `scipy.optimize.linear_sum_assignment`).
//!
//! The problem is always posed with rows ≤ columns (the caller transposes): every row gets a
//! distinct column, leftover columns stay free. Rows are added one at a time; each addition is
//! a Dijkstra search over the columns on reduced costs `c[i][j] − u[i] − v[j] ≥ 0`, ending at
//! the nearest free column, after which the potentials are updated so reduced costs stay
//! non-negative and the matched edges stay tight — which is what makes the result optimal.
//!
//! Two things differ from the textbook version, both for speed only:
//! * a greedy start: every row takes its cheapest column when nobody took it first, with
//!   `u[i] = min_j c[i][j]`, `v = 0` (a feasible dual); only the rows left over are searched;
//! * the row scan is the vector kernel of `simd.rs`, over dense padded rows.
//!
//! Costs must be finite (the batch layer checks). Should potentials still overflow, a search
//! finds no finite distance and the solver returns an error: every search step closes one
//! column, so a search ends after at most `cols` steps whatever the values — it cannot hang.

use super::simd::{Kernel, RowScan, LANES};
use crate::error::{CoreError, Result};

const INF: f32 = f32::INFINITY;
const NONE: u32 = u32::MAX;

/// Reusable buffers for one problem at a time; one per worker thread.
pub struct Workspace {
    kernel: Kernel,
    rows: usize,
    cols: usize,
    /// `cols` rounded up to the kernel's lane count; every row of `cost` has this length.
    stride: usize,
    cost: Vec<f32>,
    u: Vec<f32>,
    v: Vec<f32>,
    dist: Vec<f32>,
    path: Vec<u32>,
    blocked: Vec<f32>,
    taken: Vec<f32>,
    col_of_row: Vec<u32>,
    row_of_col: Vec<u32>,
    /// Columns closed by the current search, with their final distance.
    scanned: Vec<(u32, f32)>,
}

impl Default for Workspace {
    fn default() -> Self {
        Workspace::new()
    }
}

impl Workspace {
    pub fn new() -> Self {
        Workspace {
            kernel: Kernel::detect(),
            rows: 0,
            cols: 0,
            stride: 0,
            cost: Vec::new(),
            u: Vec::new(),
            v: Vec::new(),
            dist: Vec::new(),
            path: Vec::new(),
            blocked: Vec::new(),
            taken: Vec::new(),
            col_of_row: Vec::new(),
            row_of_col: Vec::new(),
            scanned: Vec::new(),
        }
    }

    /// Forces the portable kernel (tests compare it with the detected one).
    pub fn with_kernel(kernel: Kernel) -> Self {
        Workspace {
            kernel,
            ..Workspace::new()
        }
    }

    /// Sizes the buffers for a `rows × cols` problem (`rows ≤ cols`) and returns the cost
    /// matrix to fill: `rows` rows of `stride()` values, only the first `cols` of each read.
    pub fn reset(&mut self, rows: usize, cols: usize) -> &mut [f32] {
        debug_assert!(rows <= cols);
        self.rows = rows;
        self.cols = cols;
        self.stride = cols.div_ceil(LANES) * LANES;
        let stride = self.stride;
        self.cost.clear();
        // Padding columns cost 0 but are blocked and taken forever, so never chosen.
        self.cost.resize(rows * stride, 0.0);
        self.u.clear();
        self.u.resize(rows, 0.0);
        self.v.clear();
        self.v.resize(stride, 0.0);
        self.dist.clear();
        self.dist.resize(stride, INF);
        self.path.clear();
        self.path.resize(stride, NONE);
        for pad in [&mut self.blocked, &mut self.taken] {
            pad.clear();
            pad.resize(cols, 0.0);
            pad.resize(stride, INF);
        }
        self.col_of_row.clear();
        self.col_of_row.resize(rows, NONE);
        self.row_of_col.clear();
        self.row_of_col.resize(stride, NONE);
        &mut self.cost[..]
    }

    /// The vector kernel this workspace runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    pub fn stride(&self) -> usize {
        self.stride
    }

    /// The column matched to each row after `solve`.
    pub fn col_of_row(&self) -> &[u32] {
        &self.col_of_row
    }

    /// The row matched to each column after `solve` (`u32::MAX` for a free column).
    pub fn row_of_col(&self) -> &[u32] {
        &self.row_of_col[..self.cols]
    }

    /// Solves the problem loaded by `reset`. Every row ends matched to a distinct column.
    pub fn solve(&mut self) -> Result<()> {
        self.greedy_start();
        for row in 0..self.rows {
            if self.col_of_row[row] == NONE {
                self.add_row(row)?;
            }
        }
        Ok(())
    }

    fn assign(&mut self, row: usize, col: usize) {
        self.col_of_row[row] = col as u32;
        self.row_of_col[col] = row as u32;
        self.taken[col] = INF;
    }

    /// `u[i] = min_j c[i][j]`, `v = 0`: every reduced cost is ≥ 0 and each row's cheapest
    /// edge is tight, so a row whose cheapest column is still free can simply take it.
    fn greedy_start(&mut self) {
        let stride = self.stride;
        for i in 0..self.rows {
            // `blocked` is still 0 on real columns and +inf on padding here.
            let row = &self.cost[i * stride..(i + 1) * stride];
            let (best, at) = self.kernel.row_min(row, &self.blocked);
            self.u[i] = best;
            // (A non-finite minimum cannot come from checked costs; `add_row` reports it.)
            if best.is_finite() && self.row_of_col[at] == NONE {
                self.assign(i, at);
            }
        }
    }

    /// One Dijkstra search from the free row `start` to the nearest free column, then the
    /// potential update and the augmentation along the path found.
    fn add_row(&mut self, start: usize) -> Result<()> {
        let stride = self.stride;
        self.dist.fill(INF);
        self.scanned.clear();
        let mut row = start;
        let mut reached = 0.0f32; // distance of the row being scanned
        let sink = loop {
            if self.scanned.len() >= self.cols {
                // Unreachable with rows ≤ cols and finite values; guards the loop regardless.
                return Err(overflow());
            }
            let scan = self.kernel.scan(
                RowScan {
                    cost: &self.cost[row * stride..(row + 1) * stride],
                    v: &self.v,
                    blocked: &self.blocked,
                    taken: &self.taken,
                    dist: &mut self.dist,
                    path: &mut self.path,
                },
                reached - self.u[row],
                row as u32,
            );
            let (lowest, mut col) = (scan.min_all, scan.arg_all);
            if !lowest.is_finite() {
                return Err(overflow());
            }
            if scan.min_free <= lowest && self.row_of_col[col] != NONE {
                // A free column ties with the nearest one: take it, it ends the search now.
                if let Some(free) =
                    (0..self.cols).find(|&j| self.taken[j] == 0.0 && self.dist[j] == lowest)
                {
                    col = free;
                }
            }
            reached = lowest;
            self.scanned.push((col as u32, lowest));
            self.blocked[col] = INF;
            self.dist[col] = INF;
            match self.row_of_col[col] {
                NONE => break col,
                next => row = next as usize,
            }
        };
        // Potentials: every row and column the search closed moves by how much nearer it was
        // than the sink. The sink's own shift is zero, so free columns keep v = 0.
        self.u[start] += reached;
        for &(col, d) in &self.scanned {
            let col = col as usize;
            self.blocked[col] = 0.0;
            if col != sink {
                let delta = reached - d;
                self.u[self.row_of_col[col] as usize] += delta;
                self.v[col] -= delta;
            }
        }
        // Augment: flip the matched/unmatched edges along the path back to `start`.
        let mut col = sink;
        loop {
            let row = self.path[col] as usize;
            let previous = self.col_of_row[row];
            self.assign(row, col);
            if row == start {
                break;
            }
            col = previous as usize;
        }
        Ok(())
    }
}

fn overflow() -> CoreError {
    CoreError::invalid(
        "cost",
        "the assignment search found no finite path: cost values are too large for float32 \
         arithmetic (keep |cost| well below 1e30)",
    )
}

/// Solves one `rows × cols` problem given row-major (`rows ≤ cols`) and returns the column of
/// each row. Convenience for tests and small callers; the batch path reuses a `Workspace`.
pub fn solve_dense(cost: &[f32], rows: usize, cols: usize) -> Result<Vec<u32>> {
    if rows > cols {
        return Err(CoreError::invalid(
            "cost",
            format!("needs rows ≤ columns, got {rows} × {cols} (transpose it)"),
        ));
    }
    if cost.len() != rows * cols {
        return Err(CoreError::invalid(
            "cost",
            format!("has {} values, expected {rows} × {cols}", cost.len()),
        ));
    }
    if let Some(at) = cost.iter().position(|c| !c.is_finite()) {
        return Err(CoreError::invalid(
            "cost",
            format!(
                "value at row {}, column {} is {}",
                at / cols,
                at % cols,
                cost[at]
            ),
        ));
    }
    let mut ws = Workspace::new();
    let stride = {
        let buf = ws.reset(rows, cols);
        let stride = buf.len().checked_div(rows).unwrap_or(0);
        for i in 0..rows {
            buf[i * stride..i * stride + cols].copy_from_slice(&cost[i * cols..(i + 1) * cols]);
        }
        stride
    };
    debug_assert!(rows == 0 || stride == ws.stride());
    ws.solve()?;
    Ok(ws.col_of_row().to_vec())
}
