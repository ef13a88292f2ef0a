//! Image augmentation (SPEC §2): MoCo-v2 training transform and the evaluation transform.
//!
//! Training: RandomResizedCrop (scale 0.2–1, ratio 3/4–4/3) → colour jitter (p 0.8) →
//! grayscale (p 0.2) → Gaussian blur σ∈[0.1, 2] (p 0.5) → horizontal flip (p 0.5) → CLIP
//! normalisation. Evaluation: open_clip's preprocessing (Pillow bicubic of the shorter side to
//! `size`, torchvision's centre crop; see `bicubic.rs`). Images travel as planar
//! floats in [0, 1]; the flip and the normalisation are fused into the final write into the
//! batch buffer, so the flip costs nothing. Whether the image was flipped is returned so the
//! caller can swap "left"/"right" in the caption.

mod bicubic;
mod blur;
mod color;
mod resize;

pub use bicubic::{centre_crop_offset, resize_shortest_centre_crop, shortest_side_resize};
pub use blur::gaussian_blur;
pub use color::{brightness, contrast, grayscale, hue, saturation, Jitter};
pub use resize::{resize_crop, CropBox};

use rand::Rng;

use crate::error::{CoreError, Result};

/// CLIP's normalisation constants (OpenAI CLIP / open_clip).
pub const CLIP_MEAN: [f32; 3] = [0.481_454_66, 0.457_827_5, 0.408_210_73];
pub const CLIP_STD: [f32; 3] = [0.268_629_55, 0.261_302_6, 0.275_777_1];

/// A float RGB image, planar (C, H, W), values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct PlanarImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
}

/// The training transform's knobs; `Default` is SPEC §2 (MoCo-v2).
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentConfig {
    pub crop_scale: (f32, f32),
    pub crop_ratio: (f32, f32),
    pub jitter: Jitter,
    pub jitter_p: f32,
    pub grayscale_p: f32,
    pub blur_p: f32,
    pub blur_sigma: (f32, f32),
    pub flip_p: f32,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            crop_scale: (0.2, 1.0),
            crop_ratio: (3.0 / 4.0, 4.0 / 3.0),
            jitter: Jitter::MOCO,
            jitter_p: 0.8,
            grayscale_p: 0.2,
            blur_p: 0.5,
            blur_sigma: (0.1, 2.0),
            flip_p: 0.5,
        }
    }
}

impl AugmentConfig {
    pub fn validate(&self) -> Result<()> {
        let (s0, s1) = self.crop_scale;
        if !(s0 > 0.0 && s0 <= s1 && s1 <= 1.0) {
            return Err(CoreError::invalid(
                "crop_scale",
                format!("must satisfy 0 < lo <= hi <= 1, got ({s0}, {s1})"),
            ));
        }
        let (r0, r1) = self.crop_ratio;
        if !(r0 > 0.0 && r0 <= r1) {
            return Err(CoreError::invalid(
                "crop_ratio",
                format!("must satisfy 0 < lo <= hi, got ({r0}, {r1})"),
            ));
        }
        for (name, p) in [
            ("jitter_p", self.jitter_p),
            ("grayscale_p", self.grayscale_p),
            ("blur_p", self.blur_p),
            ("flip_p", self.flip_p),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(CoreError::invalid(
                    name,
                    format!("must be a probability in [0, 1], got {p}"),
                ));
            }
        }
        let j = self.jitter;
        for (name, v) in [
            ("brightness", j.brightness),
            ("contrast", j.contrast),
            ("saturation", j.saturation),
        ] {
            if !(v >= 0.0 && v.is_finite()) {
                return Err(CoreError::invalid(
                    format!("jitter.{name}"),
                    format!("must be >= 0, got {v}"),
                ));
            }
        }
        if !(0.0..=0.5).contains(&j.hue) {
            return Err(CoreError::invalid(
                "jitter.hue",
                format!("must lie in [0, 0.5], got {}", j.hue),
            ));
        }
        let (b0, b1) = self.blur_sigma;
        if !(b0 > 0.0 && b0 <= b1 && b1.is_finite()) {
            return Err(CoreError::invalid(
                "blur_sigma",
                format!("must satisfy 0 < lo <= hi, got ({b0}, {b1})"),
            ));
        }
        Ok(())
    }
}

/// torchvision's RandomResizedCrop box: ten tries at a random area and aspect ratio, then a
/// centre crop at the nearest allowed ratio.
pub fn random_resized_crop_box(
    width: usize,
    height: usize,
    scale: (f32, f32),
    ratio: (f32, f32),
    rng: &mut impl Rng,
) -> CropBox {
    let (w, h) = (width as f32, height as f32);
    let area = w * h;
    let (lr0, lr1) = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target = area * rng.gen_range(scale.0..=scale.1);
        let aspect = if lr1 > lr0 {
            rng.gen_range(lr0..lr1).exp()
        } else {
            ratio.0
        };
        let cw = (target * aspect).sqrt().round();
        let ch = (target / aspect).sqrt().round();
        if cw > 0.0 && ch > 0.0 && cw <= w && ch <= h {
            let x = rng.gen_range(0..=(width - cw as usize)) as f32;
            let y = rng.gen_range(0..=(height - ch as usize)) as f32;
            return CropBox {
                x,
                y,
                width: cw,
                height: ch,
            };
        }
    }
    let in_ratio = w / h;
    let (cw, ch) = if in_ratio < ratio.0 {
        (w, (w / ratio.0).round())
    } else if in_ratio > ratio.1 {
        ((h * ratio.1).round(), h)
    } else {
        (w, h)
    };
    CropBox {
        x: ((w - cw) / 2.0).floor(),
        y: ((h - ch) / 2.0).floor(),
        width: cw,
        height: ch,
    }
}

/// Runs the training transform on interleaved RGB `pixels`. Returns the image and whether it
/// must be flipped (the flip itself happens in [`write_normalized`] / [`write_u8`]).
pub fn train_transform(
    pixels: &[u8],
    width: usize,
    height: usize,
    size: usize,
    cfg: &AugmentConfig,
    rng: &mut impl Rng,
) -> (PlanarImage, bool) {
    let crop = random_resized_crop_box(width, height, cfg.crop_scale, cfg.crop_ratio, rng);
    let mut img = resize_crop(pixels, width, height, crop, size, size);
    // Draw every decision even when its op is disabled, so toggling one op does not reshuffle
    // the others' randomness.
    let do_jitter = rng.gen::<f32>() < cfg.jitter_p;
    if do_jitter && !cfg.jitter.is_identity() {
        cfg.jitter.apply(&mut img, rng);
    }
    if rng.gen::<f32>() < cfg.grayscale_p {
        grayscale(&mut img);
    }
    let do_blur = rng.gen::<f32>() < cfg.blur_p;
    let sigma = rng.gen_range(cfg.blur_sigma.0..=cfg.blur_sigma.1);
    if do_blur {
        gaussian_blur(&mut img, sigma);
    }
    let flip = rng.gen::<f32>() < cfg.flip_p;
    (img, flip)
}

/// The evaluation transform, open_clip's: shorter side to `size` with Pillow's bicubic, centre
/// crop `size` x `size` (the same 8-bit pixels as open_clip's `preprocess` on the PIL image).
pub fn eval_transform(pixels: &[u8], width: usize, height: usize, size: usize) -> PlanarImage {
    let rgb = resize_shortest_centre_crop(pixels, width, height, size);
    let plane = size * size;
    let mut data = vec![0.0f32; 3 * plane];
    for (i, px) in rgb.chunks_exact(3).enumerate() {
        for (c, &v) in px.iter().enumerate() {
            // The same division as torchvision's ToTensor, so the floats match too.
            data[c * plane + i] = f32::from(v) / 255.0;
        }
    }
    PlanarImage {
        width: size,
        height: size,
        data,
    }
}

/// Writes `img` into `dst` (len 3·H·W) normalised with CLIP mean/std, mirrored if `flip`.
pub fn write_normalized(img: &PlanarImage, flip: bool, dst: &mut [f32]) {
    let w = img.width;
    for (c, (src, out)) in img
        .data
        .chunks_exact(w * img.height)
        .zip(dst.chunks_exact_mut(w * img.height))
        .enumerate()
    {
        let (m, inv) = (CLIP_MEAN[c], 1.0 / CLIP_STD[c]);
        for (srow, orow) in src.chunks_exact(w).zip(out.chunks_exact_mut(w)) {
            if flip {
                orow.iter_mut()
                    .zip(srow.iter().rev())
                    .for_each(|(o, &v)| *o = (v - m) * inv);
            } else {
                orow.iter_mut()
                    .zip(srow)
                    .for_each(|(o, &v)| *o = (v - m) * inv);
            }
        }
    }
}

/// Writes `img` into `dst` as 0–255 bytes (normalisation left to the GPU), mirrored if `flip`.
pub fn write_u8(img: &PlanarImage, flip: bool, dst: &mut [u8]) {
    let w = img.width;
    for (srow, orow) in img.data.chunks_exact(w).zip(dst.chunks_exact_mut(w)) {
        let q = |v: f32| (v * 255.0 + 0.5).clamp(0.0, 255.0) as u8;
        if flip {
            orow.iter_mut()
                .zip(srow.iter().rev())
                .for_each(|(o, &v)| *o = q(v));
        } else {
            orow.iter_mut().zip(srow).for_each(|(o, &v)| *o = q(v));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crop_boxes_respect_scale_ratio_and_bounds() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for _ in 0..2000 {
            let (w, h) = (rng.gen_range(8..300), rng.gen_range(8..300));
            let b = random_resized_crop_box(w, h, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            assert!(
                b.x >= 0.0 && b.y >= 0.0 && b.x + b.width <= w as f32 && b.y + b.height <= h as f32
            );
            assert!(b.width >= 1.0 && b.height >= 1.0);
        }
        // On a square image the ten tries nearly always succeed: area within the scale range.
        let mut inside = 0;
        for _ in 0..500 {
            let b = random_resized_crop_box(200, 200, (0.2, 1.0), (0.75, 4.0 / 3.0), &mut rng);
            let frac = b.width * b.height / 40_000.0;
            let ratio = b.width / b.height;
            if (0.18..=1.02).contains(&frac) && (0.7..=1.4).contains(&ratio) {
                inside += 1;
            }
        }
        assert!(inside >= 495, "{inside}");
    }

    #[test]
    fn flip_and_normalisation_are_exact() {
        let img = PlanarImage {
            width: 3,
            height: 1,
            data: vec![0.0, 0.5, 1.0, 0.1, 0.2, 0.3, 0.9, 0.8, 0.7],
        };
        let mut out = vec![0.0; 9];
        write_normalized(&img, true, &mut out);
        let want_r: Vec<f32> = [1.0, 0.5, 0.0]
            .iter()
            .map(|v| (v - CLIP_MEAN[0]) / CLIP_STD[0])
            .collect();
        assert!(out[..3]
            .iter()
            .zip(&want_r)
            .all(|(a, b)| (a - b).abs() < 1e-6));
        let mut bytes = vec![0u8; 9];
        write_u8(&img, false, &mut bytes);
        assert_eq!(&bytes[..3], &[0, 128, 255]);
    }

    #[test]
    fn train_transform_is_a_function_of_the_rng() {
        let px: Vec<u8> = (0..64 * 48 * 3).map(|i| (i * 7 % 251) as u8).collect();
        let cfg = AugmentConfig::default();
        let a = train_transform(&px, 64, 48, 32, &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        let b = train_transform(&px, 64, 48, 32, &cfg, &mut ChaCha8Rng::seed_from_u64(9));
        assert_eq!(a, b);
        assert!(a.0.data.iter().all(|v| (0.0..=1.0).contains(v)));
        let c = train_transform(&px, 64, 48, 32, &cfg, &mut ChaCha8Rng::seed_from_u64(10));
        assert_ne!(a, c);
    }
}
