//! The data pipeline's three groups of settings as Python classes: `AugmentationConfig`,
//! `TextConfig` and `ReadingConfig` (`lightclip.*`).
//!
//! Each is defined here once, checked once when it is made (with the core's own bounds, so a
//! bad value is refused where the caller wrote it, not when a pipeline starts), and crosses
//! into `Pipeline` as one object. They are frozen values: equal when every field is, pickled
//! and copied by their fields, changed with `replace(**changes)` (a new, re-checked object).
//! `repr`, `replace` and pickling read the fields back by the constructor's keywords, so they
//! are written once, in the base class `Settings` the three extend.

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};

use lightclip_core::augment::{AugmentConfig, Jitter};
use lightclip_core::limits::{
    check_range, MAX_CAPTIONS_PER_SAMPLE, MAX_CONTEXT_LENGTH, MAX_SHUFFLE_BUFFER,
    MAX_SYNTHETIC_SAMPLES,
};
use lightclip_core::pipeline::{ErrorPolicy, SourceOptions, SyntheticConfig};
use lightclip_core::CoreError;

use crate::errors::{BindingError, InvalidInputError};

/// `{name: value}` of every field of a config object, in the constructor's order (every
/// constructor parameter is a field with a getter of the same name).
fn fields<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyDict>> {
    let py = obj.py();
    let signature = py.import("inspect")?.getattr("signature")?;
    let parameters = signature.call1((obj.get_type(),))?.getattr("parameters")?;
    let out = PyDict::new(py);
    for name in parameters.try_iter()? {
        let name = name?;
        out.set_item(&name, obj.getattr(name.downcast::<PyString>()?)?)?;
    }
    Ok(out)
}

fn repr(obj: &Bound<'_, PyAny>) -> PyResult<String> {
    let mut parts = Vec::new();
    for (name, value) in fields(obj)? {
        parts.push(format!("{name}={}", value.repr()?));
    }
    Ok(format!(
        "{}({})",
        obj.get_type().qualname()?,
        parts.join(", ")
    ))
}

/// A copy of `obj` with `changes` applied, built (and so checked) by the class's constructor.
fn replace<'py>(
    obj: &Bound<'py, PyAny>,
    changes: Option<&Bound<'py, PyDict>>,
) -> PyResult<Bound<'py, PyAny>> {
    let all = fields(obj)?;
    if let Some(changes) = changes {
        all.update(changes.as_mapping())?;
    }
    obj.get_type().call((), Some(&all))
}

/// Pickling and `copy` rebuild the object from its fields as keyword arguments.
fn newargs<'py>(obj: &Bound<'py, PyAny>) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
    Ok((PyTuple::empty(obj.py()), fields(obj)?))
}

/// What the three settings classes share: `replace`, `repr` and pickling, all by the fields.
#[pyclass(name = "Settings", module = "lightclip._core", subclass, frozen)]
pub struct PySettings;

#[pymethods]
impl PySettings {
    /// A copy with the given fields changed (checked like a new one).
    #[pyo3(signature = (**changes))]
    fn replace<'py>(
        slf: &Bound<'py, Self>,
        changes: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        replace(slf.as_any(), changes)
    }

    fn __repr__(slf: &Bound<'_, Self>) -> PyResult<String> {
        repr(slf.as_any())
    }

    fn __getnewargs_ex__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyTuple>, Bound<'py, PyDict>)> {
        newargs(slf.as_any())
    }
}

fn invalid(name: &str, why: impl std::fmt::Display) -> PyErr {
    InvalidInputError::new_err(format!("invalid `{name}`: {why}"))
}

/// A whole number in `[0, 2**63)` for a size or count. Floats, bools and ints that do not fit
/// are refused by name (pyo3's own conversion would raise an OverflowError without it).
fn size<T: TryFrom<u64>>(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<T> {
    let value = if obj.is_instance_of::<PyBool>() {
        None
    } else {
        obj.extract::<u64>().ok().filter(|&v| v < 1 << 63)
    };
    match value.and_then(|v| T::try_from(v).ok()) {
        Some(v) => Ok(v),
        None => Err(invalid(
            name,
            format!("must be an int in [0, 2**63), got {}", obj.repr()?),
        )),
    }
}

/// `from_py_with` converters: `size` for each integer field, so that its error names it.
macro_rules! size_fields {
    ($($name:ident: $ty:ty),* $(,)?) => {
        mod sizes {
            use super::*;
            $(pub fn $name(obj: &Bound<'_, PyAny>) -> PyResult<$ty> {
                size(stringify!($name), obj)
            })*
            pub fn num_samples(obj: &Bound<'_, PyAny>) -> PyResult<Option<usize>> {
                if obj.is_none() { Ok(None) } else { size("num_samples", obj).map(Some) }
            }
        }
    };
}
size_fields!(
    captions_per_sample: usize,
    context_length: usize,
    data_seed: u64,
    max_pixels: u64,
    max_image_bytes: u64,
    shuffle_buffer: usize,
    shuffle_buffer_bytes: u64,
);

/// `(lo, hi)` from any sequence of two numbers.
fn pair(name: &str, v: Vec<f64>) -> PyResult<(f64, f64)> {
    match v.as_slice() {
        [a, b] => Ok((*a, *b)),
        _ => Err(invalid(
            name,
            format!("expected two numbers (lo, hi), got {} value(s)", v.len()),
        )),
    }
}

fn probability(name: &str, p: f64) -> Result<(), CoreError> {
    if (0.0..=1.0).contains(&p) {
        Ok(())
    } else {
        Err(CoreError::invalid(
            name,
            format!("must lie in [0, 1], got {p}"),
        ))
    }
}

// ----------------------------------------------------------------------------- augmentation

/// Training-image augmentation: RandomResizedCrop, colour jitter, grayscale, Gaussian blur and
/// horizontal flip, each with its probability. The defaults are SPEC §2's MoCo-v2 recipe.
#[pyclass(
    name = "AugmentationConfig",
    module = "lightclip._core",
    extends = PySettings,
    frozen,
    eq,
    get_all
)]
#[derive(Clone, PartialEq)]
pub struct PyAugmentationConfig {
    crop_scale: (f64, f64),
    crop_ratio: (f64, f64),
    jitter: (f64, f64, f64, f64),
    jitter_p: f64,
    grayscale_p: f64,
    blur_p: f64,
    blur_sigma: (f64, f64),
    flip_p: f64,
}

impl PyAugmentationConfig {
    pub fn to_core(&self) -> AugmentConfig {
        let (brightness, contrast, saturation, hue) = self.jitter;
        let narrow = |(a, b): (f64, f64)| (a as f32, b as f32);
        AugmentConfig {
            crop_scale: narrow(self.crop_scale),
            crop_ratio: narrow(self.crop_ratio),
            jitter: Jitter {
                brightness: brightness as f32,
                contrast: contrast as f32,
                saturation: saturation as f32,
                hue: hue as f32,
            },
            jitter_p: self.jitter_p as f32,
            grayscale_p: self.grayscale_p as f32,
            blur_p: self.blur_p as f32,
            blur_sigma: narrow(self.blur_sigma),
            flip_p: self.flip_p as f32,
        }
    }
}

#[pymethods]
impl PyAugmentationConfig {
    #[new]
    #[pyo3(signature = (
        *, crop_scale = vec![0.2, 1.0], crop_ratio = vec![0.75, 4.0 / 3.0],
        jitter = vec![0.4, 0.4, 0.4, 0.1], jitter_p = 0.8, grayscale_p = 0.2, blur_p = 0.5,
        blur_sigma = vec![0.1, 2.0], flip_p = 0.5
    ))]
    // The pairs' defaults written out for help() (pyo3 shows only literals).
    #[pyo3(
        text_signature = "(*, crop_scale=(0.2, 1.0), crop_ratio=(0.75, 1.3333333333333333), \
        jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8, grayscale_p=0.2, blur_p=0.5, \
        blur_sigma=(0.1, 2.0), flip_p=0.5)"
    )]
    #[allow(clippy::too_many_arguments)]
    fn new(
        crop_scale: Vec<f64>,
        crop_ratio: Vec<f64>,
        jitter: Vec<f64>,
        jitter_p: f64,
        grayscale_p: f64,
        blur_p: f64,
        blur_sigma: Vec<f64>,
        flip_p: f64,
    ) -> PyResult<(Self, PySettings)> {
        let &[brightness, contrast, saturation, hue] = jitter.as_slice() else {
            return Err(invalid(
                "jitter",
                format!(
                    "expected (brightness, contrast, saturation, hue), got {} value(s)",
                    jitter.len()
                ),
            ));
        };
        let config = PyAugmentationConfig {
            crop_scale: pair("crop_scale", crop_scale)?,
            crop_ratio: pair("crop_ratio", crop_ratio)?,
            jitter: (brightness, contrast, saturation, hue),
            jitter_p,
            grayscale_p,
            blur_p,
            blur_sigma: pair("blur_sigma", blur_sigma)?,
            flip_p,
        };
        config.to_core().validate().map_err(BindingError::from)?;
        Ok((config, PySettings))
    }
}

// ------------------------------------------------------------------------------------- text

/// Captions: tokenizing (`context_length`, `vocab_path`; None finds open_clip's vocabulary as
/// `lightclip.get_tokenizer` does), EDA on training captions (`eda_prob` per caption, each
/// operation at `eda_strength`; None: the source's default when training, off otherwise) and
/// BERT masking for the MLM loss (`mlm`, `mlm_prob`); `captions_per_sample` captions of each
/// sample (the drawn one, then `other_text`'s rows).
#[pyclass(name = "TextConfig", module = "lightclip._core", extends = PySettings, frozen, eq, get_all)]
#[derive(Clone, PartialEq)]
pub struct PyTextConfig {
    pub context_length: usize,
    pub vocab_path: Option<String>,
    pub eda_prob: Option<f64>,
    pub eda_strength: f64,
    pub mlm: bool,
    pub mlm_prob: f64,
    pub captions_per_sample: usize,
}

#[pymethods]
impl PyTextConfig {
    #[new]
    #[pyo3(signature = (
        *, context_length = 77, vocab_path = None, eda_prob = None, eda_strength = 0.1,
        mlm = true, mlm_prob = 0.15, captions_per_sample = 1
    ))]
    fn new(
        #[pyo3(from_py_with = sizes::context_length)] context_length: usize,
        vocab_path: Option<std::path::PathBuf>,
        eda_prob: Option<f64>,
        eda_strength: f64,
        mlm: bool,
        mlm_prob: f64,
        #[pyo3(from_py_with = sizes::captions_per_sample)] captions_per_sample: usize,
    ) -> PyResult<(Self, PySettings)> {
        let check = || -> Result<(), CoreError> {
            if context_length < 2 {
                return Err(CoreError::invalid(
                    "context_length",
                    format!("must be at least 2, got {context_length}"),
                ));
            }
            check_range("context_length", context_length, MAX_CONTEXT_LENGTH)?;
            check_range(
                "captions_per_sample",
                captions_per_sample,
                MAX_CAPTIONS_PER_SAMPLE,
            )?;
            // NaN or a negative eda_prob is refused, not read as "off".
            if let Some(p) = eda_prob {
                probability("eda_prob", p)?;
            }
            probability("eda_strength", eda_strength)?;
            probability("mlm_prob", mlm_prob)
        };
        check().map_err(BindingError::from)?;
        let vocab_path = match vocab_path {
            None => None,
            Some(p) => Some(
                p.into_os_string()
                    .into_string()
                    .map_err(|p| invalid("vocab_path", format!("is not valid UTF-8: {p:?}")))?,
            ),
        };
        Ok((
            PyTextConfig {
                context_length,
                vocab_path,
                eda_prob,
                eda_strength,
                mlm,
                mlm_prob,
                captions_per_sample,
            },
            PySettings,
        ))
    }
}

// ---------------------------------------------------------------------------------- reading

/// How the source is read: what a bad sample does (`on_error`: "skip" counts and logs it,
/// "raise" stops with a DataError), a table's columns and separator, the synthetic data's
/// size and seed, bounds on one picture (decoded pixels, encoded bytes) and the shard shuffle
/// buffer (samples, bytes).
#[pyclass(
    name = "ReadingConfig",
    module = "lightclip._core",
    extends = PySettings,
    frozen,
    eq,
    get_all
)]
#[derive(Clone, PartialEq)]
pub struct PyReadingConfig {
    pub on_error: String,
    pub csv_img_key: String,
    pub csv_caption_key: String,
    pub csv_separator: Option<String>,
    pub num_samples: Option<usize>,
    pub data_seed: u64,
    pub max_pixels: u64,
    pub max_image_bytes: u64,
    pub shuffle_buffer: usize,
    pub shuffle_buffer_bytes: u64,
}

impl PyReadingConfig {
    pub fn policy(&self) -> ErrorPolicy {
        ErrorPolicy::parse(&self.on_error).unwrap_or(ErrorPolicy::Skip)
    }

    pub fn source_options(&self) -> SourceOptions {
        SourceOptions {
            csv_image_key: self.csv_img_key.clone(),
            csv_caption_key: self.csv_caption_key.clone(),
            csv_separator: self.csv_separator.as_ref().map(|s| s.as_bytes()[0]),
            synthetic: SyntheticConfig {
                num_samples: self.num_samples.unwrap_or(0),
                data_seed: self.data_seed,
            },
            max_image_bytes: self.max_image_bytes,
        }
    }
}

#[pymethods]
impl PyReadingConfig {
    #[new]
    #[pyo3(signature = (
        *, on_error = "skip", csv_img_key = "filepath", csv_caption_key = "title",
        csv_separator = None, num_samples = None, data_seed = 0, max_pixels = 50000000,
        max_image_bytes = 67108864, shuffle_buffer = 1000, shuffle_buffer_bytes = 1073741824
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        on_error: &str,
        csv_img_key: &str,
        csv_caption_key: &str,
        csv_separator: Option<String>,
        #[pyo3(from_py_with = sizes::num_samples)] num_samples: Option<usize>,
        #[pyo3(from_py_with = sizes::data_seed)] data_seed: u64,
        #[pyo3(from_py_with = sizes::max_pixels)] max_pixels: u64,
        #[pyo3(from_py_with = sizes::max_image_bytes)] max_image_bytes: u64,
        #[pyo3(from_py_with = sizes::shuffle_buffer)] shuffle_buffer: usize,
        #[pyo3(from_py_with = sizes::shuffle_buffer_bytes)] shuffle_buffer_bytes: u64,
    ) -> PyResult<(Self, PySettings)> {
        if let Some(s) = &csv_separator {
            if s.len() != 1 {
                return Err(invalid(
                    "csv_separator",
                    format!("must be one ASCII character, got {s:?}"),
                ));
            }
        }
        let check = || -> Result<(), CoreError> {
            ErrorPolicy::parse(on_error)?;
            if let Some(n) = num_samples {
                check_range("num_samples", n, MAX_SYNTHETIC_SAMPLES)?;
            }
            for (name, v) in [
                ("max_pixels", max_pixels),
                ("max_image_bytes", max_image_bytes),
                ("shuffle_buffer_bytes", shuffle_buffer_bytes),
            ] {
                if v == 0 {
                    return Err(CoreError::invalid(name, "must be at least 1"));
                }
            }
            // 0 turns the shard shuffle buffer off.
            check_range("shuffle_buffer", shuffle_buffer.max(1), MAX_SHUFFLE_BUFFER)?;
            Ok(())
        };
        check().map_err(BindingError::from)?;
        Ok((
            PyReadingConfig {
                on_error: on_error.to_string(),
                csv_img_key: csv_img_key.to_string(),
                csv_caption_key: csv_caption_key.to_string(),
                csv_separator,
                num_samples,
                data_seed,
                max_pixels,
                max_image_bytes,
                shuffle_buffer,
                shuffle_buffer_bytes,
            },
            PySettings,
        ))
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PySettings>()?;
    m.add_class::<PyAugmentationConfig>()?;
    m.add_class::<PyTextConfig>()?;
    m.add_class::<PyReadingConfig>()
}
