//! The solver's vector kernels, each with explicit AVX2 (8 columns a step) picked at run time
//! and a plain loop for other CPUs:
//! * `scan` — the inner loop: relax one row into the shortest-path distances and find the
//!   nearest open column;
//! * `row_min` — each row's cheapest column, for the greedy start;
//! * `transpose` — the range-checked transposed copy of items with more rows than columns
//!   (as a scalar loop it is a large share of the time of such batches).
//!
//! Why by hand: the scan is most of the solve, and its natural loop is a min-reduction with
//! an index and conditional stores, which LLVM compiles to scalar code with branches. With
//! compare masks and blends each of the 8 lanes keeps its own running minimum; the lanes are
//! combined once at the end.
//!
//! Columns that must not be picked (already closed in this search, or padding) carry
//! `blocked = +inf`; columns that already have a row carry `taken = +inf`. Adding these
//! penalties keeps the loop branch-free.

/// Lane count of the kernel; every buffer the kernel reads is padded to a multiple of it.
pub const LANES: usize = 8;

/// Result of one row scan: the smallest distance over all open columns and its column (the
/// lowest on ties), and the smallest distance over the open columns that have no row yet.
/// The solver prefers a free column on an exact tie (it ends the search); ties are rare, so
/// the kernel only tracks the free minimum's value and the solver looks for its column.
#[derive(Debug, Clone, Copy)]
pub struct ScanResult {
    pub min_all: f32,
    pub arg_all: usize,
    pub min_free: f32,
}

/// Buffers of one row scan; all slices have the same length, a multiple of `LANES`.
pub struct RowScan<'a> {
    /// The cost row being relaxed.
    pub cost: &'a [f32],
    /// Column potentials.
    pub v: &'a [f32],
    /// `+inf` for columns scanned in this search (or padding), else 0.
    pub blocked: &'a [f32],
    /// `+inf` for columns that have a row (or padding), else 0.
    pub taken: &'a [f32],
    /// Shortest-path distance to each open column so far (updated).
    pub dist: &'a mut [f32],
    /// The row each column's best path arrives from (updated).
    pub path: &'a mut [u32],
}

/// The portable kernel: a plain loop (used where AVX2 is absent, and as the reference the
/// AVX2 kernel is tested against). Ties keep the lowest column, like the AVX2 kernel.
fn scan_portable(s: RowScan<'_>, shift: f32, row: u32) -> ScanResult {
    let mut out = ScanResult {
        min_all: f32::INFINITY,
        arg_all: 0,
        min_free: f32::INFINITY,
    };
    for j in 0..s.cost.len() {
        // Reduced cost of the edge, plus the distance of the row we arrive from.
        let candidate = (s.cost[j] - s.v[j]) + shift + s.blocked[j];
        if candidate < s.dist[j] {
            s.dist[j] = candidate;
            s.path[j] = row;
        }
        let d = s.dist[j];
        if d < out.min_all {
            (out.min_all, out.arg_all) = (d, j);
        }
        out.min_free = out.min_free.min(d + s.taken[j]);
    }
    out
}

/// Combines the 8 lanes' running minima: the smallest value and, among the lanes holding
/// it, the lowest column — so the answer does not depend on the lane count. All in registers:
/// it runs once per scanned row, and a scalar loop over the lanes would cost as much as
/// scanning a short row.
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn reduce(
    values: std::arch::x86_64::__m256,
    at: std::arch::x86_64::__m256i,
) -> (f32, usize) {
    use std::arch::x86_64::*;
    let m = _mm256_min_ps(values, _mm256_permute2f128_ps::<1>(values, values));
    let m = _mm256_min_ps(m, _mm256_shuffle_ps::<0b01_00_11_10>(m, m));
    let m = _mm256_min_ps(m, _mm256_shuffle_ps::<0b10_11_00_01>(m, m));
    let holders = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_EQ_OQ>(values, m));
    let i = _mm256_blendv_epi8(_mm256_set1_epi32(-1), at, holders);
    let i = _mm256_min_epu32(i, _mm256_permute2x128_si256::<1>(i, i));
    let i = _mm256_min_epu32(i, _mm256_shuffle_epi32::<0b01_00_11_10>(i));
    let i = _mm256_min_epu32(i, _mm256_shuffle_epi32::<0b10_11_00_01>(i));
    // A NaN minimum matches no lane and yields u32::MAX; callers reject non-finite minima
    // before using the column.
    (_mm256_cvtss_f32(m), _mm256_cvtsi256_si32(i) as u32 as usize)
}

/// The AVX2 kernel: 8 columns per step, branch-free (compare masks and blends). Each lane
/// keeps its own running minimum and its column; lanes are combined at the end.
///
/// # Safety
/// The CPU must support AVX2; all slices of `s` must have the same length, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn scan_avx2(s: RowScan<'_>, shift: f32, row: u32) -> ScanResult {
    use std::arch::x86_64::*;
    let n = s.cost.len();
    let (cost, v) = (s.cost.as_ptr(), s.v.as_ptr());
    let (blocked, taken) = (s.blocked.as_ptr(), s.taken.as_ptr());
    let (dist, path) = (s.dist.as_mut_ptr(), s.path.as_mut_ptr());
    let shift = _mm256_set1_ps(shift);
    let row = _mm256_set1_epi32(row as i32);
    let step = _mm256_set1_epi32(LANES as i32);
    let mut at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut best = _mm256_set1_ps(f32::INFINITY);
    let mut best_at = _mm256_setzero_si256();
    let mut best_free = _mm256_set1_ps(f32::INFINITY);
    let mut j = 0;
    while j < n {
        let candidate = _mm256_add_ps(
            _mm256_add_ps(
                _mm256_sub_ps(_mm256_loadu_ps(cost.add(j)), _mm256_loadu_ps(v.add(j))),
                shift,
            ),
            _mm256_loadu_ps(blocked.add(j)),
        );
        let old = _mm256_loadu_ps(dist.add(j));
        let better = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(candidate, old));
        // `min` rather than a blend with `better`: LLVM turns blend-then-store into a masked
        // store (vmaskmovps), which is microcoded and slow on AMD cores.
        let d = _mm256_min_ps(candidate, old);
        _mm256_storeu_ps(dist.add(j), d);
        let p = path.add(j) as *mut __m256i;
        _mm256_storeu_si256(p, _mm256_blendv_epi8(_mm256_loadu_si256(p), row, better));
        let lower = _mm256_cmp_ps::<_CMP_LT_OQ>(d, best);
        best = _mm256_blendv_ps(best, d, lower);
        best_at = _mm256_blendv_epi8(best_at, at, _mm256_castps_si256(lower));
        best_free = _mm256_min_ps(best_free, _mm256_add_ps(d, _mm256_loadu_ps(taken.add(j))));
        at = _mm256_add_epi32(at, step);
        j += LANES;
    }
    let (min_all, arg_all) = reduce(best, best_at);
    let (min_free, _) = reduce(best_free, _mm256_setzero_si256());
    ScanResult {
        min_all,
        arg_all,
        min_free,
    }
}

/// Smallest `row[j] + blocked[j]` and its column (lowest on ties), plain loop.
fn row_min_portable(row: &[f32], blocked: &[f32]) -> (f32, usize) {
    let mut out = (f32::INFINITY, 0);
    for (j, (&c, &b)) in row.iter().zip(blocked).enumerate() {
        if c + b < out.0 {
            out = (c + b, j);
        }
    }
    out
}

/// # Safety
/// The CPU must support AVX2; both slices must have the same length, a multiple of 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn row_min_avx2(row: &[f32], blocked: &[f32]) -> (f32, usize) {
    use std::arch::x86_64::*;
    let (c, b) = (row.as_ptr(), blocked.as_ptr());
    let step = _mm256_set1_epi32(LANES as i32);
    let mut at = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let mut best = _mm256_set1_ps(f32::INFINITY);
    let mut best_at = _mm256_setzero_si256();
    let mut j = 0;
    while j < row.len() {
        let x = _mm256_add_ps(_mm256_loadu_ps(c.add(j)), _mm256_loadu_ps(b.add(j)));
        let lower = _mm256_cmp_ps::<_CMP_LT_OQ>(x, best);
        best = _mm256_blendv_ps(best, x, lower);
        best_at = _mm256_blendv_epi8(best_at, at, _mm256_castps_si256(lower));
        at = _mm256_add_epi32(at, step);
        j += LANES;
    }
    reduce(best, best_at)
}

/// Copies the `rows × cols` block of `src` (row stride `src_stride`) transposed into `dst`
/// (row stride `dst_stride`: `dst[c * dst_stride + r] = src[r * src_stride + c]`), returning
/// whether every value was accepted by `accept`. Tiles keep reads and writes within a few
/// cache lines. Plain loop.
fn transpose_portable(
    src: &[f32],
    src_stride: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    max_abs: f32,
) -> bool {
    const TILE: usize = 16;
    let mut ok = true;
    for r0 in (0..rows).step_by(TILE) {
        let r1 = (r0 + TILE).min(rows);
        for c0 in (0..cols).step_by(TILE) {
            for c in c0..(c0 + TILE).min(cols) {
                let out = &mut dst[c * dst_stride + r0..c * dst_stride + r1];
                for (k, slot) in out.iter_mut().enumerate() {
                    let x = src[(r0 + k) * src_stride + c];
                    ok &= x.abs() <= max_abs;
                    *slot = x;
                }
            }
        }
    }
    ok
}

/// AVX2 transpose: 8×8 blocks in registers (unpack / shuffle / lane permute), the range check
/// done on the loaded rows; the ragged right and bottom edges by the plain loop.
///
/// # Safety
/// The CPU must support AVX2; `src` must hold `rows` rows of `src_stride ≥ cols` values
/// (the last may end at `cols`) and `dst` `cols` rows of `dst_stride ≥ rows` values.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn transpose_avx2(
    src: &[f32],
    src_stride: usize,
    (rows, cols): (usize, usize),
    dst: &mut [f32],
    dst_stride: usize,
    max_abs: f32,
) -> bool {
    use std::arch::x86_64::*;
    let (full_rows, full_cols) = (rows - rows % LANES, cols - cols % LANES);
    let sign = _mm256_set1_ps(-0.0);
    let limit = _mm256_set1_ps(max_abs);
    let mut ok = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for r0 in (0..full_rows).step_by(LANES) {
        for c0 in (0..full_cols).step_by(LANES) {
            let mut r = [_mm256_setzero_ps(); LANES];
            for (k, row) in r.iter_mut().enumerate() {
                *row = _mm256_loadu_ps(s.add((r0 + k) * src_stride + c0));
                let magnitude = _mm256_andnot_ps(sign, *row);
                ok = _mm256_and_ps(ok, _mm256_cmp_ps::<_CMP_LE_OQ>(magnitude, limit));
            }
            let t0 = _mm256_unpacklo_ps(r[0], r[1]);
            let t1 = _mm256_unpackhi_ps(r[0], r[1]);
            let t2 = _mm256_unpacklo_ps(r[2], r[3]);
            let t3 = _mm256_unpackhi_ps(r[2], r[3]);
            let t4 = _mm256_unpacklo_ps(r[4], r[5]);
            let t5 = _mm256_unpackhi_ps(r[4], r[5]);
            let t6 = _mm256_unpacklo_ps(r[6], r[7]);
            let t7 = _mm256_unpackhi_ps(r[6], r[7]);
            let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
            let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
            let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
            let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
            let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
            let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
            let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
            let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
            let out = [
                _mm256_permute2f128_ps::<0x20>(u0, u4),
                _mm256_permute2f128_ps::<0x20>(u1, u5),
                _mm256_permute2f128_ps::<0x20>(u2, u6),
                _mm256_permute2f128_ps::<0x20>(u3, u7),
                _mm256_permute2f128_ps::<0x31>(u0, u4),
                _mm256_permute2f128_ps::<0x31>(u1, u5),
                _mm256_permute2f128_ps::<0x31>(u2, u6),
                _mm256_permute2f128_ps::<0x31>(u3, u7),
            ];
            for (k, column) in out.iter().enumerate() {
                _mm256_storeu_ps(d.add((c0 + k) * dst_stride + r0), *column);
            }
        }
    }
    let mut all_ok = _mm256_movemask_ps(ok) == 0xFF;
    // Right edge (all rows, the last cols % 8 columns), then bottom edge (the last rows % 8
    // rows, the full-block columns).
    for r in 0..rows {
        for c in full_cols..cols {
            let x = src[r * src_stride + c];
            all_ok &= x.abs() <= max_abs;
            dst[c * dst_stride + r] = x;
        }
    }
    for r in full_rows..rows {
        for c in 0..full_cols {
            let x = src[r * src_stride + c];
            all_ok &= x.abs() <= max_abs;
            dst[c * dst_stride + r] = x;
        }
    }
    all_ok
}

/// Which kernel this CPU runs, decided once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    /// The fastest kernel the running CPU supports.
    pub fn detect() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            if std::is_x86_feature_detected!("avx2") {
                return Kernel::Avx2;
            }
        }
        Kernel::Portable
    }

    /// The smallest `row[j] + blocked[j]` and its column (the lowest one on ties).
    pub fn row_min(self, row: &[f32], blocked: &[f32]) -> (f32, usize) {
        assert!(row.len().is_multiple_of(LANES) && row.len() == blocked.len());
        match self {
            Kernel::Portable => row_min_portable(row, blocked),
            // SAFETY: AVX2 present (see `detect`), lengths checked just above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { row_min_avx2(row, blocked) },
        }
    }

    /// Transposed copy of a `rows × cols` block with a range check: `dst[c * dst_stride + r]
    /// = src[r * src_stride + c]`; returns whether every `|value| ≤ max_abs` (false on NaN).
    pub fn transpose(
        self,
        src: &[f32],
        src_stride: usize,
        shape: (usize, usize),
        dst: &mut [f32],
        dst_stride: usize,
        max_abs: f32,
    ) -> bool {
        let (rows, cols) = shape;
        // Checked here, not just assumed, because the AVX2 kernel reads and writes by pointer.
        assert!(
            cols <= src_stride
                && rows <= dst_stride
                && (rows == 0 || src.len() >= (rows - 1) * src_stride + cols)
                && (cols == 0 || dst.len() >= (cols - 1) * dst_stride + rows),
            "transpose buffers too small"
        );
        match self {
            Kernel::Portable => {
                transpose_portable(src, src_stride, shape, dst, dst_stride, max_abs)
            }
            // SAFETY: AVX2 present (see `detect`), buffer sizes checked just above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe {
                transpose_avx2(src, src_stride, shape, dst, dst_stride, max_abs)
            },
        }
    }

    /// Relaxes `row` (whose search distance is `shift` minus its potential) into `dist`.
    #[inline]
    pub fn scan(self, s: RowScan<'_>, shift: f32, row: u32) -> ScanResult {
        let n = s.cost.len();
        // Checked here, not just assumed, because the AVX2 kernel reads by raw pointer.
        assert!(
            n.is_multiple_of(LANES)
                && [
                    s.v.len(),
                    s.blocked.len(),
                    s.taken.len(),
                    s.dist.len(),
                    s.path.len()
                ]
                .iter()
                .all(|&len| len == n),
            "row scan buffers must share one length, a multiple of {LANES}"
        );
        match self {
            Kernel::Portable => scan_portable(s, shift, row),
            // SAFETY: `detect` returns Avx2 only when the CPU reports AVX2, and the lengths
            // were checked just above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { scan_avx2(s, shift, row) },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar_reference(cost: &[f32], v: &[f32], blocked: &[f32], shift: f32) -> Vec<f32> {
        cost.iter()
            .zip(v)
            .zip(blocked)
            .map(|((c, v), b)| (c - v) + shift + b)
            .collect()
    }

    #[test]
    fn transposes_agree_with_indexing_and_catch_bad_values() {
        for (rows, cols) in [(1, 1), (3, 5), (8, 8), (9, 17), (16, 8), (49, 16), (77, 23)] {
            let (src_stride, dst_stride) = (cols + 3, rows + 5);
            let src: Vec<f32> = (0..rows * src_stride)
                .map(|i| i as f32 * 0.5 - 7.0)
                .collect();
            let mut kernels = vec![Kernel::Portable];
            if Kernel::detect() != Kernel::Portable {
                kernels.push(Kernel::detect());
            }
            for kernel in kernels {
                let mut dst = vec![f32::NAN; cols * dst_stride];
                let ok =
                    kernel.transpose(&src, src_stride, (rows, cols), &mut dst, dst_stride, 1e30);
                assert!(ok);
                for r in 0..rows {
                    for c in 0..cols {
                        assert_eq!(dst[c * dst_stride + r], src[r * src_stride + c]);
                    }
                }
                for bad_at in [(0, 0), (rows - 1, cols - 1), (rows / 2, cols / 3)] {
                    let mut bad = src.clone();
                    bad[bad_at.0 * src_stride + bad_at.1] = f32::NAN;
                    assert!(!kernel.transpose(
                        &bad,
                        src_stride,
                        (rows, cols),
                        &mut dst,
                        dst_stride,
                        1e30
                    ));
                    bad[bad_at.0 * src_stride + bad_at.1] = 2e30;
                    assert!(!kernel.transpose(
                        &bad,
                        src_stride,
                        (rows, cols),
                        &mut dst,
                        dst_stride,
                        1e30
                    ));
                }
                // Values outside the block (the stride's slack) are never read.
                let mut slack = src.clone();
                slack[cols] = f32::NAN;
                if cols + 3 <= src_stride && rows > 1 {
                    assert!(kernel.transpose(
                        &slack,
                        src_stride,
                        (rows, cols),
                        &mut dst,
                        dst_stride,
                        1e30
                    ));
                }
            }
        }
    }

    #[test]
    fn both_kernels_agree_with_a_scalar_loop() {
        let n = 3 * LANES;
        let cost: Vec<f32> = (0..n).map(|j| ((j * 7919) % 13) as f32 * 0.25).collect();
        let v: Vec<f32> = (0..n).map(|j| -((j % 5) as f32) * 0.1).collect();
        let mut blocked = vec![0.0; n];
        blocked[3] = f32::INFINITY;
        let mut taken = vec![0.0; n];
        for j in (0..n).step_by(2) {
            taken[j] = f32::INFINITY;
        }
        let want = scalar_reference(&cost, &v, &blocked, 0.5);
        let mut kernels = vec![Kernel::Portable];
        if Kernel::detect() != Kernel::Portable {
            kernels.push(Kernel::detect());
        }
        for kernel in kernels {
            let mut dist = vec![f32::INFINITY; n];
            dist[5] = -1.0; // an earlier, shorter path must be kept
            let mut path = vec![9u32; n];
            let r = kernel.scan(
                RowScan {
                    cost: &cost,
                    v: &v,
                    blocked: &blocked,
                    taken: &taken,
                    dist: &mut dist,
                    path: &mut path,
                },
                0.5,
                1,
            );
            for j in 0..n {
                let expect = if j == 5 { -1.0 } else { want[j] };
                assert_eq!(dist[j], expect, "column {j}");
                assert_eq!(path[j], if j == 5 || j == 3 { 9 } else { 1 });
            }
            assert_eq!((r.min_all, r.arg_all), (-1.0, 5));
            let free_min = (0..n)
                .filter(|j| j % 2 == 1)
                .map(|j| dist[j])
                .fold(f32::INFINITY, f32::min);
            assert_eq!(r.min_free, free_min);
        }
    }
}
