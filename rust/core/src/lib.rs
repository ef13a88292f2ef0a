//! lightclip-core: everything heavy that does not need Python or libtorch.
//!
//! One module per concern; the binding crate (`rust/py`) mirrors these modules one file each
//! and only converts types, releases the GIL and maps errors.

pub mod augment;
pub mod error;
pub mod limits;
pub mod matching;
pub mod pipeline;
pub mod rng;
pub mod schedule;
pub mod text;

pub use error::{CoreError, Location, Result};
