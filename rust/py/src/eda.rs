//! EDA caption augmentation (`eda_augment`) and its WordNet (`wordnet_synonyms`,
//! `wordnet_dir`), seeded per (seed, epoch, sample) as the data pipeline applies it.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};
use rayon::prelude::*;

use lightclip_core::text::{Eda, EdaConfig, EdaMode, EdaOp, EpochStreams, WordNet};

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
    let eda = Eda::with_wordnet(config, resolve_wordnet(py, wordnet)?).map_err(core_err)?;
    let streams = EpochStreams::new(seed, epoch);
    let edit = |first: usize, captions: &[Cow<'_, str>]| {
        edit_blocks(&eda, op, streams, start_index + first as u64, captions)
    };

    // Captions go through in rounds: each round's str objects are read, edited and answered
    // while they are still in cache, rather than touched once per pass over the whole list.
    let mut items = caption_items(texts, "texts")?;
    let mut out: Vec<Bound<'py, PyAny>> = Vec::with_capacity(texts.len().unwrap_or(1));
    let mut round: Vec<Bound<'py, PyAny>> = Vec::with_capacity(ROUND);
    loop {
        round.clear();
        for item in items.by_ref().take(ROUND) {
            round.push(item?);
        }
        if round.is_empty() {
            break;
        }
        let first = out.len();
        let captions: Vec<Cow<'_, str>> = round
            .iter()
            .enumerate()
            .map(|(j, item)| borrowed_caption(item, first + j, "texts"))
            .collect::<PyResult<_>>()?;
        let blocks = py.allow_threads(|| edit(first, &captions));
        let edits = blocks.iter().flat_map(|(buffer, ends)| {
            let starts = std::iter::once(0).chain(ends.iter().copied());
            starts.zip(ends).map(|(a, &b)| &buffer[a..b])
        });
        for ((item, caption), edit) in round.iter().zip(&captions).zip(edits) {
            out.push(match edit {
                // Unchanged: the caller's own str (bytes captions come back decoded).
                "" if item.is_instance_of::<PyString>() => item.clone(),
                "" => PyString::new(py, caption).into_any(),
                edit => PyString::new(py, edit).into_any(),
            });
        }
    }
    PyList::new(py, out)
}

/// Captions per round of [`eda_augment`]: their str objects (about 100 bytes each) stay in
/// cache between reading and answering, and each round has blocks enough for every thread.
const ROUND: usize = 4096;

/// A block's edits in one buffer: caption j's edit ends at `ends[j]` and starts where the
/// previous one ended; an empty edit means "left as is" (EDA never empties a caption).
type EditBlock = (String, Vec<usize>);

/// EDA of `captions` (sample indices from `first_index`) in blocks, on the calling thread
/// when the pool has one thread or the captions are few, else on the pool.
fn edit_blocks(
    eda: &Eda,
    op: Option<EdaOp>,
    streams: EpochStreams,
    first_index: u64,
    captions: &[Cow<'_, str>],
) -> Vec<EditBlock> {
    let run_block = |first: usize, block: &[Cow<'_, str>]| -> EditBlock {
        let mut buffer = String::with_capacity(block.iter().map(|t| t.len() + 8).sum());
        let ends = block
            .iter()
            .enumerate()
            .map(|(j, text)| {
                let index = first_index + (first + j) as u64;
                eda.edit_sample_into(op, text, streams, index, &mut buffer);
                buffer.len()
            })
            .collect();
        (buffer, ends)
    };
    let parallel = threads::pool().is_some_and(|pool| pool.current_num_threads() > 1);
    if !parallel || captions.len() < PARALLEL_MIN {
        return vec![run_block(0, captions)];
    }
    threads::install(|| {
        captions
            .par_chunks(PARALLEL_MIN)
            .enumerate()
            .map(|(b, block)| run_block(b * PARALLEL_MIN, block))
            .collect()
    })
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
    m.add_function(wrap_pyfunction!(eda_augment, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_synonyms, m)?)?;
    m.add_function(wrap_pyfunction!(wordnet_dir, m)?)
}
