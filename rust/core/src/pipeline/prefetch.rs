//! The running pipeline: a producer thread builds batches ahead into a bounded queue.
//!
//! A training pipeline's producer does not stop at the end of an epoch: it goes on with the
//! next epoch's first batches (from its start, the order a fresh start of that epoch would
//! give) while the consumer finishes the current one, so the first step of an epoch does not
//! wait for the shuffle buffer to refill and the first batch to be built. The queue holds an
//! end-of-epoch mark between the epochs; [`EpochStream::positioned_at`] tells whether a
//! stream can serve a new start of an epoch as it is.
//!
//! Memory is bounded by construction: at most `prefetch` finished batches wait in the queue,
//! one is being built (each under `limits::MAX_BATCH_BYTES`), and the shard reader holds at
//! most its channel (256 samples, 256 MiB) plus the shuffle buffer (`shuffle_buffer` samples,
//! `shuffle_buffer_bytes`). Dropping an [`EpochStream`] stops the producer: its next send
//! fails, it returns, and the shard reader's sends fail in turn, so nothing hangs or leaks a
//! thread. A producer that panics ends its stream with an error, never with a silent early
//! end of the epoch.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};
use rayon::ThreadPool;

use super::batch::{next_batch, Batch, BatchContext, Positioned};
use super::raw::EpochPlan;
use super::sample::{ImageDtype, SampleConfig};
use super::source::Source;
use super::state::{ErrorPolicy, Stats};
use crate::error::{CoreError, Location, Result};
use crate::limits::{
    check_range, MAX_BATCH_BYTES, MAX_CAPTIONS_PER_SAMPLE, MAX_CONTEXT_LENGTH, MAX_PREFETCH,
    MAX_SHUFFLE_BUFFER, MAX_THREADS,
};

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
    /// Bytes of samples the shard shuffle buffer may hold (it holds at least one).
    pub shuffle_buffer_bytes: u64,
    /// Go on into the next epoch when one ends (training; an evaluation pass reads one).
    pub read_ahead: bool,
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
        check_range("prefetch", self.prefetch, MAX_PREFETCH)?;
        check_range(
            "shuffle_buffer",
            self.shuffle_buffer.max(1),
            MAX_SHUFFLE_BUFFER,
        )?;
        if self.shuffle_buffer_bytes == 0 {
            return Err(CoreError::invalid(
                "shuffle_buffer_bytes",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Refuses a batch whose buffers would pass [`MAX_BATCH_BYTES`], before anything is allocated.
fn check_batch_bytes(batch_size: usize, sample: &SampleConfig) -> Result<()> {
    let bytes = batch_bytes(batch_size, sample);
    if bytes > u128::from(MAX_BATCH_BYTES) {
        let dtype = match sample.image_dtype {
            ImageDtype::Float32 => "float32",
            ImageDtype::Uint8 => "uint8",
        };
        return Err(CoreError::invalid(
            "batch_size",
            format!(
                "a batch of {batch_size} images of 3x{s}x{s} {dtype} with {k} caption(s) of {c} \
                 tokens each needs {bytes} bytes, above the limit of {MAX_BATCH_BYTES} (16 GiB); \
                 lower batch_size, image_size or captions_per_sample, or use \
                 image_dtype=\"uint8\"",
                s = sample.image_size,
                k = sample.captions_per_sample,
                c = sample.context_length,
            ),
        ));
    }
    Ok(())
}

/// Bytes of one batch's buffers: the pictures, three rows of token ids per sample and one per
/// other caption.
fn batch_bytes(batch_size: usize, sample: &SampleConfig) -> u128 {
    let pixel = match sample.image_dtype {
        ImageDtype::Float32 => 4,
        ImageDtype::Uint8 => 1,
    };
    let image = 3 * (sample.image_size as u128).pow(2) * pixel;
    let rows = 2 + sample.captions_per_sample.max(1) as u128;
    let text = rows * sample.context_length as u128 * 8;
    batch_size as u128 * (image + text)
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
        check_range("context_length", sample.context_length, MAX_CONTEXT_LENGTH)?;
        check_range(
            "captions_per_sample",
            sample.captions_per_sample,
            MAX_CAPTIONS_PER_SAMPLE,
        )?;
        check_batch_bytes(batches.batch_size, &sample)?;
        check_range("threads", threads, MAX_THREADS)?;
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

    /// Starts epoch `epoch` after its first `skip` items (a resumed position); with
    /// `read_ahead` the stream goes on with the following epochs from their starts.
    pub fn start(&self, epoch: u64, skip: u64) -> EpochStream {
        let source = Arc::clone(&self.source);
        let sample = Arc::clone(&self.sample);
        let stats = Arc::clone(&self.stats);
        let pool = Arc::clone(&self.pool);
        let cfg = self.batches.clone();
        EpochStream::spawn(cfg.prefetch, epoch, move |tx| {
            let mut epoch = epoch;
            let mut skip = skip;
            loop {
                if !produce_epoch(tx, &source, &sample, &stats, &pool, &cfg, epoch, skip) {
                    return;
                }
                if !cfg.read_ahead || tx.send(Produced::EpochEnd).is_err() {
                    return;
                }
                epoch += 1;
                skip = 0;
            }
        })
    }
}

/// Sends the batches of `epoch` after its first `skip` items; false when the stream must
/// end here (the consumer is gone, or an error was sent).
#[allow(clippy::too_many_arguments)]
fn produce_epoch(
    tx: &Sender<Produced>,
    source: &Arc<Source>,
    sample: &SampleConfig,
    stats: &Arc<Stats>,
    pool: &ThreadPool,
    cfg: &BatchConfig,
    epoch: u64,
    skip: u64,
) -> bool {
    let plan = EpochPlan {
        seed: cfg.seed,
        epoch,
        rank: cfg.rank,
        world_size: cfg.world_size,
        shuffle: cfg.shuffle,
        shuffle_buffer: cfg.shuffle_buffer,
        shuffle_buffer_bytes: cfg.shuffle_buffer_bytes,
    };
    let mut items: Box<dyn Iterator<Item = Positioned> + Send> =
        Box::new((0u64..).zip(source.epoch(plan)));
    // Replaying the order up to the resume point reads but never decodes.
    let mut consumed = 0u64;
    for _ in 0..skip {
        if items.next().is_none() {
            break;
        }
        consumed += 1;
    }
    let ctx = BatchContext {
        source,
        sample,
        policy: cfg.policy,
        stats,
        epoch,
        batch_size: cfg.batch_size,
        drop_last: cfg.drop_last,
        rank: cfg.rank,
        world_size: cfg.world_size,
    };
    let dropped_before = stats.snapshot().dropped_tail;
    let mut produced = 0u64;
    loop {
        match pool.install(|| next_batch(&mut items, &ctx, &mut consumed)) {
            Ok(Some(batch)) => {
                produced += 1;
                if tx.send(Produced::Batch(Ok(batch))).is_err() {
                    return false;
                }
            }
            Ok(None) => {
                let dropped_tail = stats.snapshot().dropped_tail > dropped_before;
                if produced == 0 && skip == 0 && !(cfg.drop_last && dropped_tail) {
                    let snapshot = stats.snapshot();
                    let reason = if snapshot.skipped.is_empty() {
                        "the source yielded no samples for this rank (empty source)".to_string()
                    } else {
                        format!(
                            "the source yielded no usable samples for this rank; skipped so \
                             far: {:?}",
                            snapshot.skipped
                        )
                    };
                    let location = Location {
                        source: describe(source),
                        member: None,
                        index: None,
                    };
                    let _ = tx.send(Produced::Batch(Err(CoreError::data(location, reason))));
                    return false;
                }
                return true;
            }
            Err(e) => {
                let _ = tx.send(Produced::Batch(Err(e)));
                return false;
            }
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

/// What the producer puts in the queue: a batch (or the error that ends the stream), or the
/// mark between one epoch's batches and the next's.
// The queue holds at most `prefetch` items, so the mark's unused room costs nothing worth a
// box per batch.
#[allow(clippy::large_enum_variant)]
pub enum Produced {
    Batch(Result<Batch>),
    EpochEnd,
}

/// The batches of one epoch (and, reading ahead, of the following ones), produced ahead on a
/// background thread.
pub struct EpochStream {
    rx: Option<Receiver<Produced>>,
    handle: Option<JoinHandle<()>>,
    failed: Option<CoreError>,
    /// The epoch whose batches come next.
    epoch: u64,
    /// Nothing of `epoch` has been taken yet (and the stream started at its start or came to
    /// it by reading ahead).
    at_epoch_start: bool,
}

/// The producer thread's name, as panics and errors report it.
const PRODUCER: &str = "lightclip-prefetch";

impl EpochStream {
    /// Runs `produce` on a background thread that sends into a queue of `depth`, starting
    /// with the batches of `epoch`. If it panics (a bug), the stream ends with a
    /// [`CoreError::Panic`] instead of looking like a short epoch.
    pub fn spawn(
        depth: usize,
        epoch: u64,
        produce: impl FnOnce(&Sender<Produced>) + Send + 'static,
    ) -> EpochStream {
        let (tx, rx) = bounded::<Produced>(depth);
        let handle = std::thread::Builder::new()
            .name(PRODUCER.into())
            .spawn(move || produce(&tx));
        let (rx, handle, failed) = match handle {
            Ok(h) => (Some(rx), Some(h), None),
            Err(e) => (
                None,
                None,
                Some(CoreError::invalid(
                    "threads",
                    format!("cannot start the prefetch thread: {e}"),
                )),
            ),
        };
        EpochStream {
            rx,
            handle,
            failed,
            epoch,
            at_epoch_start: true,
        }
    }

    /// Whether the next batch is the first of `epoch`: a new start of `epoch` from its
    /// beginning may keep this stream (and what it has read ahead).
    pub fn positioned_at(&self, epoch: u64) -> bool {
        self.at_epoch_start && self.epoch == epoch && self.failed.is_none() && self.rx.is_some()
    }

    /// The next batch; blocks until it is ready. `None` at the end of the epoch.
    pub fn next_batch(&mut self) -> Option<Result<Batch>> {
        if let Some(e) = self.failed.take() {
            return Some(Err(e));
        }
        self.at_epoch_start = false;
        match self.rx.as_ref()?.recv() {
            Ok(Produced::Batch(item)) => Some(item),
            Ok(Produced::EpochEnd) => {
                self.epoch += 1;
                self.at_epoch_start = true;
                None
            }
            // The producer is gone: the end of the epoch, unless it died of a panic.
            Err(_) => self.finish().map(Err),
        }
    }

    /// Stops and joins the producer; its panic, if it had one.
    fn finish(&mut self) -> Option<CoreError> {
        self.rx = None; // the producer's next send fails and it returns
        let handle = self.handle.take()?;
        handle
            .join()
            .err()
            .map(|payload| CoreError::panic(PRODUCER, &*payload))
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
        // Nobody is left to tell about a panic of an abandoned stream.
        let _ = self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::augment::AugmentConfig;
    use crate::pipeline::source::SourceOptions;
    use crate::pipeline::ImageBuffer;

    fn sample_config(image_size: usize, context_length: usize) -> SampleConfig {
        SampleConfig {
            image_size,
            train: false,
            augment: AugmentConfig::default(),
            max_pixels: 1 << 20,
            image_dtype: ImageDtype::Float32,
            context_length,
            tokenizer: None,
            eda: None,
            mlm: None,
            seed: 0,
            captions_per_sample: 1,
        }
    }

    fn batch_config(batch_size: usize) -> BatchConfig {
        BatchConfig {
            batch_size,
            drop_last: false,
            prefetch: 2,
            policy: ErrorPolicy::Raise,
            seed: 0,
            rank: 0,
            world_size: 1,
            shuffle: false,
            shuffle_buffer: 0,
            shuffle_buffer_bytes: 1 << 20,
            read_ahead: false,
        }
    }

    fn build(
        batches: BatchConfig,
        sample: SampleConfig,
        threads: usize,
    ) -> std::result::Result<Pipeline, String> {
        let options = SourceOptions {
            synthetic: crate::pipeline::SyntheticConfig {
                num_samples: 6,
                data_seed: 0,
            },
            ..SourceOptions::default()
        };
        let source = Source::open("synthetic", &options).map_err(|e| e.to_string())?;
        Pipeline::new(source, sample, batches, threads).map_err(|e| e.to_string())
    }

    #[test]
    fn a_panicking_producer_ends_the_stream_with_an_error() {
        let mut stream = EpochStream::spawn(1, 0, |tx| {
            let _ = tx.send(Produced::Batch(Err(CoreError::invalid("x", "first item"))));
            panic!("boom at batch 2");
        });
        assert!(stream.next_batch().unwrap().is_err());
        match stream.next_batch() {
            Some(Err(CoreError::Panic { thread, message })) => {
                assert_eq!(thread, "lightclip-prefetch");
                assert_eq!(message, "boom at batch 2");
            }
            other => panic!("expected the panic as an error, got {other:?}"),
        }
        assert!(stream.next_batch().is_none());
        // A formatted panic message is kept too; a clean end stays a plain end.
        let mut stream = EpochStream::spawn(1, 0, |_| panic!("slot {} of {}", 3, 4));
        let e = stream.next_batch().unwrap().unwrap_err();
        assert!(e.to_string().contains("panicked: slot 3 of 4"), "{e}");
        let mut stream = EpochStream::spawn(1, 0, |_| {});
        assert!(stream.next_batch().is_none());
    }

    #[test]
    fn huge_sizes_are_refused_naming_the_parameter() {
        let cases: [(&str, BatchConfig, SampleConfig, usize); 6] = [
            (
                "batch_size",
                batch_config(1 << 62),
                sample_config(16, 77),
                1,
            ),
            (
                "batch_size",
                batch_config(1_000_000),
                sample_config(64, 77),
                1,
            ),
            (
                "prefetch",
                BatchConfig {
                    prefetch: 1_000_000_000_000,
                    ..batch_config(2)
                },
                sample_config(16, 77),
                1,
            ),
            (
                "shuffle_buffer",
                BatchConfig {
                    shuffle_buffer: 1_000_000_000_000,
                    ..batch_config(2)
                },
                sample_config(16, 77),
                1,
            ),
            (
                "context_length",
                batch_config(2),
                sample_config(16, 1_000_000_000),
                1,
            ),
            ("threads", batch_config(2), sample_config(16, 77), 100_000),
        ];
        for (argument, batches, sample, threads) in cases {
            let e = build(batches, sample, threads).err().unwrap();
            assert!(
                e.starts_with(&format!("invalid `{argument}`")),
                "{argument}: {e}"
            );
        }
        // The bounds leave real sizes alone: a batch of 4096 at 224 px float32 is fine.
        assert!(check_batch_bytes(4096, &sample_config(224, 77)).is_ok());
        let mut stream = build(batch_config(4), sample_config(16, 8), 2)
            .unwrap()
            .start(0, 0);
        assert_eq!(stream.next_batch().unwrap().unwrap().size, 4);
    }

    fn pixels(batch: &Batch) -> Vec<f32> {
        match &batch.images {
            ImageBuffer::Float32(v) => v.clone(),
            ImageBuffer::Uint8(v) => v.iter().map(|&p| f32::from(p)).collect(),
        }
    }

    #[test]
    fn reading_ahead_serves_the_next_epoch_as_a_fresh_start_would() {
        let training = |read_ahead| {
            let mut sample = sample_config(16, 8);
            sample.train = true;
            let batches = BatchConfig {
                shuffle: true,
                read_ahead,
                ..batch_config(4)
            };
            build(batches, sample, 2).unwrap()
        };
        let pipeline = training(true);
        let mut stream = pipeline.start(0, 0);
        assert!(stream.positioned_at(0) && !stream.positioned_at(1));
        // 6 samples in batches of 4: two batches, then the end of epoch 0.
        assert_eq!(stream.next_batch().unwrap().unwrap().size, 4);
        assert!(!stream.positioned_at(0));
        assert_eq!(stream.next_batch().unwrap().unwrap().size, 2);
        assert!(stream.next_batch().is_none());
        assert!(stream.positioned_at(1) && !stream.positioned_at(2));
        // What it read ahead is epoch 1 as a fresh start of epoch 1 gives it.
        let mut fresh = training(false).start(1, 0);
        for _ in 0..2 {
            let (ahead, again) = (
                stream.next_batch().unwrap().unwrap(),
                fresh.next_batch().unwrap().unwrap(),
            );
            assert_eq!(ahead.text, again.text);
            assert_eq!(pixels(&ahead), pixels(&again));
        }
        assert!(stream.next_batch().is_none() && fresh.next_batch().is_none());
        assert!(
            !fresh.positioned_at(2),
            "without read-ahead a stream ends with its epoch"
        );
        assert!(stream.positioned_at(2));
    }

    #[test]
    fn a_batch_bigger_than_the_source_holds_only_what_came() {
        let pipeline = build(batch_config(100_000), sample_config(16, 8), 2).unwrap();
        let batch = pipeline.start(0, 0).next_batch().unwrap().unwrap();
        assert_eq!(batch.size, 6);
        match &batch.images {
            ImageBuffer::Float32(v) => assert_eq!(v.len(), 6 * 3 * 16 * 16),
            ImageBuffer::Uint8(_) => unreachable!(),
        }
        assert_eq!(batch.text.len(), 6 * 8);
        assert!(batch.text.chunks(8).all(|row| row.iter().all(|&t| t == 0)));
    }
}
