//! `token_similarity`: batched cosine similarity of token sets, in libtorch on the inputs'
//! device, so autograd records it and gradients reach the Python caller.

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use tch::Tensor;

use lightclip_core::similarity::SimilarityShape;

use crate::errors::{torch_err, BindingError};
use crate::tensor::{require_float, require_same_kind_and_device, shape};

fn normalise(t: &Tensor, eps: f64) -> Result<Tensor, tch::TchError> {
    let norm = t.f_norm_scalaropt_dim(2, [-1i64].as_slice(), true)?;
    t.f_div(&norm.f_clamp_min(eps)?)
}

fn cosine(a: &Tensor, b: &Tensor, eps: f64) -> Result<Tensor, tch::TchError> {
    normalise(a, eps)?.f_matmul(&normalise(b, eps)?.f_transpose(-1, -2)?)
}

/// Cosine similarity of every token of `a` with every token of `b`, per batch item:
/// `a` `[B, N, D]`, `b` `[B, M, D]` → `[B, N, M]` (2-D inputs give a 2-D result).
#[pyfunction]
#[pyo3(signature = (a, b, eps = 1e-8))]
pub fn token_similarity(py: Python<'_>, a: PyTensor, b: PyTensor, eps: f64) -> PyResult<PyTensor> {
    require_float(&a, "a")?;
    require_float(&b, "b")?;
    require_same_kind_and_device(&a, &b, ("a", "b"))?;
    SimilarityShape::check(&shape(&a), &shape(&b), ("a", "b")).map_err(BindingError::from)?;
    let (a, b) = (a.0, b.0);
    // Grad mode is thread-local in libtorch and allow_threads stays on this thread, so the
    // caller's `torch.no_grad()` (or its absence) is honoured.
    let out = py
        .allow_threads(move || cosine(&a, &b, eps))
        .map_err(|e| torch_err("token_similarity", e))?;
    Ok(PyTensor(out))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(token_similarity, m)?)
}
