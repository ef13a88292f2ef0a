//! Text: the CLIP BPE tokenizer (bit-exact with open_clip), EDA caption augmentation and
//! BERT-style MLM masking (their random draws come from `crate::rng`).
//!
//! Files: `clean` (open_clip's cleaning: the ftfy subset, HTML unescaping, whitespace, lower
//! case), `html` (Python's `html.unescape`), `pretokenize` (open_clip's split regex, by hand),
//! `bpe` (vocabulary and merges), `tokenizer` (the public `Tokenizer`), `wordnet` +
//! `stopwords` + `eda` (augmentation), `mlm` (masking).

mod bpe;
mod clean;
mod eda;
mod html;
mod mlm;
mod pretokenize;
mod stopwords;
mod tokenizer;
mod wordnet;

pub use clean::clean_caption;
pub use eda::{Eda, EdaConfig, EdaMode, EdaOp};
pub use mlm::{mask_tokens, word_length, MlmConfig, IGNORE_INDEX};
pub use tokenizer::{
    Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT, MASK, PAD, SOT, VOCAB_SIZE, VOCAB_SIZE_WITH_MASK,
};
pub use wordnet::WordNet;
