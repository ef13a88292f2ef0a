//! Bindings for the core's text module: the CLIP tokenizer (batch-parallel, GIL released),
//! EDA caption augmentation and MLM masking, each seeded per (seed, epoch, sample).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyString};
use pyo3_tch::PyTensor;
use rayon::prelude::*;
use tch::{Device, Kind, Tensor};

use lightclip_core::text::{
    self, mask_tokens, sample_rng, streams, word_length, Eda, EdaConfig, EdaMode, EdaOp, MlmConfig,
    WordNet,
};

use crate::errors::{core_err, torch_err, BindingError, InvalidDtypeError, InvalidInputError};
use crate::threads;

/// Batches smaller than this are tokenized on the calling thread (pool hand-off costs more).
const PARALLEL_MIN: usize = 256;

/// One caption from Python: `str`, or `bytes` holding UTF-8.
fn caption_text(obj: &Bound<'_, PyAny>, argument: &str) -> PyResult<String> {
    if let Ok(s) = obj.downcast::<PyString>() {
        return s.to_str().map(str::to_owned).map_err(|e| {
            InvalidInputError::new_err(format!(
                "invalid `{argument}`: not encodable as UTF-8 ({e})"
            ))
        });
    }
    if let Ok(b) = obj.downcast::<PyBytes>() {
        return String::from_utf8(b.as_bytes().to_vec()).map_err(|e| {
            InvalidInputError::new_err(format!("invalid `{argument}`: bytes are not UTF-8 ({e})"))
        });
    }
    Err(InvalidDtypeError::new_err(format!(
        "`{argument}` must be str (or UTF-8 bytes), got {}",
        obj.get_type()
    )))
}

/// `str`/`bytes` → one caption object; any other iterable → its items.
fn caption_objects<'py>(
    texts: &Bound<'py, PyAny>,
    argument: &str,
) -> PyResult<Vec<Bound<'py, PyAny>>> {
    if texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>() {
        return Ok(vec![texts.clone()]);
    }
    let iter = texts.try_iter().map_err(|_| {
        InvalidDtypeError::new_err(format!(
            "`{argument}` must be a str or a list of str, got {}",
            texts.get_type()
        ))
    })?;
    iter.collect()
}

/// Caption `i` read in place when it is a `str` (its UTF-8 form is cached by Python), else
/// decoded from UTF-8 `bytes`; the error names `argument[i]`.
fn borrowed_caption<'a>(
    item: &'a Bound<'_, PyAny>,
    i: usize,
    argument: &str,
) -> PyResult<Cow<'a, str>> {
    match item
        .downcast::<PyString>()
        .ok()
        .and_then(|s| s.to_str().ok())
    {
        Some(s) => Ok(Cow::Borrowed(s)),
        None => caption_text(item, &format!("{argument}[{i}]")).map(Cow::Owned),
    }
}

/// `str` → one caption; any other iterable → its items as captions.
fn captions(texts: &Bound<'_, PyAny>, argument: &str) -> PyResult<Vec<String>> {
    if texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>() {
        return Ok(vec![caption_text(texts, argument)?]);
    }
    let iter = texts.try_iter().map_err(|_| {
        InvalidDtypeError::new_err(format!(
            "`{argument}` must be a str or a list of str, got {}",
            texts.get_type()
        ))
    })?;
    let mut out = Vec::with_capacity(texts.len().unwrap_or(0));
    for (i, item) in iter.enumerate() {
        let item = item?;
        // Fast path without building the argument's name, which only errors need.
        match item
            .downcast::<PyString>()
            .ok()
            .and_then(|s| s.to_str().ok())
        {
            Some(s) => out.push(s.to_owned()),
            None => out.push(caption_text(&item, &format!("{argument}[{i}]"))?),
        }
    }
    Ok(out)
}

fn positive(value: i64, argument: &str) -> PyResult<usize> {
    usize::try_from(value)
        .ok()
        .filter(|&v| v > 0)
        .ok_or_else(|| {
            InvalidInputError::new_err(format!(
                "invalid `{argument}`: must be at least 1, got {value}"
            ))
        })
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
        let context_length = positive(context_length, "context_length")?;
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
            Some(c) => positive(c, "context_length")?,
            None => self.context_length,
        };
        let texts = captions(texts, "texts")?;
        let tok = Arc::clone(&self.inner);
        let n = texts.len();
        let ids = py.allow_threads(move || {
            let mut ids = vec![0i64; n * ctx];
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
            ids
        });
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

/// Dictionaries loaded from explicit paths, kept for the process (loading takes a second).
fn wordnet_at(dir: PathBuf) -> PyResult<Arc<WordNet>> {
    static LOADED: Mutex<Option<HashMap<PathBuf, Arc<WordNet>>>> = Mutex::new(None);
    let mut guard = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    if let Some(wn) = map.get(&dir) {
        return Ok(Arc::clone(wn));
    }
    let wn = Arc::new(WordNet::load(&dir).map_err(core_err)?);
    map.insert(dir, Arc::clone(&wn));
    Ok(wn)
}

/// `None`/`True`: the search path; `False`: no dictionary; a path: that folder.
fn resolve_wordnet(
    py: Python<'_>,
    wordnet: Option<&Bound<'_, PyAny>>,
) -> PyResult<Option<Arc<WordNet>>> {
    match wordnet {
        None => Ok(py.allow_threads(WordNet::shared)),
        Some(obj) => {
            if let Ok(flag) = obj.extract::<bool>() {
                return Ok(if flag {
                    py.allow_threads(WordNet::shared)
                } else {
                    None
                });
            }
            let dir: PathBuf = obj.extract().map_err(|_| {
                InvalidDtypeError::new_err(format!(
                    "`wordnet` must be a path, a bool or None, got {}",
                    obj.get_type()
                ))
            })?;
            py.allow_threads(|| wordnet_at(dir)).map(Some)
        }
    }
}

/// EDA on a list of captions; caption i uses the stream of sample `start_index + i` in
/// `epoch` under `seed`. `op` ("sr", "ri", "rs", "rd") forces one operation on every caption.
///
/// Built for throughput, since a training run augments every caption it reads: the captions
/// are read in place (no copy), each worker writes its block's results into one buffer, and a
/// caption EDA leaves alone comes back as the very same `str` object.
#[pyfunction]
#[pyo3(signature = (texts, seed, epoch = 0, start_index = 0, probability = 1.0, synonym_replacement = 0.1, random_insertion = 0.1, random_swap = 0.1, random_deletion = 0.1, mode = "declip", op = None, wordnet = None))]
#[allow(clippy::too_many_arguments)]
pub fn eda_augment<'py>(
    py: Python<'py>,
    texts: &Bound<'py, PyAny>,
    seed: u64,
    epoch: u64,
    start_index: u64,
    probability: f64,
    synonym_replacement: f64,
    random_insertion: f64,
    random_swap: f64,
    random_deletion: f64,
    mode: &str,
    op: Option<&str>,
    wordnet: Option<&Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyList>> {
    let config = EdaConfig {
        probability,
        synonym_replacement,
        random_insertion,
        random_swap,
        random_deletion,
        mode: EdaMode::parse(mode).map_err(core_err)?,
    };
    let op = op.map(EdaOp::parse).transpose().map_err(core_err)?;
    let items = caption_objects(texts, "texts")?;
    let captions: Vec<Cow<'_, str>> = items
        .iter()
        .enumerate()
        .map(|(i, item)| borrowed_caption(item, i, "texts"))
        .collect::<PyResult<_>>()?;
    let eda = Eda::with_wordnet(config, resolve_wordnet(py, wordnet)?).map_err(core_err)?;

    // One (buffer, spans) per block of captions; a span is None for a caption left as is.
    type Block = (String, Vec<Option<(usize, usize)>>);
    let run_block = |first: usize, block: &[Cow<'_, str>]| -> Block {
        let mut buffer = String::with_capacity(block.iter().map(|t| t.len() + 8).sum());
        let spans = block
            .iter()
            .enumerate()
            .map(|(j, text)| {
                let index = start_index + (first + j) as u64;
                let start = buffer.len();
                eda.edit_sample_into(op, text, seed, epoch, index, &mut buffer)
                    .then_some((start, buffer.len()))
            })
            .collect();
        (buffer, spans)
    };
    let blocks: Vec<Block> = py.allow_threads(|| {
        if captions.len() < PARALLEL_MIN {
            return vec![run_block(0, &captions)];
        }
        threads::install(|| {
            captions
                .par_chunks(PARALLEL_MIN)
                .enumerate()
                .map(|(b, block)| run_block(b * PARALLEL_MIN, block))
                .collect()
        })
    });

    let out = PyList::empty(py);
    let results = blocks
        .iter()
        .flat_map(|(buffer, spans)| spans.iter().map(move |span| (buffer, span)));
    for ((item, caption), (buffer, span)) in items.iter().zip(&captions).zip(results) {
        match span {
            Some((a, b)) => out.append(PyString::new(py, &buffer[*a..*b]))?,
            // Unchanged: the caller's own str (bytes captions come back decoded).
            None if item.is_instance_of::<PyString>() => out.append(item)?,
            None => out.append(PyString::new(py, caption))?,
        }
    }
    Ok(out)
}

/// WordNet synonyms EDA would use for a word (lower-cased; base forms for inflections).
#[pyfunction]
#[pyo3(signature = (word, wordnet = None))]
pub fn wordnet_synonyms(
    py: Python<'_>,
    word: &str,
    wordnet: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<String>> {
    let Some(wn) = resolve_wordnet(py, wordnet)? else {
        return Ok(vec![]);
    };
    Ok(wn
        .synonyms(&word.to_lowercase())
        .into_iter()
        .map(str::to_owned)
        .collect())
}

/// The folder of the WordNet on the search path, or `None` when there is none.
#[pyfunction]
pub fn wordnet_dir(py: Python<'_>) -> Option<PathBuf> {
    py.allow_threads(WordNet::shared)
        .map(|wn| wn.dir().to_path_buf())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Tokenizer>()?;
    m.add("SOT_TOKEN", text::SOT)?;
    m.add("EOT_TOKEN", text::EOT)?;
    m.add("MASK_TOKEN", text::MASK)?;
    m.add("VOCAB_SIZE_WITH_MASK", text::VOCAB_SIZE_WITH_MASK)?;
    m.add_function(wrap_pyfunction!(mlm_mask, m)?)?;
    m.add_function(wrap_pyfunction!(word_lengths, m)?)?;
    m.add_function(wrap_pyfunction!(eda_augment, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_synonyms, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_dir, m)?)
}
