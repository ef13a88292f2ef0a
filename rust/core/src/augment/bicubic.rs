//! The evaluation transform's resize, pixel for pixel what open_clip's preprocessing gives:
//! torchvision `Resize(size, BICUBIC)` on a PIL image (shorter side to `size`), `CenterCrop`.
//!
//! torchvision hands the resize to Pillow, so the arithmetic here is Pillow's 8-bit
//! convolution resampling: a cubic kernel (a = -0.5) widened by the scale when shrinking,
//! weights normalised in double precision and then rounded to 22-bit fixed point, a
//! horizontal pass into an 8-bit image (rounded and clipped), then a vertical pass. Matching
//! each of those steps is what makes the output bit-identical rather than merely close: the
//! 8-bit intermediate alone moves pixels by one level against a float implementation.
//!
//! Only the pixels inside the centre crop are computed; every output pixel depends only on its
//! own row and column weights, so this equals resizing the whole image and cropping after.

/// Fractional bits of the fixed-point weights: 32 bits less 8 for the pixel value and 2 of
/// headroom for the kernel's negative lobes (as Pillow does for 8-bit images).
const PRECISION_BITS: u32 = 22;

/// Pillow's bicubic kernel (Keys, a = -0.5), support 2.
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// Fixed-point taps for one axis: output `o` reads `weights[o].len()` source pixels from
/// `first[o]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AxisTaps {
    pub first: Vec<usize>,
    pub weights: Vec<Vec<i32>>,
}

/// The taps that resize `src_len` pixels to `out_len`, for the outputs in `outputs` only.
pub fn axis_taps(src_len: usize, out_len: usize, outputs: std::ops::Range<usize>) -> AxisTaps {
    let scale = src_len as f64 / out_len as f64;
    // Shrinking widens the kernel so every source pixel contributes (antialiasing).
    let filter_scale = scale.max(1.0);
    let support = 2.0 * filter_scale;
    let mut first = Vec::with_capacity(outputs.len());
    let mut weights = Vec::with_capacity(outputs.len());
    for o in outputs {
        let centre = (o as f64 + 0.5) * scale;
        // Truncation toward zero, then clamping, as the C casts in Pillow do.
        let lo = ((centre - support + 0.5) as i64).max(0) as usize;
        let hi = ((centre + support + 0.5) as i64).min(src_len as i64) as usize;
        let raw: Vec<f64> = (lo..hi)
            .map(|s| cubic((s as f64 - centre + 0.5) / filter_scale))
            .collect();
        let total: f64 = raw.iter().sum();
        let fixed = raw
            .iter()
            .map(|&w| {
                let w = if total != 0.0 { w / total } else { w };
                // Round half away from zero, then truncate: Pillow's (int)(w * 2^22 +- 0.5).
                let scaled = w * f64::from(1u32 << PRECISION_BITS);
                (if scaled < 0.0 {
                    scaled - 0.5
                } else {
                    scaled + 0.5
                }) as i32
            })
            .collect();
        first.push(lo);
        weights.push(fixed);
    }
    AxisTaps { first, weights }
}

/// One weighted sum of 8-bit samples, rounded and clipped back to 8 bits.
fn convolve(samples: impl Iterator<Item = u8>, weights: &[i32]) -> u8 {
    let half = 1i32 << (PRECISION_BITS - 1);
    let acc = samples
        .zip(weights)
        .fold(half, |acc, (v, &w)| acc + i32::from(v) * w);
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// torchvision's `Resize(size)` output for a `width` x `height` image: the shorter side
/// becomes `size`, the longer one `int(size * long / short)` (truncated).
pub fn shortest_side_resize(width: usize, height: usize, size: usize) -> (usize, usize) {
    let long_of = |long: usize, short: usize| (size as f64 * long as f64 / short as f64) as usize;
    if width <= height {
        (size, long_of(height, width))
    } else {
        (long_of(width, height), size)
    }
}

/// torchvision's `CenterCrop` offset: `int(round((len - crop) / 2))`, Python's round (half
/// to even), which puts an odd margin's extra pixel on either side depending on its parity.
pub fn centre_crop_offset(len: usize, crop: usize) -> usize {
    ((len - crop) as f64 / 2.0).round_ties_even() as usize
}

/// Resizes interleaved RGB `pixels` (`width` x `height`) so the shorter side is `size`, with
/// Pillow's bicubic, and returns the centred `size` x `size` crop, interleaved RGB.
pub fn resize_shortest_centre_crop(
    pixels: &[u8],
    width: usize,
    height: usize,
    size: usize,
) -> Vec<u8> {
    let (out_w, out_h) = shortest_side_resize(width, height, size);
    let (left, top) = (
        centre_crop_offset(out_w, size),
        centre_crop_offset(out_h, size),
    );
    let xt = axis_taps(width, out_w, left..left + size);
    let yt = axis_taps(height, out_h, top..top + size);

    // Horizontal pass over only the source rows the vertical pass reads.
    let row_lo = yt.first.iter().copied().min().unwrap_or(0);
    let row_hi = (0..size)
        .map(|o| yt.first[o] + yt.weights[o].len())
        .max()
        .unwrap_or(0);
    let mut rows = vec![0u8; (row_hi - row_lo) * size * 3];
    for (r, out_row) in rows.chunks_exact_mut(size * 3).enumerate() {
        let src = &pixels[(row_lo + r) * width * 3..(row_lo + r + 1) * width * 3];
        for (o, out_px) in out_row.chunks_exact_mut(3).enumerate() {
            let (s0, ws) = (xt.first[o], &xt.weights[o]);
            for (c, v) in out_px.iter_mut().enumerate() {
                *v = convolve(src[s0 * 3 + c..].iter().step_by(3).copied(), ws);
            }
        }
    }

    // Vertical pass, 8-bit in and out like the horizontal one.
    let mut out = vec![0u8; size * size * 3];
    let stride = size * 3;
    for (o, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (s0, ws) = (yt.first[o] - row_lo, &yt.weights[o]);
        for (i, v) in out_row.iter_mut().enumerate() {
            *v = convolve(rows[s0 * stride + i..].iter().step_by(stride).copied(), ws);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cubic_kernel_is_keys_with_a_minus_half() {
        // Interpolating at the taps, zero at the support, and the textbook mid-point values.
        assert_eq!(cubic(0.0), 1.0);
        assert_eq!(cubic(1.0), 0.0);
        assert_eq!(cubic(-2.0), 0.0);
        assert_eq!(cubic(0.5), 0.5625);
        assert_eq!(cubic(-1.5), -0.0625);
    }

    #[test]
    fn identity_taps_are_exact_and_shrinking_widens_them() {
        let same = axis_taps(9, 9, 0..9);
        for o in 0..9 {
            let at = o - same.first[o];
            assert_eq!(same.weights[o][at], 1 << PRECISION_BITS, "{same:?}");
            assert_eq!(same.weights[o].iter().sum::<i32>(), 1 << PRECISION_BITS);
        }
        // Halving: support 4 source pixels each side of the centre, weights sum to one.
        let half = axis_taps(64, 32, 10..11);
        assert_eq!((half.first[0], half.weights[0].len()), (17, 8));
        let sum: i32 = half.weights[0].iter().sum();
        assert!((sum - (1 << PRECISION_BITS)).abs() <= 8, "{sum}");
        // Upscaling keeps the plain 4-tap kernel, with its negative lobes.
        let up = axis_taps(10, 40, 20..21);
        assert_eq!(up.weights[0].len(), 4);
        assert!(up.weights[0][0] < 0 && up.weights[0][3] < 0);
    }

    #[test]
    fn the_crop_and_output_size_round_as_torchvision() {
        assert_eq!(shortest_side_resize(300, 200, 224), (336, 224));
        assert_eq!(shortest_side_resize(96, 128, 224), (224, 298)); // 298.67 truncated
        assert_eq!(shortest_side_resize(40, 30, 224), (298, 224));
        // (299 - 224) / 2 = 37.5 -> 38 and (301 - 224) / 2 = 38.5 -> 38: half to even.
        assert_eq!(centre_crop_offset(299, 224), 38);
        assert_eq!(centre_crop_offset(301, 224), 38);
        assert_eq!(centre_crop_offset(224, 224), 0);
    }

    #[test]
    fn same_size_is_the_identity_and_flat_stays_flat() {
        let px: Vec<u8> = (0..12 * 12 * 3).map(|i| (i * 37 % 256) as u8).collect();
        assert_eq!(resize_shortest_centre_crop(&px, 12, 12, 12), px);
        let flat = vec![201u8; 50 * 30 * 3];
        for size in [5, 17, 64, 224] {
            let out = resize_shortest_centre_crop(&flat, 50, 30, size);
            assert!(out.iter().all(|&v| v == 201), "size {size}");
        }
    }

    #[test]
    fn overshoot_at_hard_edges_is_clipped() {
        // Upscaling a black/white step rings past 0 and 255 before clipping.
        let mut px = vec![0u8; 8 * 8 * 3];
        for y in 0..8 {
            for x in 4..8 {
                px[(y * 8 + x) * 3..(y * 8 + x) * 3 + 3].copy_from_slice(&[255, 255, 255]);
            }
        }
        let out = resize_shortest_centre_crop(&px, 8, 8, 32);
        let row: Vec<u8> = out[..32 * 3].iter().step_by(3).copied().collect();
        assert_eq!((row[0], row[31]), (0, 255));
        // Clipped, the ringing leaves a monotone ramp; wrapping would put bright values on
        // the dark side and dark ones on the bright side.
        assert!(row.windows(2).all(|w| w[0] <= w[1]), "{row:?}");
    }
}
