//! Text: the CLIP BPE tokenizer (bit-exact with open_clip), EDA caption augmentation and
//! BERT-style MLM masking, plus the per-sample random streams the data pipeline shares.
//!
//! Files: `clean` (open_clip's cleaning: the ftfy subset, HTML unescaping, whitespace, lower
//! case), `html` (Python's `html.unescape`), `pretokenize` (open_clip's split regex, by hand),
//! `bpe` (vocabulary and merges), `tokenizer` (the public `Tokenizer`), `wordnet` +
//! `spelling_table` + `synonym_memo` + `words` + `spaced_caption` + `piece_copy` + `eda`
//! (augmentation), `mlm` (masking), `rng` (seeded streams).

mod bpe;
mod clean;
mod eda;
mod html;
mod mlm;
mod piece_copy;
mod pretokenize;
mod rng;
mod spaced_caption;
mod spelling_table;
mod stopwords;
mod synonym_memo;
mod tokenizer;
mod wordnet;
mod words;

pub use clean::clean_caption;
pub use eda::{Eda, EdaConfig, EdaMode, EdaOp};
pub use mlm::{mask_tokens, word_length, MlmConfig, IGNORE_INDEX};
pub use rng::{light_sample_rng, sample_rng, splitmix64, streams, EpochStreams};
pub use tokenizer::{
    Tokenizer, DEFAULT_CONTEXT_LENGTH, EOT, MASK, PAD, SOT, VOCAB_SIZE, VOCAB_SIZE_WITH_MASK,
};
pub use wordnet::{Synonyms, WordNet};
