//! HTML character references, decoded exactly as Python's `html.unescape` and ftfy's
//! `unescape_html` do (open_clip's cleaning runs ftfy, then `html.unescape` twice).
//!
//! The entity names come from the WHATWG table (the `entities` crate: the same 2,231 names as
//! Python's `html.entities.html5`, with and without the trailing `;`).

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

/// Named references as Python's `html.entities.html5`: name (without `&`, maybe with `;`) → text.
fn html5() -> &'static FxHashMap<&'static str, &'static str> {
    static TABLE: OnceLock<FxHashMap<&'static str, &'static str>> = OnceLock::new();
    TABLE.get_or_init(|| {
        entities::ENTITIES
            .iter()
            .map(|e| (e.entity.trim_start_matches('&'), e.characters))
            .collect()
    })
}

/// Numeric references Python maps to something other than the code point (HTML5 §13.2.5.80:
/// the Windows-1252 reading of C1 controls, NUL, CR).
fn invalid_charref(num: u32) -> Option<char> {
    const C1: [char; 32] = [
        '\u{20ac}', '\u{81}', '\u{201a}', '\u{192}', '\u{201e}', '\u{2026}', '\u{2020}',
        '\u{2021}', '\u{2c6}', '\u{2030}', '\u{160}', '\u{2039}', '\u{152}', '\u{8d}', '\u{17d}',
        '\u{8f}', '\u{90}', '\u{2018}', '\u{2019}', '\u{201c}', '\u{201d}', '\u{2022}', '\u{2013}',
        '\u{2014}', '\u{2dc}', '\u{2122}', '\u{161}', '\u{203a}', '\u{153}', '\u{9d}', '\u{17e}',
        '\u{178}',
    ];
    match num {
        0 => Some('\u{fffd}'),
        0x0d => Some('\r'),
        0x80..=0x9f => Some(C1[(num - 0x80) as usize]),
        _ => None,
    }
}

/// Code points Python's `html.unescape` drops (controls, noncharacters).
fn is_dropped_codepoint(num: u32) -> bool {
    matches!(num, 0x1..=0x8 | 0xb | 0xe..=0x1f | 0x7f..=0x9f | 0xfdd0..=0xfdef)
        || (num & 0xfffe == 0xfffe && num <= 0x10ffff)
}

/// The text a numeric reference stands for (`digits` without `&#`, `x` or `;`).
fn numeric(digits: &str, radix: u32) -> String {
    // Python parses arbitrarily large numbers; anything past U+10FFFF is U+FFFD either way.
    let num = digits
        .chars()
        .try_fold(0u64, |acc, c| {
            let v = acc * radix as u64 + c.to_digit(radix)? as u64;
            Some(v.min(0x11_0000))
        })
        .unwrap_or(0x11_0000);
    let num = num as u32;
    if let Some(c) = invalid_charref(num) {
        return c.to_string();
    }
    if (0xd800..=0xdfff).contains(&num) || num > 0x10ffff {
        return '\u{fffd}'.to_string();
    }
    if is_dropped_codepoint(num) {
        return String::new();
    }
    char::from_u32(num).map(String::from).unwrap_or_default()
}

/// Length in bytes of the reference starting after `&` at `rest`, and its replacement, if
/// Python's `html.unescape` regex matches there.
fn python_charref(rest: &str) -> Option<(usize, String)> {
    let bytes = rest.as_bytes();
    if bytes.first() == Some(&b'#') {
        let hex = matches!(bytes.get(1), Some(b'x' | b'X'));
        let start = if hex { 2 } else { 1 };
        let n = bytes[start..]
            .iter()
            .take_while(|b| {
                if hex {
                    b.is_ascii_hexdigit()
                } else {
                    b.is_ascii_digit()
                }
            })
            .count();
        if n == 0 {
            return None;
        }
        let end = start + n;
        let len = end + usize::from(bytes.get(end) == Some(&b';'));
        return Some((len, numeric(&rest[start..end], if hex { 16 } else { 10 })));
    }
    // A name: 1..=32 characters other than \t \n \f space < & # ;, then an optional `;`.
    let mut end = 0;
    for (count, c) in rest.chars().enumerate() {
        if count == 32 || matches!(c, '\t' | '\n' | '\x0c' | ' ' | '<' | '&' | '#' | ';') {
            break;
        }
        end += c.len_utf8();
    }
    if end == 0 {
        return None;
    }
    let len = end + usize::from(bytes.get(end) == Some(&b';'));
    let name = &rest[..len];
    if let Some(text) = html5().get(name) {
        return Some((len, (*text).to_string()));
    }
    // The longest known prefix of at least two characters, the rest kept as text.
    let cuts: Vec<usize> = name.char_indices().map(|(i, _)| i).skip(2).collect();
    for &cut in cuts.iter().rev() {
        if let Some(text) = html5().get(&name[..cut]) {
            return Some((len, format!("{text}{}", &name[cut..])));
        }
    }
    Some((len, format!("&{name}")))
}

/// Python's `html.unescape`.
pub fn unescape(text: &str) -> String {
    replace_refs(text, python_charref)
}

/// ftfy's reference table: every `;`-terminated HTML5 name, plus the upper-cased form of
/// all-lower-case names when that form is not itself a reference (`&NTILDE;` → `Ñ`).
fn ftfy_entities() -> &'static FxHashMap<String, String> {
    static TABLE: OnceLock<FxHashMap<String, String>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut table = FxHashMap::default();
        for e in entities::ENTITIES
            .iter()
            .filter(|e| e.entity.ends_with(';'))
        {
            table.insert(e.entity.to_string(), e.characters.to_string());
            let name = &e.entity[1..];
            if name == name.to_lowercase() {
                let upper = format!("&{}", name.to_uppercase());
                if unescape(&upper) == upper {
                    table.insert(upper, e.characters.to_uppercase());
                }
            }
        }
        table
    })
}

/// ftfy's `unescape_html`: only `&name;` / `&#digits;` forms with the `;`, 1..=24 ASCII
/// alphanumerics long.
pub fn ftfy_unescape(text: &str) -> String {
    replace_refs(text, |rest| {
        let bytes = rest.as_bytes();
        let start = usize::from(bytes.first() == Some(&b'#'));
        let n = bytes[start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric())
            .count();
        if n == 0 || n > 24 || bytes.get(start + n) != Some(&b';') {
            return None;
        }
        let len = start + n + 1;
        let whole = &text_of(rest, len);
        if let Some(found) = ftfy_entities().get(whole.as_str()) {
            return Some((len, found.clone()));
        }
        if start == 1 {
            let decoded = unescape(whole);
            // Only a reference decoded whole (its `;` consumed) counts.
            return Some((
                len,
                if decoded.contains(';') {
                    whole.clone()
                } else {
                    decoded
                },
            ));
        }
        None
    })
}

fn text_of(rest: &str, len: usize) -> String {
    format!("&{}", &rest[..len])
}

/// Scans `text` for `&`, asks `decode` about what follows it, and splices the replacements in.
fn replace_refs(text: &str, decode: impl Fn(&str) -> Option<(usize, String)>) -> String {
    if !text.contains('&') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut pos = 0;
    while let Some(off) = text[pos..].find('&') {
        let amp = pos + off;
        out.push_str(&text[pos..amp]);
        match decode(&text[amp + 1..]) {
            Some((len, replacement)) => {
                out.push_str(&replacement);
                pos = amp + 1 + len;
            }
            None => {
                out.push('&');
                pos = amp + 1;
            }
        }
    }
    out.push_str(&text[pos..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_unescape_cases() {
        // Expected values are what CPython 3.11's html.unescape returns.
        assert_eq!(unescape("a &amp; b"), "a & b");
        assert_eq!(unescape("&amp"), "&");
        assert_eq!(unescape("&ampx"), "&x");
        assert_eq!(unescape("&notit;"), "¬it;");
        assert_eq!(unescape("&#65;&#x42;&#X43"), "ABC");
        assert_eq!(unescape("&#0;&#128;&#13;"), "\u{fffd}€\r");
        assert_eq!(unescape("&#1;&#xfffe;x"), "x");
        assert_eq!(unescape("&#99999999999999999999;"), "\u{fffd}");
        assert_eq!(unescape("&#xd800;"), "\u{fffd}");
        assert_eq!(unescape("&#;&#x;&;& x"), "&#;&#x;&;& x");
        assert_eq!(unescape("&bogus;"), "&bogus;");
        assert_eq!(unescape("&amp;amp;"), "&amp;");
    }

    #[test]
    fn ftfy_cases() {
        assert_eq!(
            ftfy_unescape("&amp; &NTILDE; &ntilde; &nTILDE;"),
            "& Ñ ñ &nTILDE;"
        );
        assert_eq!(ftfy_unescape("&amp &#65; &#65"), "&amp A &#65");
        assert_eq!(ftfy_unescape("&#x41;"), "A");
        assert_eq!(ftfy_unescape("&bogus;"), "&bogus;");
    }
}
