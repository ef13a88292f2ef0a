//! webdataset `.tar` shards: members grouped into samples by key, read on a background thread.
//!
//! A sample is the run of consecutive members sharing a key (the member path up to the first
//! dot of its file name, webdataset's rule). The picture is the `.jpg/.jpeg/.png/.webp` member,
//! the captions come from `.json` (`captions` list, or a `caption` string) or else `.txt`.
//! A class label, for zero-shot classification shards, comes from a `.cls` member (the class
//! index as text, webdataset's and CLIP_benchmark's convention) or the `.json`'s `label`; the
//! class names from a `classnames.txt` (one per line, in label order) beside the shards or in
//! their parent folder, as CLIP_benchmark lays its webdatasets out. A labelled sample without
//! a caption gets "a photo of a <class>." (as image folders do), or "" when no names are known.
//! One thread reads the rank's shards in order and hands samples over a bounded channel, so
//! I/O overlaps decoding while the order stays that of the files; a seeded shuffle buffer then
//! mixes samples across shards.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};
use rand::Rng;
use rand_chacha::ChaCha8Rng;

use super::source::{EpochPlan, Payload, RawItem, RawSample, Skip, BUFFER_STREAM};
use crate::error::{CoreError, Location, Result};
use crate::text::sample_rng;

/// Members larger than this are refused without reading them (a corrupt size field would
/// otherwise make us allocate gigabytes).
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

/// CLIP_benchmark's name for the class-name list of a webdataset.
pub const CLASS_NAMES_FILE: &str = "classnames.txt";

pub struct ShardSource {
    shards: Vec<String>,
    class_names: Option<Arc<Vec<String>>>,
}

impl ShardSource {
    pub fn new(shards: Vec<String>) -> Result<ShardSource> {
        if shards.is_empty() {
            return Err(CoreError::invalid("source", "names no shard"));
        }
        if !shards.iter().any(|s| Path::new(s).exists()) {
            let shown = if shards.len() == 1 {
                shards[0].clone()
            } else {
                format!("{} .. {}", shards[0], shards[shards.len() - 1])
            };
            return Err(CoreError::invalid(
                "source",
                format!("no shard exists: {shown} ({} path(s) named)", shards.len()),
            ));
        }
        let class_names = find_class_names(&shards)?.map(Arc::new);
        Ok(ShardSource {
            shards,
            class_names,
        })
    }

    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    /// Names of the classes the labels index, when a `classnames.txt` came with the shards.
    pub fn class_names(&self) -> Option<&[String]> {
        self.class_names.as_deref().map(Vec::as_slice)
    }

    /// This rank's samples: shards split between ranks when there are enough of them, else
    /// every rank reads every shard and keeps every world_size-th sample.
    pub fn epoch(&self, plan: EpochPlan) -> Box<dyn Iterator<Item = RawItem> + Send> {
        let order: Vec<String> = plan
            .permutation(self.shards.len())
            .into_iter()
            .map(|i| self.shards[i].clone())
            .collect();
        let world = plan.world_size as usize;
        let (mine, sample_stride) = if self.shards.len() >= world {
            (
                order
                    .into_iter()
                    .skip(plan.rank as usize)
                    .step_by(world)
                    .collect(),
                None,
            )
        } else {
            (order, Some((plan.rank, plan.world_size)))
        };
        let (tx, rx) = bounded(256);
        let names = self.class_names.clone();
        std::thread::Builder::new()
            .name("lightclip-shards".into())
            .spawn(move || read_shards(&mine, sample_stride, names.as_deref(), &tx))
            .map(|_| ())
            .unwrap_or_else(|e| {
                // No thread: the receiver sees a closed channel right away; report why.
                let _ = e;
            });
        let items = ChannelItems { rx };
        if plan.shuffle && plan.shuffle_buffer > 1 {
            let rng = sample_rng(plan.seed, plan.epoch, plan.rank, BUFFER_STREAM);
            Box::new(ShuffleBuffer::new(items, plan.shuffle_buffer, rng))
        } else {
            Box::new(items)
        }
    }
}

struct ChannelItems {
    rx: Receiver<RawItem>,
}

impl Iterator for ChannelItems {
    type Item = RawItem;
    fn next(&mut self) -> Option<RawItem> {
        self.rx.recv().ok()
    }
}

/// Holds up to `capacity` samples and releases a random one for each that comes in. Skips
/// pass straight through (they carry no data to mix).
pub struct ShuffleBuffer<I> {
    inner: I,
    buffer: Vec<RawSample>,
    capacity: usize,
    rng: ChaCha8Rng,
    pending_skip: VecDeque<Skip>,
    exhausted: bool,
}

impl<I: Iterator<Item = RawItem>> ShuffleBuffer<I> {
    pub fn new(inner: I, capacity: usize, rng: ChaCha8Rng) -> Self {
        ShuffleBuffer {
            inner,
            buffer: Vec::with_capacity(capacity),
            capacity,
            rng,
            pending_skip: VecDeque::new(),
            exhausted: false,
        }
    }
}

impl<I: Iterator<Item = RawItem>> Iterator for ShuffleBuffer<I> {
    type Item = RawItem;
    fn next(&mut self) -> Option<RawItem> {
        while !self.exhausted && self.buffer.len() < self.capacity && self.pending_skip.is_empty() {
            match self.inner.next() {
                Some(Ok(sample)) => self.buffer.push(sample),
                Some(Err(skip)) => self.pending_skip.push_back(skip),
                None => self.exhausted = true,
            }
        }
        if let Some(skip) = self.pending_skip.pop_front() {
            return Some(Err(skip));
        }
        if self.buffer.is_empty() {
            return None;
        }
        let i = self.rng.gen_range(0..self.buffer.len());
        Some(Ok(self.buffer.swap_remove(i)))
    }
}

/// Splits a member path into (key, extension): `dir/abc.seg.jpg` -> (`dir/abc`, `seg.jpg`).
pub fn split_key(path: &str) -> Option<(&str, &str)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[name_start..].find('.')? + name_start;
    Some((&path[..dot], &path[dot + 1..]))
}

/// The members of one sample seen so far.
#[derive(Default)]
struct Group {
    key: String,
    image: Option<(String, Vec<u8>)>,
    json: Option<(String, Vec<u8>)>,
    txt: Option<(String, Vec<u8>)>,
    cls: Option<(String, Vec<u8>)>,
}

/// `classnames.txt` in the folder of the first shard, else in its parent; None when neither
/// has one. An empty or unreadable file is an error: it was clearly meant to be read.
fn find_class_names(shards: &[String]) -> Result<Option<Vec<String>>> {
    let Some(first) = shards.iter().map(Path::new).find(|p| p.exists()) else {
        return Ok(None);
    };
    let folder = first.parent().unwrap_or(Path::new(""));
    let candidates = [folder.join(CLASS_NAMES_FILE)]
        .into_iter()
        .chain(folder.parent().map(|p| p.join(CLASS_NAMES_FILE)));
    for path in candidates {
        if !path.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|e| CoreError::Io {
            path: path.clone(),
            source: e,
        })?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        if names.is_empty() {
            return Err(CoreError::data(
                Location {
                    source: path.display().to_string(),
                    member: None,
                    index: None,
                },
                "class-name file lists no class",
            ));
        }
        return Ok(Some(names));
    }
    Ok(None)
}

fn read_shards(
    shards: &[String],
    stride: Option<(u64, u64)>,
    class_names: Option<&Vec<String>>,
    tx: &Sender<RawItem>,
) {
    let mut counter = 0u64;
    for shard in shards {
        let mut emit = |item: RawItem| -> bool {
            let keep = match stride {
                Some((rank, world)) => counter % world == rank,
                None => true,
            };
            counter += 1;
            !keep || tx.send(item).is_ok()
        };
        if !read_one_shard(shard, class_names.map(Vec::as_slice), &mut emit) {
            return; // the consumer went away
        }
    }
}

/// Reads one shard, calling `emit` per sample or skip; false from `emit` stops everything.
fn read_one_shard(
    shard: &str,
    class_names: Option<&[String]>,
    emit: &mut dyn FnMut(RawItem) -> bool,
) -> bool {
    let at = |member: Option<String>| Location {
        source: shard.to_string(),
        member,
        index: None,
    };
    let file = match File::open(shard) {
        Ok(f) => f,
        Err(e) => {
            return emit(Err(Skip::new(
                "unreadable",
                at(None),
                format!("cannot open shard: {e}"),
            )))
        }
    };
    let mut archive = tar::Archive::new(BufReader::with_capacity(1 << 20, file));
    let entries = match archive.entries() {
        Ok(e) => e,
        Err(e) => {
            return emit(Err(Skip::new(
                "unreadable",
                at(None),
                format!("not a tar file: {e}"),
            )))
        }
    };
    let mut group = Group::default();
    let mut last_member: Option<String> = None;
    for entry in entries {
        let mut entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let after = last_member
                    .as_deref()
                    .map(|m| format!(" after member {m}"))
                    .unwrap_or_default();
                return emit(Err(Skip::new("truncated_shard", at(last_member.clone()), format!("tar ends early or is corrupt{after}: {e}; the rest of the shard is skipped"))));
            }
        };
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = match entry.path() {
            Ok(p) => p.to_string_lossy().into_owned(),
            Err(e) => {
                return emit(Err(Skip::new(
                    "truncated_shard",
                    at(last_member.clone()),
                    format!("unreadable member name: {e}"),
                )))
            }
        };
        last_member = Some(path.clone());
        let Some((key, ext)) = split_key(&path) else {
            continue;
        };
        let (key, ext) = (key.to_string(), ext.to_ascii_lowercase());
        if key != group.key && !group.key.is_empty() {
            let done = std::mem::take(&mut group);
            if !emit(finish_group(shard, done, class_names)) {
                return false;
            }
        }
        group.key = key;
        let size = entry.header().size().unwrap_or(u64::MAX);
        let wanted = IMAGE_EXTENSIONS.contains(&ext.as_str())
            || matches!(ext.as_str(), "json" | "txt" | "cls");
        if !wanted {
            continue;
        }
        if size > MAX_MEMBER_BYTES {
            if !emit(Err(Skip::new(
                "too_large",
                at(Some(path)),
                format!("member is {size} bytes, above {MAX_MEMBER_BYTES}"),
            ))) {
                return false;
            }
            continue;
        }
        let mut bytes = Vec::with_capacity(size as usize);
        if let Err(e) = entry.read_to_end(&mut bytes) {
            return emit(Err(Skip::new(
                "truncated_shard",
                at(Some(path)),
                format!("tar ends inside this member: {e}; the rest of the shard is skipped"),
            )));
        }
        if IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            group.image.get_or_insert((path, bytes));
        } else if ext == "json" {
            group.json = Some((path, bytes));
        } else if ext == "cls" {
            group.cls = Some((path, bytes));
        } else {
            group.txt = Some((path, bytes));
        }
    }
    if !group.key.is_empty() {
        return emit(finish_group(shard, group, class_names));
    }
    true
}

fn finish_group(shard: &str, group: Group, class_names: Option<&[String]>) -> RawItem {
    let loc = |member: Option<String>| Location {
        source: shard.to_string(),
        member,
        index: None,
    };
    let Some((image_member, image)) = group.image else {
        return Err(Skip::new(
            "missing_image",
            loc(Some(group.key.clone())),
            format!("sample {} has no .jpg/.jpeg/.png/.webp member", group.key),
        ));
    };
    let json = match &group.json {
        Some((member, bytes)) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(value) => Some((member, value)),
            Err(e) => {
                return Err(Skip::new(
                    "invalid_caption",
                    loc(Some(member.clone())),
                    format!("caption JSON does not parse: {e}"),
                ))
            }
        },
        None => None,
    };
    let label = match sample_label(&group.cls, json.as_ref().map(|(m, v)| (*m, v)), class_names) {
        Ok(label) => label,
        Err((member, reason)) => return Err(Skip::new("invalid_label", loc(Some(member)), reason)),
    };
    let captions = match (json.as_ref(), group.txt) {
        (Some((member, value)), _) if label.is_none() || has_captions(value) => {
            match json_captions(value) {
                Ok(c) => c,
                Err(reason) => {
                    return Err(Skip::new(
                        "invalid_caption",
                        loc(Some((*member).clone())),
                        reason,
                    ))
                }
            }
        }
        (_, Some((member, bytes))) => match String::from_utf8(bytes) {
            Ok(text) => vec![text],
            Err(_) => {
                return Err(Skip::new(
                    "invalid_caption",
                    loc(Some(member)),
                    "caption is not valid UTF-8",
                ))
            }
        },
        _ => match label {
            // Classification shards carry no caption: name the class, as image folders do.
            Some(index) => vec![class_names
                .and_then(|names| names.get(index as usize))
                .map(|name| format!("a photo of a {name}."))
                .unwrap_or_default()],
            None => {
                return Err(Skip::new(
                    "missing_caption",
                    loc(Some(image_member)),
                    format!("sample {} has no .txt or .json caption", group.key),
                ))
            }
        },
    };
    Ok(RawSample {
        key: group.key,
        location: loc(Some(image_member)),
        payload: Payload::Encoded(image),
        captions,
        label,
    })
}

/// The class index of a sample: its `.cls` member, else its JSON's `label`; checked against
/// the class names when they are known. Err carries the member to blame and why.
fn sample_label(
    cls: &Option<(String, Vec<u8>)>,
    json: Option<(&String, &serde_json::Value)>,
    class_names: Option<&[String]>,
) -> std::result::Result<Option<i64>, (String, String)> {
    let (member, label) = if let Some((member, bytes)) = cls {
        let text = String::from_utf8_lossy(bytes);
        match text.trim().parse::<i64>() {
            Ok(v) => (member.clone(), v),
            Err(_) => {
                let shown: String = text.trim().chars().take(40).collect();
                return Err((
                    member.clone(),
                    format!("class label {shown:?} is not an integer"),
                ));
            }
        }
    } else if let Some((member, value)) = json {
        match value.get("label") {
            None => return Ok(None),
            Some(v) => match v.as_i64() {
                Some(v) => (member.clone(), v),
                None => {
                    return Err((
                        member.clone(),
                        format!("JSON `label` {v} is not an integer"),
                    ))
                }
            },
        }
    } else {
        return Ok(None);
    };
    let limit = class_names.map_or(i64::MAX, |n| n.len() as i64);
    if label < 0 || label >= limit {
        let names = class_names.map_or(String::new(), |n| {
            format!(" (classnames.txt lists {} classes)", n.len())
        });
        return Err((
            member,
            format!("class label {label} is out of range{names}"),
        ));
    }
    Ok(Some(label))
}

fn has_captions(value: &serde_json::Value) -> bool {
    value.get("captions").is_some() || value.get("caption").is_some()
}

/// The captions of a webdataset `.json`: its `captions` list, else its `caption` string.
fn json_captions(value: &serde_json::Value) -> std::result::Result<Vec<String>, String> {
    if let Some(list) = value.get("captions").and_then(|v| v.as_array()) {
        let captions: Vec<String> = list
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect();
        if captions.len() != list.len() {
            return Err("caption JSON has a non-string entry in `captions`".into());
        }
        return Ok(captions);
    }
    if let Some(c) = value.get("caption").and_then(|v| v.as_str()) {
        return Ok(vec![c.to_string()]);
    }
    Err("caption JSON has neither a `captions` list nor a `caption` string".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_split_at_the_first_dot_of_the_file_name() {
        assert_eq!(
            split_key("a/b.c/123.seg.jpg"),
            Some(("a/b.c/123", "seg.jpg"))
        );
        assert_eq!(split_key("x.txt"), Some(("x", "txt")));
        assert_eq!(split_key("noext"), None);
    }

    #[test]
    fn json_captions_accepts_lists_and_strings() {
        let parse = |text: &str| json_captions(&serde_json::from_str(text).unwrap());
        assert_eq!(
            parse(r#"{"captions": ["a", "b"]}"#).unwrap(),
            vec!["a", "b"]
        );
        assert_eq!(parse(r#"{"caption": "c"}"#).unwrap(), vec!["c"]);
        assert!(parse(r#"{"captions": [1]}"#).is_err());
        assert!(parse(r#"{"label": 3}"#).is_err());
    }

    fn group(cls: Option<&str>, json: Option<&str>, txt: Option<&str>) -> Group {
        let member = |ext: &str, text: &str| (format!("k.{ext}"), text.as_bytes().to_vec());
        Group {
            key: "k".into(),
            image: Some(("k.jpg".into(), vec![1, 2, 3])),
            json: json.map(|t| member("json", t)),
            txt: txt.map(|t| member("txt", t)),
            cls: cls.map(|t| member("cls", t)),
        }
    }

    #[test]
    fn labels_come_from_cls_or_json_and_name_the_class_when_there_is_no_caption() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        let sample = finish_group("s.tar", group(Some(" 1\n"), None, None), Some(&names)).unwrap();
        assert_eq!(sample.label, Some(1));
        assert_eq!(sample.captions, vec!["a photo of a dog."]);
        let sample = finish_group(
            "s.tar",
            group(None, Some(r#"{"label": 0}"#), Some("x")),
            Some(&names),
        )
        .unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (Some(0), vec!["x".to_string()])
        );
        // No names known: the label stands alone and the caption is empty.
        let sample = finish_group("s.tar", group(Some("7"), None, None), None).unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (Some(7), vec![String::new()])
        );
        // A captioned, unlabelled sample is unchanged.
        let sample = finish_group("s.tar", group(None, None, Some("a cap")), None).unwrap();
        assert_eq!(
            (sample.label, sample.captions),
            (None, vec!["a cap".to_string()])
        );
    }

    #[test]
    fn bad_labels_are_skipped_with_the_member_named() {
        let names = vec!["cat".to_string(), "dog".to_string()];
        for (g, needle) in [
            (group(Some("two"), None, None), "\"two\" is not an integer"),
            (
                group(Some("2"), None, None),
                "2 is out of range (classnames.txt lists 2",
            ),
            (group(Some("-1"), None, None), "-1 is out of range"),
            (
                group(None, Some(r#"{"label": "x"}"#), None),
                "`label` \"x\" is not an integer",
            ),
        ] {
            let skip = finish_group("s.tar", g, Some(&names)).unwrap_err();
            assert_eq!(skip.kind, "invalid_label");
            assert!(skip.reason.contains(needle), "{}", skip.reason);
            assert!(skip.location.member.as_deref().unwrap().starts_with("k."));
        }
        let skip = finish_group("s.tar", group(None, None, None), None).unwrap_err();
        assert_eq!(skip.kind, "missing_caption");
    }

    #[test]
    fn shuffle_buffer_is_a_permutation() {
        let items: Vec<RawItem> = (0..100)
            .map(|i| {
                Ok(RawSample {
                    key: i.to_string(),
                    location: Location::default(),
                    payload: Payload::Synthetic(i),
                    captions: vec![],
                    label: None,
                })
            })
            .collect();
        let out: Vec<String> = ShuffleBuffer::new(items.into_iter(), 10, sample_rng(0, 0, 0, 0))
            .map(|r| r.unwrap().key)
            .collect();
        let mut sorted: Vec<u64> = out.iter().map(|k| k.parse().unwrap()).collect();
        assert_ne!(sorted, (0..100).collect::<Vec<_>>());
        sorted.sort();
        assert_eq!(sorted, (0..100).collect::<Vec<_>>());
    }
}
