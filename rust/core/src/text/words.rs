//! A caption's whitespace-separated words as byte spans, found fast: EDA splits every caption
//! it edits, and on short captions the split was a third of the edit.
//!
//! Spans rather than `&str`s so a thread can keep one buffer of them across captions (no
//! allocation per caption) without borrowing any caption.

use super::piece_copy::push_piece;

/// Bytes `start..end` of a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u32,
    pub end: u32,
}

impl Span {
    pub fn of(self, text: &str) -> &str {
        &text[self.start as usize..self.end as usize]
    }

    /// The bytes of [`Span::of`], without its check that the span starts and ends on
    /// characters (a span from [`split_words`] does), for comparing words.
    pub fn bytes(self, text: &str) -> &[u8] {
        &text.as_bytes()[self.start as usize..self.end as usize]
    }
}

/// Replaces `out` with the words of `text`, exactly as `str::split_whitespace` splits it, and
/// says whether `text` is already "single-spaced": ASCII, its words one `' '` apart, nothing
/// before the first or after the last. Such a text joined back equals itself, so an edit can
/// copy whole runs of untouched words at once (see [`RunWriter`]).
///
/// Captions are nearly always ASCII, and there the words are found without a branch per byte:
/// each 64-byte block becomes a bit mask of its whitespace (16 bytes per SSE2 compare on
/// x86-64), and the word starts and ends are the mask's 0→1 and 1→0 edges, visited bit by
/// bit. A byte loop mispredicts at every word boundary.
///
/// Texts of 4 GiB or more are not split (no caption comes near; the pipeline truncates).
pub fn split_words(text: &str, out: &mut Vec<Span>) -> bool {
    out.clear();
    if text.len() > u32::MAX as usize {
        return false;
    }
    if let Some(single_spaced) = split_ascii(text, out) {
        return single_spaced;
    }
    out.clear();
    let base = text.as_ptr() as usize;
    out.extend(text.split_whitespace().map(|w| {
        let start = w.as_ptr() as usize - base;
        span(start, start + w.len())
    }));
    false
}

fn span(start: usize, end: usize) -> Span {
    Span {
        start: start as u32,
        end: end as u32,
    }
}

/// [`split_words`] by bit masks; `None` (and `out` half filled) at the first non-ASCII byte.
fn split_ascii(text: &str, out: &mut Vec<Span>) -> Option<bool> {
    let mut open: Option<usize> = None; // the word still open at a block's end
    let mut spaces = 0u32; // ' ' bytes
    let mut other_space = false; // any \t \n \v \f \r
    let bytes = text.as_bytes();
    for base in (0..bytes.len()).step_by(64) {
        let (blank, other, high) = block_masks(bytes, base);
        if high != 0 {
            return None;
        }
        let valid = match bytes.len() - base {
            64.. => u64::MAX,
            n => !(u64::MAX << n),
        };
        spaces += (blank & !other & valid).count_ones();
        other_space |= other != 0;
        let letters = !blank;
        // Starts: text here and space just before; ends: space here and text just before.
        // Bit 0 looks back at the previous block through `open`.
        let mut starts = letters & ((blank << 1) | u64::from(open.is_none()));
        let mut ends = blank & ((letters << 1) | u64::from(open.is_some()));
        loop {
            if let Some(start) = open {
                if ends == 0 {
                    break; // the word runs on into the next block
                }
                out.push(span(start, base + ends.trailing_zeros() as usize));
                ends &= ends - 1;
                open = None;
            }
            if starts == 0 {
                break;
            }
            open = Some(base + starts.trailing_zeros() as usize);
            starts &= starts - 1;
        }
    }
    if let Some(start) = open {
        out.push(span(start, text.len()));
    }
    // n words one space apart hold n - 1 spaces; with none at either end, they are the gaps.
    Some(
        !other_space
            && !out.is_empty()
            && spaces as usize == out.len() - 1
            && out[0].start == 0
            && out[out.len() - 1].end as usize == text.len(),
    )
}

/// (whitespace, whitespace other than ' ', non-ASCII) bit masks of the 64 bytes of `bytes`
/// from `base`: bit i for byte `base + i`. Past the end counts as plain spaces. Whitespace is
/// Unicode's White_Space within ASCII: ' ' and \t \n \v \f \r (9..=13); the first two masks
/// are only meaningful when the third is empty.
///
/// Inlined into both callers (`split_ascii` and `SpacedCaption::of`): left to the compiler
/// once it had two, `split_words` lost it and SR got 4–5% slower.
#[inline(always)]
pub(super) fn block_masks(bytes: &[u8], base: usize) -> (u64, u64, u64) {
    let (mut blank, mut other, mut high) = (0u64, 0u64, 0u64);
    for k in 0..4 {
        let at = base + 16 * k;
        let shift = 16 * k;
        let (b, o, h) = if at + 16 <= bytes.len() {
            lane_masks(bytes[at..at + 16].try_into().unwrap())
        } else if at >= bytes.len() {
            (0xFFFF, 0, 0)
        } else if bytes.len() >= 16 {
            // The last 16 bytes of the text, shifted so that bit 0 is byte `at`: no copy.
            let (b, o, h) = lane_masks(bytes[bytes.len() - 16..].try_into().unwrap());
            let drop = at + 16 - bytes.len();
            let past_end = !(0xFFFFu16 >> drop);
            ((b >> drop) | past_end, o >> drop, h >> drop)
        } else {
            let mut padded = [b' '; 16];
            padded[..bytes.len() - at].copy_from_slice(&bytes[at..]);
            lane_masks(&padded)
        };
        blank |= u64::from(b) << shift;
        other |= u64::from(o) << shift;
        high |= u64::from(h) << shift;
    }
    (blank, other, high)
}

/// [`block_masks`] of 16 bytes.
#[cfg(target_arch = "x86_64")]
fn lane_masks(lane: &[u8; 16]) -> (u16, u16, u16) {
    use std::arch::x86_64::{
        __m128i, _mm_and_si128, _mm_cmpeq_epi8, _mm_cmpgt_epi8, _mm_cmplt_epi8, _mm_loadu_si128,
        _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    // SAFETY: SSE2 is part of the x86-64 baseline, and the load reads the 16 bytes of `lane`
    // (unaligned loads allowed). Signed compares are right for ASCII bytes, and a lane with
    // any other byte shows in the third mask.
    unsafe {
        let v = _mm_loadu_si128(lane.as_ptr().cast::<__m128i>());
        let control = _mm_and_si128(
            _mm_cmpgt_epi8(v, _mm_set1_epi8(8)),
            _mm_cmplt_epi8(v, _mm_set1_epi8(14)),
        );
        let space = _mm_cmpeq_epi8(v, _mm_set1_epi8(b' ' as i8));
        (
            _mm_movemask_epi8(_mm_or_si128(space, control)) as u16,
            _mm_movemask_epi8(control) as u16,
            _mm_movemask_epi8(v) as u16,
        )
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn lane_masks(lane: &[u8; 16]) -> (u16, u16, u16) {
    let (mut blank, mut other, mut high) = (0u16, 0u16, 0u16);
    for (i, &b) in lane.iter().enumerate() {
        let control = (b'\t'..=b'\r').contains(&b);
        blank |= u16::from(b == b' ' || control) << i;
        other |= u16::from(control) << i;
        high |= u16::from(!b.is_ascii()) << i;
    }
    (blank, other, high)
}

/// Writes an edited caption as runs of the original text: consecutive untouched words of a
/// single-spaced caption are one copy, not one per word. Every run or piece is written with
/// the space that follows it (a run of a single-spaced caption takes its own from the text),
/// and `finish` drops the last one: one copy per run, no separate separators.
pub struct RunWriter<'a> {
    text: &'a str,
    words: &'a [Span],
    single_spaced: bool,
    out: &'a mut String,
    /// The pending run of untouched words, `words[first..=last]`.
    run: Option<(usize, usize)>,
    start_len: usize,
}

impl<'a> RunWriter<'a> {
    pub fn new(text: &'a str, words: &'a [Span], single_spaced: bool, out: &'a mut String) -> Self {
        out.reserve(text.len() + 16);
        let start_len = out.len();
        RunWriter {
            text,
            words,
            single_spaced,
            out,
            run: None,
            start_len,
        }
    }

    /// The caption's words.
    pub fn words(&self) -> &'a [Span] {
        self.words
    }

    /// Appends original word `i`.
    #[inline]
    pub fn word(&mut self, i: usize) {
        match self.run {
            Some((first, last)) if self.single_spaced && last + 1 == i => {
                self.run = Some((first, i))
            }
            _ => {
                self.flush();
                self.run = Some((i, i));
            }
        }
    }

    /// Appends a piece of text as one word.
    pub fn piece(&mut self, parts: &[&str]) {
        self.flush();
        for part in parts {
            self.out.push_str(part);
        }
        self.out.push(' ');
    }

    #[inline]
    fn flush(&mut self) {
        if let Some((first, last)) = self.run.take() {
            let start = self.words[first].start as usize;
            match self.words.get(last + 1) {
                // The run and the one space after it, as the text has them.
                Some(next) if self.single_spaced => {
                    push_piece(self.out, self.text, start, next.start as usize)
                }
                _ => {
                    let end = self.words[last].end as usize;
                    push_piece(self.out, self.text, start, end);
                    self.out.push(' ');
                }
            }
        }
    }

    pub fn finish(mut self) {
        self.flush();
        if self.out.len() > self.start_len {
            self.out.pop(); // the space after the last word
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut spans = vec![Span { start: 9, end: 9 }]; // stale content is replaced
        let single = split_words(text, &mut spans);
        let words: Vec<&str> = spans.iter().map(|s| s.of(text)).collect();
        // Single-spaced exactly when joining the words gives the text back (ASCII only).
        assert_eq!(
            single,
            text.is_ascii() && !words.is_empty() && words.join(" ") == text,
            "{text:?}"
        );
        words
    }

    #[test]
    fn splits_like_split_whitespace() {
        let long_word = "x".repeat(150);
        let cases = [
            String::new(),
            " ".into(),
            "a".into(),
            " a  b\tc\n\x0bd\x0ce\rf ".into(),
            "word ".repeat(40),
            format!("{long_word} y {long_word}"),
            format!("{} z", " ".repeat(63)),
            format!("{}z {}", "q".repeat(63), "r".repeat(64)),
            "a\u{a0}b c\u{3000}d  é".into(), // non-ASCII: the general path
            "a dog runs".into(),
            "a dog\truns".into(),
            "a dog  runs".into(),
            " a dog".into(),
            "a dog ".into(),
            format!("{} b", "a".repeat(64)),
            format!("{}é", "x".repeat(17)), // non-ASCII only in the last, partial lane
            format!("{} é", "x".repeat(60)), // ... of a second block
            "é".into(),
        ];
        for text in &cases {
            let want: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(words(text), want, "{text:?}");
        }
        // Every split point inside and around a 64-byte block boundary.
        for n in 0..140 {
            let text: String = (0..n)
                .map(|i| if i % 7 == 3 || i % 11 == 0 { ' ' } else { 'w' })
                .collect();
            let want: Vec<&str> = text.split_whitespace().collect();
            assert_eq!(words(&text), want, "{text:?}");
        }
    }

    #[test]
    fn run_writer_equals_joining_the_chosen_words() {
        for text in [
            "a small dog runs on the green grass",
            " a  small\tdog runs  ",
            "x",
        ] {
            let mut spans = vec![];
            let single = split_words(text, &mut spans);
            let all: Vec<&str> = spans.iter().map(|s| s.of(text)).collect();
            // Keep words whose index is not 2 mod 3, replace index 1, append one at the end.
            let mut out = String::from(">");
            let mut writer = RunWriter::new(text, &spans, single, &mut out);
            let mut want = vec![];
            for (i, w) in all.iter().enumerate() {
                if i == 1 {
                    writer.piece(&["<", "new", ">"]);
                    want.push("<new>".to_string());
                } else if i % 3 != 2 {
                    writer.word(i);
                    want.push(w.to_string());
                }
            }
            writer.piece(&["end"]);
            want.push("end".into());
            writer.finish();
            assert_eq!(out, format!(">{}", want.join(" ")), "{text:?}");
        }
    }
}
