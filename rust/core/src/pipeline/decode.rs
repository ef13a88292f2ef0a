//! Image decoding to 8-bit interleaved RGB, refusing decompression bombs.
//!
//! JPEG goes to one of two decoders (`JpegDecoding`): zune-jpeg (the decoder the `image` crate
//! itself wraps, minus a copy and a format probe) for training, libjpeg-turbo with Pillow's
//! settings (`jpeg_libjpeg`) for evaluation, where the pixels must be the ones open_clip sees.
//! PNG and WebP go through `image`. The format comes from the magic bytes, never the file name. Before any pixel is decoded the header's dimensions are checked against
//! `max_pixels`, so a tiny file claiming 50000 x 50000 pixels costs nothing. JPEG decoding is
//! strict: a truncated or corrupt entropy stream is an error, not a grey-filled image.

use std::io::Cursor;

use image::{ImageFormat, ImageReader};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

use super::decoded::{check_size, corrupt, DecodeError, RgbImage};
use super::jpeg_libjpeg::decode_jpeg_as_pillow;

/// The format of `bytes` from its magic number, if it is one we decode.
pub fn sniff(bytes: &[u8]) -> Option<ImageFormat> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some(ImageFormat::Jpeg)
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some(ImageFormat::Png)
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some(ImageFormat::WebP)
    } else {
        None
    }
}

/// Which decoder turns a JPEG into pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegDecoding {
    /// zune-jpeg: the faster one, for training, where random augmentation follows anyway.
    Fast,
    /// libjpeg-turbo with Pillow's settings: open_clip's and CLIP_benchmark's pixels, bit for
    /// bit, for evaluation.
    AsPillow,
}

/// Decodes a JPEG, PNG or WebP to RGB (grey, CMYK and alpha inputs converted; alpha dropped).
pub fn decode_rgb(
    bytes: &[u8],
    max_pixels: u64,
    jpeg: JpegDecoding,
) -> Result<RgbImage, DecodeError> {
    match sniff(bytes) {
        Some(ImageFormat::Jpeg) if jpeg == JpegDecoding::AsPillow => {
            decode_jpeg_as_pillow(bytes, max_pixels)
        }
        Some(ImageFormat::Jpeg) => decode_jpeg(bytes, max_pixels),
        Some(format) => decode_with_image(bytes, format, max_pixels),
        None if bytes.is_empty() => Err(corrupt("image file is empty")),
        None => Err(corrupt(
            "not a JPEG, PNG or WebP image (unrecognised header bytes)",
        )),
    }
}

fn decode_jpeg(bytes: &[u8], max_pixels: u64) -> Result<RgbImage, DecodeError> {
    let options = DecoderOptions::default()
        .set_strict_mode(true)
        .jpeg_set_out_colorspace(ColorSpace::RGB)
        // Bounds on each side as well: the decoder allocates per side before we see the product.
        .set_max_width(1 << 16)
        .set_max_height(1 << 16);
    let mut decoder = JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| corrupt(format!("JPEG header: {e:?}")))?;
    let (width, height) = decoder
        .dimensions()
        .ok_or_else(|| corrupt("JPEG header without dimensions"))?;
    check_size(width, height, max_pixels)?;
    let pixels = decoder
        .decode()
        .map_err(|e| corrupt(format!("JPEG data: {e:?}")))?;
    if pixels.len() != width * height * 3 {
        return Err(corrupt(format!(
            "JPEG decoded to {} bytes, expected {width}x{height}x3",
            pixels.len()
        )));
    }
    Ok(RgbImage {
        width,
        height,
        pixels,
    })
}

fn decode_with_image(
    bytes: &[u8],
    format: ImageFormat,
    max_pixels: u64,
) -> Result<RgbImage, DecodeError> {
    let name = format!("{format:?}").to_uppercase();
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| corrupt(format!("{name} header: {e}")))?;
    check_size(width as usize, height as usize, max_pixels)?;
    let image = ImageReader::with_format(Cursor::new(bytes), format)
        .decode()
        .map_err(|e| corrupt(format!("{name} data: {e}")))?;
    let rgb = image.into_rgb8();
    Ok(RgbImage {
        width: rgb.width() as usize,
        height: rgb.height() as usize,
        pixels: rgb.into_raw(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(width: u32, height: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 9]));
        let mut out = Vec::new();
        img.write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    #[test]
    fn png_round_trips_exactly() {
        let img = decode_rgb(&png(5, 4), 1000, JpegDecoding::Fast).unwrap();
        assert_eq!((img.width, img.height), (5, 4));
        assert_eq!(&img.pixels[..6], &[0, 0, 9, 1, 0, 9]);
    }

    #[test]
    fn pixel_limit_refuses_before_decoding() {
        let err = decode_rgb(&png(40, 30), 1199, JpegDecoding::Fast).unwrap_err();
        assert_eq!(err.kind, "too_large");
        assert!(err.reason.contains("40x30"), "{}", err.reason);
        assert!(decode_rgb(&png(40, 30), 1200, JpegDecoding::Fast).is_ok());
    }

    #[test]
    fn garbage_and_empty_are_named() {
        assert_eq!(
            decode_rgb(b"", 10, JpegDecoding::Fast).unwrap_err().kind,
            "corrupt_image"
        );
        let e = decode_rgb(b"hello world, not an image", 10, JpegDecoding::Fast).unwrap_err();
        assert!(e.reason.contains("unrecognised"));
        let mut truncated = png(16, 16);
        truncated.truncate(truncated.len() / 2);
        assert_eq!(
            decode_rgb(&truncated, 1 << 20, JpegDecoding::Fast)
                .unwrap_err()
                .kind,
            "corrupt_image"
        );
    }
}
