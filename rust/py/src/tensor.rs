//! Checks on incoming torch tensors, shared by every binding that takes tensors.
//!
//! Each check names the offending argument so a user sees `invalid `cost`: ...`, not a
//! libtorch stack trace.

use pyo3::PyResult;
use tch::{Kind, Tensor};

use crate::errors::InvalidDtypeError;

pub fn is_float_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double
    )
}

/// Rejects integer, boolean and complex tensors with a `TypeError` naming `argument`.
pub fn require_float(tensor: &Tensor, argument: &str) -> PyResult<()> {
    let kind = tensor.kind();
    if is_float_kind(kind) {
        Ok(())
    } else {
        Err(InvalidDtypeError::new_err(format!(
            "`{argument}` must be a floating-point tensor (float16, bfloat16, float32 or \
             float64), got {kind:?}"
        )))
    }
}
