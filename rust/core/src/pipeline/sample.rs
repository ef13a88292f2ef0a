//! One sample from raw bytes to batch rows: decode, augment, pick and edit a caption,
//! tokenize, mask.
//!
//! Every random choice draws from a generator of `(seed, epoch, sample_id, stream)` alone
//! (`rng::sample_rng`; EDA's through `Eda::augment_sample`), one stream per concern, so a
//! sample comes out the same whichever thread handles it and however the batch is cut. The
//! rows are written straight into the batch buffers (no per-sample image allocation survives
//! the call).

use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::Rng;

use super::decode::{decode_rgb, JpegDecoding};
use super::decoded::RgbImage;
use super::files::read_limited;
use super::raw::{Payload, RawSample, Skip};
use super::source::Source;
use crate::augment::{eval_transform, train_transform, write_normalized, write_u8, AugmentConfig};
use crate::rng::{sample_rng, splitmix64, streams};
use crate::text::{mask_tokens, word_length, Eda, MlmConfig, Tokenizer, IGNORE_INDEX};

/// Characters of a caption kept before tokenization: 77 tokens never need more, and the cap
/// bounds the BPE work a pathological caption can cause.
pub const MAX_CAPTION_CHARS: usize = 2000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageDtype {
    /// CLIP-normalised float32.
    Float32,
    /// 0–255 bytes; the consumer normalises (on the GPU).
    Uint8,
}

/// What every sample of a pipeline goes through.
pub struct SampleConfig {
    pub image_size: usize,
    pub train: bool,
    pub augment: AugmentConfig,
    pub max_pixels: u64,
    pub image_dtype: ImageDtype,
    pub context_length: usize,
    pub tokenizer: Option<Arc<Tokenizer>>,
    /// EDA applied to training captions (None: captions are used as they are).
    pub eda: Option<Eda>,
    /// MLM masking (None: masked ids equal the ids and no label is set).
    pub mlm: Option<MlmConfig>,
    pub seed: u64,
    /// Captions a sample gives: the drawn one (`Slot::text`) and this many minus one others
    /// (`Slot::other_text`), each edited as the drawn one is (the flip's left/right swap,
    /// EDA). 1: the drawn caption only.
    pub captions_per_sample: usize,
}

/// The image rows of one batch slot.
pub enum ImageSlot<'a> {
    Float(&'a mut [f32]),
    Byte(&'a mut [u8]),
}

/// Mutable views of one batch slot's rows.
pub struct Slot<'a> {
    pub image: ImageSlot<'a>,
    pub text: &'a mut [i64],
    pub masked: &'a mut [i64],
    pub mlm_labels: &'a mut [i64],
    /// `captions_per_sample - 1` rows of `context_length` ids.
    pub other_text: &'a mut [i64],
}

/// What a processed sample reports besides its rows.
#[derive(Debug, Clone)]
pub struct SampleInfo {
    pub key: String,
    /// The file or shard the sample came from (`Location::source`): keys are unique only
    /// within one.
    pub source: String,
    pub caption: String,
    /// The place of the drawn caption in `all_captions`, before the flip's left/right swap,
    /// EDA and truncation edited its text; -1 when the sample has none (a labelled sample).
    pub caption_index: i64,
    pub all_captions: Vec<String>,
    /// The places of the other captions in `all_captions` (`captions_per_sample - 1` of
    /// them; -1 where the sample has none).
    pub other_caption_indices: Vec<i64>,
    pub label: Option<i64>,
    pub word_length: i64,
}

/// The `count` captions a sample gives beside the drawn one: while training a random order of
/// the others, otherwise their stored order, repeated when there are fewer than `count`; the
/// drawn caption itself when it is the only one; None for a sample without captions.
fn other_caption_indices(
    drawn: Option<usize>,
    captions: usize,
    count: usize,
    rng: Option<&mut impl Rng>,
) -> Vec<Option<usize>> {
    let Some(drawn) = drawn else {
        return vec![None; count];
    };
    let mut others: Vec<usize> = (0..captions).filter(|&i| i != drawn).collect();
    if others.is_empty() {
        others.push(drawn);
    }
    if let Some(rng) = rng {
        others.shuffle(rng);
    }
    (0..count).map(|j| Some(others[j % others.len()])).collect()
}

/// Swaps the words "left" and "right" (any case pattern of the first letter kept), so a
/// mirrored picture keeps a true caption.
pub fn swap_left_right(caption: &str) -> String {
    let mut out = String::with_capacity(caption.len() + 1);
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let swapped = match word.to_ascii_lowercase().as_str() {
            "left" => Some("right"),
            "right" => Some("left"),
            _ => None,
        };
        match swapped {
            Some(s) if word.starts_with(|c: char| c.is_ascii_uppercase()) => {
                out.push_str(&s[..1].to_ascii_uppercase());
                out.push_str(&s[1..]);
            }
            Some(s) => out.push_str(s),
            None => out.push_str(word),
        }
        word.clear();
    };
    for c in caption.chars() {
        if c.is_alphanumeric() {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Whether a caption has anything to tokenize: a caption of only whitespace and control
/// characters (NUL bytes, say) would train as an empty one, so it counts as empty.
fn has_text(caption: &str) -> bool {
    caption
        .chars()
        .any(|c| !c.is_whitespace() && !c.is_control())
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

fn load_pixels(raw: &RawSample, source: &Source, cfg: &SampleConfig) -> Result<RgbImage, Skip> {
    let skip = |kind, reason: String| Skip::new(kind, raw.location.clone(), reason);
    // Evaluation must see open_clip's pixels; training augments them at random anyway.
    let jpeg = if cfg.train {
        JpegDecoding::Fast
    } else {
        JpegDecoding::AsPillow
    };
    match &raw.payload {
        Payload::Encoded(bytes) => {
            decode_rgb(bytes, cfg.max_pixels, jpeg).map_err(|e| skip(e.kind, e.reason))
        }
        Payload::File(path) => {
            let bytes = read_limited(path, source.max_image_bytes())
                .map_err(|refusal| skip(refusal.kind, refusal.reason))?;
            decode_rgb(&bytes, cfg.max_pixels, jpeg)
                .map_err(|e| skip(e.kind, format!("{}: {}", path.display(), e.reason)))
        }
        Payload::Synthetic(index) => {
            let synthetic = source.synthetic().ok_or_else(|| {
                skip(
                    "corrupt_image",
                    "synthetic sample outside the synthetic source".into(),
                )
            })?;
            let size = cfg.image_size;
            Ok(RgbImage {
                width: size,
                height: size,
                pixels: synthetic.render(*index, size),
            })
        }
    }
}

/// Processes `raw` into `slot`. `sample_id` is the sample's unique index within the epoch
/// (over all ranks), the only per-sample input to its random streams.
pub fn process_sample(
    raw: &RawSample,
    source: &Source,
    cfg: &SampleConfig,
    epoch: u64,
    sample_id: u64,
    slot: Slot<'_>,
) -> Result<SampleInfo, Skip> {
    let rng = |stream| sample_rng(cfg.seed, epoch, sample_id, stream);

    // Caption first: it is cheap and an unusable one saves the decode.
    let captions: Vec<String> = raw
        .captions
        .iter()
        .map(|c| c.trim())
        .filter(|c| has_text(c))
        .map(str::to_string)
        .collect();
    // A labelled sample (classification shards with no class names known) may go without a
    // caption: zero-shot evaluation never reads it. Anything else needs one.
    if captions.is_empty() && raw.label.is_none() {
        let reason = if raw.captions.is_empty() {
            "sample has no caption"
        } else {
            "caption is empty or only whitespace and control characters"
        };
        return Err(Skip::new("empty_caption", raw.location.clone(), reason));
    }
    let caption_index = match captions.len() {
        0 => None,
        n if cfg.train && n > 1 => Some(rng(streams::CAPTION).gen_range(0..n)),
        _ => Some(0),
    };
    let mut caption = caption_index
        .map(|i| truncate_chars(&captions[i], MAX_CAPTION_CHARS).to_string())
        .unwrap_or_default();

    let pixels = load_pixels(raw, source, cfg)?;
    let (image, flip) = if cfg.train {
        train_transform(
            &pixels.pixels,
            pixels.width,
            pixels.height,
            cfg.image_size,
            &cfg.augment,
            &mut rng(streams::IMAGE),
        )
    } else {
        (
            eval_transform(&pixels.pixels, pixels.width, pixels.height, cfg.image_size),
            false,
        )
    };
    match slot.image {
        ImageSlot::Float(dst) => write_normalized(&image, flip, dst),
        ImageSlot::Byte(dst) => write_u8(&image, flip, dst),
    }
    // `row` 0 is the drawn caption; each other caption draws its EDA edit from a seed of its
    // own, so the edits of one sample's captions are independent.
    let edit = |text: &str, row: u64| {
        let mut text = truncate_chars(text, MAX_CAPTION_CHARS).to_string();
        if flip {
            text = swap_left_right(&text);
        }
        let seed = match row {
            0 => cfg.seed,
            _ => splitmix64(cfg.seed ^ splitmix64(streams::OTHER_CAPTIONS << 32 | row)),
        };
        match &cfg.eda {
            Some(eda) if cfg.train => eda.augment_sample(&text, seed, epoch, sample_id),
            _ => text,
        }
    };
    let tokenize = |text: &str, row: &mut [i64]| {
        row.iter_mut().for_each(|v| *v = 0);
        if let Some(tokenizer) = &cfg.tokenizer {
            tokenizer.tokenize_into(text, row);
        }
    };
    caption = edit(&caption, 0);
    tokenize(&caption, slot.text);
    let count = cfg.captions_per_sample.saturating_sub(1);
    let others = match count {
        0 => Vec::new(),
        _ => other_caption_indices(
            caption_index,
            captions.len(),
            count,
            cfg.train.then(|| rng(streams::OTHER_CAPTIONS)).as_mut(),
        ),
    };
    for (row, (index, ids)) in others
        .iter()
        .zip(slot.other_text.chunks_exact_mut(cfg.context_length))
        .enumerate()
    {
        let text = index.map(|i| edit(&captions[i], row as u64 + 1));
        tokenize(&text.unwrap_or_default(), ids);
    }
    match &cfg.mlm {
        Some(mlm) if cfg.tokenizer.is_some() => {
            let (masked, labels) = mask_tokens(slot.text, mlm, &mut rng(streams::MLM));
            slot.masked.copy_from_slice(&masked);
            slot.mlm_labels.copy_from_slice(&labels);
        }
        _ => {
            slot.masked.copy_from_slice(slot.text);
            slot.mlm_labels.iter_mut().for_each(|v| *v = IGNORE_INDEX);
        }
    }
    Ok(SampleInfo {
        key: raw.key.clone(),
        source: raw.location.source.clone(),
        word_length: word_length(slot.text) as i64,
        caption,
        caption_index: caption_index.map_or(-1, |i| i as i64),
        all_captions: captions,
        other_caption_indices: others.iter().map(|i| i.map_or(-1, |i| i as i64)).collect(),
        label: raw.label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn left_and_right_swap_as_whole_words() {
        assert_eq!(
            swap_left_right("a red circle to the left of a cube"),
            "a red circle to the right of a cube"
        );
        assert_eq!(
            swap_left_right("Right: left-handed, leftover; RIGHT"),
            "Left: right-handed, leftover; Left"
        );
        assert_eq!(swap_left_right(""), "");
        let s = "from left to right";
        assert_eq!(swap_left_right(&swap_left_right(s)), s);
    }

    #[test]
    fn captions_of_only_controls_and_spaces_have_no_text() {
        assert!(!has_text("\0\0\0"));
        assert!(!has_text(" \t\u{7f}\u{85}\u{a0}\n"));
        assert!(has_text("\0a\0"));
        assert!(has_text("é"));
    }

    fn drawn(captions: &[&str], label: Option<i64>, train: bool, flip_p: f32) -> Vec<SampleInfo> {
        drawn_with(captions, label, train, flip_p, 1)
    }

    fn drawn_with(
        captions: &[&str],
        label: Option<i64>,
        train: bool,
        flip_p: f32,
        captions_per_sample: usize,
    ) -> Vec<SampleInfo> {
        let options = crate::pipeline::source::SourceOptions::default();
        let source = Source::open("synthetic", &options).unwrap();
        let cfg = SampleConfig {
            image_size: 8,
            train,
            augment: AugmentConfig {
                flip_p,
                ..AugmentConfig::default()
            },
            max_pixels: 1 << 20,
            image_dtype: ImageDtype::Uint8,
            context_length: 4,
            tokenizer: None,
            eda: None,
            mlm: None,
            seed: 7,
            captions_per_sample,
        };
        let raw = RawSample {
            key: "k".into(),
            location: crate::error::Location {
                source: "shard-3.tar".into(),
                ..Default::default()
            },
            payload: Payload::Synthetic(0),
            captions: captions.iter().map(|c| c.to_string()).collect(),
            label,
        };
        let (mut image, mut text, mut masked, mut labels) =
            (vec![0u8; 192], [0; 4], [0; 4], [0; 4]);
        let mut other_text = vec![0; 4 * (captions_per_sample - 1)];
        (0..40)
            .map(|sample_id| {
                let slot = Slot {
                    image: ImageSlot::Byte(&mut image),
                    text: &mut text,
                    masked: &mut masked,
                    mlm_labels: &mut labels,
                    other_text: &mut other_text,
                };
                process_sample(&raw, &source, &cfg, 0, sample_id, slot).unwrap()
            })
            .collect()
    }

    #[test]
    fn the_caption_index_names_the_drawn_caption_in_all_captions() {
        // Empty captions are filtered out before the draw: indices are into the kept ones.
        let captions = [
            "a dog on the left",
            " ",
            "a cat",
            "\0",
            "two birds right here",
        ];
        for info in drawn(&captions, None, true, 0.0) {
            let i = usize::try_from(info.caption_index).unwrap();
            assert_eq!(info.caption, info.all_captions[i]);
            assert_eq!(info.all_captions.len(), 3);
            assert_eq!(info.source, "shard-3.tar");
        }
        let picked: std::collections::HashSet<i64> = drawn(&captions, None, true, 0.0)
            .iter()
            .map(|info| info.caption_index)
            .collect();
        assert_eq!(
            picked.len(),
            3,
            "40 draws should reach every caption: {picked:?}"
        );
        // The flip edits the text, not which caption was drawn.
        for info in drawn(&captions, None, true, 1.0) {
            let original = &info.all_captions[info.caption_index as usize];
            assert_eq!(info.caption, swap_left_right(original));
        }
        assert!(drawn(&captions, None, false, 0.0)
            .iter()
            .all(|info| info.caption_index == 0));
        assert!(drawn(&[], Some(2), true, 0.0)
            .iter()
            .all(|info| info.caption_index == -1 && info.caption.is_empty()));
    }

    #[test]
    fn other_captions_are_the_ones_not_drawn_in_a_random_order_repeated_when_too_few() {
        let five = ["a", "b", "c", "d", "e"];
        let single = drawn(&five, None, true, 0.0);
        let orders: std::collections::HashSet<Vec<i64>> = drawn_with(&five, None, true, 0.0, 5)
            .into_iter()
            .zip(single)
            .map(|(info, alone)| {
                // The drawn caption is the one a single-caption pipeline draws.
                assert_eq!(info.caption_index, alone.caption_index);
                let mut all = info.other_caption_indices.clone();
                all.push(info.caption_index);
                all.sort();
                assert_eq!(all, [0, 1, 2, 3, 4]);
                info.other_caption_indices
            })
            .collect();
        assert!(
            orders.len() > 10,
            "40 samples should give many orders: {orders:?}"
        );
        // Two captions, three others wanted: the one not drawn, three times.
        for info in drawn_with(&five[..2], None, true, 0.0, 4) {
            let other = 1 - info.caption_index;
            assert_eq!(info.other_caption_indices, [other; 3]);
        }
        // One caption: itself. Evaluation: the stored order. No caption: none.
        assert!(drawn_with(&five[..1], None, true, 0.0, 3)
            .iter()
            .all(|info| info.other_caption_indices == [0, 0]));
        assert!(drawn_with(&five, None, false, 0.0, 3)
            .iter()
            .all(|info| info.caption_index == 0 && info.other_caption_indices == [1, 2]));
        assert!(drawn_with(&[], Some(2), true, 0.0, 2)
            .iter()
            .all(|info| info.other_caption_indices == [-1]));
        assert!(drawn(&five, None, true, 0.0)
            .iter()
            .all(|info| info.other_caption_indices.is_empty()));
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("ab", 5), "ab");
    }
}
