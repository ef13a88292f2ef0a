//! The process-wide thread pool every binding runs its parallel (rayon) work in.
//!
//! Why a pool of our own rather than rayon's global one: the global pool's size is fixed the
//! first time it is used, so a user could never change it after import. Here the pool is
//! replaced by `set_num_threads`; work already running keeps the old pool alive (it holds an
//! `Arc`) and finishes on it, new work picks up the new one.
//!
//! Bindings call `crate::threads::install(|| ...)` inside `py.allow_threads`, and the core's
//! `par_iter`s then run on this pool.

use std::sync::{Arc, RwLock};

use pyo3::prelude::*;
use rayon::{ThreadPool, ThreadPoolBuilder};

use crate::errors::{InvalidInputError, LightclipError};

static POOL: RwLock<Option<Arc<ThreadPool>>> = RwLock::new(None);

fn build(num_threads: usize) -> Result<ThreadPool, rayon::ThreadPoolBuildError> {
    // `num_threads(0)` is rayon's default: RAYON_NUM_THREADS if set, else one per core.
    ThreadPoolBuilder::new()
        .num_threads(num_threads)
        .thread_name(|i| format!("lightclip-{i}"))
        .build()
}

/// The current pool (built with the default size on first use), or None when the OS refused
/// to start its threads: callers then work on the calling thread alone.
pub fn pool() -> Option<Arc<ThreadPool>> {
    current_pool().ok()
}

fn current_pool() -> Result<Arc<ThreadPool>, rayon::ThreadPoolBuildError> {
    // A poisoned lock only means another thread panicked while holding it; the Option inside
    // is still a valid value, so keep using it.
    if let Some(pool) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(Arc::clone(pool));
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    if let Some(pool) = slot.as_ref() {
        return Ok(Arc::clone(pool));
    }
    let pool = Arc::new(build(0)?);
    *slot = Some(Arc::clone(&pool));
    Ok(pool)
}

/// Runs `work` inside the lightclip pool (rayon calls in it use the pool's threads).
///
/// Falls back to running on the calling thread if the pool cannot be built (the OS refused to
/// spawn threads): slower, but the answer is the same.
pub fn install<R: Send>(work: impl FnOnce() -> R + Send) -> R {
    match pool() {
        Some(pool) => pool.install(work),
        None => work(),
    }
}

/// Sets how many threads lightclip's Rust code uses for its parallel work (matching, ...).
#[pyfunction]
pub fn set_num_threads(n: i64) -> PyResult<()> {
    if n < 1 {
        return Err(InvalidInputError::new_err(format!(
            "invalid `n`: the number of threads must be at least 1, got {n}"
        )));
    }
    let pool = build(n as usize)
        .map_err(|e| LightclipError::new_err(format!("cannot start {n} threads: {e}")))?;
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

/// How many threads lightclip's Rust code uses for its parallel work.
#[pyfunction]
pub fn get_num_threads() -> PyResult<usize> {
    current_pool()
        .map(|p| p.current_num_threads())
        .map_err(|e| LightclipError::new_err(format!("cannot start the thread pool: {e}")))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)
}
