//! Crop-and-resize of an 8-bit RGB image into a planar float image, with antialiasing: the
//! training transform's RandomResizedCrop (the evaluation transform has its own, Pillow-exact
//! resize in `bicubic.rs`, because it must give open_clip's pixels).
//!
//! The crop box is fractional and maps straight onto the output grid. Like Pillow's and
//! torchvision's `antialias=True` bilinear, the triangle filter widens by the scale factor when
//! shrinking, so downscaling averages every source pixel instead of aliasing.

use super::PlanarImage;

/// A source rectangle in pixel units (may be fractional; must lie inside the image).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CropBox {
    pub x: f32,
    pub y: f32,
    pub width: f32,
    pub height: f32,
}

/// Precomputed filter taps for one axis: output `o` reads `len[o]` source pixels from
/// `start[o]` with weights `weights[o * taps..]` (zero taps trimmed, so loops stay tight).
struct AxisWeights {
    start: Vec<usize>,
    len: Vec<usize>,
    taps: usize,
    weights: Vec<f32>,
}

fn axis_weights(src_len: usize, offset: f32, extent: f32, out_len: usize) -> AxisWeights {
    let scale = extent / out_len as f32;
    // Widen the triangle when shrinking (antialias); never narrower than bilinear.
    let support = scale.max(1.0);
    let taps = (2.0 * support).ceil() as usize + 1;
    let mut start = Vec::with_capacity(out_len);
    let mut len = Vec::with_capacity(out_len);
    let mut weights = vec![0.0f32; out_len * taps];
    for o in 0..out_len {
        let centre = offset + (o as f32 + 0.5) * scale;
        // Source pixel s (centre s + 0.5) has weight max(0, 1 - |s + 0.5 - centre| / support).
        let lo = ((centre - support - 0.5).floor().max(0.0) as usize).min(src_len - 1);
        let hi = ((centre + support - 0.5).ceil().max(0.0) as usize).min(src_len - 1);
        let row = &mut weights[o * taps..(o + 1) * taps];
        let mut total = 0.0;
        let mut first = usize::MAX;
        let mut count = 0;
        for s in lo..=hi {
            let w = (1.0 - ((s as f32 + 0.5) - centre).abs() / support).max(0.0);
            if w > 0.0 && count < taps {
                if first == usize::MAX {
                    first = s;
                }
                row[s - first] = w;
                count = s - first + 1;
                total += w;
            }
        }
        if total > 0.0 {
            row[..count].iter_mut().for_each(|w| *w /= total);
        } else {
            // The crop lies between pixel centres at the border: use the nearest pixel.
            first = (centre.max(0.0) as usize).min(src_len - 1);
            row[0] = 1.0;
            count = 1;
        }
        start.push(first);
        len.push(count);
    }
    AxisWeights {
        start,
        len,
        taps,
        weights,
    }
}

/// Resamples `crop` of the interleaved RGB `pixels` (`width` x `height`) to
/// `out_width` x `out_height`, returning values in [0, 1], planar (C, H, W).
pub fn resize_crop(
    pixels: &[u8],
    width: usize,
    height: usize,
    crop: CropBox,
    out_width: usize,
    out_height: usize,
) -> PlanarImage {
    let xw = axis_weights(width, crop.x, crop.width, out_width);
    let yw = axis_weights(height, crop.y, crop.height, out_height);
    // Rows of the source the vertical pass will touch.
    let row_lo = yw.start.iter().copied().min().unwrap_or(0);
    let row_hi = (0..out_height)
        .map(|o| yw.start[o] + yw.len[o])
        .max()
        .unwrap_or(0);
    let rows = row_hi - row_lo;

    // Horizontal pass: source rows -> planar (3, rows, out_width) floats scaled to [0, 1].
    let mut tmp = vec![0.0f32; 3 * rows * out_width];
    let tmp_plane = rows * out_width;
    for r in 0..rows {
        let src = &pixels[(row_lo + r) * width * 3..(row_lo + r + 1) * width * 3];
        let (src, _) = src.as_chunks::<3>();
        for o in 0..out_width {
            let (s0, n) = (xw.start[o], xw.len[o]);
            let ws = &xw.weights[o * xw.taps..o * xw.taps + n];
            let mut acc = [0.0f32; 3];
            for (&w, p) in ws.iter().zip(&src[s0..s0 + n]) {
                acc[0] += w * p[0] as f32;
                acc[1] += w * p[1] as f32;
                acc[2] += w * p[2] as f32;
            }
            let at = r * out_width + o;
            tmp[at] = acc[0] * (1.0 / 255.0);
            tmp[tmp_plane + at] = acc[1] * (1.0 / 255.0);
            tmp[2 * tmp_plane + at] = acc[2] * (1.0 / 255.0);
        }
    }

    // Vertical pass: whole rows at a time (vectorises), straight into the planar output.
    let plane = out_width * out_height;
    let mut data = vec![0.0f32; 3 * plane];
    for c in 0..3 {
        let src = &tmp[c * tmp_plane..(c + 1) * tmp_plane];
        for o in 0..out_height {
            let out = &mut data[c * plane + o * out_width..c * plane + (o + 1) * out_width];
            let (s0, n) = (yw.start[o], yw.len[o]);
            for (k, &w) in yw.weights[o * yw.taps..o * yw.taps + n].iter().enumerate() {
                let row = &src[(s0 + k - row_lo) * out_width..(s0 + k - row_lo + 1) * out_width];
                out.iter_mut().zip(row).for_each(|(d, &v)| *d += w * v);
            }
            out.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        }
    }
    PlanarImage {
        width: out_width,
        height: out_height,
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The centred square of side min(width, height).
    fn centre_square(width: usize, height: usize) -> CropBox {
        let side = width.min(height) as f32;
        CropBox {
            x: (width as f32 - side) / 2.0,
            y: (height as f32 - side) / 2.0,
            width: side,
            height: side,
        }
    }

    fn gradient(w: usize, h: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(w * h * 3);
        for y in 0..h {
            for x in 0..w {
                v.extend_from_slice(&[(x * 255 / (w - 1)) as u8, (y * 255 / (h - 1)) as u8, 77]);
            }
        }
        v
    }

    #[test]
    fn identity_size_reproduces_the_pixels() {
        let (w, h) = (9, 7);
        let px = gradient(w, h);
        let out = resize_crop(&px, w, h, centre_square(w, w.max(h)).clone_full(w, h), w, h);
        for y in 0..h {
            for x in 0..w {
                for c in 0..3 {
                    let want = px[(y * w + x) * 3 + c] as f32 / 255.0;
                    let got = out.data[c * w * h + y * w + x];
                    assert!((want - got).abs() < 1e-5, "({x},{y},{c}) {want} {got}");
                }
            }
        }
    }

    #[test]
    fn constant_image_stays_constant_at_any_scale() {
        let px = vec![200u8; 50 * 30 * 3];
        for out in [5, 17, 64, 224] {
            let img = resize_crop(&px, 50, 30, centre_square(50, 30), out, out);
            assert!(img.data.iter().all(|v| (v - 200.0 / 255.0).abs() < 1e-5));
        }
    }

    #[test]
    fn downscale_by_two_averages_pairs() {
        // Antialiased 2x shrink of a 1-pixel checkerboard gives flat grey, not aliasing.
        let (w, h) = (16, 16);
        let mut px = vec![0u8; w * h * 3];
        for y in 0..h {
            for x in 0..w {
                let v = if (x + y) % 2 == 0 { 255 } else { 0 };
                px[(y * w + x) * 3..(y * w + x) * 3 + 3].copy_from_slice(&[v, v, v]);
            }
        }
        let img = resize_crop(&px, w, h, centre_square(w, h), 8, 8);
        let inner: Vec<f32> = (2..6)
            .flat_map(|y| (2..6).map(move |x| (x, y)))
            .map(|(x, y)| img.data[y * 8 + x])
            .collect();
        assert!(inner.iter().all(|v| (v - 0.5).abs() < 0.05), "{inner:?}");
    }

    impl CropBox {
        fn clone_full(self, w: usize, h: usize) -> CropBox {
            CropBox {
                x: 0.0,
                y: 0.0,
                width: w as f32,
                height: h as f32,
            }
        }
    }
}
