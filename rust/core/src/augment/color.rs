//! Colour augmentation on planar float images in [0, 1]: jitter and grayscale.
//!
//! The formulas follow torchvision's tensor ops (ITU-R 601 luma weights, clamping after each
//! op, HSV hue rotation) so a model trained here sees the same distribution as with
//! `transforms.ColorJitter` / `RandomGrayscale`.

use rand::seq::SliceRandom;
use rand::Rng;

use super::PlanarImage;

const LUMA: [f32; 3] = [0.2989, 0.587, 0.114];

/// ColorJitter strengths: factors are drawn from [1 - s, 1 + s] (hue: [-h, h] turns).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Jitter {
    pub brightness: f32,
    pub contrast: f32,
    pub saturation: f32,
    pub hue: f32,
}

impl Jitter {
    /// MoCo-v2's jitter (SPEC §2): 0.4 / 0.4 / 0.4 / 0.1.
    pub const MOCO: Jitter = Jitter {
        brightness: 0.4,
        contrast: 0.4,
        saturation: 0.4,
        hue: 0.1,
    };

    pub fn is_identity(&self) -> bool {
        self.brightness == 0.0 && self.contrast == 0.0 && self.saturation == 0.0 && self.hue == 0.0
    }

    /// Applies the four adjustments in a random order, as torchvision does.
    pub fn apply(&self, img: &mut PlanarImage, rng: &mut impl Rng) {
        let mut order = [0usize, 1, 2, 3];
        order.shuffle(rng);
        let factor = |rng: &mut dyn rand::RngCore, s: f32| {
            if s > 0.0 {
                rng.gen_range((1.0 - s).max(0.0)..=1.0 + s)
            } else {
                1.0
            }
        };
        // Draw every factor up front so the number of draws does not depend on the order.
        let b = factor(rng, self.brightness);
        let c = factor(rng, self.contrast);
        let s = factor(rng, self.saturation);
        let h = if self.hue > 0.0 {
            rng.gen_range(-self.hue..=self.hue)
        } else {
            0.0
        };
        for op in order {
            match op {
                0 if b != 1.0 => brightness(img, b),
                1 if c != 1.0 => contrast(img, c),
                2 if s != 1.0 => saturation(img, s),
                3 if h != 0.0 => hue(img, h),
                _ => {}
            }
        }
    }
}

fn planes(img: &mut PlanarImage) -> (&mut [f32], &mut [f32], &mut [f32]) {
    let n = img.width * img.height;
    let (r, rest) = img.data.split_at_mut(n);
    let (g, b) = rest.split_at_mut(n);
    (r, g, b)
}

pub fn brightness(img: &mut PlanarImage, f: f32) {
    img.data
        .iter_mut()
        .for_each(|v| *v = (*v * f).clamp(0.0, 1.0));
}

pub fn contrast(img: &mut PlanarImage, f: f32) {
    let n = (img.width * img.height) as f32;
    let (r, g, b) = planes(img);
    let mean = r
        .iter()
        .zip(g.iter())
        .zip(b.iter())
        .map(|((r, g), b)| LUMA[0] * r + LUMA[1] * g + LUMA[2] * b)
        .sum::<f32>()
        / n;
    let offset = (1.0 - f) * mean;
    img.data
        .iter_mut()
        .for_each(|v| *v = (f * *v + offset).clamp(0.0, 1.0));
}

pub fn saturation(img: &mut PlanarImage, f: f32) {
    let (r, g, b) = planes(img);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let grey = (1.0 - f) * (LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b);
        *r = (f * *r + grey).clamp(0.0, 1.0);
        *g = (f * *g + grey).clamp(0.0, 1.0);
        *b = (f * *b + grey).clamp(0.0, 1.0);
    }
}

/// Rotates the hue by `shift` turns (torchvision's `adjust_hue`).
///
/// Written without per-pixel branches (selects and the closed-form HSV→RGB
/// `v - c·clamp(min(k, 4 - k), 0, 1)` with `k = (n + h) mod 6`) so the loop vectorises; it is
/// the most expensive colour op.
pub fn hue(img: &mut PlanarImage, shift: f32) {
    let shift6 = shift * 6.0;
    let (r, g, b) = planes(img);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let (vr, vg, vb) = (*r, *g, *b);
        let max = vr.max(vg).max(vb);
        let min = vr.min(vg).min(vb);
        let chroma = max - min;
        // Grey pixels (chroma 0) come out unchanged whatever h is; avoid 0/0.
        let inv = 1.0 / if chroma > 0.0 { chroma } else { 1.0 };
        let h_r = (vg - vb) * inv;
        let h_g = (vb - vr) * inv + 2.0;
        let h_b = (vr - vg) * inv + 4.0;
        let mut h = if max == vr {
            h_r
        } else if max == vg {
            h_g
        } else {
            h_b
        };
        h += shift6; // now in [-4, 8)
        h += if h < 0.0 { 6.0 } else { 0.0 };
        h -= if h >= 6.0 { 6.0 } else { 0.0 };
        let channel = |n: f32| {
            let mut k = n + h;
            k -= if k >= 6.0 { 6.0 } else { 0.0 };
            max - chroma * k.min(4.0 - k).clamp(0.0, 1.0)
        };
        *r = channel(5.0);
        *g = channel(3.0);
        *b = channel(1.0);
    }
}

/// Replaces every channel by the luma (torchvision's `rgb_to_grayscale`, 3 output channels).
pub fn grayscale(img: &mut PlanarImage) {
    let (r, g, b) = planes(img);
    for ((r, g), b) in r.iter_mut().zip(g.iter_mut()).zip(b.iter_mut()) {
        let y = LUMA[0] * *r + LUMA[1] * *g + LUMA[2] * *b;
        *r = y;
        *g = y;
        *b = y;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pixel(rgb: [f32; 3]) -> PlanarImage {
        PlanarImage {
            width: 1,
            height: 1,
            data: rgb.to_vec(),
        }
    }

    #[test]
    fn hue_rotation_by_a_third_cycles_primaries() {
        let mut img = pixel([1.0, 0.0, 0.0]);
        hue(&mut img, 1.0 / 3.0);
        assert!(
            (img.data[0]).abs() < 1e-5 && (img.data[1] - 1.0).abs() < 1e-5,
            "{:?}",
            img.data
        );
        hue(&mut img, 1.0 / 3.0);
        assert!((img.data[2] - 1.0).abs() < 1e-5, "{:?}", img.data);
    }

    /// The textbook per-sector HSV round trip, as torchvision writes it.
    fn hue_reference(rgb: [f32; 3], shift: f32) -> [f32; 3] {
        let [r, g, b] = rgb;
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let c = max - min;
        if c == 0.0 {
            return rgb;
        }
        let h = if max == r {
            ((g - b) / c).rem_euclid(6.0)
        } else if max == g {
            (b - r) / c + 2.0
        } else {
            (r - g) / c + 4.0
        } / 6.0;
        let h = (h + shift).rem_euclid(1.0) * 6.0;
        let (s, v) = (c / max, max);
        let i = h.floor() as i32 % 6;
        let f = h - h.floor();
        let (p, q, t) = (v * (1.0 - s), v * (1.0 - s * f), v * (1.0 - s * (1.0 - f)));
        match i {
            0 => [v, t, p],
            1 => [q, v, p],
            2 => [p, v, t],
            3 => [p, q, v],
            4 => [t, p, v],
            _ => [v, p, q],
        }
    }

    #[test]
    fn hue_matches_the_sector_formula() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for _ in 0..5000 {
            let rgb = [rng.gen::<f32>(), rng.gen::<f32>(), rng.gen::<f32>()];
            let shift = rng.gen_range(-0.5..0.5);
            let mut img = pixel(rgb);
            hue(&mut img, shift);
            let want = hue_reference(rgb, shift);
            for c in 0..3 {
                assert!(
                    (img.data[c] - want[c]).abs() < 1e-4,
                    "{rgb:?} {shift} {:?} {want:?}",
                    img.data
                );
            }
        }
    }

    #[test]
    fn hue_round_trip_preserves_colour() {
        let mut img = pixel([0.3, 0.7, 0.2]);
        hue(&mut img, 0.0);
        assert!(img
            .data
            .iter()
            .zip([0.3, 0.7, 0.2])
            .all(|(a, b)| (a - b).abs() < 1e-5));
    }

    #[test]
    fn zero_saturation_is_grayscale() {
        let mut a = pixel([0.9, 0.2, 0.4]);
        let mut b = a.clone();
        saturation(&mut a, 0.0);
        grayscale(&mut b);
        assert_eq!(a.data, b.data);
        assert!((a.data[0] - (0.2989 * 0.9 + 0.587 * 0.2 + 0.114 * 0.4)).abs() < 1e-6);
    }

    #[test]
    fn contrast_zero_gives_the_mean_luma() {
        let mut img = PlanarImage {
            width: 2,
            height: 1,
            data: vec![1.0, 0.0, 1.0, 0.0, 1.0, 0.0],
        };
        contrast(&mut img, 0.0);
        let mean = (LUMA[0] + LUMA[1] + LUMA[2]) / 2.0;
        assert!(img.data.iter().all(|v| (v - mean).abs() < 1e-6));
    }
}
