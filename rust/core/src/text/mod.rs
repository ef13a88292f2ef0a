//! Text: the CLIP BPE tokenizer (bit-exact with open_clip), EDA caption augmentation and
//! BERT-style MLM masking, plus the per-sample random streams the data pipeline shares.
//!
//! Files: `clean` (open_clip's cleaning: the ftfy subset, HTML unescaping, whitespace, lower
//! case), `html` (Python's `html.unescape`), `pretokenize` (open_clip's split regex, by hand),
//! `bpe` (vocabulary and merges), `tokenizer` (the public `Tokenizer`), `wordnet` +
//! `stopwords` + `eda` (augmentation), `mlm` (masking), `rng` (seeded streams).

mod bpe;
mod clean;
mod eda;
mod html;
mod mlm;
mod pretokenize;
mod rng;
mod stopwords;
mod tokenizer;
mod wordnet;

pub use clean::clean_caption;
pub use eda::{Eda, EdaConfig, EdaMode, EdaOp};
pub use mlm::{mask_tokens, word_length, MlmConfig, IGNORE_INDEX};
pub use rng::{sample_rng, splitmix64, streams};
pub use tokenizer::{
    Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT, MASK, PAD, SOT, VOCAB_SIZE, VOCAB_SIZE_WITH_MASK,
};
pub use wordnet::WordNet;
