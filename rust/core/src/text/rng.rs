//! Per-sample random streams.
//!
//! Every random choice about a sample (its EDA edit, its MLM mask, its image crop...) draws from
//! a generator seeded by `(seed, epoch, sample index, stream)` alone, so results do not depend
//! on the number of threads, the batch size or the order in which workers pick samples up.

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_xoshiro::SplitMix64;

/// Stream ids: one per consumer, so two consumers of one sample never share draws.
pub mod streams {
    /// EDA text augmentation.
    pub const EDA: u64 = 1;
    /// MLM masking.
    pub const MLM: u64 = 2;
    /// Image augmentation (used by the data pipeline).
    pub const IMAGE: u64 = 3;
    /// Choice of one caption among several (used by the data pipeline).
    pub const CAPTION: u64 = 4;
}

/// A uniform integer in `0..n` (`n ≥ 1`, checked): Lemire's multiply-and-shift with rejection,
/// exact, and one 64-bit draw and one multiplication unless the draw lands in the rejected
/// sliver (probability n / 2⁶⁴). EDA makes a few such draws per caption; rand 0.8's
/// `gen_range` approximates its rejection zone from a leading-zero count and so redraws up to
/// half the time (a quarter for n = 3 or 12), each redraw a mispredicted branch.
#[inline]
pub fn below(rng: &mut impl RngCore, n: usize) -> usize {
    assert!(n > 0, "below(0)");
    let n = n as u64;
    let mut product = u128::from(rng.next_u64()) * u128::from(n);
    if (product as u64) < n {
        // Low halves under 2⁶⁴ mod n would make some results one draw likelier: redraw.
        let threshold = n.wrapping_neg() % n;
        while (product as u64) < threshold {
            product = u128::from(rng.next_u64()) * u128::from(n);
        }
    }
    (product >> 64) as usize
}

/// SplitMix64's output function: a bijective avalanche mix of a 64-bit word.
pub fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The tuple folded with SplitMix64: each step mixes the previous state with the next
/// component, so `(1, 2)` and `(2, 1)` differ. The sample index comes last: the steps before
/// it are the same for every sample of an epoch's stream, and a loop over samples does them
/// once, leaving one mix per sample instead of four (EDA's edit got 1.05× faster).
fn fold(seed: u64, epoch: u64, index: u64, stream: u64) -> u64 {
    EpochStreams::new(seed, epoch).fold(index, stream)
}

/// One fold step: the state (already mixed) xor the component, mixed. A bijection of the
/// component for a given state, so two samples of one stream never share a seed.
fn fold_step(state: u64, part: u64) -> u64 {
    splitmix64(state ^ part)
}

/// The streams of one epoch of one run: the (seed, epoch) part of the fold, done once for
/// all the samples of a batch rather than once per sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochStreams {
    state: u64,
}

impl EpochStreams {
    pub fn new(seed: u64, epoch: u64) -> EpochStreams {
        EpochStreams {
            state: fold_step(splitmix64(seed), epoch),
        }
    }

    fn fold(self, index: u64, stream: u64) -> u64 {
        fold_step(fold_step(self.state, stream), index)
    }

    /// [`light_sample_rng`] of sample `index` in this epoch.
    pub fn light_rng(self, index: u64, stream: u64) -> SplitMix64 {
        SplitMix64::seed_from_u64(self.fold(index, stream))
    }
}

/// The generator for one (seed, epoch, sample index, stream): four SplitMix64 outputs of the
/// folded tuple form the 32-byte ChaCha8 key.
pub fn sample_rng(seed: u64, epoch: u64, index: u64, stream: u64) -> ChaCha8Rng {
    let mut state = fold(seed, epoch, index, stream);
    let mut key = [0u8; 32];
    for (i, chunk) in key.chunks_exact_mut(8).enumerate() {
        state = splitmix64(state.wrapping_add(i as u64));
        chunk.copy_from_slice(&state.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// A small, fast generator for one (seed, epoch, sample index, stream), for consumers that
/// draw a handful of numbers per sample (EDA): SplitMix64 started at the folded tuple. Setting
/// it up costs nothing where ChaCha8 first computes a whole block, and its draws do not wait
/// on each other (the state only advances by a constant), so a sample's few draws overlap.
pub fn light_sample_rng(seed: u64, epoch: u64, index: u64, stream: u64) -> SplitMix64 {
    EpochStreams::new(seed, epoch).light_rng(index, stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    fn first(seed: u64, epoch: u64, index: u64, stream: u64) -> u64 {
        sample_rng(seed, epoch, index, stream).gen()
    }

    /// The first draw of a generator keyed by the tuple.
    type First = fn(u64, u64, u64, u64) -> u64;

    #[test]
    fn same_tuple_same_stream_and_every_component_matters() {
        let light: First = |s, e, i, k| light_sample_rng(s, e, i, k).gen();
        for first in [first as First, light] {
            assert_eq!(first(1, 2, 3, 4), first(1, 2, 3, 4));
            let base = first(1, 2, 3, 4);
            for other in [
                first(0, 2, 3, 4),
                first(1, 0, 3, 4),
                first(1, 2, 0, 4),
                first(1, 2, 3, 0),
            ] {
                assert_ne!(base, other);
            }
            // Order of the components matters too.
            assert_ne!(first(0, 1, 2, 0), first(0, 2, 1, 0));
        }
    }

    #[test]
    fn neighbouring_samples_look_independent() {
        // Mean of the first uniform draw over many consecutive indices is near 1/2.
        let n = 20_000;
        let chacha: f64 = (0..n)
            .map(|i| sample_rng(7, 0, i, streams::MLM).gen::<f64>())
            .sum::<f64>();
        let light: f64 = (0..n)
            .map(|i| light_sample_rng(7, 0, i, streams::EDA).gen::<f64>())
            .sum::<f64>();
        for mean in [chacha / n as f64, light / n as f64] {
            assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        }
    }

    #[test]
    fn neighbouring_samples_differ_in_every_bit_half_the_time() {
        // The index enters the fold as a plain xor, so indices one bit apart must still give
        // first draws that look unrelated: each output bit flips between samples i and i + 1
        // at rate 1/2 (within 5 sigma over 20k pairs).
        let n = 20_000u64;
        let epoch = EpochStreams::new(3, 1);
        let first = |i| epoch.light_rng(i, streams::EDA).gen::<u64>();
        let mut flips = [0u32; 64];
        for i in 0..n {
            let changed = first(i) ^ first(i + 1);
            for (bit, count) in flips.iter_mut().enumerate() {
                *count += (changed >> bit & 1) as u32;
            }
        }
        let sigma = (0.25 / n as f64).sqrt();
        for (bit, &count) in flips.iter().enumerate() {
            let rate = f64::from(count) / n as f64;
            assert!(
                (rate - 0.5).abs() < 5.0 * sigma,
                "bit {bit} flips at {rate}"
            );
        }
    }

    #[test]
    fn below_is_uniform_and_in_range() {
        let mut rng = light_sample_rng(1, 2, 3, 4);
        for n in [1usize, 2, 3, 7, 12, 64] {
            let draws = 30_000 * n;
            let mut counts = vec![0u32; n];
            for _ in 0..draws {
                counts[below(&mut rng, n)] += 1;
            }
            // Each value's count within 5 sigma of draws / n.
            let p = 1.0 / n as f64;
            let sigma = (draws as f64 * p * (1.0 - p)).sqrt();
            for (value, &count) in counts.iter().enumerate() {
                let off = (f64::from(count) - draws as f64 * p).abs();
                assert!(off <= 5.0 * sigma + 1e-9, "{value} of {n}: {count}");
            }
        }
    }

    #[test]
    fn below_rejects_the_biased_sliver() {
        // A generator replaying given draws: with n = 3, 2^64 mod 3 = 1, so a draw whose low
        // product half is 0 (draw 0) is rejected and the next one used.
        struct Replay(Vec<u64>);
        impl RngCore for Replay {
            fn next_u32(&mut self) -> u32 {
                self.next_u64() as u32
            }
            fn next_u64(&mut self) -> u64 {
                self.0.remove(0)
            }
            fn fill_bytes(&mut self, _: &mut [u8]) {
                unimplemented!()
            }
            fn try_fill_bytes(&mut self, _: &mut [u8]) -> std::result::Result<(), rand::Error> {
                unimplemented!()
            }
        }
        let mut replay = Replay(vec![0, u64::MAX]);
        assert_eq!(
            below(&mut replay, 3),
            2,
            "draw 0 rejected, then the top value"
        );
        assert!(replay.0.is_empty());
        let mut replay = Replay(vec![u64::MAX / 3 + 1]);
        assert_eq!(below(&mut replay, 3), 1);
    }

    #[test]
    fn epoch_streams_fold_the_same_tuple() {
        let epoch = EpochStreams::new(5, 6);
        for (index, stream) in [(0, 1), (7, 2), (u64::MAX, 3)] {
            assert_eq!(
                epoch.light_rng(index, stream).gen::<u64>(),
                light_sample_rng(5, 6, index, stream).gen::<u64>()
            );
            let by_hand = [6, stream, index]
                .iter()
                .fold(splitmix64(5), |state, &part| splitmix64(state ^ part));
            assert_eq!(epoch.fold(index, stream), by_hand);
        }
    }
}
