//! WordNet 3.0 synonyms for EDA, read from the dictionary files Debian's `wordnet-base`
//! installs (`data.{noun,verb,adj,adv}` for synsets, `*.exc` for irregular base forms).
//!
//! The data is never shipped with lightclip: it is found at `$LIGHTCLIP_WORDNET` (only there
//! when set), else `$WNHOME/dict`, `/usr/share/wordnet` or `/usr/local/share/wordnet`, or at a
//! path given.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

use super::spelling_table::SpellingTable;
use crate::{CoreError, Result};

const POS: [&str; 4] = ["noun", "verb", "adj", "adv"];

/// Suffix rules of WordNet's `morphy` (inflected ending → base ending), per part of speech.
const RULES: [&[(&str, &str)]; 4] = [
    &[
        ("s", ""),
        ("ses", "s"),
        ("xes", "x"),
        ("zes", "z"),
        ("ches", "ch"),
        ("shes", "sh"),
        ("men", "man"),
        ("ies", "y"),
    ],
    &[
        ("s", ""),
        ("ies", "y"),
        ("es", "e"),
        ("es", ""),
        ("ed", "e"),
        ("ed", ""),
        ("ing", "e"),
        ("ing", ""),
    ],
    &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")],
    &[],
];

/// Irregular form → [(part of speech, base forms)].
type Exceptions = FxHashMap<Box<str>, Vec<(u8, Vec<Box<str>>)>>;

/// A word's synonyms as a range of the dictionary's synonym list ([`WordNet::ids`]): small
/// and `Copy`, so a caller can remember it per word (EDA does, per thread).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Synonyms {
    start: u32,
    count: u32,
}

impl Synonyms {
    pub fn is_empty(self) -> bool {
        self.count == 0
    }

    pub fn len(self) -> usize {
        self.count as usize
    }
}

/// Lemma → synonyms, with morphological base forms for inflected words.
pub struct WordNet {
    /// Tells dictionaries apart for memos kept beside them (unique in the process).
    id: u64,
    /// Every lemma's synonyms, one lemma after the other, one record each (lower case,
    /// letters and single spaces only); a synonym's id is its record's number, so the k-th
    /// synonym of a word is one read away.
    synonyms: SpellingTable,
    /// Lemma (lower case, `_` kept as in the files) → (parts of speech bitmask, its synonyms).
    lemmas: FxHashMap<Box<str>, (u8, Synonyms)>,
    /// Irregular form → (part of speech, its base forms) for every part of speech that lists
    /// it: one map, so the common case (not an irregular form) is one lookup, not four.
    exceptions: Exceptions,
    dir: PathBuf,
}

impl std::fmt::Debug for WordNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "WordNet({}, {} lemmas)",
            self.dir.display(),
            self.lemmas.len()
        )
    }
}

/// A synonym as EDA uses it: `_`/`-` become spaces, lower case, only letters and spaces kept.
fn synonym_spelling(word: &str) -> String {
    word.chars()
        .map(|c| {
            if c == '_' || c == '-' {
                ' '
            } else {
                c.to_ascii_lowercase()
            }
        })
        .filter(|c| c.is_ascii_lowercase() || *c == ' ')
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

impl WordNet {
    /// The directories searched, in order. `$LIGHTCLIP_WORDNET`, when set, is the only one
    /// (so pointing it at an empty folder turns the synonym operations off).
    pub fn search_path() -> Vec<PathBuf> {
        if let Some(p) = std::env::var_os("LIGHTCLIP_WORDNET") {
            return vec![PathBuf::from(p)];
        }
        let mut dirs = vec![];
        if let Some(p) = std::env::var_os("WNHOME") {
            dirs.push(PathBuf::from(p).join("dict"));
        }
        dirs.push("/usr/share/wordnet".into());
        dirs.push("/usr/local/share/wordnet".into());
        dirs
    }

    /// The WordNet found on the search path, loaded once per process; `None` when there is
    /// none (or it cannot be read: the reason is printed once).
    pub fn shared() -> Option<Arc<WordNet>> {
        static SHARED: OnceLock<Option<Arc<WordNet>>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let dirs = Self::search_path();
                let Some(dir) = dirs.iter().find(|d| d.join("data.noun").is_file()) else {
                    eprintln!(
                        "lightclip: WordNet not found (looked in {}); EDA synonym replacement and \
                         insertion are off. Install Debian's wordnet-base or set LIGHTCLIP_WORDNET.",
                        dirs.iter().map(|d| d.display().to_string()).collect::<Vec<_>>().join(", ")
                    );
                    return None;
                };
                match Self::load(dir) {
                    Ok(wn) => Some(Arc::new(wn)),
                    Err(e) => {
                        eprintln!("lightclip: EDA synonym operations are off: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    /// Reads the dictionary in `dir` (the folder holding `data.noun`, `noun.exc`, ...).
    pub fn load(dir: &Path) -> Result<WordNet> {
        let read = |name: &str| {
            let path = dir.join(name);
            std::fs::read_to_string(&path).map_err(|e| CoreError::Io { path, source: e })
        };
        let mut spellings: Vec<Box<str>> = vec![];
        let mut word_ids: FxHashMap<String, u32> = FxHashMap::default();
        // lemma → (pos mask, synsets it belongs to); synsets as lists of word ids.
        let mut lemma_synsets: FxHashMap<Box<str>, (u8, Vec<u32>)> = FxHashMap::default();
        let mut synsets: Vec<Vec<u32>> = vec![];
        for (p, pos) in POS.iter().enumerate() {
            let name = format!("data.{pos}");
            let text = read(&name)?;
            for (n, line) in text.lines().enumerate() {
                if line.starts_with("  ") || line.is_empty() {
                    continue; // licence header
                }
                let bad = || {
                    CoreError::data(
                        crate::Location {
                            source: dir.join(&name).display().to_string(),
                            member: None,
                            index: Some(n as u64 + 1),
                        },
                        "not a WordNet data line",
                    )
                };
                let fields: Vec<&str> = line.splitn(5, ' ').collect();
                let [_, _, _, count, rest] = fields[..] else {
                    return Err(bad());
                };
                let count = usize::from_str_radix(count, 16).map_err(|_| bad())?;
                let mut members = vec![];
                let sid = synsets.len() as u32;
                for (lemma, _lex_id) in rest
                    .split(' ')
                    .collect::<Vec<_>>()
                    .chunks(2)
                    .take(count)
                    .map(|c| (c[0], c.get(1)))
                {
                    // Adjectives may carry a syntactic marker: "beautiful(a)".
                    let lemma = lemma.split('(').next().unwrap_or(lemma).to_lowercase();
                    let spelled = synonym_spelling(&lemma);
                    // The length byte must be ASCII; WordNet's longest lemma has 71 letters.
                    if !spelled.is_empty() && spelled.len() < 128 {
                        let next = spellings.len() as u32;
                        let id = *word_ids.entry(spelled.clone()).or_insert(next);
                        if id == next {
                            spellings.push(spelled.into());
                        }
                        members.push(id);
                    }
                    let entry = lemma_synsets.entry(lemma.into()).or_default();
                    entry.0 |= 1 << p;
                    entry.1.push(sid);
                }
                synsets.push(members);
            }
        }
        let mut synonyms = SpellingTable::default();
        let lemmas = lemma_synsets
            .into_iter()
            .map(|(lemma, (mask, sids))| {
                let own = word_ids.get(&synonym_spelling(&lemma)).copied();
                let mut syn: Vec<u32> = sids
                    .iter()
                    .flat_map(|&s| synsets[s as usize].iter().copied())
                    .filter(|&w| Some(w) != own)
                    .collect();
                syn.sort_unstable();
                syn.dedup();
                let range = Synonyms {
                    start: synonyms.len() as u32,
                    count: syn.len() as u32,
                };
                for w in syn {
                    synonyms.push(&spellings[w as usize]);
                }
                (lemma, (mask, range))
            })
            .collect();
        let mut exceptions = Exceptions::default();
        for (p, pos) in POS.iter().enumerate() {
            for line in read(&format!("{pos}.exc"))?.lines() {
                let mut it = line.split_whitespace();
                if let Some(form) = it.next() {
                    let entry = exceptions.entry(form.into()).or_default();
                    // A repeated line replaces the earlier one, as a per-POS map would.
                    entry.retain(|(q, _)| usize::from(*q) != p);
                    entry.push((p as u8, it.map(Into::into).collect()));
                }
            }
        }
        if spellings.is_empty() {
            return Err(CoreError::invalid(
                "wordnet",
                format!("{} holds no synsets", dir.display()),
            ));
        }
        if synonyms.bytes() > u32::MAX as usize {
            return Err(CoreError::invalid(
                "wordnet",
                format!("{} holds more than 4 GiB of synonyms", dir.display()),
            ));
        }
        static NEXT_ID: AtomicU64 = AtomicU64::new(0);
        Ok(WordNet {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            synonyms,
            lemmas,
            exceptions,
            dir: dir.to_path_buf(),
        })
    }

    /// Where this dictionary was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A number no other dictionary loaded in this process has.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The ids of synonyms this dictionary returned, in its order.
    pub fn ids(&self, synonyms: Synonyms) -> impl Iterator<Item = u32> {
        synonyms.start..synonyms.start + synonyms.count
    }

    /// Synonym `k` of `synonyms` (`k < synonyms.len()`, checked).
    pub fn nth_id(&self, synonyms: Synonyms, k: usize) -> u32 {
        assert!(k < synonyms.len(), "synonym {k} of {}", synonyms.len());
        synonyms.start + k as u32
    }

    /// Synonyms of a lower-case word: those of the word itself when it is a lemma with
    /// synonyms, else those of its base forms (irregular forms first, then suffix rules).
    pub fn synonyms_of(&self, word: &str) -> Synonyms {
        let with_synonyms = |lemma: &str, pos: Option<usize>| {
            self.lemmas
                .get(lemma)
                .filter(|(mask, syn)| pos.is_none_or(|p| mask & (1 << p) != 0) && !syn.is_empty())
                .map(|&(_, syn)| syn)
        };
        if let Some(syn) = with_synonyms(word, None) {
            return syn;
        }
        let irregular = self.exceptions.get(word).map_or(&[][..], Vec::as_slice);
        // Base forms are built in a stack buffer: captions' words are short.
        let mut buf = [0u8; 64];
        for (p, rules) in RULES.iter().enumerate() {
            for (_, bases) in irregular.iter().filter(|(q, _)| usize::from(*q) == p) {
                if let Some(syn) = bases.iter().find_map(|b| with_synonyms(b, None)) {
                    return syn;
                }
            }
            for (from, to) in rules.iter() {
                let Some(stem) = word.strip_suffix(from) else {
                    continue;
                };
                let len = stem.len() + to.len();
                let found = if len <= buf.len() {
                    buf[..stem.len()].copy_from_slice(stem.as_bytes());
                    buf[stem.len()..len].copy_from_slice(to.as_bytes());
                    // A stem of a str plus an ASCII suffix is valid UTF-8.
                    std::str::from_utf8(&buf[..len])
                        .ok()
                        .and_then(|base| with_synonyms(base, Some(p)))
                } else {
                    with_synonyms(&format!("{stem}{to}"), Some(p))
                };
                if let Some(syn) = found {
                    return syn;
                }
            }
        }
        Synonyms::default()
    }

    /// The spelling of a synonym id.
    pub fn word(&self, id: u32) -> &str {
        self.synonyms.get(id)
    }

    /// Synonyms of a lower-case word, as strings (see [`WordNet::synonyms_of`]).
    pub fn synonyms(&self, word: &str) -> Vec<&str> {
        self.ids(self.synonyms_of(word))
            .map(|id| self.word(id))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_synonyms_and_base_forms() {
        let Some(wn) = WordNet::shared() else {
            eprintln!("skipped: WordNet not installed");
            return;
        };
        assert!(wn.synonyms("dog").contains(&"domestic dog"));
        assert!(
            wn.synonyms("dogs").contains(&"domestic dog"),
            "plural via the 's' rule"
        );
        assert_eq!(
            wn.synonyms("geese"),
            wn.synonyms("goose"),
            "irregular plural via noun.exc"
        );
        assert!(!wn.synonyms("geese").is_empty());
        assert!(!wn.synonyms("dog").contains(&"dog"));
        let dogs = wn.synonyms_of("dogs");
        let words: Vec<&str> = (0..dogs.len())
            .map(|k| wn.word(wn.nth_id(dogs, k)))
            .collect();
        assert_eq!(words, wn.synonyms("dog"), "k-th synonym by index");
        assert!(wn.synonyms("qzxv").is_empty());
    }
}
