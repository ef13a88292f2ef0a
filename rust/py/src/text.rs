//! Bindings for the core's text module: the CLIP tokenizer (batch-parallel, GIL released) and
//! MLM masking, seeded per (seed, epoch, sample). EDA has a file of its own (`eda.rs`).

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::prelude::*;
use pyo3_tch::PyTensor;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use lightclip_core::limits;
use lightclip_core::rng::{sample_rng, streams};
use lightclip_core::text::{self, mask_tokens, word_length, MlmConfig};

use crate::captions::{caption_text, captions, PARALLEL_MIN};
use crate::errors::{core_err, torch_err, BindingError, InvalidDtypeError, InvalidInputError};
use crate::threads;

/// A context length in `1..=MAX_CONTEXT_LENGTH`, or the error naming `context_length`.
fn context_length_arg(value: i64) -> PyResult<usize> {
    let value = usize::try_from(value).map_err(|_| {
        InvalidInputError::new_err(format!(
            "invalid `context_length`: must be at least 1, got {value}"
        ))
    })?;
    limits::check_range("context_length", value, limits::MAX_CONTEXT_LENGTH).map_err(core_err)
}

/// open_clip's CLIP tokenizer: `tok(texts)` → `LongTensor[N, context_length]`.
#[pyclass(module = "lightclip._core", frozen)]
pub struct Tokenizer {
    inner: Arc<text::Tokenizer>,
    context_length: usize,
    path: PathBuf,
}

#[pymethods]
impl Tokenizer {
    #[new]
    #[pyo3(signature = (path, context_length = 77))]
    fn new(py: Python<'_>, path: PathBuf, context_length: i64) -> PyResult<Self> {
        let context_length = context_length_arg(context_length)?;
        let inner = py
            .allow_threads(|| text::Tokenizer::from_file(&path))
            .map_err(BindingError::from)?;
        Ok(Tokenizer {
            inner: Arc::new(inner),
            context_length,
            path,
        })
    }

    /// Tokenizes a caption or a list of captions into `[N, context_length]` int64.
    #[pyo3(signature = (texts, context_length = None))]
    fn __call__(
        &self,
        py: Python<'_>,
        texts: &Bound<'_, PyAny>,
        context_length: Option<i64>,
    ) -> PyResult<PyTensor> {
        let ctx = match context_length {
            Some(c) => context_length_arg(c)?,
            None => self.context_length,
        };
        let texts = captions(texts, "texts")?;
        let tok = Arc::clone(&self.inner);
        let n = texts.len();
        let ids = py.allow_threads(move || {
            let what = format!("{n} rows of {ctx} tokens");
            let mut ids = limits::zeroed::<i64>(n.saturating_mul(ctx), "texts", &what)?;
            if n < PARALLEL_MIN {
                for (row, t) in ids.chunks_mut(ctx).zip(&texts) {
                    tok.tokenize_into(t, row);
                }
            } else {
                threads::install(|| {
                    ids.par_chunks_mut(ctx)
                        .zip(texts.par_iter())
                        .with_min_len(64)
                        .for_each(|(row, t)| tok.tokenize_into(t, row));
                });
            }
            Ok::<_, lightclip_core::CoreError>(ids)
        });
        let ids = ids.map_err(core_err)?;
        let tensor = Tensor::f_from_slice(&ids)
            .and_then(|t| t.f_view([n as i64, ctx as i64]))
            .map_err(|e| torch_err("tokenize", e))?;
        Ok(PyTensor(tensor))
    }

    /// BPE ids of one caption (after cleaning), without SOT/EOT.
    fn encode(&self, text: &Bound<'_, PyAny>) -> PyResult<Vec<u32>> {
        Ok(self.inner.encode(&caption_text(text, "text")?))
    }

    /// Text of a sequence of ids (list or 1-D tensor), as open_clip's `decode`.
    fn decode(&self, ids: &Bound<'_, PyAny>) -> PyResult<String> {
        let ids: Vec<i64> = match ids.extract::<PyTensor>() {
            Ok(t) => long_values(&t.0, "ids")?.0,
            Err(_) => ids.extract().map_err(|_| {
                InvalidDtypeError::new_err(format!(
                    "`ids` must be a sequence of int or an integer tensor, got {}",
                    ids.get_type()
                ))
            })?,
        };
        Ok(self.inner.decode(&ids))
    }

    /// open_clip's cleaning of a caption (what `encode` splits).
    #[staticmethod]
    fn clean(text: &Bound<'_, PyAny>) -> PyResult<String> {
        Ok(text::clean_caption(&caption_text(text, "text")?))
    }

    #[getter]
    fn context_length(&self) -> usize {
        self.context_length
    }
    #[getter]
    fn vocab_size(&self) -> usize {
        text::VOCAB_SIZE
    }
    #[getter]
    fn sot_token_id(&self) -> i64 {
        text::SOT
    }
    #[getter]
    fn eot_token_id(&self) -> i64 {
        text::EOT
    }
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    fn __repr__(&self) -> String {
        format!(
            "Tokenizer(path={:?}, context_length={})",
            self.path, self.context_length
        )
    }
}

/// An integer tensor's values as int64 on the CPU, with its shape and device.
fn long_values(t: &Tensor, argument: &str) -> PyResult<(Vec<i64>, Vec<i64>, Device)> {
    if !matches!(
        t.kind(),
        Kind::Int64 | Kind::Int | Kind::Int16 | Kind::Int8 | Kind::Uint8
    ) {
        return Err(InvalidDtypeError::new_err(format!(
            "`{argument}` must be an integer tensor (token ids), got {:?}",
            t.kind()
        )));
    }
    let values = t
        .f_to_device(Device::Cpu)
        .and_then(|c| c.f_to_kind(Kind::Int64))
        .and_then(|c| c.f_contiguous())
        .and_then(|c| c.f_flatten(0, -1))
        .and_then(|c| Vec::<i64>::try_from(&c))
        .map_err(|e| torch_err(argument, e))?;
    Ok((values, t.size(), t.device()))
}

/// `[N, C]` (or `[C]`) token ids → rows of C.
fn rows_of(t: &Tensor, argument: &str) -> PyResult<(Vec<i64>, usize, Vec<i64>, Device)> {
    let (values, shape, device) = long_values(t, argument)?;
    let width = match shape.as_slice() {
        [c] | [_, c] if *c > 0 => *c as usize,
        _ => {
            return Err(InvalidInputError::new_err(format!(
                "invalid `{argument}`: must be [N, context_length] or [context_length] with \
                 context_length >= 1, got shape {shape:?}"
            )))
        }
    };
    Ok((values, width, shape, device))
}

fn back_to(values: &[i64], shape: &[i64], device: Device, what: &str) -> PyResult<PyTensor> {
    Tensor::f_from_slice(values)
        .and_then(|t| t.f_view(shape))
        .and_then(|t| t.f_to_device(device))
        .map(PyTensor)
        .map_err(|e| torch_err(what, e))
}

/// BERT masking of tokenized captions; returns `(masked_ids, labels)`, labels −100 where not
/// masked. Row i uses the stream of sample `start_index + i` in `epoch` under `seed`.
#[pyfunction]
#[pyo3(signature = (ids, seed, epoch = 0, start_index = 0, probability = 0.15, mask_fraction = 0.8, random_fraction = 0.1, mask_token = 49408))]
#[allow(clippy::too_many_arguments)]
pub fn mlm_mask(
    py: Python<'_>,
    ids: PyTensor,
    seed: u64,
    epoch: u64,
    start_index: u64,
    probability: f64,
    mask_fraction: f64,
    random_fraction: f64,
    mask_token: i64,
) -> PyResult<(PyTensor, PyTensor)> {
    let cfg = MlmConfig {
        probability,
        mask_fraction,
        random_fraction,
        mask_token,
        ..MlmConfig::default()
    };
    cfg.validate().map_err(core_err)?;
    let (values, width, shape, device) = rows_of(&ids.0, "ids")?;
    let (masked, labels) = py.allow_threads(|| {
        let mut masked = vec![0i64; values.len()];
        let mut labels = vec![0i64; values.len()];
        threads::install(|| {
            masked
                .par_chunks_mut(width)
                .zip(labels.par_chunks_mut(width))
                .zip(values.par_chunks(width))
                .enumerate()
                .with_min_len(256)
                .for_each(|(i, ((m, l), row))| {
                    let mut rng = sample_rng(seed, epoch, start_index + i as u64, streams::MLM);
                    let (mm, ll) = mask_tokens(row, &cfg, &mut rng);
                    m.copy_from_slice(&mm);
                    l.copy_from_slice(&ll);
                });
        });
        (masked, labels)
    });
    Ok((
        back_to(&masked, &shape, device, "mlm_mask")?,
        back_to(&labels, &shape, device, "mlm_mask")?,
    ))
}

/// Word tokens per caption (strictly between SOT and the first EOT): `[N, C]` → `[N]` int64.
#[pyfunction]
pub fn word_lengths(ids: PyTensor) -> PyResult<PyTensor> {
    let (values, width, shape, device) = rows_of(&ids.0, "ids")?;
    let lengths: Vec<i64> = values
        .chunks(width)
        .map(|row| word_length(row) as i64)
        .collect();
    let out_shape: Vec<i64> = if shape.len() == 2 {
        vec![shape[0]]
    } else {
        vec![]
    };
    back_to(&lengths, &out_shape, device, "word_lengths")
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tokenizer>()?;
    m.add("SOT_TOKEN", text::SOT)?;
    m.add("EOT_TOKEN", text::EOT)?;
    m.add("MASK_TOKEN", text::MASK)?;
    m.add("VOCAB_SIZE_WITH_MASK", text::VOCAB_SIZE_WITH_MASK)?;
    m.add_function(wrap_pyfunction!(mlm_mask, m)?)?;
    m.add_function(wrap_pyfunction!(word_lengths, m)?)
}
