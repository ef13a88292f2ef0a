//! EDA caption augmentation (`eda_augment`) and its WordNet (`wordnet_synonyms`,
//! `wordnet_dir`), seeded per (seed, epoch, sample) as the data pipeline applies it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use rayon::prelude::*;

use lightclip_core::text::{Eda, EdaConfig, EdaMode, EdaOp, WordNet};

use crate::captions::{borrowed_caption, caption_items, PARALLEL_MIN};
use crate::errors::{core_err, InvalidDtypeError};
use crate::threads;

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
/// A caption EDA leaves alone comes back as the very same `str` object.
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
    let eda = Eda::with_wordnet(config, resolve_wordnet(py, wordnet)?).map_err(core_err)?;

    let items: Vec<Bound<'py, PyAny>> = caption_items(texts, "texts")?.collect::<PyResult<_>>()?;
    // The captions end to end in one buffer: the editing threads read it in order rather
    // than chasing each Python string.
    let mut text = String::new();
    let mut spans = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let start = text.len();
        text.push_str(&borrowed_caption(item, i, "texts")?);
        spans.push(start..text.len());
    }
    let captions: Vec<&str> = spans.into_iter().map(|span| &text[span]).collect();
    let edit_run = |(r, run): (usize, &[&str])| {
        Edits::of_run(&eda, op, run, seed, epoch, start_index + (r * RUN) as u64)
    };
    let runs: Vec<Edits> = py.allow_threads(|| {
        if captions.len() < PARALLEL_MIN {
            captions.chunks(RUN).enumerate().map(edit_run).collect()
        } else {
            threads::install(|| captions.par_chunks(RUN).enumerate().map(edit_run).collect())
        }
    });
    let mut edits = runs.iter().flat_map(Edits::each);
    let out = items.iter().zip(&captions).map(|(item, caption)| {
        match edits.next().expect("one edit per caption") {
            Some(edit) => PyString::new(py, edit).into_any(),
            // Unchanged: the caller's own str (bytes captions come back decoded).
            None if item.is_instance_of::<PyString>() => item.clone(),
            None => PyString::new(py, caption).into_any(),
        }
    });
    PyList::new(py, out)
}

/// Captions edited together on one thread.
const RUN: usize = 128;

/// The edits of a run of consecutive captions, written end to end into one buffer: one
/// allocation per run rather than one per caption.
struct Edits {
    text: String,
    /// Where each caption's edit ends in `text`; None when EDA left the caption alone.
    ends: Vec<Option<usize>>,
}

impl Edits {
    /// `run[i]` edited with the stream of sample `first_index + i`.
    fn of_run(
        eda: &Eda,
        op: Option<EdaOp>,
        run: &[&str],
        seed: u64,
        epoch: u64,
        first_index: u64,
    ) -> Edits {
        let mut text = String::with_capacity(run.iter().map(|c| c.len()).sum());
        let ends = (first_index..)
            .zip(run)
            .map(|(index, caption)| {
                eda.edit_sample_into(op, caption, seed, epoch, index, &mut text)
                    .then_some(text.len())
            })
            .collect();
        Edits { text, ends }
    }

    /// Each caption's edit, None where it was left alone.
    fn each(&self) -> impl Iterator<Item = Option<&str>> {
        let mut start = 0;
        self.ends.iter().map(move |end| {
            end.map(|end| {
                let edit = &self.text[start..end];
                start = end;
                edit
            })
        })
    }
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
        .iter()
        .map(|s| s.to_string())
        .collect())
}

/// The folder of the WordNet on the search path, or `None` when there is none.
#[pyfunction]
pub fn wordnet_dir(py: Python<'_>) -> Option<PathBuf> {
    py.allow_threads(WordNet::shared)
        .map(|wn| wn.dir().to_path_buf())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(eda_augment, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_synonyms, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_dir, m)?)
}
