//! Caption word → its synonyms, remembered per thread.
//!
//! Finding a word's synonyms means trimming its punctuation, lower-casing it, checking the stop
//! words and probing WordNet's lemma table, base forms included: a few lookups in a table of
//! 150k lemmas, each a cache miss. Captions reuse a small vocabulary, so EDA remembers the
//! answer per raw word in a small table that stays in cache; on Flickr8k this made synonym
//! replacement about twice as fast.

use rustc_hash::FxHashMap;

use super::stopwords::is_stop_word;
use super::wordnet::{Synonyms, WordNet};

/// What the synonym operations need to know of one caption word.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WordInfo {
    /// Synonyms of the letters; none for stop words, words that are not all letters and
    /// words with more than 65,535 bytes of punctuation before their letters.
    pub synonyms: Synonyms,
    /// Bytes of punctuation before the word's letters.
    pub pre: u16,
    /// Bytes of letters (after them comes punctuation again).
    pub letters: u16,
}

impl WordInfo {
    /// Looks `word` up in WordNet.
    pub fn resolve(wn: &WordNet, word: &str) -> WordInfo {
        match word_core(word) {
            Some((pre, core)) if pre <= usize::from(u16::MAX) && !is_stop_word(core.as_str()) => {
                WordInfo {
                    synonyms: wn.synonyms_of(core.as_str()),
                    pre: pre as u16,
                    letters: core.len as u16,
                }
            }
            _ => WordInfo::default(),
        }
    }

    /// `word` split around its letters: (punctuation before, punctuation after).
    pub fn surroundings(self, word: &str) -> (&str, &str) {
        let pre = usize::from(self.pre);
        let post = pre + usize::from(self.letters);
        (&word[..pre], &word[post..])
    }
}

/// Remembered words of one thread, for one dictionary at a time.
#[derive(Default)]
pub struct SynonymMemo {
    wordnet: Option<u64>,
    words: FxHashMap<Key, WordInfo>,
}

/// Bounds the memo's memory on text with an unbounded vocabulary (at most 2 MB per thread:
/// 64k slots of 32 bytes); when full it starts over, so a corpus's frequent words come back
/// at once. Flickr8k's captions hold about 9k distinct words.
const CAPACITY: usize = 1 << 15;

impl SynonymMemo {
    /// [`WordInfo::resolve`], remembered.
    pub fn get(&mut self, wn: &WordNet, word: &str) -> WordInfo {
        if self.wordnet != Some(wn.id()) {
            self.words.clear();
            self.wordnet = Some(wn.id());
        }
        let Some(key) = Key::of(word) else {
            return WordInfo::resolve(wn, word); // long words are rare: not worth a bigger slot
        };
        if let Some(&info) = self.words.get(&key) {
            return info;
        }
        if self.words.len() >= CAPACITY {
            self.words.clear();
        }
        let info = WordInfo::resolve(wn, word);
        self.words.insert(key, info);
        info
    }
}

/// A word of up to 15 bytes packed into two machine words, its length in the last byte: a
/// slot (key and [`WordInfo`]) is 32 bytes, so more of the memo stays in cache.
#[derive(PartialEq, Eq)]
struct Key([u64; 2]);

impl Key {
    fn of(word: &str) -> Option<Key> {
        let bytes = word.as_bytes();
        if bytes.len() > 15 {
            return None;
        }
        let mut parts = [0u64, (bytes.len() as u64) << 56];
        for (i, &b) in bytes.iter().enumerate() {
            parts[i / 8] |= u64::from(b) << (8 * (i % 8));
        }
        Some(Key(parts))
    }
}

impl std::hash::Hash for Key {
    // Two words, no length prefix: the derived hash would add one.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        for part in self.0 {
            state.write_u64(part);
        }
    }
}

/// Lower-cased letters of a word, in a stack buffer (words over 32 bytes are not looked up).
struct Lower {
    buf: [u8; 32],
    len: usize,
}

impl Lower {
    fn as_str(&self) -> &str {
        // Only ASCII letters are ever stored.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

/// The word's letters lower-cased, after the byte offset where they start; `None` when the
/// middle of the word (first letter to last) is not all ASCII letters.
fn word_core(word: &str) -> Option<(usize, Lower)> {
    let bytes = word.as_bytes();
    let start = bytes.iter().position(u8::is_ascii_alphabetic)?;
    let end = bytes.iter().rposition(u8::is_ascii_alphabetic)? + 1;
    let core = &bytes[start..end];
    if core.len() > 32 || !core.iter().all(u8::is_ascii_alphabetic) {
        return None;
    }
    let mut lower = Lower {
        buf: [0; 32],
        len: core.len(),
    };
    for (slot, b) in lower.buf.iter_mut().zip(core) {
        *slot = b.to_ascii_lowercase();
    }
    Some((start, lower))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_words_and_lengths_apart() {
        let key = |w: &str| Key::of(w).map(|k| k.0);
        assert_eq!(key("dog"), key("dog"));
        assert_ne!(key("dog"), key("dogs"));
        assert_ne!(key("a"), key("a\0"), "the length is part of the key");
        assert_ne!(key("ab"), key("ba"));
        assert_ne!(key("abcdefgh"), key("abcdefghi"));
        assert!(key(&"x".repeat(15)).is_some());
        assert!(key(&"x".repeat(16)).is_none());
    }

    #[test]
    fn finds_letters_between_punctuation() {
        let core = |w: &str| word_core(w).map(|(pre, l)| (pre, l.as_str().to_string()));
        assert_eq!(core("\"Dogs,"), Some((1, "dogs".into())));
        assert_eq!(core("dog"), Some((0, "dog".into())));
        assert_eq!(core("co-op"), None, "not all letters in the middle");
        assert_eq!(core("..."), None);
        assert_eq!(core("naïve"), None, "a non-ASCII letter inside");
    }

    #[test]
    fn memo_answers_as_wordnet_does() {
        let Some(wn) = WordNet::shared() else {
            eprintln!("skipped: WordNet not installed");
            return;
        };
        let mut memo = SynonymMemo::default();
        let long = format!("{}dogs", "(".repeat(70_000));
        for word in [
            "dogs",
            "\"Dogs,",
            "the",
            "dogs",
            "qzxv",
            "geese.",
            "((((((((dogs))",
            "dogs",
        ] {
            let info = memo.get(&wn, word);
            assert_eq!(info, WordInfo::resolve(&wn, word), "{word}");
            let (pre, post) = info.surroundings(word);
            if !info.synonyms.is_empty() {
                let letters = &word[pre.len()..word.len() - post.len()];
                let words: Vec<&str> = wn.ids(info.synonyms).map(|id| wn.word(id)).collect();
                assert_eq!(words, wn.synonyms(&letters.to_lowercase()));
            }
        }
        assert!(!memo.get(&wn, "\"Dogs,").synonyms.is_empty());
        assert!(memo.get(&wn, "the").synonyms.is_empty(), "stop word");
        assert!(
            memo.get(&wn, &long).synonyms.is_empty(),
            "too much punctuation to record"
        );
        assert!(!memo.get(&wn, &long[69_990..]).synonyms.is_empty());
        assert_eq!(
            memo.words.len(),
            7,
            "one slot per distinct word of up to 15 bytes"
        );
    }
}
