//! Appending a piece of a caption to a string in whole 16-byte chunks.
//!
//! An edit writes its caption as a few slices of 1 to 60 bytes, and on such copies
//! `push_str` costs more in `memcpy` (a call, then a dispatch on the length that mispredicts
//! when lengths vary, as words' do) than in moving the bytes: a fifth of random swap's time.
//! Copying whole chunks, reading on past the piece inside the caption and writing on past it
//! inside the string's spare capacity, leaves no length to dispatch on. The bytes written past
//! the piece are not part of the string: its length grows by the piece's only.

const CHUNK: usize = 16;

/// Appends `text[start..end]` to `out` (the range must be on character boundaries, as for
/// slicing `text`, which panics otherwise). Whole chunks when the caption goes on far enough
/// past `start`; `push_str` for a piece near its end.
#[inline]
pub fn push_piece(out: &mut String, text: &str, start: usize, end: usize) {
    let piece = &text[start..end];
    let chunks = piece.len().div_ceil(CHUNK) * CHUNK;
    if start + chunks > text.len() {
        out.push_str(piece);
        return;
    }
    out.reserve(chunks);
    // SAFETY: the reads stay inside `text` (`start + chunks <= text.len()`), the writes inside
    // the capacity just reserved past `out`'s length, and the two cannot overlap (`out` is
    // borrowed mutably, `text` shared). The new length covers exactly the piece's bytes, a
    // whole `str` slice, so `out` stays UTF-8.
    unsafe {
        let bytes = out.as_mut_vec();
        let from = piece.as_ptr();
        let to = bytes.as_mut_ptr().add(bytes.len());
        let mut at = 0;
        while at < piece.len() {
            std::ptr::copy_nonoverlapping(from.add(at), to.add(at), CHUNK);
            at += CHUNK;
        }
        bytes.set_len(bytes.len() + piece.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_exactly_the_piece_whatever_its_place() {
        let text = "a dog, a ball and ünïcode — then a long run of words to reach past two chunks.";
        let bounds: Vec<usize> = (0..=text.len())
            .filter(|&i| text.is_char_boundary(i))
            .collect();
        for &start in &bounds {
            for &end in bounds.iter().filter(|&&e| e >= start) {
                let mut out = String::from("ab");
                push_piece(&mut out, text, start, end);
                assert_eq!(out, format!("ab{}", &text[start..end]), "{start}..{end}");
                // What comes after is appended right after the piece, not after the chunks.
                out.push('!');
                assert_eq!(out.len(), 2 + end - start + 1);
            }
        }
    }

    #[test]
    #[should_panic(expected = "char boundary")]
    fn refuses_a_range_inside_a_character() {
        push_piece(&mut String::new(), "ünïcode", 1, 3);
    }
}
