//! JPEG decoded by libjpeg-turbo exactly as Pillow decodes it, for evaluation.
//!
//! open_clip and CLIP_benchmark read pictures with Pillow, whose JPEG decoder is libjpeg-turbo;
//! zune-jpeg's IDCT and chroma upsampling land a few levels away, which moves retrieval recall
//! by tenths of a point. mozjpeg-sys builds libjpeg-turbo's decoder from source with only a C
//! compiler, and `jpeg_libjpeg.c` drives it with Pillow's settings. This file is the only
//! `unsafe` around it: one call into C, and the callback by which C asks for the output buffer
//! (so the size limit is checked, and the memory reserved fallibly, before any pixel is
//! decoded).

use std::ffi::{c_char, c_int, c_uint, c_ulong, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

// Links libjpeg-turbo's static library, whose symbols only the C file names.
use mozjpeg_sys as _;

use super::decoded::{check_size, corrupt, DecodeError, RgbImage};
use crate::limits::MAX_JPEG_SCANS;

const OK: c_int = 0;
const CORRUPT: c_int = 1;
const REFUSED: c_int = 2;
/// libjpeg's JMSG_LENGTH_MAX: the longest message `format_message` writes.
const MESSAGE_LENGTH: usize = 200;

type OutputFn = extern "C" fn(*mut c_void, c_uint, c_uint) -> *mut u8;

extern "C" {
    fn lightclip_jpeg_decode_rgb(
        data: *const u8,
        size: c_ulong,
        max_scans: c_uint,
        output: OutputFn,
        context: *mut c_void,
        message: *mut c_char,
    ) -> c_int;
}

/// What the output callback works with: the limit in, the buffer or the refusal out.
struct Output {
    max_pixels: u64,
    pixels: Vec<u8>,
    width: usize,
    height: usize,
    refusal: Option<DecodeError>,
}

impl Output {
    fn reserve(&mut self, width: usize, height: usize) -> Result<*mut u8, DecodeError> {
        check_size(width, height, self.max_pixels)?;
        let len = width * height * 3;
        self.pixels
            .try_reserve_exact(len)
            .map_err(|_| DecodeError {
                kind: "too_large",
                reason: format!("cannot allocate {len} bytes for a {width}x{height} picture"),
            })?;
        (self.width, self.height) = (width, height);
        Ok(self.pixels.spare_capacity_mut().as_mut_ptr().cast())
    }
}

extern "C" fn reserve_output(context: *mut c_void, width: c_uint, height: c_uint) -> *mut u8 {
    // SAFETY: `context` is the `&mut Output` that `decode_jpeg_as_pillow` passed to C, alive
    // for the whole call and used by nothing else meanwhile.
    let output = unsafe { &mut *context.cast::<Output>() };
    // A panic must not unwind into C; none is expected here, but it would become a refusal.
    let reserved = catch_unwind(AssertUnwindSafe(|| {
        output.reserve(width as usize, height as usize)
    }));
    match reserved {
        Ok(Ok(pointer)) => pointer,
        Ok(Err(refusal)) => {
            output.refusal = Some(refusal);
            std::ptr::null_mut()
        }
        Err(_) => {
            output.refusal = Some(corrupt("JPEG output buffer: internal error"));
            std::ptr::null_mut()
        }
    }
}

/// Decodes a JPEG to RGB with the pixels Pillow's `Image.open(...).convert("RGB")` gives
/// (grey, YCbCr, RGB, CMYK and YCCK files alike).
///
/// A corrupt or truncated file is a `corrupt_image` error, a picture above `max_pixels` a `too_large` one, refused before its pixels are decoded, and so is a
/// file of more than `limits::MAX_JPEG_SCANS` scans.
pub fn decode_jpeg_as_pillow(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    decode_with_scan_limit(bytes, max_pixels, MAX_JPEG_SCANS)
}

fn decode_with_scan_limit(
    bytes: &[u8],
    max_pixels: u64,
    max_scans: u32,
) -> Result<RgbImage, DecodeError> {
    let size = c_ulong::try_from(bytes.len())
        .map_err(|_| corrupt(format!("JPEG of {} bytes is too long", bytes.len())))?;
    let mut output = Output {
        max_pixels,
        pixels: Vec::new(),
        width: 0,
        height: 0,
        refusal: None,
    };
    let mut message: [c_char; MESSAGE_LENGTH] = [0; MESSAGE_LENGTH];
    // SAFETY: `bytes` outlives the call and C only reads `size` bytes of it; `message` has
    // the JMSG_LENGTH_MAX bytes C may write; `output` is reached only through
    // `reserve_output` during the call; C writes exactly width * height * 3 bytes into the
    // buffer that callback reserved, and only returns OK once every row is written.
    let status = unsafe {
        lightclip_jpeg_decode_rgb(
            bytes.as_ptr(),
            size,
            max_scans,
            reserve_output,
            (&mut output as *mut Output).cast(),
            message.as_mut_ptr(),
        )
    };
    match status {
        OK => {
            // SAFETY: see above: all width * height * 3 reserved bytes are now written.
            unsafe { output.pixels.set_len(output.width * output.height * 3) };
            Ok(RgbImage {
                width: output.width,
                height: output.height,
                pixels: output.pixels,
            })
        }
        REFUSED => Err(output
            .refusal
            .unwrap_or_else(|| corrupt("JPEG output refused"))),
        CORRUPT => {
            // SAFETY: C always writes a NUL-terminated message within MESSAGE_LENGTH.
            let text = unsafe { CStr::from_ptr(message.as_ptr()) }.to_string_lossy();
            Err(corrupt(format!("JPEG data: {text}")))
        }
        other => Err(corrupt(format!("JPEG decoder returned status {other}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A JPEG written by the `image` crate's encoder: an independent producer of valid files.
    fn jpeg(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x * 7) as u8, (y * 5) as u8, ((x + y) * 3) as u8])
        });
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Jpeg)
            .unwrap();
        out
    }

    #[test]
    fn decodes_close_to_the_encoded_picture() {
        let img = decode_jpeg_as_pillow(&jpeg(33, 17), 1 << 20).unwrap();
        assert_eq!(
            (img.width, img.height, img.pixels.len()),
            (33, 17, 33 * 17 * 3)
        );
        let reference = image::load_from_memory(&jpeg(33, 17)).unwrap().into_rgb8();
        let worst = img
            .pixels
            .iter()
            .zip(reference.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max()
            .unwrap();
        // Two conforming decoders of one file: a few levels apart at most.
        assert!(worst <= 12, "{worst}");
    }

    #[test]
    fn size_limit_refuses_before_decoding() {
        let err = decode_jpeg_as_pillow(&jpeg(40, 30), 1199).unwrap_err();
        assert_eq!(err.kind, "too_large");
        assert!(err.reason.contains("40x30"), "{}", err.reason);
        assert!(decode_jpeg_as_pillow(&jpeg(40, 30), 1200).is_ok());
    }

    #[test]
    fn scan_limit_stops_the_decoder() {
        // A baseline file is one scan: the limit is checked while it decodes.
        let one_scan = jpeg(24, 16);
        assert!(decode_with_scan_limit(&one_scan, 1 << 20, 1).is_ok());
        let err = decode_with_scan_limit(&one_scan, 1 << 20, 0).unwrap_err();
        assert_eq!(err.kind, "corrupt_image");
        assert!(err.reason.contains("more than 0 scans"), "{}", err.reason);
    }

    #[test]
    fn corrupt_and_truncated_files_are_errors_not_aborts() {
        let whole = jpeg(64, 48);
        for cut in [3, 20, whole.len() / 2, whole.len() - 40] {
            let err = decode_jpeg_as_pillow(&whole[..cut], 1 << 20).unwrap_err();
            assert_eq!(err.kind, "corrupt_image", "cut at {cut}");
            assert!(err.reason.starts_with("JPEG data: "), "{}", err.reason);
        }
        let mut garbage = b"\xff\xd8\xff\xe0".to_vec();
        garbage.extend(b"garbage".repeat(50));
        let err = decode_jpeg_as_pillow(&garbage, 1 << 20).unwrap_err();
        assert_eq!(err.kind, "corrupt_image");
        assert_eq!(
            decode_jpeg_as_pillow(b"", 1 << 20).unwrap_err().kind,
            "corrupt_image"
        );
    }
}
