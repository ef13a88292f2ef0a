//! `lightclip._core`: the compiled half of lightclip.
//!
//! One file per concern, mirroring `lightclip-core`; each file only converts types, releases
//! the GIL around the heavy call and maps errors. Users import from `lightclip`, not here.

use pyo3::prelude::*;

mod captions;
mod eda;
mod errors;
mod labels;
mod matching;
mod pipeline;
mod tensor;
mod text;
mod threads;

#[pymodule]
fn _core(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    threads::register(m)?;
    matching::register(m)?;
    labels::register(m)?;
    text::register(m)?;
    eda::register(m)?;
    pipeline::register(m)?;
    Ok(())
}
