//! The data pipeline: sources, decoding, augmentation, batching, prefetch.
//!
//! `raw` holds what every source yields (`RawSample`, `Skip`) and the `EpochPlan` that orders
//! an epoch; `source` parses a spec into one of the four kinds of source: `shards` (with
//! `shard_members`, `shard_layout` and `shuffle`), `table`, `folder` and `synthetic`; `files`
//! opens what a source names (regular files of bounded size); `decode` turns bytes into pixels
//! (`jpeg_libjpeg`: JPEG as Pillow decodes it; `decoded`: the picture or the refusal both
//! return); `sample` runs one sample through augmentation and the text stage; `batch` fills a
//! batch in parallel; `prefetch` runs it all ahead on a background thread; `state` holds the
//! error policy and the counters. Every size a caller sets is bounded in `crate::limits`, every
//! random stream id is in `crate::rng`.
//!
//! No file here imports a file that imports it (`rust/core/tests/pipeline_imports.rs` checks):
//! shared types sit in the leaves `raw` and `decoded`.

pub mod batch;
pub mod decode;
pub mod decoded;
pub mod files;
pub mod folder;
mod jpeg_libjpeg;
pub mod prefetch;
pub mod raw;
pub mod sample;
pub mod shard_layout;
pub mod shard_members;
pub mod shards;
pub mod shuffle;
pub mod source;
pub mod state;
pub mod synthetic;
pub mod table;

pub use batch::{Batch, ImageBuffer};
pub use prefetch::{BatchConfig, EpochStream, Pipeline};
pub use raw::EpochPlan;
pub use sample::{ImageDtype, SampleConfig};
pub use source::{Source, SourceOptions};
pub use state::{ErrorPolicy, Stats, StatsSnapshot};
pub use synthetic::{Split, SyntheticConfig};
