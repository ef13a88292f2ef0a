//! The public CLIP tokenizer: open_clip's `SimpleTokenizer` and `tokenize()`, bit-exact.

use std::cell::RefCell;
use std::fs::File;
use std::io::BufReader;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use rustc_hash::FxHashMap;

use super::bpe::Bpe;
use super::clean::clean_caption;
use super::pretokenize::{split, Piece};
use crate::{CoreError, Result};

/// `<start_of_text>`.
pub const SOT: i64 = 49406;
/// `<end_of_text>`.
pub const EOT: i64 = 49407;
/// `<|mask|>`, appended after open_clip's vocabulary for masked language modelling.
pub const MASK: i64 = 49408;
/// Padding after EOT (also the id of "!": find a caption's end by EOT, not by zeros).
pub const PAD: i64 = 0;
/// open_clip's vocabulary (49,406 BPE tokens + SOT + EOT).
pub const VOCAB_SIZE: usize = 49408;
/// The text tower's vocabulary: open_clip's plus `<|mask|>`.
pub const VOCAB_SIZE_WITH_MASK: usize = 49409;
/// CLIP's context length.
pub const DEFAULT_CONTEXT_LENGTH: usize = 77;

/// Words cached per thread before the cache is dropped and refilled (bounds memory when a
/// caller streams endless distinct words, e.g. a megabyte of random text).
const CACHE_LIMIT: usize = 1 << 18;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Pre-token bytes → BPE ids, tagged with the id of the tokenizer that filled it.
type WordCache = (u64, FxHashMap<Box<[u8]>, Box<[u32]>>);

thread_local! {
    /// Per thread, so parallel tokenization never waits on a lock.
    static CACHE: RefCell<WordCache> = RefCell::new((0, FxHashMap::default()));
}

/// CLIP's byte-level BPE tokenizer. Cheap to share between threads (`&self` everywhere).
pub struct Tokenizer {
    bpe: Bpe,
    id: u64,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tokenizer(vocab={VOCAB_SIZE})")
    }
}

impl Tokenizer {
    /// Loads open_clip's `bpe_simple_vocab_16e6.txt.gz` (or a file of the same format).
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let file = File::open(path).map_err(|e| CoreError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        Self::from_gz_reader(BufReader::new(file), &path.display().to_string())
    }

    /// Loads the vocabulary from gzip'd bytes already in memory; `source` names them in errors.
    pub fn from_gz_reader(reader: impl std::io::Read, source: &str) -> Result<Tokenizer> {
        Ok(Tokenizer {
            bpe: Bpe::from_gz(reader, source)?,
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// BPE ids of `text` after open_clip's cleaning, without SOT/EOT.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut out = Vec::with_capacity(text.len() / 3 + 4);
        self.encode_into(text, usize::MAX, &mut out);
        out
    }

    /// Appends the ids of `text` to `out`, stopping once `out` holds `limit` ids (tokenize()
    /// only keeps the first context_length − 1 anyway; truncation at the end gives the same
    /// prefix, because a pre-token's ids never depend on what follows it).
    fn encode_into(&self, text: &str, limit: usize, out: &mut Vec<u32>) {
        let cleaned = clean_caption(text);
        CACHE.with(|cell| {
            let mut guard = cell.borrow_mut();
            let (owner, cache) = &mut *guard;
            if *owner != self.id {
                *owner = self.id;
                cache.clear();
            }
            split(&cleaned, |piece| {
                if out.len() >= limit {
                    return;
                }
                match piece {
                    Piece::Special(k) => out.push((SOT as u32) + k as u32),
                    Piece::Text(word) => {
                        if let Some(ids) = cache.get(word.as_bytes()) {
                            out.extend_from_slice(ids);
                            return;
                        }
                        let start = out.len();
                        self.bpe.encode_word(word.as_bytes(), out);
                        if word.len() <= 64 {
                            if cache.len() >= CACHE_LIMIT {
                                cache.clear();
                            }
                            cache.insert(word.as_bytes().into(), out[start..].into());
                        }
                    }
                }
            });
        });
    }

    /// open_clip's `tokenize(text, context_length)` row: SOT, ids, EOT, zeros; too long a
    /// caption is cut and its last kept position overwritten with EOT.
    pub fn tokenize(&self, text: &str, context_length: usize) -> Vec<i64> {
        let mut row = vec![PAD; context_length];
        self.tokenize_into(text, &mut row);
        row
    }

    /// [`Tokenizer::tokenize`] into a caller's row (its length is the context length), which
    /// must be zeroed beforehand: the batch binding writes straight into a tensor's memory.
    pub fn tokenize_into(&self, text: &str, row: &mut [i64]) {
        let context_length = row.len();
        if context_length == 0 {
            return;
        }
        let mut ids = Vec::with_capacity(context_length);
        // SOT + ids + EOT; anything past context_length is dropped anyway.
        self.encode_into(text, context_length, &mut ids);
        row[0] = SOT;
        let kept = ids.len().min(context_length.saturating_sub(1));
        for (slot, &id) in row[1..].iter_mut().zip(&ids[..kept]) {
            *slot = i64::from(id);
        }
        let eot_at = (kept + 1).min(context_length - 1);
        row[eot_at] = EOT;
    }

    /// Text of the ids, as open_clip's `decode`: every `</w>` becomes a space, invalid UTF-8
    /// becomes U+FFFD. `<|mask|>` is written as such; ids outside the vocabulary as `<|unk|>`.
    pub fn decode(&self, ids: &[i64]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        for &id in ids {
            match usize::try_from(id)
                .ok()
                .and_then(|i| self.bpe.token_bytes.get(i))
            {
                Some(b) => bytes.extend_from_slice(b),
                None if id == MASK => bytes.extend_from_slice(b"<|mask|>"),
                None => bytes.extend_from_slice(b"<|unk|>"),
            }
        }
        String::from_utf8_lossy(&bytes).replace("</w>", " ")
    }

    /// The open_clip string of one token (`"dog</w>"`), for inspection; `None` outside the
    /// vocabulary.
    pub fn token_text(&self, id: i64) -> Option<String> {
        let bytes = self.bpe.token_bytes.get(usize::try_from(id).ok()?)?;
        Some(String::from_utf8_lossy(bytes).into_owned())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::PathBuf;

    /// The vocabulary from the open-clip-torch install in the repo's virtualenv, if present.
    pub fn vocab_path() -> Option<PathBuf> {
        if let Ok(p) = std::env::var("LIGHTCLIP_BPE_VOCAB") {
            return Some(PathBuf::from(p));
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/lib");
        std::fs::read_dir(root)
            .ok()?
            .flatten()
            .map(|d| {
                d.path()
                    .join("site-packages/open_clip/bpe_simple_vocab_16e6.txt.gz")
            })
            .find(|p| p.exists())
    }

    fn tokenizer() -> Option<Tokenizer> {
        let Some(path) = vocab_path() else {
            eprintln!("skipped: open_clip's bpe_simple_vocab_16e6.txt.gz not found");
            return None;
        };
        Some(Tokenizer::from_file(&path).expect("vocabulary loads"))
    }

    #[test]
    fn known_ids_and_layout() {
        let Some(tok) = tokenizer() else { return };
        // Reference values from open_clip.tokenize.
        assert_eq!(
            tok.encode("it'ſ <ſtart_of_text> x<start_of_text>y"),
            [585, 6, 129, 379, 27, 129, 123, 16707, 62, 684, 62, 18169, 285, 343, 49406, 344]
        );
        let row = tok.tokenize("a dog", 8);
        assert_eq!(row[0], SOT);
        assert_eq!(
            row[row.iter().position(|&t| t == EOT).unwrap() + 1..],
            [0; 4]
        );
        let long = tok.tokenize(&"dog ".repeat(100), 10);
        assert_eq!((long[0], long[9]), (SOT, EOT));
        assert_eq!(tok.tokenize("", 4), [SOT, EOT, 0, 0]);
        assert_eq!(tok.tokenize("x", 1), [EOT]);
        assert_eq!(
            tok.decode(
                &tok.encode("A Dog's day!")
                    .iter()
                    .map(|&i| i64::from(i))
                    .collect::<Vec<_>>()
            ),
            "a dog 's day ! "
        );
    }

    #[test]
    fn long_words_merge_like_short_ones() {
        let Some(tok) = tokenizer() else { return };
        let mut state = 12345u64;
        for len in [2usize, 5, 20, 65, 200, 1000] {
            for _ in 0..20 {
                let word: Vec<u8> = (0..len)
                    .map(|_| {
                        state = crate::rng::splitmix64(state);
                        b"aabbeinorst"[(state % 11) as usize]
                    })
                    .collect();
                let (short, long) = tok.bpe.merge_both(&word);
                assert_eq!(short, long, "{}", String::from_utf8_lossy(&word));
            }
        }
    }

    #[test]
    fn a_megabyte_without_spaces_is_fast() {
        let Some(tok) = tokenizer() else { return };
        let text = "abcdefghij".repeat(100_000);
        let t = std::time::Instant::now();
        let ids = tok.encode(&text);
        assert!(!ids.is_empty());
        assert!(t.elapsed().as_secs() < 20);
    }
}
