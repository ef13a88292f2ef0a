//! `lightclip._core.Pipeline`: the core data pipeline as a Python iterator of tensor dicts.
//!
//! The binding builds the core pipeline from a few keyword arguments and the three settings
//! objects of `config` (augmentation, text, reading), waits for batches with the GIL
//! released, and turns each batch's contiguous buffers into torch tensors with one copy
//! (`Tensor::from_slice`). Epoch bookkeeping, state dicts and logging live in
//! `python/lightclip/data.py`.

use std::sync::{Arc, Mutex};

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_tch::PyTensor;
use tch::Tensor;

use lightclip_core::pipeline::{
    Batch, BatchConfig, EpochStream, ImageBuffer, ImageDtype, Pipeline, SampleConfig, Source,
};
use lightclip_core::text::{Eda, EdaConfig, MlmConfig, Tokenizer};
use lightclip_core::CoreError;

use crate::errors::{torch_err, BindingError, InvalidInputError, LightclipError};

mod config;
use config::{PyAugmentationConfig, PyReadingConfig, PyTextConfig};

#[pyclass(name = "Pipeline", module = "lightclip._core")]
pub struct PyPipeline {
    inner: Pipeline,
    stream: Mutex<Option<EpochStream>>,
    extras: Extras,
}

/// What a batch's dict carries besides its tensors. `sample_ids` (the key, the shard and the
/// drawn caption's index) is what a lookup in per-sample stores needs, without the cost of
/// every caption list that `all_captions` builds.
#[derive(Clone, Copy)]
struct Extras {
    captions: bool,
    all_captions: bool,
    sample_ids: bool,
}

fn tensor<T: tch::kind::Element>(data: &[T], shape: &[i64]) -> PyResult<PyTensor> {
    Tensor::f_from_slice(data)
        .and_then(|t| t.f_view(shape))
        .map(PyTensor)
        .map_err(|e| torch_err("building a batch tensor", e))
}

fn batch_to_dict<'py>(
    py: Python<'py>,
    batch: Batch,
    extras: Extras,
) -> PyResult<Bound<'py, PyDict>> {
    let (b, s, c) = (
        batch.size as i64,
        batch.image_size as i64,
        batch.context_length as i64,
    );
    let d = PyDict::new(py);
    let image_shape = [b, 3, s, s];
    match &batch.images {
        ImageBuffer::Float32(v) => d.set_item("image", tensor(v, &image_shape)?)?,
        ImageBuffer::Uint8(v) => d.set_item("image", tensor(v, &image_shape)?)?,
    }
    d.set_item("text", tensor(&batch.text, &[b, c])?)?;
    d.set_item("masked_text", tensor(&batch.masked_text, &[b, c])?)?;
    d.set_item("mlm_labels", tensor(&batch.mlm_labels, &[b, c])?)?;
    d.set_item("word_lengths", tensor(&batch.word_lengths, &[b])?)?;
    if batch.other_rows > 0 {
        let shape = [b, batch.other_rows as i64, c];
        d.set_item("other_text", tensor(&batch.other_text, &shape)?)?;
    }
    if let Some(labels) = &batch.labels {
        d.set_item("label", tensor(labels, &[b])?)?;
    }
    if extras.captions {
        d.set_item("captions", batch.captions)?;
    }
    if extras.all_captions {
        d.set_item("all_captions", batch.all_captions)?;
    }
    if extras.all_captions || extras.sample_ids {
        d.set_item("key", batch.keys)?;
    }
    if extras.sample_ids {
        d.set_item("shard", batch.sources)?;
        // A list, like the keys it goes with: the lookup it serves is on the host, and a
        // tensor would follow the batch onto the device and cost a sync to read back.
        d.set_item("caption_index", batch.caption_indices)?;
    }
    d.set_item("_epoch", batch.epoch)?;
    d.set_item("_consumed", batch.consumed)?;
    Ok(d)
}

#[pymethods]
impl PyPipeline {
    #[new]
    #[pyo3(signature = (
        source, *, batch_size, image_size, train, seed, threads, rank, world_size, drop_last,
        image_dtype, prefetch, return_captions, all_captions, sample_ids, augmentation, text,
        reading
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        source: String,
        batch_size: usize,
        image_size: usize,
        train: bool,
        seed: u64,
        threads: usize,
        rank: u64,
        world_size: u64,
        drop_last: bool,
        image_dtype: &str,
        prefetch: usize,
        return_captions: bool,
        all_captions: bool,
        sample_ids: bool,
        augmentation: PyRef<'_, PyAugmentationConfig>,
        text: PyRef<'_, PyTextConfig>,
        reading: PyRef<'_, PyReadingConfig>,
    ) -> PyResult<Self> {
        let image_dtype = match image_dtype {
            "float32" => ImageDtype::Float32,
            "uint8" => ImageDtype::Uint8,
            other => {
                return Err(InvalidInputError::new_err(format!(
                    "invalid `image_dtype`: must be \"float32\" or \"uint8\", got {other:?}"
                )))
            }
        };
        let augment = augmentation.to_core();
        let text = text.clone();
        let options = reading.source_options();
        let policy = reading.policy();
        let (max_pixels, shuffle_buffer, shuffle_buffer_bytes) = (
            reading.max_pixels,
            reading.shuffle_buffer,
            reading.shuffle_buffer_bytes,
        );
        let threads = if threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        } else {
            threads
        };
        let build = move || -> Result<Pipeline, CoreError> {
            let tokenizer = match &text.vocab_path {
                Some(p) => Some(Arc::new(Tokenizer::from_file(p.as_ref())?)),
                None => None,
            };
            // TextConfig checked the probabilities; None (no source default applied) is off.
            let eda_prob = text.eda_prob.unwrap_or(0.0);
            let eda = if eda_prob > 0.0 {
                let config = EdaConfig {
                    probability: eda_prob,
                    synonym_replacement: text.eda_strength,
                    random_insertion: text.eda_strength,
                    random_swap: text.eda_strength,
                    random_deletion: text.eda_strength,
                    ..EdaConfig::default()
                };
                Some(Eda::new(config)?)
            } else {
                None
            };
            let mlm = text.mlm.then(|| MlmConfig {
                probability: text.mlm_prob,
                ..MlmConfig::default()
            });
            let sample = SampleConfig {
                image_size,
                train,
                augment,
                max_pixels,
                image_dtype,
                context_length: text.context_length,
                tokenizer,
                eda,
                mlm,
                seed,
                captions_per_sample: text.captions_per_sample,
            };
            let batches = BatchConfig {
                batch_size,
                drop_last,
                prefetch,
                policy,
                seed,
                rank,
                world_size,
                shuffle: train,
                shuffle_buffer,
                shuffle_buffer_bytes,
                read_ahead: train,
            };
            Pipeline::new(Source::open(&source, &options)?, sample, batches, threads)
        };
        let inner = py.allow_threads(build).map_err(BindingError::from)?;
        Ok(PyPipeline {
            inner,
            stream: Mutex::new(None),
            extras: Extras {
                captions: return_captions,
                all_captions,
                sample_ids,
            },
        })
    }

    /// Starts epoch `epoch` after its first `skip` items of the order (a resumed position).
    /// A stream that has read ahead to the start of exactly this epoch is kept.
    fn start(&self, py: Python<'_>, epoch: u64, skip: u64) {
        let old = self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(stream) = old.as_ref() {
            if skip == 0 && stream.positioned_at(epoch) {
                *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = old;
                return;
            }
        }
        let inner = &self.inner;
        // Dropping the old stream joins its producer, which may be mid-batch: without the GIL.
        let new = py.allow_threads(move || {
            drop(old);
            inner.start(epoch, skip)
        });
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(new);
    }

    /// Stops the running epoch and what it read ahead (if any) and frees its threads and
    /// buffers.
    fn stop(&self, py: Python<'_>) {
        let old = self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        py.allow_threads(move || drop(old));
    }

    /// The next batch as a dict of tensors, or None at the end of the epoch.
    fn next_batch<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let stream = self.stream.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(mut stream) = stream else {
            return Err(LightclipError::new_err("no epoch running: call start() first (or the pipeline is used from two threads at once)"));
        };
        let (item, stream) = py.allow_threads(move || {
            let item = stream.next_batch();
            (item, stream)
        });
        match item {
            Some(Ok(batch)) => {
                *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
                Ok(Some(batch_to_dict(py, batch, self.extras)?))
            }
            Some(Err(e)) => Err(BindingError::from(e).into()),
            None => {
                // The end of the epoch; a training stream is already reading the next one.
                *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(stream);
                Ok(None)
            }
        }
    }

    /// Counters: samples read/yielded, batches, skipped samples by reason.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.inner.stats.snapshot();
        let d = PyDict::new(py);
        d.set_item("samples_read", s.samples_read)?;
        d.set_item("samples_yielded", s.samples_yielded)?;
        d.set_item("batches", s.batches)?;
        d.set_item("dropped_tail", s.dropped_tail)?;
        d.set_item("skipped_total", s.skipped.values().sum::<u64>())?;
        d.set_item("skipped", s.skipped)?;
        Ok(d)
    }

    /// Skip messages ("skipped <shard>, member <m>: <reason> (<kind>)") since the last call.
    fn take_skip_log(&self) -> Vec<String> {
        self.inner.stats.take_log()
    }

    #[getter]
    fn class_names(&self) -> Option<Vec<String>> {
        self.inner.source.class_names()
    }

    /// What the shards' `dataset_type.txt` says ("retrieval", "classification",
    /// "multilabel"), None without one or for other sources.
    #[getter]
    fn dataset_type(&self) -> Option<&'static str> {
        let layout = self.inner.source.shard_layout()?;
        layout.dataset_type.map(|t| t.name())
    }

    /// The zero-shot prompts the source ships: the lines of the shards'
    /// `zeroshot_classification_templates.txt`, or the synthetic captions' phrasings.
    #[getter]
    fn templates(&self) -> Option<Vec<String>> {
        self.inner.source.templates()
    }

    /// Samples per epoch over all ranks, where known without reading the data.
    #[getter]
    fn num_samples(&self) -> Option<usize> {
        self.inner.source.len()
    }

    #[getter]
    fn threads(&self) -> usize {
        self.inner.threads()
    }
}

/// The shard paths a `::`-separated list of shard paths / brace patterns names, in order.
#[pyfunction]
pub fn shard_names(source: &str) -> PyResult<Vec<String>> {
    lightclip_core::pipeline::source::shard_names(source).map_err(|e| BindingError::from(e).into())
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyPipeline>()?;
    config::register(m)?;
    m.add_function(wrap_pyfunction!(shard_names, m)?)
}
