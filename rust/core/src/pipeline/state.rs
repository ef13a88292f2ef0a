//! Error policy, counters and the recent-skip log shared by a pipeline and its workers.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use super::raw::Skip;
use crate::error::{CoreError, Result};

/// What happens to a bad sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorPolicy {
    /// Count it, log it, go on with the next sample.
    Skip,
    /// Stop the stream with an error naming the shard/file and member.
    Raise,
}

impl ErrorPolicy {
    pub fn parse(s: &str) -> Result<ErrorPolicy> {
        match s {
            "skip" => Ok(ErrorPolicy::Skip),
            "raise" => Ok(ErrorPolicy::Raise),
            other => Err(CoreError::invalid(
                "on_error",
                format!("must be \"skip\" or \"raise\", got {other:?}"),
            )),
        }
    }
}

/// How many skip messages are kept for the caller to log; older ones are dropped (they are
/// still counted).
const LOG_CAPACITY: usize = 1000;

/// Counters of one pipeline over its lifetime (all epochs).
#[derive(Default)]
pub struct Stats {
    samples_read: AtomicU64,
    samples_yielded: AtomicU64,
    batches: AtomicU64,
    dropped_tail: AtomicU64,
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    log: Mutex<VecDeque<String>>,
}

/// A copy of the counters.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatsSnapshot {
    pub samples_read: u64,
    pub samples_yielded: u64,
    pub batches: u64,
    pub dropped_tail: u64,
    pub skipped: BTreeMap<String, u64>,
}

impl Stats {
    pub fn read(&self, n: u64) {
        self.samples_read.fetch_add(n, Ordering::Relaxed);
    }

    pub fn yielded(&self, n: u64) {
        self.samples_yielded.fetch_add(n, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
    }

    pub fn dropped_tail(&self, n: u64) {
        self.dropped_tail.fetch_add(n, Ordering::Relaxed);
    }

    pub fn skip(&self, skip: &Skip) {
        *self
            .skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(skip.kind)
            .or_default() += 1;
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_CAPACITY {
            log.pop_front();
        }
        log.push_back(format!(
            "skipped {}: {} ({})",
            skip.location, skip.reason, skip.kind
        ));
    }

    /// The skip messages since the last call.
    pub fn take_log(&self) -> Vec<String> {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            samples_read: self.samples_read.load(Ordering::Relaxed),
            samples_yielded: self.samples_yielded.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            dropped_tail: self.dropped_tail.load(Ordering::Relaxed),
            skipped: self
                .skipped
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
        }
    }
}
