//! Which source a spec names, and its raw samples for one (seed, epoch, rank, world size).
//!
//! A source spec is parsed into one of four kinds (tar shards, a CSV/TSV table, an image
//! folder, the procedural dataset). Every kind produces the same `RawItem` stream (the types are in `raw`); the order
//! depends only on the [`EpochPlan`], never on threads, so the n-th item of an epoch is always
//! the same sample. Indexed sources (table, folder, synthetic) permute their index list; shards
//! are permuted as files and then mixed by a seeded shuffle buffer.

use std::path::Path;
use std::sync::Arc;

use super::folder::FolderSource;
use super::raw::{EpochPlan, RawItem};
use super::shard_layout::ShardLayout;
use super::shards::ShardSource;
use super::synthetic::{Split, SyntheticConfig, SyntheticSource, TEMPLATES};
use super::table::TableSource;
use crate::error::{CoreError, Result};
use crate::limits::{DEFAULT_MAX_IMAGE_BYTES, MAX_SHARD_NAMES};

/// A parsed data source.
pub enum Source {
    Shards(ShardSource),
    Table(TableSource),
    Folder(FolderSource),
    Synthetic(SyntheticSource),
}

/// Options that only some source kinds read.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    pub csv_image_key: String,
    pub csv_caption_key: String,
    pub csv_separator: Option<u8>,
    pub synthetic: SyntheticConfig,
    /// Bytes an encoded picture (a file, a shard member) may have; bigger ones are skipped
    /// as `too_large` without being read.
    pub max_image_bytes: u64,
}

impl Default for SourceOptions {
    fn default() -> Self {
        SourceOptions {
            csv_image_key: "filepath".into(),
            csv_caption_key: "title".into(),
            csv_separator: None,
            synthetic: SyntheticConfig::default(),
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
        }
    }
}

impl Source {
    /// Parses `spec`: `synthetic[:train|:heldout]`, a folder, a `.csv`/`.tsv` file, or one or
    /// more shard paths / brace patterns separated by `::` (webdataset's convention).
    pub fn open(spec: &str, options: &SourceOptions) -> Result<Source> {
        let spec = spec.trim();
        if spec.is_empty() {
            return Err(CoreError::invalid("source", "is empty"));
        }
        if options.max_image_bytes == 0 {
            return Err(CoreError::invalid("max_image_bytes", "must be at least 1"));
        }
        if let Some(rest) = spec.strip_prefix("synthetic") {
            let split = match rest {
                "" | ":train" => Split::Train,
                ":heldout" => Split::Heldout,
                other => {
                    return Err(CoreError::invalid(
                        "source",
                        format!("unknown synthetic split {other:?}; use synthetic:train or synthetic:heldout"),
                    ))
                }
            };
            return Ok(Source::Synthetic(SyntheticSource::new(
                split,
                options.synthetic.clone(),
            )?));
        }
        let path = Path::new(spec);
        if path.is_dir() {
            return Ok(Source::Folder(FolderSource::open(
                path,
                options.max_image_bytes,
            )?));
        }
        let lower = spec.to_ascii_lowercase();
        if lower.ends_with(".csv") || lower.ends_with(".tsv") {
            return Ok(Source::Table(TableSource::open(
                path,
                &options.csv_image_key,
                &options.csv_caption_key,
                options.csv_separator,
                options.max_image_bytes,
            )?));
        }
        Ok(Source::Shards(ShardSource::new(
            shard_names(spec)?,
            options.max_image_bytes,
        )?))
    }

    /// Bytes an encoded picture of this source may have (see [`SourceOptions`]).
    pub fn max_image_bytes(&self) -> u64 {
        match self {
            Source::Shards(s) => s.max_image_bytes(),
            Source::Table(t) => t.max_image_bytes(),
            Source::Folder(f) => f.max_image_bytes(),
            Source::Synthetic(_) => u64::MAX,
        }
    }

    /// Samples in one epoch over all ranks, where known without reading the data.
    pub fn len(&self) -> Option<usize> {
        match self {
            Source::Shards(_) => None,
            Source::Table(t) => Some(t.len()),
            Source::Folder(f) => Some(f.len()),
            Source::Synthetic(s) => Some(s.len()),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == Some(0)
    }

    pub fn class_names(&self) -> Option<Vec<String>> {
        match self {
            Source::Folder(f) => Some(f.class_names().to_vec()),
            Source::Shards(s) => s.class_names().map(<[String]>::to_vec),
            Source::Synthetic(s) => Some(s.class_names()),
            Source::Table(_) => None,
        }
    }

    /// Zero-shot prompts the source ships: the shards' `zeroshot_classification_templates.txt`,
    /// or the synthetic captions' own phrasings.
    pub fn templates(&self) -> Option<Vec<String>> {
        match self {
            Source::Shards(s) => s.layout().templates.clone(),
            Source::Synthetic(_) => Some(TEMPLATES.iter().map(|t| t.to_string()).collect()),
            _ => None,
        }
    }

    /// The CLIP_benchmark files (dataset type, class names, templates) that came with shards.
    pub fn shard_layout(&self) -> Option<&ShardLayout> {
        match self {
            Source::Shards(s) => Some(s.layout()),
            _ => None,
        }
    }

    pub fn synthetic(&self) -> Option<&SyntheticSource> {
        match self {
            Source::Synthetic(s) => Some(s),
            _ => None,
        }
    }

    /// The raw samples of one epoch on one rank, in their final order.
    pub fn epoch(self: &Arc<Self>, plan: EpochPlan) -> Box<dyn Iterator<Item = RawItem> + Send> {
        match &**self {
            Source::Shards(s) => s.epoch(plan),
            _ => {
                let n = self.len().unwrap_or(0);
                let order = plan.rank_share(n);
                let this = Arc::clone(self);
                Box::new(order.into_iter().map(move |i| match &*this {
                    Source::Table(t) => t.sample(i),
                    Source::Folder(f) => f.sample(i),
                    Source::Synthetic(s) => s.sample(i),
                    Source::Shards(_) => unreachable!("shards handled above"),
                }))
            }
        }
    }
}

/// The shard paths a shard source names: its `::`-separated parts, brace patterns expanded,
/// in order (repeats kept), at most [`MAX_SHARD_NAMES`] in all.
pub fn shard_names(spec: &str) -> Result<Vec<String>> {
    let mut shards = Vec::new();
    for part in spec.trim().split("::") {
        shards.extend(expand_braces(part)?);
        if shards.len() > MAX_SHARD_NAMES {
            return Err(too_many_names(spec));
        }
    }
    Ok(shards)
}

fn too_many_names(pattern: &str) -> CoreError {
    CoreError::invalid(
        "source",
        format!("{pattern:?} expands to more than {MAX_SHARD_NAMES} shard names"),
    )
}

/// Expands webdataset/bash brace patterns: `a-{000..003}.tar` (zero padding kept) and
/// `{x,y}`; several groups multiply out, to at most [`MAX_SHARD_NAMES`] names.
pub fn expand_braces(pattern: &str) -> Result<Vec<String>> {
    let Some(open) = pattern.find('{') else {
        if pattern.contains('}') {
            return Err(CoreError::invalid(
                "source",
                format!("unbalanced '}}' in {pattern:?}"),
            ));
        }
        return Ok(vec![pattern.to_string()]);
    };
    let close = pattern[open..]
        .find('}')
        .map(|c| open + c)
        .ok_or_else(|| CoreError::invalid("source", format!("unbalanced '{{' in {pattern:?}")))?;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let choices: Vec<String> = if let Some((lo, hi)) = body.split_once("..") {
        let bad = || {
            CoreError::invalid(
                "source",
                format!("bad range {{{body}}} in {pattern:?}: use {{000..009}}"),
            )
        };
        let (a, b) = (
            lo.parse::<u64>().map_err(|_| bad())?,
            hi.parse::<u64>().map_err(|_| bad())?,
        );
        if a > b {
            return Err(bad());
        }
        if b - a >= MAX_SHARD_NAMES as u64 {
            return Err(too_many_names(pattern));
        }
        let width = if lo.starts_with('0') && lo.len() > 1 {
            lo.len()
        } else {
            0
        };
        (a..=b).map(|i| format!("{i:0width$}")).collect()
    } else {
        body.split(',').map(str::to_string).collect()
    };
    let tails = expand_braces(tail)?;
    // Multiply out only what fits: `{0..999999}{0..999999}` would be 10^12 names.
    let total = choices.len().saturating_mul(tails.len());
    if total > MAX_SHARD_NAMES {
        return Err(too_many_names(pattern));
    }
    let mut out = Vec::with_capacity(total);
    for c in &choices {
        for rest in &tails {
            out.push(format!("{head}{c}{rest}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn braces_expand_ranges_with_padding_and_lists() {
        assert_eq!(
            expand_braces("d/t-{000..002}.tar").unwrap(),
            vec!["d/t-000.tar", "d/t-001.tar", "d/t-002.tar"]
        );
        assert_eq!(
            expand_braces("{a,b}-{1..2}").unwrap(),
            vec!["a-1", "a-2", "b-1", "b-2"]
        );
        assert_eq!(expand_braces("plain.tar").unwrap(), vec!["plain.tar"]);
        assert!(expand_braces("x-{3..1}.tar").is_err());
        assert!(expand_braces("x-{1..2.tar").is_err());
        assert!(expand_braces("x-{a..2}.tar").is_err());
    }

    #[test]
    fn braces_refuse_more_than_the_name_limit_before_allocating() {
        // 10^12 names: refused at once, not after filling memory (or aborting).
        let e = expand_braces("s-{0..999999}-{0..999999}.tar").unwrap_err();
        assert!(
            e.to_string().contains("more than 1000000 shard names"),
            "{e}"
        );
        assert!(expand_braces("s-{0..1000000}.tar").is_err());
        assert_eq!(expand_braces("s-{0..999999}.tar").unwrap().len(), 1_000_000);
        assert!(expand_braces("{a,b}-{0..499999}").is_ok());
        assert!(expand_braces("{a,b,c}-{0..499999}").is_err());
        // Several `::` parts count together.
        let spec = "s-{0..999999}.tar::t-{0..9}.tar";
        let e = Source::open(spec, &SourceOptions::default()).err().unwrap();
        assert!(e.to_string().contains("shard names"), "{e}");
    }

    #[test]
    fn shard_names_join_the_parts_in_order_keeping_repeats() {
        assert_eq!(
            shard_names("a-{0..1}.tar::b.tar::a-1.tar").unwrap(),
            vec!["a-0.tar", "a-1.tar", "b.tar", "a-1.tar"]
        );
        assert!(shard_names("x-{1..2.tar").is_err());
    }
}
