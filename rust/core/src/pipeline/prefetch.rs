//! The running pipeline: a producer thread builds batches ahead into a bounded queue.
//!
//! Memory is bounded by construction: at most `prefetch` finished batches wait in the queue,
//! one is being built, and the shard reader holds at most its channel (256 samples) plus the
//! shuffle buffer. Dropping an [`EpochStream`] stops the producer: its next send fails, it
//! returns, and the shard reader's sends fail in turn, so nothing hangs or leaks a thread.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver};
use rayon::ThreadPool;

use super::batch::{next_batch, Batch, BatchContext, Positioned};
use super::sample::SampleConfig;
use super::source::{EpochPlan, Source};
use super::state::{ErrorPolicy, Stats};
use crate::error::{CoreError, Location, Result};

/// How batches are cut and ordered.
#[derive(Debug, Clone)]
pub struct BatchConfig {
    pub batch_size: usize,
    pub drop_last: bool,
    pub prefetch: usize,
    pub policy: ErrorPolicy,
    pub seed: u64,
    pub rank: u64,
    pub world_size: u64,
    pub shuffle: bool,
    pub shuffle_buffer: usize,
}

impl BatchConfig {
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0 {
            return Err(CoreError::invalid("batch_size", "must be at least 1"));
        }
        if self.world_size == 0 {
            return Err(CoreError::invalid("world_size", "must be at least 1"));
        }
        if self.rank >= self.world_size {
            return Err(CoreError::invalid(
                "rank",
                format!(
                    "must be below world_size={}, got {}",
                    self.world_size, self.rank
                ),
            ));
        }
        if self.prefetch == 0 {
            return Err(CoreError::invalid("prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

/// A configured pipeline; [`Pipeline::start`] runs one epoch (or its rest).
pub struct Pipeline {
    pub source: Arc<Source>,
    pub sample: Arc<SampleConfig>,
    pub batches: BatchConfig,
    pub stats: Arc<Stats>,
    pool: Arc<ThreadPool>,
}

impl Pipeline {
    pub fn new(
        source: Source,
        sample: SampleConfig,
        batches: BatchConfig,
        threads: usize,
    ) -> Result<Pipeline> {
        batches.validate()?;
        sample.augment.validate()?;
        if !(8..=4096).contains(&sample.image_size) {
            return Err(CoreError::invalid(
                "image_size",
                format!("must lie in 8..=4096, got {}", sample.image_size),
            ));
        }
        if sample.context_length < 2 {
            return Err(CoreError::invalid(
                "context_length",
                format!("must be at least 2, got {}", sample.context_length),
            ));
        }
        if let Some(mlm) = &sample.mlm {
            mlm.validate()?;
        }
        if sample.max_pixels == 0 {
            return Err(CoreError::invalid("max_pixels", "must be at least 1"));
        }
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lightclip-data-{i}"))
            .build()
            .map_err(|e| {
                CoreError::invalid("threads", format!("cannot start {threads} threads: {e}"))
            })?;
        Ok(Pipeline {
            source: Arc::new(source),
            sample: Arc::new(sample),
            batches,
            stats: Arc::new(Stats::default()),
            pool: Arc::new(pool),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Starts epoch `epoch` after its first `skip` items (a resumed position).
    pub fn start(&self, epoch: u64, skip: u64) -> EpochStream {
        let (tx, rx) = bounded::<Result<Batch>>(self.batches.prefetch);
        let source = Arc::clone(&self.source);
        let sample = Arc::clone(&self.sample);
        let stats = Arc::clone(&self.stats);
        let pool = Arc::clone(&self.pool);
        let cfg = self.batches.clone();
        let handle = std::thread::Builder::new().name("lightclip-prefetch".into()).spawn(move || {
            let plan = EpochPlan { seed: cfg.seed, epoch, rank: cfg.rank, world_size: cfg.world_size, shuffle: cfg.shuffle, shuffle_buffer: cfg.shuffle_buffer };
            let mut items: Box<dyn Iterator<Item = Positioned> + Send> = Box::new((0u64..).zip(source.epoch(plan)));
            // Replaying the order up to the resume point reads but never decodes.
            let mut consumed = 0u64;
            for _ in 0..skip {
                if items.next().is_none() {
                    break;
                }
                consumed += 1;
            }
            let ctx = BatchContext { source: &source, sample: &sample, policy: cfg.policy, stats: &stats, epoch, batch_size: cfg.batch_size, drop_last: cfg.drop_last, rank: cfg.rank, world_size: cfg.world_size };
            let mut produced = 0u64;
            loop {
                let result = pool.install(|| next_batch(&mut items, &ctx, &mut consumed));
                match result {
                    Ok(Some(batch)) => {
                        produced += 1;
                        if tx.send(Ok(batch)).is_err() {
                            return;
                        }
                    }
                    Ok(None) => {
                        if produced == 0 && skip == 0 && !(cfg.drop_last && stats.snapshot().dropped_tail > 0) {
                            let snapshot = stats.snapshot();
                            let reason = if snapshot.skipped.is_empty() {
                                "the source yielded no samples for this rank (empty source)".to_string()
                            } else {
                                format!("the source yielded no usable samples for this rank; skipped so far: {:?}", snapshot.skipped)
                            };
                            let location = Location { source: describe(&source), member: None, index: None };
                            let _ = tx.send(Err(CoreError::data(location, reason)));
                        }
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                }
            }
        });
        match handle {
            Ok(h) => EpochStream {
                rx: Some(rx),
                handle: Some(h),
                failed: None,
            },
            Err(e) => EpochStream {
                rx: None,
                handle: None,
                failed: Some(CoreError::invalid(
                    "threads",
                    format!("cannot start the prefetch thread: {e}"),
                )),
            },
        }
    }
}

fn describe(source: &Source) -> String {
    match source {
        Source::Shards(s) => format!("shards {}", s.shards().join(", ")),
        Source::Table(_) => "table".into(),
        Source::Folder(_) => "folder".into(),
        Source::Synthetic(_) => "synthetic".into(),
    }
}

/// The batches of one epoch, produced ahead on a background thread.
pub struct EpochStream {
    rx: Option<Receiver<Result<Batch>>>,
    handle: Option<JoinHandle<()>>,
    failed: Option<CoreError>,
}

impl EpochStream {
    /// The next batch; blocks until it is ready. `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        let item = self.rx.as_ref()?.recv().ok();
        if item.is_none() {
            self.finish();
        }
        item
    }

    fn finish(&mut self) {
        self.rx = None; // the producer's next send fails and it returns
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Iterator for EpochStream {
    type Item = Result<Batch>;
    fn next(&mut self) -> Option<Result<Batch>> {
        self.next_batch()
    }
}

impl Drop for EpochStream {
    fn drop(&mut self) {
        self.finish();
    }
}
