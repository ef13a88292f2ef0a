//! EDA, "Easy Data Augmentation" (Wei & Zou, EMNLP 2019), for captions: synonym replacement
//! (SR), random insertion (RI), random swap (RS), random deletion (RD).
//!
//! Following the paper, an operation changes n = max(1, ⌊α·l⌋) words of an l-word caption
//! (RD instead deletes each word with probability α). Words are the caption's
//! whitespace-separated pieces; the synonym operations look a word up by its letters
//! (lower-cased, punctuation around it kept), skip stop words, and find plurals and other
//! inflections through WordNet's base forms. Synonyms are inserted in their WordNet base form.

use std::cell::RefCell;
use std::sync::Arc;

use rand::Rng;

use super::piece_copy::push_piece;
use super::rng::{below, light_sample_rng, streams, EpochStreams};
use super::spaced_caption::{word_bits, SpacedCaption};
use super::synonym_memo::{SynonymMemo, WordInfo};
use super::wordnet::WordNet;
use super::words::{split_words, RunWriter, Span};
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

    /// [`Eda::augment`] on sample `index` of `epoch` with its own EDA stream: what the data
    /// pipeline does to that sample's caption, whatever thread or batch it lands in.
    pub fn augment_sample(&self, text: &str, seed: u64, epoch: u64, index: u64) -> String {
        self.augment(
            text,
            &mut light_sample_rng(seed, epoch, index, streams::EDA),
        )
    }

    /// Sample `index`'s edit appended to `out`, with its own EDA stream in `epoch` (as
    /// [`Eda::augment_sample`]): `op` None picks as [`Eda::augment`] does, Some forces that
    /// operation as [`Eda::apply`]. False (and nothing appended) when the caption is left as
    /// it is. Lets a caller write many captions into one buffer.
    pub fn edit_sample_into(
        &self,
        op: Option<EdaOp>,
        text: &str,
        epoch: EpochStreams,
        index: u64,
        out: &mut String,
    ) -> bool {
        let rng = &mut epoch.light_rng(index, streams::EDA);
        match op.or_else(|| self.pick(rng)) {
            Some(op) => self.apply_into(op, text, rng, out),
            None => false,
        }
    }

    /// The augmented caption: with probability `config.probability` one operation chosen per
    /// the mode, else the caption unchanged.
    pub fn augment(&self, text: &str, rng: &mut impl Rng) -> String {
        let mut out = String::new();
        match self.pick(rng) {
            Some(op) if self.apply_into(op, text, rng, &mut out) => out,
            _ => text.to_string(),
        }
    }

    /// The operation for one caption, or None (no augmentation this time).
    fn pick(&self, rng: &mut impl Rng) -> Option<EdaOp> {
        if self.ops.is_empty() || !rng.gen_bool(self.config.probability) {
            return None;
        }
        Some(self.ops[below(rng, self.ops.len())])
    }

    /// One given operation at its configured strength (the caption unchanged when the
    /// operation needs WordNet and there is none).
    pub fn apply(&self, op: EdaOp, text: &str, rng: &mut impl Rng) -> String {
        let mut out = String::new();
        if self.apply_into(op, text, rng, &mut out) {
            out
        } else {
            text.to_string()
        }
    }

    /// [`Eda::apply`] appended to `out`; false (nothing appended) when the caption stays.
    fn apply_into(&self, op: EdaOp, text: &str, rng: &mut impl Rng, out: &mut String) -> bool {
        let alpha = self.config.strength(op);
        // RD of a short single-spaced caption (most captions) writes its kept words as runs
        // read from the caption's space mask, with the draws of the general path below.
        if op == EdaOp::RandomDeletion {
            if let Some(caption) = SpacedCaption::of(text) {
                delete_spaced(caption, alpha, rng, out);
                return true;
            }
        }
        SCRATCH.with(|scratch| {
            let scratch = &mut *scratch.borrow_mut();
            let words = &mut scratch.words;
            let single_spaced = split_words(text, words);
            if words.is_empty() {
                return false;
            }
            let n = ((alpha * words.len() as f64) as usize).max(1);
            if op == EdaOp::RandomDeletion {
                random_deletion(RunWriter::new(text, words, single_spaced, out), alpha, rng);
                return true;
            }
            if op == EdaOp::RandomSwap && n == 1 && single_spaced && words.len() > 1 {
                swap_once(text, words, rng, out);
                return true;
            }
            // RS (n > 1 or spacing to normalise) and SR go through word indices.
            let order = &mut scratch.order;
            order.clear();
            order.extend(0..words.len() as u32);
            match (op, self.wordnet.as_deref()) {
                (EdaOp::RandomSwap, _) => random_swap(order, n, rng),
                (EdaOp::SynonymReplacement, Some(wn)) => {
                    let picks = SynonymPicks {
                        wn,
                        memo: &mut scratch.memo,
                        text,
                        order,
                        chosen: &mut scratch.chosen,
                    };
                    picks.replace(words, single_spaced, n, rng, out);
                    return true;
                }
                (EdaOp::RandomInsertion, Some(wn)) => {
                    let mut words: Vec<&str> = words.iter().map(|w| w.of(text)).collect();
                    random_insertion(wn, &mut scratch.memo, &mut words, n, rng);
                    out.push_str(&words.join(" "));
                    return true;
                }
                _ => return false,
            }
            let mut writer = RunWriter::new(text, words, single_spaced, out);
            for &i in order.iter() {
                writer.word(i as usize);
            }
            writer.finish();
            true
        })
    }
}

/// Per-thread buffers for one caption's edit, kept from caption to caption.
#[derive(Default)]
struct Scratch {
    words: Vec<Span>,
    order: Vec<u32>,
    chosen: Vec<Replacement>,
    memo: SynonymMemo,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// A word SR replaces: every occurrence of `word` becomes `synonym`, the first being at index
/// `first_at` of the caption's words.
#[derive(Clone, Copy)]
struct Replacement {
    word: Span,
    info: WordInfo,
    synonym: u32,
    first_at: usize,
}

/// A random synonym of a caption word, if it has any.
fn random_synonym(wn: &WordNet, info: WordInfo, rng: &mut impl Rng) -> Option<u32> {
    let count = info.synonyms.len();
    (count > 0).then(|| wn.nth_id(info.synonyms, below(rng, count)))
}

/// SR: up to `n` distinct non-stop words that have synonyms, in random order, each replaced
/// (every occurrence of it) by one random synonym.
///
/// The candidates are visited in a uniformly random order, drawn one at a time (Fisher–Yates
/// step by step) so that a caption whose first candidates have synonyms, the usual case, looks
/// up only those. A word stands for itself at its first occurrence only (later ones are
/// passed over when drawn), so the distinct words are shuffled uniformly, as the paper's code
/// shuffles its set of words: a word written twice is not picked twice as often.
struct SynonymPicks<'a> {
    wn: &'a WordNet,
    memo: &'a mut SynonymMemo,
    text: &'a str,
    order: &'a mut Vec<u32>,
    chosen: &'a mut Vec<Replacement>,
}

impl SynonymPicks<'_> {
    fn replace(
        self,
        words: &[Span],
        single_spaced: bool,
        n: usize,
        rng: &mut impl Rng,
        out: &mut String,
    ) {
        let SynonymPicks {
            wn,
            memo,
            text,
            order,
            chosen,
        } = self;
        chosen.clear();
        let mut left = order.len();
        while chosen.len() < n && left > 0 {
            let pick = below(rng, left);
            left -= 1;
            order.swap(pick, left);
            let at = order[left] as usize;
            let cand = words[at];
            let info = memo.get(wn, cand.of(text));
            // Only a word's first occurrence stands for it (checked only for words with
            // synonyms, the only ones it matters for).
            if info.synonyms.is_empty() || words[..at].iter().any(|&w| same_word(text, w, cand)) {
                continue;
            }
            if let Some(id) = random_synonym(wn, info, rng) {
                chosen.push(Replacement {
                    word: cand,
                    info,
                    synonym: id,
                    first_at: at,
                });
            }
        }
        // A chosen word was drawn at its first occurrence, so no word before the earliest of
        // them is replaced: the scans for words to replace start there.
        let first = chosen
            .iter()
            .map(|r| r.first_at)
            .min()
            .unwrap_or(words.len());
        if single_spaced {
            // The text as it is, each replaced word's letters swapped for its synonym.
            let mut copied = 0;
            for &w in &words[first..] {
                if let Some(r) = chosen.iter().find(|r| same_word(text, r.word, w)) {
                    let letters = w.start as usize + usize::from(r.info.pre);
                    push_piece(out, text, copied, letters);
                    out.push_str(wn.word(r.synonym));
                    copied = letters + usize::from(r.info.letters);
                }
            }
            out.push_str(&text[copied..]);
            return;
        }
        let mut writer = RunWriter::new(text, words, single_spaced, out);
        for (i, &w) in words.iter().enumerate() {
            if i < first {
                writer.word(i);
                continue;
            }
            match chosen.iter().find(|r| same_word(text, r.word, w)) {
                Some(r) => {
                    let (pre, post) = r.info.surroundings(w.of(text));
                    writer.piece(&[pre, wn.word(r.synonym), post]);
                }
                None => writer.word(i),
            }
        }
        writer.finish();
    }
}

/// Whether two words of `text` are the same (lengths first: most pairs differ there). A byte
/// loop, since words are short and a slice comparison is a call to `bcmp`.
fn same_word(text: &str, a: Span, b: Span) -> bool {
    let (a, b) = (a.bytes(text), b.bytes(text));
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y)
}

/// RI: `n` synonyms of the caption's own words, each at a random place. Synonyms of the
/// original words only (the paper's code also draws from words it inserted, which drifts:
/// "running" → "linear" → "one dimensional").
fn random_insertion<'w>(
    wn: &'w WordNet,
    memo: &mut SynonymMemo,
    words: &mut Vec<&'w str>,
    n: usize,
    rng: &mut impl Rng,
) {
    let original = words.clone();
    for _ in 0..n {
        if let Some(synonym) = pick_insertion(wn, memo, &original, rng) {
            let at = below(rng, words.len() + 1);
            words.insert(at, synonym);
        }
    }
}

/// RI helper: a random synonym of a random word that has one (up to 10 tries, as in the
/// paper's code).
fn pick_insertion<'w>(
    wn: &'w WordNet,
    memo: &mut SynonymMemo,
    words: &[&str],
    rng: &mut impl Rng,
) -> Option<&'w str> {
    (0..10).find_map(|_| {
        let info = memo.get(wn, words[below(rng, words.len())]);
        random_synonym(wn, info, rng).map(|id| wn.word(id))
    })
}

/// RS: `n` swaps of two different random positions (nothing to do for one word).
fn random_swap<T>(words: &mut [T], n: usize, rng: &mut impl Rng) {
    if words.len() < 2 {
        return;
    }
    for _ in 0..n {
        let (i, j) = two_positions(words.len(), rng);
        words.swap(i, j);
    }
}

/// Two different positions among `len ≥ 2`, uniformly: one, then any other (the first plus
/// 1..len, wrapped, with no division).
fn two_positions(len: usize, rng: &mut impl Rng) -> (usize, usize) {
    let i = below(rng, len);
    let j = i + 1 + below(rng, len - 1);
    (i, if j >= len { j - len } else { j })
}

/// RS with one swap (captions under 20 words at α = 0.1) of a single-spaced caption: the
/// draws of [`random_swap`], written as five slices of the text instead of word by word.
fn swap_once(text: &str, words: &[Span], rng: &mut impl Rng, out: &mut String) {
    let (i, j) = two_positions(words.len(), rng);
    let (a, b) = (words[i.min(j)], words[i.max(j)]);
    for (start, end) in [
        (0, a.start),
        (b.start, b.end),
        (a.end, b.start),
        (a.start, a.end),
        (b.end, text.len() as u32),
    ] {
        push_piece(out, text, start as usize, end as usize);
    }
}

/// RD's per-word draws: two words per 64-bit draw, each going when its 32-bit half falls
/// below p·2³² (p off by at most 2⁻³³), as a bit mask of up to 64 words. Half the draws of a
/// `gen_bool` per word, and no branch per word.
struct Deletion {
    threshold: u64,
}

impl Deletion {
    fn new(p: f64) -> Deletion {
        Deletion {
            threshold: (p * 4_294_967_296.0).round() as u64,
        }
    }

    /// Bit i set: word i of these `n ≤ 64` goes.
    fn draw(&self, n: usize, rng: &mut impl Rng) -> u64 {
        let mut gone = 0;
        for pair in (0..n).step_by(2) {
            let x = rng.next_u64();
            gone |= u64::from(u64::from(x as u32) < self.threshold) << pair;
            gone |= u64::from(x >> 32 < self.threshold) << (pair + 1);
        }
        gone & word_bits(n)
    }
}

/// RD: each word dropped with probability `p`, the rest written in order; a one-word caption
/// is kept, and when every word would go one random word stays, so the result is never empty.
/// Draws: [`Deletion::draw`] per 64 words, then, only when every word went (about never:
/// 0.1¹² for a 12-word caption at p = 0.1), the word that stays.
fn random_deletion(mut writer: RunWriter<'_>, p: f64, rng: &mut impl Rng) {
    let len = writer.words().len();
    if len == 1 {
        writer.word(0);
    } else {
        let deletion = Deletion::new(p);
        let mut kept = 0;
        for chunk in (0..len).step_by(64) {
            let n = (len - chunk).min(64);
            let gone = deletion.draw(n, rng);
            for i in (0..n).filter(|i| gone >> i & 1 == 0) {
                writer.word(chunk + i);
                kept += 1;
            }
        }
        if kept == 0 {
            writer.word(below(rng, len));
        }
    }
    writer.finish();
}

/// [`random_deletion`] of a caption read through its space mask: the same draws, and the
/// kept words written as runs of the text.
fn delete_spaced(caption: SpacedCaption<'_>, p: f64, rng: &mut impl Rng, out: &mut String) {
    let len = caption.len();
    if len == 1 {
        out.push_str(caption.text());
        return;
    }
    let kept = match !Deletion::new(p).draw(len, rng) & word_bits(len) {
        0 => 1 << below(rng, len),
        kept => kept,
    };
    caption.write_words(kept, out);
}
