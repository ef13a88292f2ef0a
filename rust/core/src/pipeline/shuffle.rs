//! A seeded shuffle buffer: mixes a stream of samples (from shards read in file order) the
//! way webdataset's `shuffle(n)` does, with the order fixed by the epoch's seed. It holds at
//! most `capacity` samples and, so that big pictures cannot fill memory, at most `max_bytes`
//! of them (always at least one sample); the sizes are part of the data, so the order stays
//! a function of the seed and the shards.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::collections::VecDeque;

use super::raw::{RawItem, RawSample, Skip};

/// Holds up to `capacity` samples (and `max_bytes`) and releases a random one for each that
/// comes in. Skips pass straight through (they carry no data to mix).
pub struct ShuffleBuffer<I> {
    inner: I,
    buffer: Vec<RawSample>,
    capacity: usize,
    bytes: u64,
    max_bytes: u64,
    rng: ChaCha8Rng,
    pending_skip: VecDeque<Skip>,
    exhausted: bool,
}

impl<I: Iterator<Item = RawItem>> ShuffleBuffer<I> {
    pub fn new(inner: I, capacity: usize, max_bytes: u64, rng: ChaCha8Rng) -> Self {
        ShuffleBuffer {
            inner,
            // Grows as samples come: `capacity` is an upper bound, not a size to reserve.
            buffer: Vec::new(),
            capacity,
            bytes: 0,
            max_bytes,
            rng,
            pending_skip: VecDeque::new(),
            exhausted: false,
        }
    }
}

impl<I: Iterator<Item = RawItem>> Iterator for ShuffleBuffer<I> {
    type Item = RawItem;
    fn next(&mut self) -> Option<RawItem> {
        while !self.exhausted
            && self.buffer.len() < self.capacity
            && (self.buffer.is_empty() || self.bytes < self.max_bytes)
            && self.pending_skip.is_empty()
        {
            match self.inner.next() {
                Some(Ok(sample)) => {
                    self.bytes += sample.approx_bytes();
                    self.buffer.push(sample);
                }
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
        let sample = self.buffer.swap_remove(i);
        self.bytes -= sample.approx_bytes();
        Some(Ok(sample))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Location;
    use crate::pipeline::raw::Payload;
    use crate::rng::sample_rng;

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
        let out: Vec<String> =
            ShuffleBuffer::new(items.into_iter(), 10, u64::MAX, sample_rng(0, 0, 0, 0))
                .map(|r| r.unwrap().key)
                .collect();
        let mut sorted: Vec<u64> = out.iter().map(|k| k.parse().unwrap()).collect();
        assert_ne!(sorted, (0..100).collect::<Vec<_>>());
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }

    /// Samples of `size` bytes each, and the most bytes the buffer held at once.
    fn peak_bytes(n: usize, size: usize, capacity: usize, max_bytes: u64) -> (Vec<String>, u64) {
        let held = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let peak = std::rc::Rc::new(std::cell::Cell::new(0u64));
        let (h, p) = (held.clone(), peak.clone());
        let items = (0..n).map(move |i| {
            h.set(h.get() + size as u64);
            p.set(p.get().max(h.get()));
            Ok(RawSample {
                key: String::new(),
                location: Location::default(),
                payload: Payload::Encoded(vec![i as u8; size]),
                captions: vec![],
                label: None,
            })
        });
        let out: Vec<String> =
            ShuffleBuffer::new(items, capacity, max_bytes, sample_rng(0, 0, 0, 0))
                .map(|r| {
                    let sample = r.unwrap();
                    held.set(held.get() - size as u64);
                    let Payload::Encoded(bytes) = sample.payload else {
                        unreachable!()
                    };
                    bytes[0].to_string()
                })
                .collect();
        (out, peak.get())
    }

    #[test]
    fn big_samples_are_bounded_by_bytes_not_only_by_count() {
        // 1000 slots, 10 kB per sample, 50 kB allowed: at most 5 samples held (plus the one
        // that crossed the line).
        let (out, peak) = peak_bytes(40, 10_000, 1000, 50_000);
        assert!(peak <= 60_000, "held {peak} bytes");
        let mut sorted: Vec<u32> = out.iter().map(|k| k.parse().unwrap()).collect();
        sorted.sort();
        assert_eq!(sorted, (0..40).collect::<Vec<_>>());
        // One sample bigger than the whole bound still goes through, alone.
        let (out, peak) = peak_bytes(3, 100, 10, 1);
        assert_eq!((out.len(), peak), (3, 100));
        // Small samples: the count is the bound, and the order is that of an unbounded buffer.
        assert_eq!(
            peak_bytes(40, 10, 8, u64::MAX).0,
            peak_bytes(40, 10, 8, 1 << 30).0
        );
    }
}
