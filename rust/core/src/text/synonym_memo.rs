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
    /// Bytes of punctuation before the word's letters.
    pub pre: u32,
    /// Bytes of letters (after them comes punctuation again).
    pub letters: u32,
    /// Synonyms of the letters; none for stop words and words that are not all letters.
    pub synonyms: Synonyms,
}

impl WordInfo {
    /// Looks `word` up in WordNet.
    pub fn resolve(wn: &WordNet, word: &str) -> WordInfo {
        match word_core(word) {
            Some((pre, core)) if !is_stop_word(core.as_str()) => WordInfo {
                pre: pre as u32,
                letters: core.len as u32,
                synonyms: wn.synonyms_of(core.as_str()),
            },
            _ => WordInfo::default(),
        }
    }

    /// `word` split around its letters: (punctuation before, punctuation after).
    pub fn surroundings(self, word: &str) -> (&str, &str) {
        let (pre, post) = (self.pre as usize, (self.pre + self.letters) as usize);
        (&word[..pre], &word[post..])
    }
}

/// Remembered words of one thread, for one dictionary at a time.
#[derive(Default)]
pub struct SynonymMemo {
    wordnet: Option<u64>,
    words: FxHashMap<Key, WordInfo>,
}

/// Bounds the memo's memory on text with an unbounded vocabulary (about 1.3 MB); when full it
/// starts over, so a corpus's frequent words come back at once.
const CAPACITY: usize = 1 << 15;

impl SynonymMemo {
    /// [`WordInfo::resolve`], remembered.
    pub fn get(&mut self, wn: &WordNet, word: &str) -> WordInfo {
        if self.wordnet != Some(wn.id()) {
            self.words.clear();
            self.wordnet = Some(wn.id());
        }
        let Some(key) = Key::of(word) else {
            return WordInfo::resolve(wn, word); // long words are rare: not worth a slot
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

/// A word of up to 23 bytes packed into three machine words, its length in the last byte.
#[derive(PartialEq, Eq)]
struct Key([u64; 3]);

impl Key {
    fn of(word: &str) -> Option<Key> {
        let bytes = word.as_bytes();
        if bytes.len() > 23 {
            return None;
        }
        let mut buf = [0u8; 24];
        buf[..bytes.len()].copy_from_slice(bytes);
        buf[23] = bytes.len() as u8;
        let part = |i: usize| u64::from_le_bytes(buf[8 * i..8 * i + 8].try_into().unwrap());
        Some(Key([part(0), part(1), part(2)]))
    }
}

impl std::hash::Hash for Key {
    // Three words, no length prefix: the derived hash would add one.
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
        assert!(key(&"x".repeat(23)).is_some());
        assert!(key(&"x".repeat(24)).is_none());
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
        let long = format!("{}dogs", "(".repeat(30));
        for word in ["dogs", "\"Dogs,", "the", "dogs", "qzxv", "geese.", &long, "dogs"] {
            let info = memo.get(&wn, word);
            assert_eq!(info, WordInfo::resolve(&wn, word), "{word}");
            let (pre, post) = info.surroundings(word);
            if !info.synonyms.is_empty() {
                let letters = &word[pre.len()..word.len() - post.len()];
                assert_eq!(wn.ids(info.synonyms), wn.synonym_ids(&letters.to_lowercase()));
            }
        }
        assert!(!memo.get(&wn, "\"Dogs,").synonyms.is_empty());
        assert!(memo.get(&wn, "the").synonyms.is_empty(), "stop word");
        assert_eq!(memo.words.len(), 5, "one slot per distinct short word");
    }
}
