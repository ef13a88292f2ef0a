//! Synonym spellings as 16-byte records, so that reading a random synonym of a word is one
//! read in one place.
//!
//! A record is the spelling's length (one byte) and then, for a spelling of up to 15 bytes
//! (82% of WordNet's distinct spellings), the spelling itself: synonym replacement's pick reads one cache line.
//! A longer spelling is kept in a second string, and its record holds where, as five base-128
//! digits. Every byte of a record is ASCII, so the records are one `String` and a spelling is a
//! slice of it. (An id table and a string table cost a cache miss each; spellings one after
//! the other, each after its length, made the k-th a walk over the k before it.)

const RECORD: usize = 16;
const INLINE: usize = RECORD - 1;
/// Digits of a long spelling's offset: 5 × 7 bits hold any `u32`.
const DIGITS: usize = 5;

/// Spellings of at most 127 ASCII bytes, by record number.
#[derive(Debug, Default)]
pub struct SpellingTable {
    records: String,
    long: String,
}

impl SpellingTable {
    /// Appends `word` (ASCII, 1 to 127 bytes: checked) as the next record; its number.
    pub fn push(&mut self, word: &str) -> u32 {
        assert!(
            word.is_ascii() && (1..128).contains(&word.len()),
            "a spelling is 1 to 127 ASCII bytes: {word:?}"
        );
        let id = self.len() as u32;
        let mut record = [0u8; RECORD];
        record[0] = word.len() as u8;
        if word.len() <= INLINE {
            record[1..=word.len()].copy_from_slice(word.as_bytes());
        } else {
            let mut at = self.long.len() as u64;
            for digit in &mut record[1..=DIGITS] {
                *digit = (at & 0x7F) as u8;
                at >>= 7;
            }
            self.long.push_str(word);
        }
        // Every byte is below 128: the record is ASCII text.
        self.records.extend(record.iter().map(|&b| char::from(b)));
        id
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len() / RECORD
    }

    /// Bytes held, both strings together.
    pub fn bytes(&self) -> usize {
        self.records.len() + self.long.len()
    }

    /// The spelling of record `id` (`id < len()`).
    pub fn get(&self, id: u32) -> &str {
        let at = id as usize * RECORD;
        let record = &self.records.as_bytes()[at..at + RECORD];
        let len = usize::from(record[0]);
        if len <= INLINE {
            return &self.records[at + 1..at + 1 + len];
        }
        let start = record[1..=DIGITS]
            .iter()
            .rev()
            .fold(0usize, |offset, &digit| offset << 7 | usize::from(digit));
        &self.long[start..start + len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_back_every_spelling_short_or_long() {
        let words: Vec<String> = (1..128)
            .map(|n| (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect())
            .chain(["domestic dog".into(), "x".into()])
            .collect();
        let mut table = SpellingTable::default();
        let ids: Vec<u32> = words.iter().map(|w| table.push(w)).collect();
        assert_eq!(table.len(), words.len());
        for (word, &id) in words.iter().zip(&ids) {
            assert_eq!(table.get(id), word);
        }
    }

    #[test]
    fn long_offsets_need_all_their_digits() {
        // Offsets past 2^28 use the fifth digit; build the long string's state directly.
        let mut table = SpellingTable {
            records: String::new(),
            long: "z".repeat((1 << 28) + 3),
        };
        let word = "a spelling longer than fifteen bytes";
        let id = table.push(word);
        assert_eq!(table.get(id), word);
    }

    #[test]
    #[should_panic(expected = "1 to 127 ASCII bytes")]
    fn refuses_what_a_record_cannot_hold() {
        SpellingTable::default().push(&"x".repeat(128));
    }
}
