//! Batches: contiguous buffers for every field, filled in parallel, one slot per sample.
//!
//! A batch takes the next `batch_size` usable samples of the epoch's order. Samples are pulled
//! in order, processed in parallel (rayon) straight into their slots, and the ones that fail
//! are replaced by pulling more; successes are then packed to the front in pull order. So the
//! contents of a batch depend on the order and on the (deterministic) failures only, never on
//! which thread finished first.

use rayon::prelude::*;

use super::raw::{RawItem, RawSample, Skip};
use super::sample::{process_sample, ImageDtype, ImageSlot, SampleConfig, SampleInfo, Slot};
use super::source::Source;
use super::state::{ErrorPolicy, Stats};
use crate::error::Result;
use crate::limits::reserved;

/// Image rows of a batch: [B, 3, H, W] contiguous.
#[derive(Debug, Clone, PartialEq)]
pub enum ImageBuffer {
    Float32(Vec<f32>),
    Uint8(Vec<u8>),
}

/// Vectors that grow per sample reserve at most this many up front: the batch size is bounded
/// by its buffers' bytes, which allows far more small slots than is worth reserving blind.
const CAPACITY_HINT: usize = 4096;

/// One batch, every field contiguous and row-major.
#[derive(Debug, Clone)]
pub struct Batch {
    pub size: usize,
    pub image_size: usize,
    pub context_length: usize,
    pub images: ImageBuffer,
    pub text: Vec<i64>,
    pub masked_text: Vec<i64>,
    pub mlm_labels: Vec<i64>,
    /// Each sample's other captions (`SampleConfig::captions_per_sample - 1` rows each).
    pub other_text: Vec<i64>,
    /// Rows of `other_text` per sample.
    pub other_rows: usize,
    pub word_lengths: Vec<i64>,
    /// Class labels, for labelled sources.
    pub labels: Option<Vec<i64>>,
    pub captions: Vec<String>,
    /// Each sample's drawn caption as its place in `all_captions` (-1: none).
    pub caption_indices: Vec<i64>,
    pub all_captions: Vec<Vec<String>>,
    pub keys: Vec<String>,
    /// The shard (file) each sample came from.
    pub sources: Vec<String>,
    /// The epoch and how many items of its order were consumed once this batch is taken:
    /// what `state_dict` records.
    pub epoch: u64,
    pub consumed: u64,
}

impl Batch {
    /// A batch with room for `size` slots; an error naming `batch_size` when the machine
    /// cannot hold it (the size itself was checked against `limits::MAX_BATCH_BYTES` already).
    /// Slots are zeroed as they are handed out, so a batch the source cannot fill (a
    /// batch_size far above the data) never touches the rest of its memory.
    fn empty(size: usize, cfg: &SampleConfig, epoch: u64) -> Result<Batch> {
        let pixels = size * 3 * cfg.image_size * cfg.image_size;
        let ctx = cfg.context_length;
        let images = format!("a batch of {size} images of 3x{0}x{0}", cfg.image_size);
        let text = format!("a batch of {size} rows of {ctx} tokens");
        let rows = || reserved::<i64>(size * ctx, "batch_size", &text);
        let other_rows = cfg.captions_per_sample.saturating_sub(1);
        let others = format!("a batch of {size} x {other_rows} other captions of {ctx} tokens");
        let hint = size.min(CAPACITY_HINT);
        Ok(Batch {
            size,
            image_size: cfg.image_size,
            context_length: ctx,
            images: match cfg.image_dtype {
                ImageDtype::Float32 => {
                    ImageBuffer::Float32(reserved(pixels, "batch_size", &images)?)
                }
                ImageDtype::Uint8 => ImageBuffer::Uint8(reserved(pixels, "batch_size", &images)?),
            },
            text: rows()?,
            masked_text: rows()?,
            mlm_labels: rows()?,
            other_text: reserved::<i64>(size * other_rows * ctx, "batch_size", &others)?,
            other_rows,
            word_lengths: Vec::with_capacity(hint),
            labels: None,
            captions: Vec::with_capacity(hint),
            caption_indices: Vec::with_capacity(hint),
            all_captions: Vec::with_capacity(hint),
            keys: Vec::with_capacity(hint),
            sources: Vec::with_capacity(hint),
            epoch,
            consumed: 0,
        })
    }

    /// Slot views for slots `from..from + n`.
    fn slots(&mut self, from: usize, n: usize) -> Vec<Slot<'_>> {
        let ctx = self.context_length;
        let per = 3 * self.image_size * self.image_size;
        // Within the reserved room: no reallocation, only these slots' pages are written.
        match &mut self.images {
            ImageBuffer::Float32(v) => v.resize(v.len().max((from + n) * per), 0.0),
            ImageBuffer::Uint8(v) => v.resize(v.len().max((from + n) * per), 0),
        }
        for buf in [&mut self.text, &mut self.masked_text, &mut self.mlm_labels] {
            buf.resize(buf.len().max((from + n) * ctx), 0);
        }
        let others = self.other_rows * ctx;
        let len = self.other_text.len().max((from + n) * others);
        self.other_text.resize(len, 0);
        // Empty rows for every slot when a sample gives one caption (chunks need a width).
        let mut other_slots: Vec<&mut [i64]> = if others == 0 {
            (0..n).map(|_| <&mut [i64]>::default()).collect()
        } else {
            self.other_text[from * others..(from + n) * others]
                .chunks_exact_mut(others)
                .collect()
        };
        let images: Vec<ImageSlot<'_>> = match &mut self.images {
            ImageBuffer::Float32(v) => v[from * per..(from + n) * per]
                .chunks_exact_mut(per)
                .map(ImageSlot::Float)
                .collect(),
            ImageBuffer::Uint8(v) => v[from * per..(from + n) * per]
                .chunks_exact_mut(per)
                .map(ImageSlot::Byte)
                .collect(),
        };
        let range = from * ctx..(from + n) * ctx;
        images
            .into_iter()
            .zip(self.text[range.clone()].chunks_exact_mut(ctx))
            .zip(self.masked_text[range.clone()].chunks_exact_mut(ctx))
            .zip(self.mlm_labels[range].chunks_exact_mut(ctx))
            .zip(other_slots.drain(..))
            .map(|((((image, text), masked), mlm_labels), other_text)| Slot {
                image,
                text,
                masked,
                mlm_labels,
                other_text,
            })
            .collect()
    }

    /// Moves slot `from` to slot `to` (to < from).
    fn move_slot(&mut self, from: usize, to: usize) {
        let ctx = self.context_length;
        let per = 3 * self.image_size * self.image_size;
        match &mut self.images {
            ImageBuffer::Float32(v) => v.copy_within(from * per..(from + 1) * per, to * per),
            ImageBuffer::Uint8(v) => v.copy_within(from * per..(from + 1) * per, to * per),
        }
        for buf in [&mut self.text, &mut self.masked_text, &mut self.mlm_labels] {
            buf.copy_within(from * ctx..(from + 1) * ctx, to * ctx);
        }
        let others = self.other_rows * ctx;
        self.other_text
            .copy_within(from * others..(from + 1) * others, to * others);
    }

    fn truncate(&mut self, n: usize) {
        let ctx = self.context_length;
        let per = 3 * self.image_size * self.image_size;
        match &mut self.images {
            ImageBuffer::Float32(v) => v.truncate(n * per),
            ImageBuffer::Uint8(v) => v.truncate(n * per),
        }
        for buf in [&mut self.text, &mut self.masked_text, &mut self.mlm_labels] {
            buf.truncate(n * ctx);
        }
        self.other_text.truncate(n * self.other_rows * ctx);
        self.size = n;
    }

    fn push_info(&mut self, info: SampleInfo) {
        // Labels stay aligned with the samples when only some carry one (a shard with a
        // missing `.cls`): the others get -1, which no class index equals.
        let before = self.word_lengths.len();
        self.word_lengths.push(info.word_length);
        match (info.label, &mut self.labels) {
            (Some(label), Some(labels)) => labels.push(label),
            (Some(label), None) => {
                let mut labels = vec![-1; before];
                labels.push(label);
                self.labels = Some(labels);
            }
            (None, Some(labels)) => labels.push(-1),
            (None, None) => {}
        }
        self.captions.push(info.caption);
        self.caption_indices.push(info.caption_index);
        self.all_captions.push(info.all_captions);
        self.keys.push(info.key);
        self.sources.push(info.source);
    }
}

/// The epoch's items with their position in the order.
pub type Positioned = (u64, RawItem);

/// What assembling needs besides the items.
pub struct BatchContext<'a> {
    pub source: &'a Source,
    pub sample: &'a SampleConfig,
    pub policy: ErrorPolicy,
    pub stats: &'a Stats,
    pub epoch: u64,
    pub batch_size: usize,
    pub drop_last: bool,
    /// Folds this rank's position into a sample id unique across ranks.
    pub rank: u64,
    pub world_size: u64,
}

fn record(skip: Skip, ctx: &BatchContext<'_>) -> Result<()> {
    match ctx.policy {
        ErrorPolicy::Raise => Err(skip.into_error()),
        ErrorPolicy::Skip => {
            ctx.stats.skip(&skip);
            Ok(())
        }
    }
}

/// Builds the next batch, or `None` at the end of the epoch (or when only a partial batch is
/// left and `drop_last` is set). `consumed` tracks positions pulled so far.
pub fn next_batch(
    items: &mut dyn Iterator<Item = Positioned>,
    ctx: &BatchContext<'_>,
    consumed: &mut u64,
) -> Result<Option<Batch>> {
    let mut batch = Batch::empty(ctx.batch_size, ctx.sample, ctx.epoch)?;
    let mut filled = 0usize;
    let mut exhausted = false;
    while filled < ctx.batch_size && !exhausted {
        let need = ctx.batch_size - filled;
        let mut jobs: Vec<(u64, RawSample)> = Vec::with_capacity(need.min(CAPACITY_HINT));
        while jobs.len() < need {
            match items.next() {
                None => {
                    exhausted = true;
                    break;
                }
                Some((pos, item)) => {
                    *consumed = pos + 1;
                    match item {
                        Ok(raw) => jobs.push((pos, raw)),
                        Err(skip) => record(skip, ctx)?,
                    }
                }
            }
        }
        if jobs.is_empty() {
            break;
        }
        let results: Vec<std::result::Result<SampleInfo, Skip>> = batch
            .slots(filled, jobs.len())
            .into_par_iter()
            .zip(jobs.par_iter())
            .map(|(slot, (pos, raw))| {
                let sample_id = pos * ctx.world_size + ctx.rank;
                process_sample(raw, ctx.source, ctx.sample, ctx.epoch, sample_id, slot)
            })
            .collect();
        let base = filled;
        for (k, result) in results.into_iter().enumerate() {
            ctx.stats.read(1);
            match result {
                Ok(info) => {
                    if base + k != filled {
                        batch.move_slot(base + k, filled);
                    }
                    batch.push_info(info);
                    filled += 1;
                }
                Err(skip) => record(skip, ctx)?,
            }
        }
    }
    if filled == 0 || (filled < ctx.batch_size && ctx.drop_last) {
        if filled > 0 {
            ctx.stats.dropped_tail(filled as u64);
        }
        return Ok(None);
    }
    batch.truncate(filled);
    batch.consumed = *consumed;
    ctx.stats.yielded(filled as u64);
    Ok(Some(batch))
}
