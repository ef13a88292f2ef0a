//! open_clip's split of a cleaned caption into pre-tokens, written out by hand instead of its
//! regex (`<start_of_text>|<end_of_text>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|
//! [^\s\p{L}\p{N}]+`, case-insensitive). The alternatives are tried in that order at each
//! position, as the backtracking regex engine does, and whitespace between matches is skipped.

use unicode_general_category::{get_general_category, GeneralCategory as Gc};

use super::clean::is_python_space;

/// One pre-token: a special token written in the text, or a piece for BPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Piece<'a> {
    /// `<start_of_text>` (0) or `<end_of_text>` (1) written literally.
    Special(usize),
    Text(&'a str),
}

pub fn is_letter(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphabetic();
    }
    matches!(
        get_general_category(c),
        Gc::UppercaseLetter
            | Gc::LowercaseLetter
            | Gc::TitlecaseLetter
            | Gc::ModifierLetter
            | Gc::OtherLetter
    )
}

pub fn is_number(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    matches!(
        get_general_category(c),
        Gc::DecimalNumber | Gc::LetterNumber | Gc::OtherNumber
    )
}

const SPECIALS: [&str; 2] = ["<start_of_text>", "<end_of_text>"];
const CONTRACTIONS: [&str; 7] = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d"];

/// Length in bytes of `literal` (lower-case ASCII) at the start of `text`, compared
/// case-insensitively as the regex module does with simple case folding. The text is already
/// lower-cased, so the only non-ASCII character that folds onto an ASCII letter and can still
/// be there is 'ſ' (U+017F, long s), which folds to 's'.
fn caseless_prefix(text: &str, literal: &str) -> Option<usize> {
    let mut chars = text.char_indices();
    for want in literal.chars() {
        let (_, got) = chars.next()?;
        let got = if got == 'ſ' {
            's'
        } else {
            got.to_ascii_lowercase()
        };
        if got != want {
            return None;
        }
    }
    Some(chars.next().map_or(text.len(), |(i, _)| i))
}

/// Calls `emit` for each pre-token of the cleaned `text`, in order.
pub fn split<'a>(text: &'a str, mut emit: impl FnMut(Piece<'a>)) {
    let bytes = text.as_bytes();
    let mut pos = 0;
    while pos < text.len() {
        let rest = &text[pos..];
        let b = bytes[pos];
        // ASCII fast paths for the common characters.
        let c = if b < 0x80 {
            b as char
        } else {
            rest.chars().next().unwrap_or(' ')
        };
        let len = if b == b' ' {
            pos += 1;
            continue;
        } else if b == b'<' {
            if let Some(k) = SPECIALS.iter().position(|s| rest.starts_with(s)) {
                emit(Piece::Special(k));
                pos += SPECIALS[k].len();
                continue;
            }
            SPECIALS
                .iter()
                .find_map(|s| caseless_prefix(rest, s))
                .unwrap_or_else(|| symbols_len(rest))
        } else if b == b'\'' {
            CONTRACTIONS
                .iter()
                .find_map(|s| caseless_prefix(rest, s))
                .unwrap_or_else(|| symbols_len(rest))
        } else if b.is_ascii_alphabetic() || (b >= 0x80 && is_letter(c)) {
            rest.char_indices()
                .find(|&(_, c)| !is_letter(c))
                .map_or(rest.len(), |(i, _)| i)
        } else if is_number(c) {
            c.len_utf8()
        } else if is_python_space(c) {
            pos += c.len_utf8();
            continue;
        } else {
            symbols_len(rest)
        };
        emit(Piece::Text(&rest[..len]));
        pos += len;
    }
}

/// Length of the leading run of characters that are neither space, letter nor number.
fn symbols_len(rest: &str) -> usize {
    rest.char_indices()
        .find(|&(_, c)| is_python_space(c) || is_letter(c) || is_number(c))
        .map_or(rest.len(), |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pieces(text: &str) -> Vec<String> {
        let mut out = vec![];
        split(text, |p| {
            out.push(match p {
                Piece::Special(k) => format!("#{k}"),
                Piece::Text(t) => t.to_string(),
            })
        });
        out
    }

    #[test]
    fn splits_like_open_clip() {
        // Expected values are regex.findall(open_clip's pattern, text).
        assert_eq!(
            pieces("it'ſ <ſtart_of_text> x<start_of_text>y !!<end_of_text> 'st"),
            [
                "it",
                "'ſ",
                "<ſtart_of_text>",
                "x",
                "#0",
                "y",
                "!!<",
                "end",
                "_",
                "of",
                "_",
                "text",
                ">",
                "'s",
                "t"
            ]
        );
        assert_eq!(
            pieces("a dog's 12 toys..."),
            ["a", "dog", "'s", "1", "2", "toys", "..."]
        );
        assert_eq!(pieces("'x '' don't"), ["'", "x", "''", "don", "'t"]);
        assert_eq!(pieces("café ½ 東京"), ["café", "½", "東京"]);
        assert!(pieces("").is_empty());
    }
}
