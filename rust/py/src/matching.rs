//! `match_tokens`: batched exact minimum-cost one-to-one matching (Hungarian), for the
//! token-level alignment loss.
//!
//! Takes a torch tensor (any float dtype, any device) or a numpy array; the costs are read as
//! contiguous float32 on the CPU (no copy when they already are), solved in the core on the
//! lightclip thread pool with the GIL released, and the indices go back to the cost's device
//! (or as numpy arrays for numpy input).

use pyo3::prelude::*;
use pyo3::types::PyAnyMethods;
use pyo3_tch::PyTensor;
use tch::{Device, Kind, Tensor};

use lightclip_core::matching::{match_batch_in, BatchShape};

use crate::errors::{core_err, torch_err, BindingError, InvalidDtypeError, InvalidInputError};
use crate::tensor::require_float;
use crate::threads;

/// A torch tensor as is, or a numpy array viewed as one (zero copy); anything else is a
/// `TypeError` naming `argument`. The flag says whether it came from numpy.
fn tensor_or_numpy(
    py: Python<'_>,
    obj: &Bound<'_, PyAny>,
    argument: &str,
) -> PyResult<(Tensor, bool)> {
    if let Ok(t) = obj.extract::<PyTensor>() {
        return Ok((t.0, false));
    }
    let is_ndarray = py
        .import("numpy")
        .and_then(|np| obj.is_instance(&np.getattr("ndarray")?))
        .unwrap_or(false);
    if !is_ndarray {
        return Err(InvalidDtypeError::new_err(format!(
            "`{argument}` must be a torch.Tensor or a numpy.ndarray, got {}",
            obj.get_type()
        )));
    }
    let converted = py
        .import("torch")?
        .call_method1("from_numpy", (obj,))
        .map_err(|e| {
            InvalidDtypeError::new_err(format!("`{argument}`: numpy array not usable: {e}"))
        })?;
    Ok((converted.extract::<PyTensor>()?.0, true))
}

fn is_integer_kind(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::Uint8 | Kind::Int8 | Kind::Int16 | Kind::Int | Kind::Int64
    )
}

/// Per-item valid lengths from a 1-D integer tensor, numpy array or sequence of ints.
fn lengths(
    py: Python<'_>,
    obj: Option<&Bound<'_, PyAny>>,
    argument: &str,
) -> PyResult<Option<Vec<i64>>> {
    let Some(obj) = obj else { return Ok(None) };
    let tensor = match obj.extract::<PyTensor>() {
        Ok(t) => t.0,
        Err(_) => {
            let converted = py
                .import("torch")?
                .call_method1("as_tensor", (obj,))
                .map_err(|_| {
                    InvalidDtypeError::new_err(format!(
                        "`{argument}` must be a 1-D integer tensor, array or sequence, got {}",
                        obj.get_type()
                    ))
                })?;
            converted.extract::<PyTensor>()?.0
        }
    };
    if !is_integer_kind(tensor.kind()) {
        return Err(InvalidDtypeError::new_err(format!(
            "`{argument}` must hold integers, got {:?}",
            tensor.kind()
        )));
    }
    if tensor.dim() != 1 {
        return Err(InvalidInputError::new_err(format!(
            "invalid `{argument}`: must be 1-D (one length per item), got shape {:?}",
            tensor.size()
        )));
    }
    let values = tensor
        .f_to_device(Device::Cpu)
        .and_then(|t| t.f_to_kind(Kind::Int64))
        .and_then(|t| Vec::<i64>::try_from(&t))
        .map_err(|e| torch_err(argument, e))?;
    Ok(Some(values))
}

/// Minimum-cost one-to-one matching of every item of a `[B, N, M]` cost batch.
#[pyfunction]
#[pyo3(signature = (cost, rows_valid = None, cols_valid = None))]
pub fn match_tokens(
    py: Python<'_>,
    cost: &Bound<'_, PyAny>,
    rows_valid: Option<&Bound<'_, PyAny>>,
    cols_valid: Option<&Bound<'_, PyAny>>,
) -> PyResult<(PyObject, PyObject)> {
    let (cost, from_numpy) = tensor_or_numpy(py, cost, "cost")?;
    require_float(&cost, "cost")?;
    let shape = BatchShape::check(&cost.size(), "cost").map_err(BindingError::from)?;
    let rows_valid = lengths(py, rows_valid, "rows_valid")?;
    let cols_valid = lengths(py, cols_valid, "cols_valid")?;
    let device = cost.device();

    let (rows, cols) = py.allow_threads(move || -> PyResult<(Tensor, Tensor)> {
        let torch = |e| torch_err("match_tokens", e);
        // Detached float32, contiguous, on the CPU: a no-op for the common CPU float32 case.
        let values = cost
            .f_detach()
            .and_then(|t| t.f_to_device(Device::Cpu))
            .and_then(|t| t.f_to_kind(Kind::Float))
            .and_then(|t| t.f_contiguous())
            .map_err(torch)?;
        let count = shape.batch * shape.rows * shape.cols;
        let slice: &[f32] = if count == 0 {
            &[]
        } else {
            // SAFETY: `values` is a contiguous CPU float32 tensor of exactly `count` elements
            // and outlives `slice`; nothing writes to it while the solver reads.
            unsafe { std::slice::from_raw_parts(values.data_ptr() as *const f32, count) }
        };
        // This thread solves too, with the pool's threads joining as helpers (see the core's
        // `match_batch_in`): no hand-over to a sleeping pool before the first item starts.
        let pool = threads::pool();
        let helpers = pool.as_deref().filter(|p| p.current_num_threads() > 1);
        let matching = match_batch_in(
            helpers,
            slice,
            shape,
            rows_valid.as_deref(),
            cols_valid.as_deref(),
        )
        .map_err(core_err)?;
        let size = [shape.batch as i64, shape.pairs() as i64];
        let to_output = |v: &[i64]| {
            Tensor::f_from_slice(v)
                .and_then(|t| t.f_view(size))
                .and_then(|t| t.f_to_device(device))
        };
        Ok((
            to_output(&matching.rows).map_err(torch)?,
            to_output(&matching.cols).map_err(torch)?,
        ))
    })?;

    let (rows, cols) = (
        PyTensor(rows).into_pyobject(py)?,
        PyTensor(cols).into_pyobject(py)?,
    );
    if from_numpy {
        Ok((
            rows.call_method0("numpy")?.unbind(),
            cols.call_method0("numpy")?.unbind(),
        ))
    } else {
        Ok((rows.unbind(), cols.unbind()))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(match_tokens, m)?)
}
