//! The bundled procedural dataset: coloured shapes with compositional captions, no files.
//!
//! Scene `i` of a split is a pure function of (data seed, split, i): one to three shapes in
//! distinct cells of a 3x3 grid on a tinted gradient background, each with a colour, a shape
//! and a size, described by a caption such as "a small red circle to the left of a large blue
//! square". Six colour–shape combinations never occur in the training split; the held-out split
//! is built around them (each held-out scene contains exactly one, which is its label), so
//! zero-shot on it measures whether a model composes "red" and "triangle" it only ever saw
//! apart. Captions use "left"/"right" so the flip augmentation's word swap matters.

use rand::seq::SliceRandom;
use rand::Rng;

use super::raw::{Payload, RawItem, RawSample};
use crate::error::{CoreError, Location, Result};
use crate::limits::MAX_SYNTHETIC_SAMPLES;
use crate::rng::{sample_rng, splitmix64, streams};

pub const COLOURS: [(&str, [f32; 3]); 6] = [
    ("red", [0.86, 0.16, 0.16]),
    ("green", [0.16, 0.67, 0.24]),
    ("blue", [0.16, 0.31, 0.86]),
    ("yellow", [0.92, 0.82, 0.16]),
    ("purple", [0.55, 0.24, 0.71]),
    ("orange", [0.96, 0.55, 0.12]),
];
pub const SHAPES: [&str; 6] = ["circle", "square", "triangle", "diamond", "cross", "star"];
const SIZES: [(&str, f32); 2] = [("small", 0.085), ("large", 0.145)];

/// Zero-shot prompts in the captions' own grammar (`{c}` is a class name, "red triangle"):
/// every way a caption names a lone shape. As a CLIP_benchmark data set ships its
/// `zeroshot_classification_templates.txt`, the bundled data ships these; generic prompts
/// ("a photo of a red triangle.") use words its captions never contain.
pub const TEMPLATES: [&str; 8] = [
    "a small {c}",
    "a large {c}",
    "a small {c} on the left",
    "a large {c} on the left",
    "a small {c} in the middle",
    "a large {c} in the middle",
    "a small {c} on the right",
    "a large {c} on the right",
];

/// Colour i never appears as shape (i + 2) % 6 in training: every colour and every shape is
/// still seen in training, in other combinations.
pub fn is_heldout(colour: usize, shape: usize) -> bool {
    shape == (colour + 2) % SHAPES.len()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    Train,
    Heldout,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SyntheticConfig {
    /// Scenes per epoch; 0 means the split's default (train 20000, held-out 2000).
    pub num_samples: usize,
    /// Seeds the scenes (not the augmentation): the same data on every run.
    pub data_seed: u64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    pub colour: usize,
    pub shape: usize,
    pub large: bool,
    pub col: usize,
    pub row: usize,
    /// Centre and radius as fractions of the image side.
    pub cx: f32,
    pub cy: f32,
    pub radius: f32,
    pub shade: f32,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scene {
    pub shapes: Vec<Shape>,
    pub caption: String,
    pub label: i64,
    background: [f32; 3],
    gradient: [f32; 2],
}

pub struct SyntheticSource {
    split: Split,
    config: SyntheticConfig,
    len: usize,
}

impl SyntheticSource {
    pub fn new(split: Split, config: SyntheticConfig) -> Result<SyntheticSource> {
        let len = match (config.num_samples, split) {
            (0, Split::Train) => 20_000,
            (0, Split::Heldout) => 2_000,
            (n, _) => n,
        };
        if len > MAX_SYNTHETIC_SAMPLES {
            return Err(CoreError::invalid(
                "num_samples",
                format!("must be at most {MAX_SYNTHETIC_SAMPLES}, got {len}"),
            ));
        }
        Ok(SyntheticSource { split, config, len })
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn split(&self) -> Split {
        self.split
    }

    /// The (colour, shape) combinations labels refer to, in label order.
    pub fn classes(&self) -> Vec<(usize, usize)> {
        let heldout = self.split == Split::Heldout;
        (0..COLOURS.len())
            .flat_map(|c| (0..SHAPES.len()).map(move |s| (c, s)))
            .filter(|&(c, s)| is_heldout(c, s) == heldout)
            .collect()
    }

    pub fn class_names(&self) -> Vec<String> {
        self.classes()
            .into_iter()
            .map(|(c, s)| format!("{} {}", COLOURS[c].0, SHAPES[s]))
            .collect()
    }

    pub fn sample(&self, i: usize) -> RawItem {
        let scene = self.scene(i as u64);
        let name = match self.split {
            Split::Train => "synthetic:train",
            Split::Heldout => "synthetic:heldout",
        };
        Ok(RawSample {
            key: format!("{name}/{i}"),
            location: Location {
                source: name.into(),
                member: None,
                index: Some(i as u64),
            },
            payload: Payload::Synthetic(i as u64),
            captions: vec![scene.caption],
            label: Some(scene.label),
        })
    }

    /// Scene `index`: which shapes, where, and its caption.
    pub fn scene(&self, index: u64) -> Scene {
        let split_id = match self.split {
            Split::Train => 0,
            Split::Heldout => 1,
        };
        let mut rng = sample_rng(self.config.data_seed, split_id, index, streams::SCENE);
        let classes = self.classes();
        let train_combos: Vec<(usize, usize)> = (0..6)
            .flat_map(|c| (0..6).map(move |s| (c, s)))
            .filter(|&(c, s)| !is_heldout(c, s))
            .collect();
        let count = rng.gen_range(1..=3usize);
        // Two shapes share a column now and then, to teach "above"/"below" too.
        let vertical_pair = count == 2 && rng.gen_bool(0.3);
        let mut cells: Vec<(usize, usize)> = if vertical_pair {
            let col = rng.gen_range(0..3);
            let mut rows = [0usize, 1, 2];
            rows.shuffle(&mut rng);
            vec![(col, rows[0]), (col, rows[1])]
        } else {
            let mut cols = [0usize, 1, 2];
            cols.shuffle(&mut rng);
            cols[..count]
                .iter()
                .map(|&c| (c, rng.gen_range(0..3)))
                .collect()
        };
        let label_class = rng.gen_range(0..classes.len());
        let mut shapes = Vec::with_capacity(count);
        for (k, (col, row)) in cells.drain(..).enumerate() {
            let (colour, shape) = if k == 0 {
                classes[label_class]
            } else {
                *train_combos.choose(&mut rng).unwrap()
            };
            let large = rng.gen_bool(0.5);
            let radius = SIZES[large as usize].1 * rng.gen_range(0.9..1.1);
            let jitter = (0.167 - radius - 0.01).max(0.0);
            shapes.push(Shape {
                colour,
                shape,
                large,
                col,
                row,
                cx: (col as f32 + 0.5) / 3.0 + rng.gen_range(-jitter..=jitter),
                cy: (row as f32 + 0.5) / 3.0 + rng.gen_range(-jitter..=jitter),
                radius,
                shade: rng.gen_range(0.85..1.1),
            });
        }
        let grey = rng.gen_range(0.3..0.75f32);
        let background = [0, 1, 2].map(|_| grey + rng.gen_range(-0.06..0.06f32));
        let gradient = [rng.gen_range(-0.12..0.12f32), rng.gen_range(-0.12..0.12f32)];
        let caption = describe(&shapes, &mut rng);
        Scene {
            shapes,
            caption,
            label: label_class as i64,
            background,
            gradient,
        }
    }

    /// Renders scene `index` at `size` x `size`, interleaved RGB bytes.
    pub fn render(&self, index: u64, size: usize) -> Vec<u8> {
        render_scene(&self.scene(index), size)
    }
}

fn phrase(s: &Shape) -> String {
    format!(
        "a {} {} {}",
        SIZES[s.large as usize].0, COLOURS[s.colour].0, SHAPES[s.shape]
    )
}

fn describe(shapes: &[Shape], rng: &mut impl Rng) -> String {
    match shapes {
        [a] => {
            let place = ["on the left", "in the middle", "on the right"][a.col];
            if rng.gen_bool(0.5) {
                format!("{} {place}", phrase(a))
            } else {
                phrase(a)
            }
        }
        [a, b] if a.col == b.col => {
            let (top, bottom) = if a.row < b.row { (a, b) } else { (b, a) };
            if rng.gen_bool(0.5) {
                format!("{} above {}", phrase(top), phrase(bottom))
            } else {
                format!("{} below {}", phrase(bottom), phrase(top))
            }
        }
        [a, b] => {
            let (left, right) = if a.col < b.col { (a, b) } else { (b, a) };
            if rng.gen_bool(0.5) {
                format!("{} to the left of {}", phrase(left), phrase(right))
            } else {
                format!("{} to the right of {}", phrase(right), phrase(left))
            }
        }
        _ => {
            let mut sorted: Vec<&Shape> = shapes.iter().collect();
            sorted.sort_by_key(|s| s.col);
            let names: Vec<String> = sorted.iter().map(|s| phrase(s)).collect();
            let (last, rest) = names.split_last().unwrap();
            format!("{} and {} from left to right", rest.join(", "), last)
        }
    }
}

/// Signed distance (in radii) from a point to a shape's outline; negative inside.
fn signed_distance(shape: usize, x: f32, y: f32) -> f32 {
    let box_sd = |hx: f32, hy: f32| (x.abs() - hx).max(y.abs() - hy);
    // Indices into SHAPES (matched by number: this runs per pixel).
    match shape {
        0 => (x * x + y * y).sqrt() - 1.0,
        1 => box_sd(0.85, 0.85),
        3 => (x.abs() + y.abs() - 1.15) * std::f32::consts::FRAC_1_SQRT_2,
        2 => {
            let (x, y) = (x, y - 0.15);
            let edges = [(0.0, 1.0), (0.866, -0.5), (-0.866, -0.5)];
            edges
                .iter()
                .map(|(nx, ny)| nx * x + ny * y)
                .fold(f32::MIN, f32::max)
                - 0.6
        }
        4 => box_sd(1.0, 0.33).min(box_sd(0.33, 1.0)),
        _ => {
            // Five-pointed star: the outline's radius swings between 0.5 and 1 with the angle.
            let rho = (x * x + y * y).sqrt();
            let theta = y.atan2(x) + std::f32::consts::FRAC_PI_2;
            let swing = (0.5 + 0.5 * (5.0 * theta).cos()).powi(2);
            rho - (0.5 + 0.5 * swing)
        }
    }
}

/// Cheap deterministic per-pixel noise in [-1, 1] (texture for the background).
fn hash_noise(x: usize, y: usize, salt: u64) -> f32 {
    let h = splitmix64(((y as u64) << 32 | x as u64) ^ salt);
    (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
}

pub fn render_scene(scene: &Scene, size: usize) -> Vec<u8> {
    let inv = 1.0 / size as f32;
    let salt = (scene.background[0].to_bits() as u64) << 16;
    // Background: tint + linear gradient + a little texture.
    let mut rgb = vec![[0.0f32; 3]; size * size];
    for y in 0..size {
        for x in 0..size {
            let (u, v) = ((x as f32 + 0.5) * inv, (y as f32 + 0.5) * inv);
            let shift = scene.gradient[0] * (u - 0.5)
                + scene.gradient[1] * (v - 0.5)
                + 0.025 * hash_noise(x, y, salt);
            rgb[y * size + x] = scene.background.map(|c| c + shift);
        }
    }
    // Shapes, each only over its bounding box: every outline lies within 1.3 radii (the
    // triangle's corners reach 1.28).
    for s in &scene.shapes {
        let r_px = s.radius * size as f32;
        let colour = COLOURS[s.colour].1.map(|c| (c * s.shade).min(1.0));
        let span = |centre: f32| {
            let lo = ((centre - 1.35 * s.radius) * size as f32 - 1.0)
                .floor()
                .max(0.0) as usize;
            let hi = (((centre + 1.35 * s.radius) * size as f32 + 1.0)
                .ceil()
                .max(0.0) as usize)
                .min(size);
            lo..hi
        };
        for y in span(s.cy) {
            for x in span(s.cx) {
                let (u, v) = ((x as f32 + 0.5) * inv, (y as f32 + 0.5) * inv);
                let d =
                    signed_distance(s.shape, (u - s.cx) / s.radius, (v - s.cy) / s.radius) * r_px;
                let alpha = (0.5 - d).clamp(0.0, 1.0);
                if alpha > 0.0 {
                    let px = &mut rgb[y * size + x];
                    for c in 0..3 {
                        px[c] = px[c] * (1.0 - alpha) + colour[c] * alpha;
                    }
                }
            }
        }
    }
    rgb.iter()
        .flat_map(|px| px.map(|c| (c.clamp(0.0, 1.0) * 255.0 + 0.5) as u8))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(split: Split) -> SyntheticSource {
        SyntheticSource::new(split, SyntheticConfig::default()).unwrap()
    }

    #[test]
    fn splits_partition_the_combinations() {
        let (train, held) = (source(Split::Train), source(Split::Heldout));
        assert_eq!(train.classes().len(), 30);
        assert_eq!(held.classes().len(), 6);
        for i in 0..500 {
            let s = train.scene(i);
            assert!(s.shapes.iter().all(|sh| !is_heldout(sh.colour, sh.shape)));
            let h = held.scene(i);
            assert_eq!(
                h.shapes
                    .iter()
                    .filter(|sh| is_heldout(sh.colour, sh.shape))
                    .count(),
                1
            );
            assert_eq!(
                held.classes()[h.label as usize],
                (h.shapes[0].colour, h.shapes[0].shape)
            );
        }
    }

    #[test]
    fn captions_mention_every_shape_and_the_true_relation() {
        let src = source(Split::Train);
        for i in 0..300 {
            let s = src.scene(i);
            for sh in &s.shapes {
                assert!(
                    s.caption.contains(&phrase(sh)),
                    "{} lacks {}",
                    s.caption,
                    phrase(sh)
                );
            }
            if s.caption.contains("to the left of") {
                let (a, b) = s.caption.split_once(" to the left of ").unwrap();
                let col = |p: &str| s.shapes.iter().find(|sh| phrase(sh) == p).unwrap().col;
                assert!(col(a) < col(b), "{}", s.caption);
            }
        }
    }

    #[test]
    fn templates_are_the_captions_of_lone_shapes() {
        let src = source(Split::Train);
        let mut used = [false; TEMPLATES.len()];
        for i in 0..2000 {
            let s = src.scene(i);
            if let [sh] = s.shapes[..] {
                let class = format!("{} {}", COLOURS[sh.colour].0, SHAPES[sh.shape]);
                let hit = TEMPLATES
                    .iter()
                    .position(|t| t.replace("{c}", &class) == s.caption);
                let hit = hit.unwrap_or_else(|| panic!("no template gives {:?}", s.caption));
                used[hit] = true;
            }
        }
        assert!(
            used.iter().all(|&u| u),
            "templates no caption uses: {used:?}"
        );
    }

    #[test]
    fn rendering_is_deterministic_and_draws_the_colours() {
        let src = source(Split::Heldout);
        assert_eq!(src.render(7, 48), src.render(7, 48));
        let scene = src.scene(7);
        let img = render_scene(&scene, 64);
        let s = scene.shapes[0];
        let (x, y) = ((s.cx * 64.0) as usize, (s.cy * 64.0) as usize);
        let px = &img[(y * 64 + x) * 3..(y * 64 + x) * 3 + 3];
        let want = COLOURS[s.colour].1.map(|c| (c * s.shade).min(1.0) * 255.0);
        // Star and cross centres are inside the shape too.
        assert!(
            px.iter()
                .zip(want)
                .all(|(&p, w)| (p as f32 - w).abs() < 3.0),
            "{px:?} vs {want:?}"
        );
    }
}
