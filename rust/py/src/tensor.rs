//! Checks on incoming torch tensors, shared by every binding that takes tensors.
//!
//! Each check names the offending argument so a user sees `invalid `cost`: ...`, not a
//! libtorch stack trace.

use pyo3::PyResult;
use tch::{Kind, Tensor};

use crate::errors::{InvalidDtypeError, InvalidInputError};

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

/// Two tensors that are combined must agree on dtype and device.
pub fn require_same_kind_and_device(a: &Tensor, b: &Tensor, names: (&str, &str)) -> PyResult<()> {
    if a.kind() != b.kind() {
        return Err(InvalidDtypeError::new_err(format!(
            "`{}` is {:?} but `{}` is {:?}; pass both in one dtype",
            names.0,
            a.kind(),
            names.1,
            b.kind()
        )));
    }
    if a.device() != b.device() {
        return Err(InvalidInputError::new_err(format!(
            "`{}` is on {:?} but `{}` is on {:?}; move both to one device",
            names.0,
            a.device(),
            names.1,
            b.device()
        )));
    }
    Ok(())
}

/// A tensor's shape as the core's shape checks take it.
pub fn shape(tensor: &Tensor) -> Vec<i64> {
    tensor.size()
}
