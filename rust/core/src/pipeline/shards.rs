//! webdataset `.tar` shards: members grouped into samples by key, read on a background thread.
//!
//! A sample is the run of consecutive members sharing a key (the member path up to the first
//! dot of its file name, webdataset's rule). The picture is the `.jpg/.jpeg/.png/.webp` member,
//! the captions come from `.json` (`captions` list, or a `caption` string) or else `.txt`.
//! What the members mean (captions, class labels and names) is `shard_members`'s business.
//! One thread reads the rank's shards in order and hands samples over a bounded channel, so
//! I/O overlaps decoding while the order stays that of the files; a seeded shuffle buffer then
//! mixes samples across shards.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::shard_members::{find_class_names, finish_group, Group};
use super::shuffle::ShuffleBuffer;
use super::source::{EpochPlan, RawItem, Skip, BUFFER_STREAM};
use crate::error::{CoreError, Location, Result};
use crate::text::sample_rng;

/// Members larger than this are refused without reading them (a corrupt size field would
/// otherwise make us allocate gigabytes).
pub const MAX_MEMBER_BYTES: u64 = 256 << 20;
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

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

/// Splits a member path into (key, extension): `dir/abc.seg.jpg` -> (`dir/abc`, `seg.jpg`).
pub fn split_key(path: &str) -> Option<(&str, &str)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[name_start..].find('.')? + name_start;
    Some((&path[..dot], &path[dot + 1..]))
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
}
