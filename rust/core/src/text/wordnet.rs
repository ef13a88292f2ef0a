//! WordNet 3.0 synonyms for EDA, read from the dictionary files Debian's `wordnet-base`
//! installs (`data.{noun,verb,adj,adv}` for synsets, `*.exc` for irregular base forms).
//!
//! The data is never shipped with lightclip: it is found at `$LIGHTCLIP_WORDNET` (only there
//! when set), else `$WNHOME/dict`, `/usr/share/wordnet` or `/usr/local/share/wordnet`, or at a
//! path given.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustc_hash::FxHashMap;

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
type Exceptions = FxHashMap<String, Vec<(usize, Vec<String>)>>;

/// A lemma's parts of speech (bit p for `POS[p]`) and its synonyms.
struct Lemma {
    pos: u8,
    synonyms: Vec<Arc<str>>,
}

/// Lemma → synonyms, with morphological base forms for inflected words.
pub struct WordNet {
    /// Lemma (lower case, `_` kept as in the files) → its synonyms' spellings (lower case,
    /// letters and single spaces only), each spelling shared by every lemma that lists it.
    lemmas: FxHashMap<String, Lemma>,
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
        // Each distinct spelling once, shared by the synonym lists that hold it.
        let mut spellings: FxHashMap<String, Arc<str>> = FxHashMap::default();
        // lemma → (pos mask, the synsets it belongs to); a synset is a list of spellings.
        let mut lemma_synsets: FxHashMap<String, (u8, Vec<usize>)> = FxHashMap::default();
        let mut synsets: Vec<Vec<Arc<str>>> = vec![];
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
                // Words and lex ids alternate: "dog 0 domestic_dog 0 ...".
                for lemma in rest.split(' ').step_by(2).take(count) {
                    // Adjectives may carry a syntactic marker: "beautiful(a)".
                    let lemma = lemma.split('(').next().unwrap_or(lemma).to_lowercase();
                    let spelled = synonym_spelling(&lemma);
                    if !spelled.is_empty() {
                        let shared = spellings.entry(spelled.clone()).or_insert(spelled.into());
                        members.push(Arc::clone(shared));
                    }
                    let entry = lemma_synsets.entry(lemma).or_default();
                    entry.0 |= 1 << p;
                    entry.1.push(synsets.len());
                }
                synsets.push(members);
            }
        }
        if synsets.is_empty() {
            return Err(CoreError::invalid(
                "wordnet",
                format!("{} holds no synsets", dir.display()),
            ));
        }
        let lemmas = lemma_synsets
            .into_iter()
            .map(|(lemma, (pos, ids))| {
                let own = synonym_spelling(&lemma);
                let mut synonyms: Vec<Arc<str>> = ids
                    .iter()
                    .flat_map(|&s| synsets[s].iter())
                    .filter(|w| ***w != *own)
                    .cloned()
                    .collect();
                synonyms.sort_unstable();
                synonyms.dedup();
                (lemma, Lemma { pos, synonyms })
            })
            .collect();
        let mut exceptions = Exceptions::default();
        for (p, pos) in POS.iter().enumerate() {
            for line in read(&format!("{pos}.exc"))?.lines() {
                let mut it = line.split_whitespace();
                if let Some(form) = it.next() {
                    let entry = exceptions.entry(form.into()).or_default();
                    // A repeated line replaces the earlier one, as a per-POS map would.
                    entry.retain(|(q, _)| *q != p);
                    entry.push((p, it.map(Into::into).collect()));
                }
            }
        }
        Ok(WordNet {
            lemmas,
            exceptions,
            dir: dir.to_path_buf(),
        })
    }

    /// Where this dictionary was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Synonyms of a lower-case word: those of the word itself when it is a lemma with
    /// synonyms, else those of its first base form that has some (irregular forms first, then
    /// `morphy`'s suffix rules, part of speech by part of speech). Empty when none has any.
    pub fn synonyms(&self, word: &str) -> &[Arc<str>] {
        let with_synonyms = |lemma: &str, pos: Option<usize>| {
            self.lemmas
                .get(lemma)
                .filter(|l| pos.is_none_or(|p| l.pos & (1 << p) != 0) && !l.synonyms.is_empty())
                .map(|l| &l.synonyms[..])
        };
        if let Some(found) = with_synonyms(word, None) {
            return found;
        }
        let irregular = self.exceptions.get(word).map_or(&[][..], Vec::as_slice);
        let mut base = String::new();
        for (p, rules) in RULES.iter().enumerate() {
            for (_, bases) in irregular.iter().filter(|(q, _)| *q == p) {
                if let Some(found) = bases.iter().find_map(|b| with_synonyms(b, None)) {
                    return found;
                }
            }
            for (from, to) in rules.iter() {
                if let Some(stem) = word.strip_suffix(from) {
                    base.clear();
                    base.push_str(stem);
                    base.push_str(to);
                    if let Some(found) = with_synonyms(&base, Some(p)) {
                        return found;
                    }
                }
            }
        }
        &[]
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
        let has = |word: &str, synonym: &str| wn.synonyms(word).iter().any(|s| **s == *synonym);
        assert!(has("dog", "domestic dog"));
        assert!(has("dogs", "domestic dog"), "plural via the 's' rule");
        assert_eq!(
            wn.synonyms("geese"),
            wn.synonyms("goose"),
            "irregular plural via noun.exc"
        );
        assert!(!wn.synonyms("geese").is_empty());
        assert!(!has("dog", "dog"), "a word is not its own synonym");
        assert!(wn.synonyms("qzxv").is_empty());
    }
}
