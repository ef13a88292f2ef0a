//! BERT-style masked-language-model masking of tokenized captions.
//!
//! Only word tokens are candidates: the positions strictly between SOT and the first EOT.
//! SOT, EOT and the padding after EOT are never touched (pad id 0 is also the id of "!", so the
//! end of a caption is found by EOT, never by looking for zeros).

use rand::Rng;

use super::tokenizer::{EOT, MASK, SOT, VOCAB_SIZE};
use crate::{CoreError, Result};

/// Label of a position that is not to be predicted (PyTorch's cross-entropy `ignore_index`).
pub const IGNORE_INDEX: i64 = -100;

/// How tokens are chosen and replaced. Defaults are BERT's: 15 % of word tokens; of those
/// 80 % become `<|mask|>`, 10 % a random token and 10 % stay unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct MlmConfig {
    /// Chance that a word token is selected for prediction.
    pub probability: f64,
    /// Of the selected tokens, the share replaced by `mask_token`.
    pub mask_fraction: f64,
    /// Of the selected tokens, the share replaced by a random ordinary token; the rest
    /// (1 − mask − random) keep their id.
    pub random_fraction: f64,
    /// Id written at masked positions.
    pub mask_token: i64,
    /// Random replacements are drawn uniformly from `0..random_vocab` (the ordinary BPE
    /// tokens by default: never SOT, EOT or MASK).
    pub random_vocab: i64,
}

impl Default for MlmConfig {
    fn default() -> Self {
        MlmConfig {
            probability: 0.15,
            mask_fraction: 0.8,
            random_fraction: 0.1,
            mask_token: MASK,
            random_vocab: SOT, // ids 0..49406 are the ordinary tokens
        }
    }
}

impl MlmConfig {
    /// Rejects probabilities outside [0, 1] (and NaN) and an empty random vocabulary.
    pub fn validate(&self) -> Result<()> {
        let unit = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(CoreError::invalid(
                    name,
                    format!("must lie in [0, 1], got {v}"),
                ))
            }
        };
        unit("probability", self.probability)?;
        unit("mask_fraction", self.mask_fraction)?;
        unit("random_fraction", self.random_fraction)?;
        unit(
            "mask_fraction + random_fraction",
            self.mask_fraction + self.random_fraction,
        )?;
        if self.random_vocab < 1 || self.random_vocab > VOCAB_SIZE as i64 {
            return Err(CoreError::invalid(
                "random_vocab",
                format!("must lie in 1..={VOCAB_SIZE}, got {}", self.random_vocab),
            ));
        }
        Ok(())
    }
}

/// The number of word tokens in a tokenized caption: the positions strictly between the SOT at
/// position 0 and the first EOT. Without a leading SOT counting starts at 0; without an EOT it
/// runs to the end.
pub fn word_length(ids: &[i64]) -> usize {
    let (start, end) = word_span(ids);
    end - start
}

/// `[start, end)` of the word tokens (see [`word_length`]).
fn word_span(ids: &[i64]) -> (usize, usize) {
    let start = usize::from(ids.first() == Some(&SOT));
    let end = ids[start..]
        .iter()
        .position(|&t| t == EOT)
        .map_or(ids.len(), |p| start + p);
    (start, end)
}

/// Masks one tokenized caption. Returns `(masked ids, labels)`: labels hold the original id at
/// selected positions and [`IGNORE_INDEX`] everywhere else. The config is assumed valid
/// (see [`MlmConfig::validate`]).
pub fn mask_tokens(ids: &[i64], cfg: &MlmConfig, rng: &mut impl Rng) -> (Vec<i64>, Vec<i64>) {
    let mut masked = ids.to_vec();
    let mut labels = vec![IGNORE_INDEX; ids.len()];
    let (start, end) = word_span(ids);
    for pos in start..end {
        // One draw decides selection, a second the replacement, so the replacement shares do
        // not depend on the selection probability.
        if rng.gen::<f64>() >= cfg.probability {
            continue;
        }
        labels[pos] = ids[pos];
        let r: f64 = rng.gen();
        if r < cfg.mask_fraction {
            masked[pos] = cfg.mask_token;
        } else if r < cfg.mask_fraction + cfg.random_fraction {
            masked[pos] = rng.gen_range(0..cfg.random_vocab.max(1));
        }
    }
    (masked, labels)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::{sample_rng, streams};

    fn caption(words: usize, context: usize) -> Vec<i64> {
        let mut ids = vec![0i64; context];
        ids[0] = SOT;
        for (i, id) in ids.iter_mut().enumerate().skip(1).take(words) {
            *id = 1000 + i as i64;
        }
        ids[words + 1] = EOT;
        ids
    }

    #[test]
    fn word_length_counts_between_sot_and_eot() {
        assert_eq!(word_length(&caption(5, 77)), 5);
        assert_eq!(word_length(&caption(0, 77)), 0);
        assert_eq!(word_length(&caption(75, 77)), 75);
        assert_eq!(
            word_length(&[SOT, 0, 0, EOT, 0]),
            2,
            "zeros inside are words ('!')"
        );
        assert_eq!(word_length(&[]), 0);
        assert_eq!(word_length(&[SOT, 5, 6]), 2, "no EOT: to the end");
    }

    #[test]
    fn rates_match_bert_and_specials_are_never_masked() {
        let cfg = MlmConfig::default();
        let (mut selected, mut as_mask, mut random, mut kept, mut words) = (0, 0, 0, 0, 0);
        for i in 0..4000 {
            let ids = caption(12, 32);
            let (m, l) = mask_tokens(&ids, &cfg, &mut sample_rng(3, 0, i, streams::MLM));
            words += 12;
            assert_eq!((m[0], l[0]), (SOT, IGNORE_INDEX));
            assert_eq!((m[13], l[13]), (EOT, IGNORE_INDEX));
            assert!(m[14..].iter().all(|&t| t == 0) && l[14..].iter().all(|&t| t == -100));
            for p in 1..13 {
                if l[p] == IGNORE_INDEX {
                    assert_eq!(m[p], ids[p]);
                    continue;
                }
                selected += 1;
                assert_eq!(l[p], ids[p]);
                match m[p] {
                    MASK => as_mask += 1,
                    t if t == ids[p] => kept += 1,
                    t => {
                        assert!((0..SOT).contains(&t));
                        random += 1
                    }
                }
            }
        }
        let rate = selected as f64 / words as f64;
        assert!((rate - 0.15).abs() < 0.01, "selected {rate}");
        let share = |n: i32| n as f64 / selected as f64;
        assert!((share(as_mask) - 0.8).abs() < 0.02);
        // A random draw equal to the original counts as kept: about 1/49406 of them.
        assert!((share(random) - 0.1).abs() < 0.015);
        assert!((share(kept) - 0.1).abs() < 0.015);
    }

    #[test]
    fn bad_config_is_rejected_by_name() {
        let cfg = MlmConfig {
            probability: 1.5,
            ..MlmConfig::default()
        };
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("`probability`"));
        let cfg = MlmConfig {
            mask_fraction: 0.9,
            random_fraction: 0.2,
            ..MlmConfig::default()
        };
        assert!(cfg.validate().is_err());
        let cfg = MlmConfig {
            probability: f64::NAN,
            ..MlmConfig::default()
        };
        assert!(cfg.validate().is_err());
    }
}
