//! A seeded shuffle buffer: mixes a stream of samples (from shards read in file order) the
//! way webdataset's `shuffle(n)` does, with the order fixed by the epoch's seed.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

use super::source::{RawItem, RawSample, Skip};

/// Holds up to `capacity` samples and releases a random one for each that comes in. Skips
/// pass straight through (they carry no data to mix).
pub struct ShuffleBuffer<I> {
    inner: I,
    buffer: Vec<RawSample>,
    capacity: usize,
    rng: ChaCha8Rng,
    pending_skip: VecDeque<Skip>,
    exhausted: bool,
}

impl<I: Iterator<Item = RawItem>> ShuffleBuffer<I> {
    pub fn new(inner: I, capacity: usize, rng: ChaCha8Rng) -> Self {
        ShuffleBuffer {
            inner,
            buffer: Vec::with_capacity(capacity),
            capacity,
            rng,
            pending_skip: VecDeque::new(),
            exhausted: false,
        }
    }
}

impl<I: Iterator<Item = RawItem>> Iterator for ShuffleBuffer<I> {
    type Item = RawItem;
    fn next(&mut self) -> Option<RawItem> {
        while !self.exhausted && self.buffer.len() < self.capacity && self.pending_skip.is_empty() {
            match self.inner.next() {
                Some(Ok(sample)) => self.buffer.push(sample),
                Some(Err(skip)) => self.pending_skip.push_back(skip),
                None => self.exhausted = true,
            }
        }
        if let Some(skip) = self.pending_skip.pop_front() {
            return Some(Err(skip));
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.buffer.len());
        Some(Ok(self.buffer.swap_remove(i)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;
    use crate::pipeline::source::Payload;
    use crate::text::sample_rng;

    #[test]
    fn shuffle_buffer_is_a_permutation() {
        let items: Vec<RawItem> = (0..100)
            .map(|i| {
                Ok(RawSample {
                    key: i.to_string(),
                    location: Location::default(),
                    payload: Payload::Synthetic(i),
                    captions: vec![],
                    label: None,
                })
            })
            .collect();
        let out: Vec<String> = ShuffleBuffer::new(items.into_iter(), 10, sample_rng(0, 0, 0, 0))
            .map(|r| r.unwrap().key)
            .collect();
        let mut sorted: Vec<u64> = out.iter().map(|k| k.parse().unwrap()).collect();
        assert_ne!(sorted, (0..100).collect::<Vec<_>>());
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
