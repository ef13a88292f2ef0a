//! A short single-spaced caption read through the bit mask of its spaces: word k's bytes are
//! found when an edit asks for them, instead of splitting the whole caption first.
//!
//! Random deletion keeps most words, in runs: with the space mask, each run is one copy found
//! from the mask, where the general path splits the caption into word spans and visits every
//! word (an RD 1.3× faster on Flickr8k). Most captions are ASCII words one `' '` apart and up
//! to 128 bytes long; for those two 64-bit masks hold every word boundary, and word k starts
//! one byte after the (k−1)-th set bit. (Reading single words this way costs about what the
//! split does: each lookup walks the mask, so RS keeps the split.)

use super::piece_copy::push_piece;
use super::words::block_masks;

/// The longest caption read this way: two 64-byte blocks, so at most 64 words (one letter
/// and one space each), which lets a word set be one `u64`.
pub const MAX_BYTES: usize = 128;

/// A caption of at most [`MAX_BYTES`] ASCII bytes, its words one `' '` apart with nothing
/// before the first or after the last (the captions [`super::words::split_words`] calls
/// single-spaced), and the positions of its spaces.
#[derive(Debug, Clone, Copy)]
pub struct SpacedCaption<'a> {
    text: &'a str,
    /// Bit i of `spaces[i / 64]`: byte i is a space.
    spaces: [u64; 2],
    words: usize,
}

impl<'a> SpacedCaption<'a> {
    /// `None` when `text` is empty, longer than [`MAX_BYTES`], not ASCII, or spaced any other
    /// way (other whitespace, two spaces in a row, a space at either end).
    pub fn of(text: &'a str) -> Option<SpacedCaption<'a>> {
        let bytes = text.as_bytes();
        let len = bytes.len();
        if len == 0 || len > MAX_BYTES {
            return None;
        }
        let mut spaces = [0u64; 2];
        for (block, slot) in spaces.iter_mut().enumerate() {
            let base = 64 * block;
            if base >= len {
                break;
            }
            let (blank, other, high) = block_masks(bytes, base);
            if high != 0 || other != 0 {
                return None;
            }
            // Past the end counts as space in the masks: keep the bytes that are there.
            *slot = blank & word_bits(len - base);
        }
        let [low, high] = spaces;
        // Two spaces in a row (within a block or across the boundary), a space first or last.
        let doubled = (low & (low << 1)) | (high & ((high << 1) | (low >> 63)));
        if doubled != 0 || bytes[0] == b' ' || bytes[len - 1] == b' ' {
            return None;
        }
        Some(SpacedCaption {
            text,
            spaces,
            words: (low.count_ones() + high.count_ones()) as usize + 1,
        })
    }

    pub fn text(&self) -> &'a str {
        self.text
    }

    /// Number of words (at least 1, at most 64).
    pub fn len(&self) -> usize {
        self.words
    }

    /// Byte offset of space `k` (`k < len() - 1`): the `k`-th set bit of the masks, reached by
    /// clearing the lower ones (captions have few words; no select instruction is assumed).
    fn space(&self, k: usize) -> usize {
        let low_spaces = self.spaces[0].count_ones() as usize;
        let (mut mask, skip, base) = if k < low_spaces {
            (self.spaces[0], k, 0)
        } else {
            (self.spaces[1], k - low_spaces, 64)
        };
        for _ in 0..skip {
            mask &= mask - 1;
        }
        base + mask.trailing_zeros() as usize
    }

    /// Where word `k` starts.
    pub fn start(&self, k: usize) -> usize {
        if k == 0 {
            0
        } else {
            self.space(k - 1) + 1
        }
    }

    /// Where word `k` ends.
    pub fn end(&self, k: usize) -> usize {
        if k + 1 == self.words {
            self.text.len()
        } else {
            self.space(k)
        }
    }

    /// Appends the words whose bits are set in `kept` (bits ≥ `len()` ignored), in order, one
    /// space apart: each run of consecutive kept words is one copy of the text.
    pub fn write_words(&self, kept: u64, out: &mut String) {
        let mut left = kept & word_bits(self.words);
        let mut first = true;
        while left != 0 {
            let from = left.trailing_zeros() as usize;
            let run = (!(left >> from)).trailing_zeros() as usize;
            let to = from + run; // one past the run's last word
            if !first {
                out.push(' ');
            }
            first = false;
            push_piece(out, self.text, self.start(from), self.end(to - 1));
            left &= !(word_bits(run) << from);
        }
    }
}

/// The low `n` bits (`n ≤ 64`).
pub fn word_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1 << n) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::super::words::split_words;
    use super::*;

    #[test]
    fn takes_exactly_the_single_spaced_captions_it_can_hold() {
        let long = vec!["ab"; 43].join(" "); // 128 bytes
        let longer = format!("{long} c");
        let wide = format!("{} y", "x".repeat(63)); // the space is byte 63, the block's last
        let cases = [
            "a",
            "a dog runs",
            "a  dog",
            " a",
            "a ",
            "a\tdog",
            "naïve dog",
            "",
            &long,
            &longer,
            &wide,
        ];
        for text in cases {
            let mut spans = vec![];
            let single = split_words(text, &mut spans);
            let caption = SpacedCaption::of(text);
            assert_eq!(
                caption.is_some(),
                single && text.len() <= MAX_BYTES,
                "{text:?}"
            );
        }
        // Two spaces meeting across the 64-byte boundary.
        let across = format!("{} {}", "x".repeat(63), " y");
        assert!(SpacedCaption::of(&across).is_none());
    }

    #[test]
    fn finds_every_word_as_split_words_does() {
        // Word lengths cycling through 1..=9: spaces land on every bit of both blocks.
        for words in 1..=64 {
            for shift in 0..5 {
                let text: Vec<String> = (0..words)
                    .map(|i| "w".repeat(1 + (i * 7 + shift) % 9))
                    .collect();
                let text = text.join(" ");
                let Some(caption) = SpacedCaption::of(&text) else {
                    assert!(text.len() > MAX_BYTES, "{text:?}");
                    continue;
                };
                let mut spans = vec![];
                split_words(&text, &mut spans);
                assert_eq!(caption.len(), spans.len());
                for (k, &span) in spans.iter().enumerate() {
                    let found = (caption.start(k) as u32, caption.end(k) as u32);
                    assert_eq!(found, (span.start, span.end), "word {k} of {text:?}");
                }
            }
        }
    }

    #[test]
    fn writes_kept_words_one_space_apart() {
        let text = "a small dog runs on the green grass";
        let caption = SpacedCaption::of(text).unwrap();
        let words: Vec<&str> = text.split(' ').collect();
        for kept in [
            0u64,
            1,
            0b1000_0000,
            0b1010_0110,
            0xFF,
            u64::MAX,
            0b0111_1110,
        ] {
            let mut out = String::from(">");
            caption.write_words(kept, &mut out);
            let want: Vec<&str> = (0..words.len())
                .filter(|&i| kept >> i & 1 == 1)
                .map(|i| words[i])
                .collect();
            assert_eq!(out, format!(">{}", want.join(" ")), "{kept:b}");
        }
    }
}
