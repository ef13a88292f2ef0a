//! What every source yields, and the plan that orders an epoch: the types the sources, the
//! shuffle buffer, the batcher and the counters share.
//!
//! A leaf of `pipeline`: it imports nothing else from it, so each source can use these types
//! while `source` names every source.

use std::path::PathBuf;

use rand::seq::SliceRandom;

use crate::error::{CoreError, Location};
use crate::rng::{sample_rng, streams};

/// Where a sample's picture comes from.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Encoded bytes already in memory (a tar member).
    Encoded(Vec<u8>),
    /// A file to read on the worker thread (table and folder sources).
    File(PathBuf),
    /// Scene `index` of the procedural dataset.
    Synthetic(u64),
}

/// One sample before decoding: picture, caption candidates, optional class label.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub key: String,
    pub location: Location,
    pub payload: Payload,
    /// Every caption of the sample (one is drawn per epoch); empty for folders.
    pub captions: Vec<String>,
    pub label: Option<i64>,
}

impl RawSample {
    /// The bytes it holds in memory (its encoded picture and captions), for the bounds on
    /// what waits to be decoded.
    pub fn approx_bytes(&self) -> u64 {
        let payload = match &self.payload {
            Payload::Encoded(bytes) => bytes.len(),
            Payload::File(path) => path.as_os_str().len(),
            Payload::Synthetic(_) => 0,
        };
        let text: usize = self.captions.iter().map(String::len).sum();
        (payload + text + self.key.len()) as u64
    }
}

/// A sample (or a whole stretch of a source) that is dropped, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Skip {
    pub kind: &'static str,
    pub location: Location,
    pub reason: String,
}

impl Skip {
    pub fn new(kind: &'static str, location: Location, reason: impl Into<String>) -> Skip {
        Skip {
            kind,
            location,
            reason: reason.into(),
        }
    }

    pub fn into_error(self) -> CoreError {
        CoreError::data(self.location, format!("{} ({})", self.reason, self.kind))
    }
}

pub type RawItem = std::result::Result<RawSample, Skip>;

/// Everything that decides the order of one epoch on one rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochPlan {
    pub seed: u64,
    pub epoch: u64,
    pub rank: u64,
    pub world_size: u64,
    pub shuffle: bool,
    /// Samples held by the shard shuffle buffer (ignored by indexed sources).
    pub shuffle_buffer: usize,
    /// Bytes of samples the shard shuffle buffer may hold (at least one sample is held).
    pub shuffle_buffer_bytes: u64,
}

impl EpochPlan {
    /// The permutation of `0..n` shared by every rank of this epoch (identity if unshuffled).
    pub fn permutation(&self, n: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..n).collect();
        if self.shuffle {
            order.shuffle(&mut sample_rng(
                self.seed,
                self.epoch,
                u64::MAX,
                streams::ORDER,
            ));
        }
        order
    }

    /// This rank's share of `0..n`: positions rank, rank + world, ... of the permutation.
    /// With several ranks every share has the same length (the last `n % world` indices of
    /// the permutation are left out this epoch), so DDP ranks run the same number of steps.
    pub fn rank_share(&self, n: usize) -> Vec<usize> {
        let world = self.world_size as usize;
        let used = if world > 1 { n / world * world } else { n };
        self.permutation(n)
            .into_iter()
            .take(used)
            .skip(self.rank as usize)
            .step_by(self.world_size as usize)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rank_shares_partition_every_index_once() {
        for world in 1..5u64 {
            let mut seen = vec![0; 23];
            for rank in 0..world {
                let plan = EpochPlan {
                    seed: 4,
                    epoch: 2,
                    rank,
                    world_size: world,
                    shuffle: true,
                    shuffle_buffer: 0,
                    shuffle_buffer_bytes: 1,
                };
                for i in plan.rank_share(23) {
                    seen[i] += 1;
                }
            }
            // Equal shares: 23 % world indices sit out, every other index is read once.
            assert_eq!(
                seen.iter().filter(|&&c| c == 1).count(),
                23 / world as usize * world as usize
            );
            assert!(seen.iter().all(|&c| c <= 1), "{seen:?}");
        }
        let p = |epoch| {
            EpochPlan {
                seed: 4,
                epoch,
                rank: 0,
                world_size: 1,
                shuffle: true,
                shuffle_buffer: 0,
                shuffle_buffer_bytes: 1,
            }
            .permutation(50)
        };
        assert_ne!(p(0), p(1));
        assert_eq!(p(3), p(3));
    }
}
