//! open_clip's caption cleaning (`_clean_lower`): ftfy's `fix_text`, `html.unescape` twice,
//! whitespace collapsed, lower case.
//!
//! Reproduced from ftfy 6 (default config): HTML unescaping ("auto": off from the first line
//! holding `<`), C1 controls read as Windows-1252, Latin ligatures, full/half-width folding,
//! curly quotes, line breaks, ANSI terminal escapes, control characters, NFC; each line fixed
//! until nothing changes, as ftfy does.
//!
//! NOT reproduced: ftfy's mojibake repair (`fix_encoding`: re-decoding text that was decoded
//! in the wrong codec, e.g. "cafÃ©" → "café", and its `restore_byte_a0`,
//! `replace_lossy_sequences`, `decode_inconsistent_utf8` helpers). Captions with mojibake are
//! tokenized as they are written. Unicode tables differ by version (Python 3.11: Unicode 14;
//! Rust's: 15/16), which matters only for characters assigned after Unicode 14.

use unicode_general_category::{get_general_category, GeneralCategory};
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

use super::html;

/// Python's `str.isspace()` (bidirectional class WS/B/S or category Zs).
pub fn is_python_space(c: char) -> bool {
    matches!(
        c,
        '\t'..='\r'
            | '\x1c'..='\x20'
            | '\u{85}'
            | '\u{a0}'
            | '\u{1680}'
            | '\u{2000}'..='\u{200a}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202f}'
            | '\u{205f}'
            | '\u{3000}'
    )
}

/// Cleans a caption exactly as open_clip's `SimpleTokenizer` does before splitting it.
pub fn clean_caption(text: &str) -> String {
    if is_plain_ascii(text) {
        // Nothing for ftfy or html.unescape to do: collapse whitespace, lower-case.
        let mut out = String::with_capacity(text.len());
        for word in text.split_ascii_whitespace() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.extend(word.bytes().map(|b| b.to_ascii_lowercase() as char));
        }
        return out;
    }
    let fixed = fix_text(text);
    let unescaped = html::unescape(&html::unescape(&fixed));
    let mut out = String::with_capacity(unescaped.len());
    for word in unescaped.split(is_python_space).filter(|w| !w.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word);
    }
    out.to_lowercase()
}

/// Printable ASCII and ordinary whitespace, no `&`: the common caption, which cleaning only
/// has to lower-case and re-space. (`\x0b` and other C0 controls are removed by ftfy, so they
/// take the full path.)
fn is_plain_ascii(text: &str) -> bool {
    text.bytes()
        .all(|b| matches!(b, b' '..=b'~' | b'\t' | b'\n' | b'\r' | b'\x0c') && b != b'&')
}

/// ftfy's `fix_text` with its default configuration, minus the mojibake repair.
pub fn fix_text(text: &str) -> String {
    const MAX_SEGMENT_CHARS: usize = 1_000_000;
    let mut out = String::with_capacity(text.len());
    let mut unescape = true;
    let mut rest = text;
    while !rest.is_empty() {
        // Segments end after each "\n", or after a million characters.
        let mut end = rest.find('\n').map_or(rest.len(), |i| i + 1);
        if let Some((i, _)) = rest[..end].char_indices().nth(MAX_SEGMENT_CHARS) {
            end = i;
        }
        let segment = &rest[..end];
        // "auto": HTML-looking text keeps its entities, from this segment on.
        unescape &= !segment.contains('<');
        out.push_str(&fix_segment(segment, unescape));
        rest = &rest[end..];
    }
    out
}

fn fix_segment(segment: &str, unescape: bool) -> String {
    let mut text = segment.to_string();
    loop {
        let mut next = if unescape {
            html::ftfy_unescape(&text)
        } else {
            text.clone()
        };
        next = next.chars().flat_map(fold_char).collect();
        next = fix_line_breaks(&next);
        next = remove_terminal_escapes(&next);
        next.retain(|c| !is_removed_control(c));
        if is_nfc_quick(next.chars()) != IsNormalized::Yes {
            next = next.nfc().collect();
        }
        if next == text {
            return text;
        }
        text = next;
    }
}

/// Per-character fixes, in ftfy's order: C1 controls as Windows-1252, ligatures, width,
/// curly quotes. Each character is replaced by up to three.
fn fold_char(c: char) -> CharFold {
    let c = match c {
        '\u{80}'..='\u{9f}' => windows_1252(c),
        _ => c,
    };
    let s: &str = match c {
        'Ĳ' => "IJ",
        'ĳ' => "ij",
        'ŉ' => "ʼn",
        'Ǳ' => "DZ",
        'ǲ' => "Dz",
        'ǳ' => "dz",
        'Ǆ' => "DŽ",
        'ǅ' => "Dž",
        'ǆ' => "dž",
        'Ǉ' => "LJ",
        'ǈ' => "Lj",
        'ǉ' => "lj",
        'Ǌ' => "NJ",
        'ǋ' => "Nj",
        'ǌ' => "nj",
        'ﬀ' => "ff",
        'ﬁ' => "fi",
        'ﬂ' => "fl",
        'ﬃ' => "ffi",
        'ﬄ' => "ffl",
        'ﬅ' => "ſt",
        'ﬆ' => "st",
        _ => return CharFold::one(uncurl(width(c))),
    };
    // Ligature output goes on through width and quotes (no-ops for these letters, except
    // that 'ŉ' yields 'ʼ', which uncurl_quotes turns into an apostrophe).
    CharFold::many(s.chars().map(|c| uncurl(width(c))))
}

/// Up to three characters, without allocating.
struct CharFold {
    chars: [char; 3],
    len: u8,
    pos: u8,
}

impl CharFold {
    fn one(c: char) -> Self {
        CharFold {
            chars: [c, '\0', '\0'],
            len: 1,
            pos: 0,
        }
    }
    fn many(it: impl Iterator<Item = char>) -> Self {
        let mut f = CharFold {
            chars: ['\0'; 3],
            len: 0,
            pos: 0,
        };
        for c in it.take(3) {
            f.chars[f.len as usize] = c;
            f.len += 1;
        }
        f
    }
}

impl Iterator for CharFold {
    type Item = char;
    fn next(&mut self) -> Option<char> {
        (self.pos < self.len).then(|| {
            self.pos += 1;
            self.chars[self.pos as usize - 1]
        })
    }
}

/// ftfy's `fix_c1_controls`: U+0080..U+009F read as "sloppy" Windows-1252 (the five bytes that
/// code page leaves undefined keep their Latin-1 meaning).
fn windows_1252(c: char) -> char {
    const TABLE: [char; 32] = [
        '€', '\u{81}', '‚', 'ƒ', '„', '…', '†', '‡', 'ˆ', '‰', 'Š', '‹', 'Œ', '\u{8d}', 'Ž',
        '\u{8f}', '\u{90}', '‘', '’', '“', '”', '•', '–', '—', '˜', '™', 'š', '›', 'œ', '\u{9d}',
        'ž', 'Ÿ',
    ];
    TABLE[c as usize - 0x80]
}

/// ftfy's `fix_character_width`: U+3000 → space, U+FF01..U+FFEF → their NFKC form (always a
/// single character for that block).
fn width(c: char) -> char {
    match c {
        '\u{3000}' => ' ',
        '\u{ff01}'..='\u{ffef}' => {
            let mut nfkc = std::iter::once(c).nfkc();
            match (nfkc.next(), nfkc.next()) {
                (Some(folded), None) => folded,
                _ => c,
            }
        }
        _ => c,
    }
}

/// ftfy's `uncurl_quotes`.
fn uncurl(c: char) -> char {
    match c {
        '\u{2bc}' | '\u{2018}'..='\u{201b}' => '\'',
        '\u{201c}'..='\u{201f}' => '"',
        _ => c,
    }
}

/// ftfy's `fix_line_breaks`.
fn fix_line_breaks(text: &str) -> String {
    if !text.contains(['\r', '\u{2028}', '\u{2029}', '\u{85}']) {
        return text.to_string();
    }
    text.replace("\r\n", "\n")
        .replace(['\r', '\u{2028}', '\u{2029}', '\u{85}'], "\n")
}

/// ftfy's `remove_terminal_escapes`: ESC `[` (decimal digits or `;`)* one ASCII letter.
fn remove_terminal_escapes(text: &str) -> String {
    if !text.contains('\x1b') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find('\x1b') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        match escape_len(after) {
            Some(n) => rest = &after[n..],
            None => {
                out.push('\x1b');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Bytes after ESC that form `[...m`-style sequence, if they do.
fn escape_len(after: &str) -> Option<usize> {
    let body = after.strip_prefix('[')?;
    let params: usize = body
        .chars()
        .take_while(|&c| c == ';' || get_general_category(c) == GeneralCategory::DecimalNumber)
        .map(char::len_utf8)
        .sum();
    let last = body[params..].chars().next()?;
    last.is_ascii_alphabetic().then_some(1 + params + 1)
}

/// ftfy's `remove_control_chars` set.
fn is_removed_control(c: char) -> bool {
    matches!(
        c,
        '\0'..='\x08'
            | '\x0b'
            | '\x0e'..='\x1f'
            | '\x7f'
            | '\u{206a}'..='\u{206f}'
            | '\u{feff}'
            | '\u{fff9}'..='\u{fffc}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cleaning_cases() {
        // Expected values are open_clip's `_clean_lower` (ftfy 6.3, CPython 3.11).
        assert_eq!(clean_caption("  A  Dog\tRuns.\n"), "a dog runs.");
        assert_eq!(
            clean_caption("\u{93}hello\u{94} ﬁ ＡＢＣ"),
            "\"hello\" fi abc"
        );
        assert_eq!(clean_caption("&amp;amp; &lt;b&gt;"), "& <b>");
        assert_eq!(clean_caption("<b>&amp;amp;</b>"), "<b>&</b>");
        assert_eq!(clean_caption("\x1b[36;44mblue\x1b[0m"), "blue");
        assert_eq!(clean_caption("e\u{301}te\u{301}"), "été");
        // Final sigma, as Python lower-cases it.
        assert_eq!(clean_caption("ΟΔΟΣ"), "\u{3bf}\u{3b4}\u{3bf}\u{3c2}");
        assert_eq!(clean_caption(""), "");
        assert_eq!(clean_caption(" \u{3000}\u{a0} "), "");
    }
}
