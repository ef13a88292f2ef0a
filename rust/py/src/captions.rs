//! Captions as Python hands them over: a `str`, UTF-8 `bytes`, or an iterable of them, with
//! errors that name the argument and the item. Shared by the tokenizer and EDA bindings.

use std::borrow::Cow;

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString};

use crate::errors::{InvalidDtypeError, InvalidInputError};

/// Batches smaller than this run on the calling thread (the pool hand-off costs more).
pub const PARALLEL_MIN: usize = 256;

/// One caption from Python: `str`, or `bytes` holding UTF-8.
pub fn caption_text(obj: &Bound<'_, PyAny>, argument: &str) -> PyResult<String> {
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

/// Caption objects one at a time: `str`/`bytes` → that one object; any other iterable → its
/// items, as the iterable yields them.
pub fn caption_items<'py>(
    texts: &Bound<'py, PyAny>,
    argument: &str,
) -> PyResult<impl Iterator<Item = PyResult<Bound<'py, PyAny>>>> {
    let single = texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>();
    let items = if single {
        None
    } else {
        Some(texts.try_iter().map_err(|_| {
            InvalidDtypeError::new_err(format!(
                "`{argument}` must be a str or a list of str, got {}",
                texts.get_type()
            ))
        })?)
    };
    let one = single.then(|| Ok(texts.clone()));
    Ok(one.into_iter().chain(items.into_iter().flatten()))
}

/// Caption `i` read in place when it is a `str` (its UTF-8 form is cached by Python), else
/// decoded from UTF-8 `bytes`; the error names `argument[i]`.
pub fn borrowed_caption<'a>(
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
pub fn captions(texts: &Bound<'_, PyAny>, argument: &str) -> PyResult<Vec<String>> {
    if texts.is_instance_of::<PyString>() || texts.is_instance_of::<PyBytes>() {
        return Ok(vec![caption_text(texts, argument)?]);
    }
    let mut out = Vec::with_capacity(texts.len().unwrap_or(0));
    for (i, item) in caption_items(texts, argument)?.enumerate() {
        out.push(borrowed_caption(&item?, i, argument)?.into_owned());
    }
    Ok(out)
}
