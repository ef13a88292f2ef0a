//! The CLIP byte-level BPE: vocabulary and merges read from `bpe_simple_vocab_16e6.txt.gz`,
//! and the merge loop.
//!
//! Everything works on token ids rather than strings. The vocabulary is laid out as open_clip
//! builds it: 256 byte symbols, the same 256 with `</w>` (end of word), then one token per
//! merge, then the two specials. Merged strings are unique in this vocabulary (checked at
//! load), so comparing ids is comparing the strings open_clip compares.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Read;

use rustc_hash::FxHashMap;

use crate::{CoreError, Result};

/// open_clip uses the first 49,152 − 256 − 2 lines after the header.
const MERGES: usize = 49152 - 256 - 2;

pub struct Bpe {
    /// Byte value → id of its symbol (add 256 for the `</w>` form).
    byte_id: [u32; 256],
    /// (left id, right id) packed in a u64 → (rank, merged id).
    merges: FxHashMap<u64, (u32, u32)>,
    /// Id → the bytes it stands for (`</w>` spelled out, as open_clip's decoder does).
    pub token_bytes: Vec<Vec<u8>>,
}

/// open_clip's `bytes_to_unicode` order: the printable Latin-1 bytes, then the others.
pub fn byte_order() -> Vec<u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    let mut order: Vec<u8> = (0..=255u8).filter(|&b| printable(b)).collect();
    order.extend((0..=255u8).filter(|&b| !printable(b)));
    order
}

/// The character open_clip's byte encoder writes for each byte.
pub fn byte_char(b: u8) -> char {
    let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
    if printable {
        b as char
    } else {
        let n = (0..b)
            .filter(|&x| !matches!(x, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff))
            .count();
        char::from_u32(256 + n as u32).unwrap_or('?')
    }
}

fn pair_key(a: u32, b: u32) -> u64 {
    (u64::from(a) << 32) | u64::from(b)
}

impl Bpe {
    /// Reads the gzip'd merges file.
    pub fn from_gz(gz: impl Read, source: &str) -> Result<Bpe> {
        let bad = |reason: String| CoreError::invalid("path", format!("{source}: {reason}"));
        let mut text = String::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut text)
            .map_err(|e| bad(format!("not a gzip'd UTF-8 BPE merges file ({e})")))?;
        let lines: Vec<&str> = text.split('\n').skip(1).take(MERGES).collect();
        if lines.len() < MERGES {
            return Err(bad(format!(
                "has {} merge lines, open_clip needs {MERGES}",
                lines.len()
            )));
        }

        // Map each symbol's string (in open_clip's byte-encoded spelling) to its id.
        let order = byte_order();
        let mut byte_id = [0u32; 256];
        let mut names: Vec<String> = Vec::with_capacity(512 + MERGES);
        for (i, &b) in order.iter().enumerate() {
            byte_id[b as usize] = i as u32;
            names.push(byte_char(b).to_string());
        }
        for i in 0..256 {
            names.push(format!("{}</w>", names[i]));
        }
        let mut id_of: FxHashMap<String, u32> = names
            .iter()
            .enumerate()
            .map(|(i, s)| (s.clone(), i as u32))
            .collect();
        let mut parts = Vec::with_capacity(MERGES);
        for (rank, line) in lines.iter().enumerate() {
            let mut it = line.split_whitespace();
            let (Some(a), Some(b), None) = (it.next(), it.next(), it.next()) else {
                return Err(bad(format!(
                    "merge line {} is not two symbols: {line:?}",
                    rank + 2
                )));
            };
            let merged = format!("{a}{b}");
            if id_of.insert(merged.clone(), (512 + rank) as u32).is_some() {
                return Err(bad(format!(
                    "merge line {} repeats the token {merged:?}",
                    rank + 2
                )));
            }
            names.push(merged);
            parts.push((a, b));
        }
        let mut merges = FxHashMap::default();
        merges.reserve(MERGES);
        for (rank, (a, b)) in parts.into_iter().enumerate() {
            let (Some(&ia), Some(&ib)) = (id_of.get(a), id_of.get(b)) else {
                return Err(bad(format!(
                    "merge line {} uses an unknown symbol",
                    rank + 2
                )));
            };
            merges.insert(pair_key(ia, ib), (rank as u32, (512 + rank) as u32));
        }

        let byte_of: FxHashMap<char, u8> = (0..=255u8).map(|b| (byte_char(b), b)).collect();
        let mut token_bytes: Vec<Vec<u8>> = names
            .iter()
            .map(|s| {
                let (body, end) = match s.strip_suffix("</w>") {
                    Some(body) => (body, true),
                    None => (s.as_str(), false),
                };
                let mut bytes: Vec<u8> = body
                    .chars()
                    .filter_map(|c| byte_of.get(&c).copied())
                    .collect();
                if end {
                    bytes.extend_from_slice(b"</w>");
                }
                bytes
            })
            .collect();
        token_bytes.push(b"<start_of_text>".to_vec());
        token_bytes.push(b"<end_of_text>".to_vec());
        Ok(Bpe {
            byte_id,
            merges,
            token_bytes,
        })
    }

    fn rank(&self, a: u32, b: u32) -> Option<(u32, u32)> {
        self.merges.get(&pair_key(a, b)).copied()
    }

    /// The BPE ids of one pre-token (its UTF-8 bytes), appended to `out`.
    pub fn encode_word(&self, word: &[u8], out: &mut Vec<u32>) {
        let Some((&last, init)) = word.split_last() else {
            return;
        };
        let mut symbols: Vec<u32> = init.iter().map(|&b| self.byte_id[b as usize]).collect();
        symbols.push(self.byte_id[last as usize] + 256);
        if symbols.len() > 64 {
            self.merge_long(&mut symbols);
        } else {
            self.merge_short(&mut symbols);
        }
        out.extend_from_slice(&symbols);
    }

    /// open_clip's loop as written: find the lowest-ranked adjacent pair, merge every
    /// occurrence left to right, repeat. Quadratic, fastest for ordinary words.
    fn merge_short(&self, symbols: &mut Vec<u32>) {
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|w| self.rank(w[0], w[1]).map(|(r, id)| (r, w[0], w[1], id)))
                .min();
            let Some((_, first, second, merged)) = best else {
                return;
            };
            let mut write = 0;
            let mut read = 0;
            while read < symbols.len() {
                if read + 1 < symbols.len() && symbols[read] == first && symbols[read + 1] == second
                {
                    symbols[write] = merged;
                    read += 2;
                } else {
                    symbols[write] = symbols[read];
                    read += 1;
                }
                write += 1;
            }
            symbols.truncate(write);
        }
    }

    /// The same merges in O(n log n) for very long pre-tokens (a megabyte without a space must
    /// not take hours): a heap of (rank, position) over a linked list of symbols. It agrees
    /// with `merge_short` because every merge's parts are created by lower-ranked merges (true
    /// of the CLIP merges), so the lowest pair is always merged at its leftmost place first.
    fn merge_long(&self, symbols: &mut Vec<u32>) {
        let n = symbols.len();
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap = BinaryHeap::new();
        for i in 0..n - 1 {
            if let Some((r, _)) = self.rank(symbols[i], symbols[i + 1]) {
                heap.push(Reverse((r, i)));
            }
        }
        while let Some(Reverse((rank, i))) = heap.pop() {
            let j = next[i];
            if !alive[i] || j >= n {
                continue;
            }
            // Stale entry: the pair at i changed since it was pushed.
            match self.rank(symbols[i], symbols[j]) {
                Some((r, merged)) if r == rank => symbols[i] = merged,
                _ => continue,
            }
            alive[j] = false;
            next[i] = next[j];
            if next[i] < n {
                prev[next[i]] = i;
                if let Some((r, _)) = self.rank(symbols[i], symbols[next[i]]) {
                    heap.push(Reverse((r, i)));
                }
            }
            let p = prev[i];
            if p < n {
                if let Some((r, _)) = self.rank(symbols[p], symbols[i]) {
                    heap.push(Reverse((r, p)));
                }
            }
        }
        let mut write = 0;
        for read in 0..n {
            if alive[read] {
                symbols[write] = symbols[read];
                write += 1;
            }
        }
        symbols.truncate(write);
    }

    #[cfg(test)]
    pub fn merge_both(&self, word: &[u8]) -> (Vec<u32>, Vec<u32>) {
        let (&last, init) = word.split_last().expect("non-empty");
        let mut a: Vec<u32> = init.iter().map(|&b| self.byte_id[b as usize]).collect();
        a.push(self.byte_id[last as usize] + 256);
        let mut b = a.clone();
        self.merge_short(&mut a);
        self.merge_long(&mut b);
        (a, b)
    }
}
