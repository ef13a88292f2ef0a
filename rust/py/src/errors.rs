//! Maps core and libtorch errors to the named exceptions of `lightclip.errors`.
//!
//! The exception classes are defined in Python (`python/lightclip/errors.py`) so that they can
//! inherit from both `LightclipError` and the built-in a user expects (`ValueError`,
//! `TypeError`); Rust imports them by name.

use lightclip_core::CoreError;
use pyo3::PyErr;

pyo3::import_exception!(lightclip.errors, InvalidInputError);
pyo3::import_exception!(lightclip.errors, InvalidDtypeError);
pyo3::import_exception!(lightclip.errors, DataError);
pyo3::import_exception!(lightclip.errors, LightclipError);

/// `?` on a core `Result` inside a `#[pyfunction]` raises the matching Python exception.
pub struct BindingError(pub PyErr);

impl From<CoreError> for BindingError {
    fn from(err: CoreError) -> Self {
        let message = err.to_string();
        BindingError(match err {
            CoreError::InvalidArgument { .. } => InvalidInputError::new_err(message),
            CoreError::Data { .. } => DataError::new_err(message),
            CoreError::Io { .. } => DataError::new_err(message),
            CoreError::Panic { .. } => LightclipError::new_err(message),
        })
    }
}

impl From<BindingError> for PyErr {
    fn from(err: BindingError) -> PyErr {
        err.0
    }
}

/// Converts a core error straight to `PyErr` (for closures that must return `PyResult`).
#[allow(dead_code)] // used by bindings whose closures return PyResult
pub fn core_err(err: CoreError) -> PyErr {
    BindingError::from(err).0
}

/// libtorch refused an op (device mismatch, out of memory...). Its message is kept whole.
pub fn torch_err(context: &str, err: tch::TchError) -> PyErr {
    LightclipError::new_err(format!("{context}: libtorch error: {err}"))
}
