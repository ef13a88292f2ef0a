//! What a decoder hands back: the RGB picture, or why it refused one, and the checks both
//! JPEG paths share (`decode` and its libjpeg half `jpeg_libjpeg`).
//!
//! A leaf of `pipeline`, so `decode` can call `jpeg_libjpeg` without the two importing each
//! other.

/// A decoded picture, RGB interleaved, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// Why a picture could not be used; `kind` is the counter it goes to in the stats.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    pub kind: &'static str,
    pub reason: String,
}

/// A picture the decoder cannot read.
pub(super) fn corrupt(reason: impl Into<String>) -> DecodeError {
    DecodeError {
        kind: "corrupt_image",
        reason: reason.into(),
    }
}

/// Refuses a header's size before any pixel is decoded: zero is corrupt, more than
/// `max_pixels` is `too_large`.
pub(super) fn check_size(width: usize, height: usize, max_pixels: u64) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(corrupt(format!("image has zero size {width}x{height}")));
    }
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(DecodeError {
            kind: "too_large",
            reason: format!(
                "image is {width}x{height} = {pixels} pixels, above the limit of {max_pixels} \
                 (possible decompression bomb; raise `max_pixels` to accept it)"
            ),
        });
    }
    Ok(())
}
