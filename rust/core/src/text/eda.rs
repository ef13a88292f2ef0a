//! EDA, "Easy Data Augmentation" (Wei & Zou, EMNLP 2019), for captions: synonym replacement
//! (SR), random insertion (RI), random swap (RS), random deletion (RD).
//!
//! Following the paper, an operation changes n = max(1, ⌊α·l⌋) words of an l-word caption
//! (RD instead deletes each word with probability α). Words are the caption's
//! whitespace-separated pieces; the synonym operations look a word up by its letters
//! (lower-cased, punctuation around it kept), skip stop words, and find plurals and other
//! inflections through WordNet's base forms. Synonyms are inserted in their WordNet base form.

use std::borrow::Cow;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;
use rustc_hash::FxHashSet;

use super::stopwords::is_stop_word;
use super::wordnet::WordNet;
use crate::rng::{light_sample_rng, streams};
use crate::{CoreError, Result};

/// One EDA operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EdaOp {
    SynonymReplacement,
    RandomInsertion,
    RandomSwap,
    RandomDeletion,
}

impl EdaOp {
    pub const ALL: [EdaOp; 4] = [
        EdaOp::SynonymReplacement,
        EdaOp::RandomInsertion,
        EdaOp::RandomSwap,
        EdaOp::RandomDeletion,
    ];

    /// Parses "sr", "ri", "rs", "rd".
    pub fn parse(name: &str) -> Result<EdaOp> {
        match name.to_ascii_lowercase().as_str() {
            "sr" => Ok(EdaOp::SynonymReplacement),
            "ri" => Ok(EdaOp::RandomInsertion),
            "rs" => Ok(EdaOp::RandomSwap),
            "rd" => Ok(EdaOp::RandomDeletion),
            _ => Err(CoreError::invalid(
                "op",
                format!("expected one of sr, ri, rs, rd, got {name:?}"),
            )),
        }
    }

    fn needs_wordnet(self) -> bool {
        matches!(self, EdaOp::SynonymReplacement | EdaOp::RandomInsertion)
    }
}

/// Which operations a caption may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdaMode {
    /// DeCLIP's reading: one of SR, RS, RD per caption, chosen uniformly.
    Declip,
    /// One of all four operations per caption, chosen uniformly (the paper's per-sentence use).
    AnyOne,
}

impl EdaMode {
    /// Parses "declip" or "any".
    pub fn parse(name: &str) -> Result<EdaMode> {
        match name.to_ascii_lowercase().as_str() {
            "declip" => Ok(EdaMode::Declip),
            "any" | "anyone" | "any_one" => Ok(EdaMode::AnyOne),
            _ => Err(CoreError::invalid(
                "mode",
                format!("expected \"declip\" or \"any\", got {name:?}"),
            )),
        }
    }
}

/// EDA settings. Strengths are the paper's α per operation; an operation with strength 0 is
/// never chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct EdaConfig {
    /// Chance that a caption is augmented at all.
    pub probability: f64,
    pub synonym_replacement: f64,
    pub random_insertion: f64,
    pub random_swap: f64,
    pub random_deletion: f64,
    pub mode: EdaMode,
}

impl Default for EdaConfig {
    fn default() -> Self {
        EdaConfig {
            probability: 1.0,
            synonym_replacement: 0.1,
            random_insertion: 0.1,
            random_swap: 0.1,
            random_deletion: 0.1,
            mode: EdaMode::Declip,
        }
    }
}

impl EdaConfig {
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("probability", self.probability),
            ("synonym_replacement", self.synonym_replacement),
            ("random_insertion", self.random_insertion),
            ("random_swap", self.random_swap),
            ("random_deletion", self.random_deletion),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(CoreError::invalid(
                    name,
                    format!("must lie in [0, 1], got {v}"),
                ));
            }
        }
        Ok(())
    }

    fn strength(&self, op: EdaOp) -> f64 {
        match op {
            EdaOp::SynonymReplacement => self.synonym_replacement,
            EdaOp::RandomInsertion => self.random_insertion,
            EdaOp::RandomSwap => self.random_swap,
            EdaOp::RandomDeletion => self.random_deletion,
        }
    }
}

/// A configured augmenter. Cheap to share between threads.
#[derive(Debug, Clone)]
pub struct Eda {
    config: EdaConfig,
    wordnet: Option<Arc<WordNet>>,
    /// The operations a caption may get under this config and dictionary.
    ops: Vec<EdaOp>,
}

impl Eda {
    /// An augmenter using the WordNet found on the search path (see [`WordNet::shared`]);
    /// without one, SR and RI are off (one warning per process) and the others still work.
    pub fn new(config: EdaConfig) -> Result<Eda> {
        let needs = config.synonym_replacement > 0.0 || config.random_insertion > 0.0;
        Self::with_wordnet(config, if needs { WordNet::shared() } else { None })
    }

    /// An augmenter with the given dictionary (or none).
    pub fn with_wordnet(config: EdaConfig, wordnet: Option<Arc<WordNet>>) -> Result<Eda> {
        config.validate()?;
        let allowed: &[EdaOp] = match config.mode {
            EdaMode::Declip => &[
                EdaOp::SynonymReplacement,
                EdaOp::RandomSwap,
                EdaOp::RandomDeletion,
            ],
            EdaMode::AnyOne => &EdaOp::ALL,
        };
        let ops = allowed
            .iter()
            .copied()
            .filter(|&op| config.strength(op) > 0.0 && (wordnet.is_some() || !op.needs_wordnet()))
            .collect();
        Ok(Eda {
            config,
            wordnet,
            ops,
        })
    }

    pub fn config(&self) -> &EdaConfig {
        &self.config
    }

    pub fn wordnet(&self) -> Option<&WordNet> {
        self.wordnet.as_deref()
    }

    /// Sample `index`'s caption after EDA, with its own EDA stream: what the data pipeline does
    /// to that sample's caption, whatever thread or batch it lands in.
    pub fn augment_sample(&self, text: &str, seed: u64, epoch: u64, index: u64) -> String {
        self.edit_sample(None, text, seed, epoch, index)
            .unwrap_or_else(|| text.to_string())
    }

    /// Sample `index`'s edit with its own EDA stream: `op` None picks one as the config says
    /// (with probability `config.probability`, one operation per the mode), Some forces that
    /// operation at its configured strength. None when the caption is left as it is.
    pub fn edit_sample(
        &self,
        op: Option<EdaOp>,
        text: &str,
        seed: u64,
        epoch: u64,
        index: u64,
    ) -> Option<String> {
        let mut out = String::new();
        self.edit_sample_into(op, text, seed, epoch, index, &mut out)
            .then_some(out)
    }

    /// [`Eda::edit_sample`] appended to `out`; false, and `out` untouched, when the caption is
    /// left as it is. A caller editing many captions can write them all into one buffer.
    pub fn edit_sample_into(
        &self,
        op: Option<EdaOp>,
        text: &str,
        seed: u64,
        epoch: u64,
        index: u64,
        out: &mut String,
    ) -> bool {
        let rng = &mut light_sample_rng(seed, epoch, index, streams::EDA);
        match op.or_else(|| self.pick(rng)) {
            Some(op) => self.edit(op, text, rng, out),
            None => false,
        }
    }

    /// The operation for one caption, or None (no augmentation this time).
    fn pick(&self, rng: &mut impl Rng) -> Option<EdaOp> {
        if self.ops.is_empty() || !rng.gen_bool(self.config.probability) {
            return None;
        }
        self.ops.choose(rng).copied()
    }

    /// `op` on the caption's whitespace-separated words, appended to `out` joined with single
    /// spaces. False, with `out` untouched, when there are no words, or the operation needs
    /// WordNet and there is none.
    fn edit(&self, op: EdaOp, text: &str, rng: &mut impl Rng, out: &mut String) -> bool {
        // Room for a usual caption's words: one small allocation, no regrowing.
        let mut words = Vec::with_capacity(32);
        words.extend(text.split_whitespace());
        if words.is_empty() {
            return false;
        }
        let alpha = self.config.strength(op);
        let n = ((alpha * words.len() as f64) as usize).max(1);
        out.reserve(text.len());
        match (op, self.wordnet.as_deref()) {
            (EdaOp::SynonymReplacement, Some(wn)) => synonym_replacement(wn, &words, n, rng, out),
            (EdaOp::RandomInsertion, Some(wn)) => random_insertion(wn, &mut words, n, rng, out),
            (EdaOp::RandomSwap, _) => random_swap(&mut words, n, rng, out),
            (EdaOp::RandomDeletion, _) => random_deletion(&words, alpha, rng, out),
            _ => return false,
        }
        true
    }
}

/// `words` joined with single spaces, appended to `out`.
fn push_joined(out: &mut String, words: &[&str]) {
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(word);
    }
}

/// The part of a caption word that is looked up: from its first ASCII letter to its last,
/// when everything in between is an ASCII letter too (`"Dogs,` → 1..5, `co-op` → None).
fn letters(word: &str) -> Option<(usize, usize)> {
    let bytes = word.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_alphabetic)?;
    let end = bytes.iter().rposition(u8::is_ascii_alphabetic)? + 1;
    bytes[start..end]
        .iter()
        .all(u8::is_ascii_alphabetic)
        .then_some((start, end))
}

/// Synonyms of a caption word's letters, lower-cased; none for stop words and for words
/// that are not letters between punctuation.
fn synonyms_of<'w>(wn: &'w WordNet, word: &str) -> &'w [Arc<str>] {
    let Some((start, end)) = letters(word) else {
        return &[];
    };
    let letters = &word[start..end];
    let lower = if letters.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(letters.to_ascii_lowercase())
    } else {
        Cow::Borrowed(letters)
    };
    if is_stop_word(&lower) {
        return &[];
    }
    wn.synonyms(&lower)
}

/// SR: up to `n` distinct words that have synonyms, in random order, each replaced (every
/// occurrence of it) by one random synonym, the punctuation around its letters kept; the
/// result appended to `out`.
///
/// The distinct words are looked up in random order, as the paper's code shuffles its set of
/// words (so a word written twice is not picked twice as often), until `n` have synonyms. The
/// shuffle is Fisher-Yates drawn only as far as the lookups go.
fn synonym_replacement(
    wn: &WordNet,
    words: &[&str],
    n: usize,
    rng: &mut impl Rng,
    out: &mut String,
) {
    let mut seen = FxHashSet::with_capacity_and_hasher(words.len(), Default::default());
    let mut candidates: Vec<&str> = Vec::with_capacity(words.len());
    candidates.extend(words.iter().filter(|w| seen.insert(**w)));
    // (word, its synonym), sorted by word for the lookups below.
    let mut replacements: Vec<(&str, &str)> = vec![];
    let len = candidates.len();
    for i in 0..len {
        if replacements.len() == n {
            break;
        }
        candidates.swap(i, rng.gen_range(i..len));
        if let Some(synonym) = synonyms_of(wn, candidates[i]).choose(rng) {
            replacements.push((candidates[i], synonym));
        }
    }
    replacements.sort_unstable();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        match replacements.binary_search_by_key(word, |&(w, _)| w) {
            Ok(k) => {
                let (start, end) = letters(word).expect("a word with synonyms has letters");
                out.push_str(&word[..start]);
                out.push_str(replacements[k].1);
                out.push_str(&word[end..]);
            }
            Err(_) => out.push_str(word),
        }
    }
}

/// RI: `n` times, a random synonym of a random word (up to 10 tries to find a word that has
/// one, as in the paper's code) inserted at a random place. Synonyms of the original words
/// only: the paper's code also draws from words it inserted, which drifts ("running" →
/// "linear" → "one dimensional"). The result is appended to `out`.
fn random_insertion<'a>(
    wn: &'a WordNet,
    words: &mut Vec<&'a str>,
    n: usize,
    rng: &mut impl Rng,
    out: &mut String,
) {
    let original = words.clone();
    for _ in 0..n {
        let synonym = (0..10).find_map(|_| {
            let word = original.choose(rng)?;
            synonyms_of(wn, word).choose(rng)
        });
        if let Some(synonym) = synonym {
            let at = rng.gen_range(0..=words.len());
            words.insert(at, synonym);
        }
    }
    push_joined(out, words);
}

/// RS: `n` swaps of two different random positions (nothing to do for one word), the result
/// appended to `out`.
fn random_swap(words: &mut [&str], n: usize, rng: &mut impl Rng, out: &mut String) {
    let len = words.len();
    if len >= 2 {
        for _ in 0..n {
            let i = rng.gen_range(0..len);
            // Any position but i, uniformly.
            let j = (i + rng.gen_range(1..len)) % len;
            words.swap(i, j);
        }
    }
    push_joined(out, words);
}

/// RD: each word dropped with probability `p`, the rest appended to `out`; a one-word caption
/// is kept, and when every word would go one random word stays, so the result is never empty.
fn random_deletion(words: &[&str], p: f64, rng: &mut impl Rng, out: &mut String) {
    if let [word] = words {
        out.push_str(word);
        return;
    }
    let start = out.len();
    for word in words {
        if !rng.gen_bool(p) {
            if out.len() > start {
                out.push(' ');
            }
            out.push_str(word);
        }
    }
    if out.len() == start {
        out.push_str(words[rng.gen_range(0..words.len())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn looks_up_letters_between_punctuation() {
        assert_eq!(letters("\"Dogs,"), Some((1, 5)));
        assert_eq!(letters("dog"), Some((0, 3)));
        assert_eq!(letters("co-op"), None, "not all letters in the middle");
        assert_eq!(letters("..."), None);
        assert_eq!(letters("naïve"), None, "a non-ASCII letter inside");
    }

    #[test]
    fn edits_words_by_sample_stream_and_leaves_what_it_cannot_edit() {
        let config = EdaConfig {
            mode: EdaMode::AnyOne,
            ..EdaConfig::default()
        };
        let eda = Eda::with_wordnet(config, None).unwrap();
        let text = "a  small dog\truns on the green grass";
        let edit = |index| eda.edit_sample(None, text, 7, 0, index);
        assert_eq!(edit(3), edit(3));
        assert!((0..50).map(edit).any(|e| e != edit(3)));
        for e in (0..50).map(edit) {
            let e = e.expect("RS or RD without WordNet");
            assert!(
                !e.contains("  ") && !e.contains('\t'),
                "joined by single spaces"
            );
        }
        let sr = Some(EdaOp::SynonymReplacement);
        assert_eq!(eda.edit_sample(sr, text, 7, 0, 0), None, "no WordNet");
        assert_eq!(eda.edit_sample(None, " \n", 7, 0, 0), None, "no words");
    }
}
