//! The data pipeline: sources, decoding, augmentation, batching, prefetch.
//!
//! `source` parses a spec and fixes the sample order of an epoch; `shards` (with
//! `shard_members`, `shard_layout` and `shuffle`), `table`, `folder` and `synthetic` are the
//! four kinds of source; `files` opens what a source names (regular files of bounded size);
//! `decode` turns bytes into pixels (`jpeg_libjpeg`: JPEG as Pillow decodes it); `sample` runs one sample through augmentation and the
//! text stage; `batch` fills a batch in parallel; `prefetch` runs it all ahead on a
//! background thread; `state` holds the error policy and the counters. Every size a caller sets is bounded in
//! `crate::limits`.

pub mod batch;
pub mod decode;
pub mod files;
pub mod folder;
mod jpeg_libjpeg;
pub mod prefetch;
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
pub use sample::{ImageDtype, SampleConfig};
pub use source::{EpochPlan, Source, SourceOptions};
pub use state::{ErrorPolicy, Stats, StatsSnapshot};
pub use synthetic::{Split, SyntheticConfig};
