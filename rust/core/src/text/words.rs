//! A caption's whitespace-separated words as byte spans, found fast: EDA splits every caption
//! it edits, and on short captions the split was a third of the edit.
//!
//! Spans rather than `&str`s so a thread can keep one buffer of them across captions (no
//! allocation per caption) without borrowing any caption.

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
}

/// Replaces `out` with the words of `text`, exactly as `str::split_whitespace` splits it.
///
/// Captions are nearly always ASCII, and there the words are found without a branch per byte:
/// each 64-byte block becomes a bit mask of its whitespace (a loop the compiler vectorises),
/// and the word starts and ends are the mask's 0→1 and 1→0 edges, visited bit by bit. A byte
/// loop mispredicts at every word boundary.
///
/// Texts of 4 GiB or more are not split (no caption comes near; the pipeline truncates).
pub fn split_words(text: &str, out: &mut Vec<Span>) {
    out.clear();
    if text.len() > u32::MAX as usize {
        return;
    }
    let span = |start: usize, end: usize| Span {
        start: start as u32,
        end: end as u32,
    };
    if !text.is_ascii() {
        let base = text.as_ptr() as usize;
        out.extend(text.split_whitespace().map(|w| {
            let start = w.as_ptr() as usize - base;
            span(start, start + w.len())
        }));
        return;
    }
    let mut open: Option<usize> = None; // the word still open at a block's end
    for (block, chunk) in text.as_bytes().chunks(64).enumerate() {
        let base = block * 64;
        let mut space = 0u64;
        for (i, &b) in chunk.iter().enumerate() {
            // Unicode White_Space within ASCII: \t \n \v \f \r and space.
            space |= u64::from(b == b' ' || (b'\t'..=b'\r').contains(&b)) << i;
        }
        if chunk.len() < 64 {
            space |= u64::MAX << chunk.len(); // past the text: as if spaces
        }
        let letters = !space;
        // Starts: text here and space just before; ends: space here and text just before.
        // Bit 0 looks back at the previous block through `open`.
        let mut starts = letters & ((space << 1) | u64::from(open.is_none()));
        let mut ends = space & ((letters << 1) | u64::from(open.is_some()));
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
}

/// Appends the words, one space apart.
pub fn join_words(text: &str, words: &[Span], out: &mut String) {
    out.reserve(words.iter().map(|w| (w.end - w.start) as usize + 1).sum());
    for (i, w) in words.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.push_str(w.of(text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(text: &str) -> Vec<&str> {
        let mut spans = vec![Span { start: 9, end: 9 }]; // stale content is replaced
        split_words(text, &mut spans);
        spans.iter().map(|s| s.of(text)).collect()
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
    fn join_puts_single_spaces_between_words() {
        let text = "  a  dog\truns ";
        let mut spans = vec![];
        split_words(text, &mut spans);
        spans.swap(0, 2);
        let mut out = String::from(">");
        join_words(text, &spans, &mut out);
        assert_eq!(out, ">runs dog a");
    }
}
