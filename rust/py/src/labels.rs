//! `LabelSchedule` and the progressive contrastive targets of LightCLIP, built with libtorch
//! ops on the logits' own device.
//!
//! The Python class wraps the core's schedule (`lightclip_core::schedule`), so a configuration
//! is validated once, when it is made; `soft_labels` / `soft_label_rows` take it and turn its
//! mixture of I, U and W at progress p into N×N matrices.
//!
//! Everything here runs under no-grad on a detached copy of the logits, so the targets never
//! carry gradient. Half-precision logits (float16, bfloat16) are computed in float32 and cast
//! back to the input dtype at the end: the masked softmax, the α scaling and the additions then
//! round once instead of at every step (float16 has ~3 significant digits, and bfloat16 ~2,
//! which would show in the row sums), and CPU kernels for half types are slow anyway.
//! float64 stays float64.

use pyo3::prelude::*;
use pyo3::types::PyType;
use pyo3_tch::PyTensor;
use tch::{Kind, Tensor};

use lightclip_core::schedule::{LabelMix, LabelSchedule};
use lightclip_core::CoreError;

use crate::errors::{torch_err, BindingError};
use crate::tensor::require_float;

/// The label schedule's configuration, checked on construction (`lightclip.LabelSchedule`).
#[pyclass(name = "LabelSchedule", module = "lightclip._core", frozen, eq)]
#[derive(Clone, PartialEq)]
pub struct PyLabelSchedule(LabelSchedule);

#[pymethods]
impl PyLabelSchedule {
    #[new]
    // Literal defaults (the core's DEFAULT_*), so that Python's signature shows the numbers.
    #[pyo3(signature = (r1 = 0.33, r2 = 0.66, alpha = 0.2, ramp = false, ramp_width = 0.1))]
    fn new(r1: f64, r2: f64, alpha: f64, ramp: bool, ramp_width: f64) -> PyResult<Self> {
        let schedule = LabelSchedule::new(r1, r2, alpha, ramp, ramp_width);
        Ok(PyLabelSchedule(schedule.map_err(BindingError::from)?))
    }

    #[getter]
    fn r1(&self) -> f64 {
        self.0.r1()
    }
    #[getter]
    fn r2(&self) -> f64 {
        self.0.r2()
    }
    #[getter]
    fn alpha(&self) -> f64 {
        self.0.alpha()
    }
    #[getter]
    fn ramp(&self) -> bool {
        self.0.ramp()
    }
    #[getter]
    fn ramp_width(&self) -> f64 {
        self.0.ramp_width()
    }

    /// The hard-switch phase at `progress`: `"hard"`, `"uniform"` or `"negative"`.
    fn phase(&self, progress: f64) -> PyResult<&'static str> {
        let phase = self.0.phase_at(progress).map_err(BindingError::from)?;
        Ok(phase.name())
    }

    /// Weights `(identity, uniform, negatives)` of the target at `progress`; they sum to 1.
    fn weights(&self, progress: f64) -> PyResult<(f64, f64, f64)> {
        let mix = self.0.mix_at(progress).map_err(BindingError::from)?;
        Ok((mix.identity, mix.uniform, mix.negatives))
    }

    fn __repr__(&self) -> String {
        let s = &self.0;
        let ramp = if s.ramp() { "True" } else { "False" };
        format!(
            "LabelSchedule(r1={:?}, r2={:?}, alpha={:?}, ramp={ramp}, ramp_width={:?})",
            s.r1(),
            s.r2(),
            s.alpha(),
            s.ramp_width()
        )
    }

    /// Pickling and `copy.deepcopy` rebuild the schedule from its five values.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> (Bound<'py, PyType>, (f64, f64, f64, bool, f64)) {
        let s = slf.get().0;
        (
            slf.get_type(),
            (s.r1(), s.r2(), s.alpha(), s.ramp(), s.ramp_width()),
        )
    }
}

/// The schedule a label function was given, or the default one.
fn schedule_or_default(schedule: Option<&Bound<'_, PyLabelSchedule>>) -> LabelSchedule {
    schedule.map(|s| s.get().0).unwrap_or_default()
}

/// What can go wrong once the GIL is released: libtorch refusing an op, or bad logit values.
enum LabelError {
    Torch(tch::TchError),
    Input(CoreError),
}

impl From<tch::TchError> for LabelError {
    fn from(err: tch::TchError) -> Self {
        LabelError::Torch(err)
    }
}

impl LabelError {
    fn into_py(self, context: &str) -> PyErr {
        match self {
            LabelError::Torch(e) => torch_err(context, e),
            LabelError::Input(e) => BindingError::from(e).into(),
        }
    }
}

/// The dtype the targets are computed in (see the module docs for why half is widened).
fn compute_kind(kind: Kind) -> Kind {
    match kind {
        Kind::Half | Kind::BFloat16 => Kind::Float,
        other => other,
    }
}

/// Targets for each row of a `[n, m]` logits block whose row i has its positive at column
/// `offset + i`: `identity` on the positive, `uniform / (m − 1)` plus `negatives · W` on each
/// negative, W the softmax of the row's logits over its negatives. Returns float in
/// `compute_kind`.
fn row_targets(logits: &Tensor, offset: i64, mix: LabelMix) -> Result<Tensor, LabelError> {
    let (n, m) = (logits.size()[0], logits.size()[1]);
    let kind = compute_kind(logits.kind());
    let device = logits.device();
    // One column means no negatives: all the mass stays on the positive whatever the phase.
    if mix.is_hard() || m == 1 {
        let targets = Tensor::f_zeros([n, m], (kind, device))?;
        fill_positives(&targets, offset, 1.0)?;
        return Ok(targets);
    }
    let off_diagonal = mix.uniform / (m - 1) as f64;
    let targets = if mix.needs_logits() {
        // A private row-major copy in the compute dtype, so masking in place never touches the
        // caller's tensor and the row softmax reads contiguous memory.
        let masked = if logits.is_contiguous() {
            logits.f_to_dtype(kind, false, true)?
        } else {
            logits.f_contiguous()?.f_to_kind(kind)?
        };
        fill_positives(&masked, offset, f64::NEG_INFINITY)?;
        let mut weights = masked.f_softmax(1, None::<Kind>)?;
        drop(masked);
        require_finite_rows(&weights)?;
        // In place: at N = 4096 each extra N×N temporary costs as much as the softmax's output.
        let _ = weights.f_mul_scalar_(mix.negatives)?;
        if off_diagonal > 0.0 {
            let _ = weights.f_add_scalar_(off_diagonal)?;
        }
        weights
    } else {
        Tensor::f_full([n, m], off_diagonal, (kind, device))?
    };
    fill_positives(&targets, offset, mix.identity)?;
    Ok(targets)
}

/// Writes `value` at every row's positive, `(i, offset + i)`, in place (through a view).
fn fill_positives(targets: &Tensor, offset: i64, value: f64) -> Result<(), tch::TchError> {
    let _ = targets.f_diagonal(offset, 0, 1)?.f_fill_(value)?;
    Ok(())
}

/// Refuses logits with NaN or +inf (or a row whose negatives are all −inf).
///
/// Any of these makes the row's softmax sum NaN, and so *every* entry of that row NaN; a row
/// of finite logits gives finite weights. So one column of the softmax tells about every row:
/// an N-element sum instead of a pass over all N² logits, which would cost as much as the
/// softmax itself. (A single −inf negative is harmless: it just gets weight 0.)
fn require_finite_rows(weights: &Tensor) -> Result<(), LabelError> {
    let column_sum = weights
        .f_select(1, 0)?
        .f_sum(None::<Kind>)?
        .f_double_value(&[])?;
    if column_sum.is_finite() {
        Ok(())
    } else {
        Err(LabelError::Input(CoreError::invalid(
            "logits",
            "contains inf or NaN; the negative-aware targets need finite logits",
        )))
    }
}

/// Shape checks naming `logits`; returns (rows, columns).
fn check_matrix(logits: &Tensor) -> Result<(i64, i64), CoreError> {
    let size = logits.size();
    if size.len() != 2 {
        return Err(CoreError::invalid(
            "logits",
            format!("must be a 2-D matrix, got shape {size:?}"),
        ));
    }
    if size[0] == 0 || size[1] == 0 {
        return Err(CoreError::invalid(
            "logits",
            format!("must have at least one row and one column, got shape {size:?}"),
        ));
    }
    Ok((size[0], size[1]))
}

/// Image→text and text→image targets for square logits `z` (`z[i, j]` = image i · text j).
#[pyfunction]
#[pyo3(signature = (logits, progress, *, schedule = None))]
pub fn soft_labels(
    py: Python<'_>,
    logits: PyTensor,
    progress: f64,
    schedule: Option<&Bound<'_, PyLabelSchedule>>,
) -> PyResult<(PyTensor, PyTensor)> {
    let (mix, n, m) = checked_inputs(&logits, progress, schedule)?;
    if n != m {
        return Err(BindingError::from(CoreError::invalid(
            "logits",
            format!("must be square (N images × N texts), got shape [{n}, {m}]"),
        ))
        .into());
    }
    let logits = logits.0;
    let kind = logits.kind();
    let computed = py.allow_threads(move || {
        // Grad mode is thread-local and allow_threads stays on this thread: the guard covers
        // every op below and is dropped before the GIL comes back.
        let _no_grad = tch::no_grad_guard();
        let logits = logits.f_detach()?;
        let i2t = row_targets(&logits, 0, mix)?.f_to_kind(kind)?;
        let t2i = row_targets(&logits.f_transpose(0, 1)?, 0, mix)?.f_to_kind(kind)?;
        Ok::<_, LabelError>((i2t, t2i))
    });
    let (i2t, t2i) = computed.map_err(|e| e.into_py("soft_labels"))?;
    Ok((PyTensor(i2t), PyTensor(t2i)))
}

/// The checks both label functions share: the mixture at `progress`, a float 2-D `logits`.
fn checked_inputs(
    logits: &PyTensor,
    progress: f64,
    schedule: Option<&Bound<'_, PyLabelSchedule>>,
) -> PyResult<(LabelMix, i64, i64)> {
    let mix = schedule_or_default(schedule)
        .mix_at(progress)
        .map_err(BindingError::from)?;
    require_float(logits, "logits")?;
    let (n, m) = check_matrix(logits).map_err(BindingError::from)?;
    Ok((mix, n, m))
}

/// Targets for a `[n, M]` block of rows whose row i has its positive at column
/// `positive_offset + i` (a rank's slice of the global logits under `local_loss`).
#[pyfunction]
#[pyo3(signature = (logits, progress, positive_offset = 0, *, schedule = None))]
pub fn soft_label_rows(
    py: Python<'_>,
    logits: PyTensor,
    progress: f64,
    positive_offset: i64,
    schedule: Option<&Bound<'_, PyLabelSchedule>>,
) -> PyResult<PyTensor> {
    let (mix, n, m) = checked_inputs(&logits, progress, schedule)?;
    if positive_offset < 0 || positive_offset + n > m {
        return Err(BindingError::from(CoreError::invalid(
            "positive_offset",
            format!(
                "the positives of {n} rows must fit in {m} columns: need 0 ≤ offset ≤ {}, got \
                 {positive_offset}",
                m - n
            ),
        ))
        .into());
    }
    let logits = logits.0;
    let kind = logits.kind();
    let computed = py.allow_threads(move || {
        let _no_grad = tch::no_grad_guard();
        let logits = logits.f_detach()?;
        Ok::<_, LabelError>(row_targets(&logits, positive_offset, mix)?.f_to_kind(kind)?)
    });
    let targets = computed.map_err(|e| e.into_py("soft_label_rows"))?;
    Ok(PyTensor(targets))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyLabelSchedule>()?;
    m.add_function(wrap_pyfunction!(soft_labels, m)?)?;
    m.add_function(wrap_pyfunction!(soft_label_rows, m)?)
}
