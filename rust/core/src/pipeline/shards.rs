//! webdataset `.tar` shards: members grouped into samples by key, read on a background thread.
//!
//! A sample is the run of consecutive members sharing a key (the member path up to the first
//! dot of its file name, webdataset's rule). The picture is the `.jpg/.jpeg/.png/.webp` member,
//! the captions come from `.json` (`captions` list, or a `caption` string) or else `.txt`.
//! What the members mean (captions, class labels and names) is `shard_members`'s business.
//! One thread reads the rank's shards in order and hands samples over a bounded channel, so
//! I/O overlaps decoding while the order stays that of the files; a seeded shuffle buffer then
//! mixes samples across shards. What waits in the channel is bounded in bytes as well as in
//! samples, and pictures above `max_image_bytes` are skipped unread.
//!
//! A key's members must be consecutive (webdataset's rule): a key that comes back after other
//! samples is counted as a `duplicate_key` skip, not yielded a second time.

use std::collections::HashSet;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::files::open_regular;
use super::raw::{EpochPlan, RawItem, Skip};
use super::shard_layout::ShardLayout;
use super::shard_members::{finish_group, Group};
use super::shuffle::ShuffleBuffer;
use crate::error::{CoreError, Location, Result};
use crate::rng::{sample_rng, streams};

/// Caption and label members larger than this are refused without reading them (pictures
/// have their own, configurable limit). Captions are cut to 2000 characters anyway.
pub const MAX_TEXT_MEMBER_BYTES: u64 = 16 << 20;
/// Samples read ahead of the consumer, and their bytes: I/O overlaps decoding without
/// letting big members pile up.
const READ_AHEAD_SAMPLES: usize = 256;
const READ_AHEAD_BYTES: u64 = 256 << 20;
const IMAGE_EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

pub struct ShardSource {
    shards: Vec<String>,
    layout: Arc<ShardLayout>,
    max_image_bytes: u64,
}

impl ShardSource {
    pub fn new(shards: Vec<String>, max_image_bytes: u64) -> Result<ShardSource> {
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
        let layout = Arc::new(ShardLayout::find(&shards)?);
        Ok(ShardSource {
            shards,
            layout,
            max_image_bytes,
        })
    }

    pub fn shards(&self) -> &[String] {
        &self.shards
    }

    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_bytes
    }

    /// The CLIP_benchmark files that came with the shards: dataset type, class names (the
    /// labels index them), zero-shot templates.
    pub fn layout(&self) -> &ShardLayout {
        &self.layout
    }

    /// Names of the classes the labels index, when a `classnames.txt` came with the shards.
    pub fn class_names(&self) -> Option<&[String]> {
        self.layout.class_names.as_deref()
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
        let (tx, rx) = bounded(READ_AHEAD_SAMPLES);
        let read_ahead = Arc::new(ReadAhead::default());
        let reader = ShardReader {
            layout: Arc::clone(&self.layout),
            max_image_bytes: self.max_image_bytes,
            stride: sample_stride,
            read_ahead: Arc::clone(&read_ahead),
        };
        // No thread: the receiver sees a closed channel right away (an empty epoch, which
        // the producer reports).
        let reader = std::thread::Builder::new()
            .name("lightclip-shards".into())
            .spawn(move || reader.read_all(&mine, &tx))
            .ok();
        let items = ChannelItems {
            rx,
            read_ahead,
            reader,
        };
        if plan.shuffle && plan.shuffle_buffer > 1 {
            let rng = sample_rng(plan.seed, plan.epoch, plan.rank, streams::SHUFFLE_BUFFER);
            Box::new(ShuffleBuffer::new(
                items,
                plan.shuffle_buffer,
                plan.shuffle_buffer_bytes,
                rng,
            ))
        } else {
            Box::new(items)
        }
    }
}

/// Bytes of the samples in the channel, and whether the consumer is gone.
#[derive(Default)]
struct ReadAhead {
    state: Mutex<(u64, bool)>,
    taken: Condvar,
}

impl ReadAhead {
    /// Waits until `n` more bytes fit (one sample always fits into an empty channel); false
    /// once the consumer is gone.
    fn reserve(&self, n: u64) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        while !state.1 && state.0 > 0 && state.0 + n > READ_AHEAD_BYTES {
            state = self.taken.wait(state).unwrap_or_else(|e| e.into_inner());
        }
        if state.1 {
            return false;
        }
        state.0 += n;
        true
    }

    fn release(&self, n: u64) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.0 = state.0.saturating_sub(n);
        self.taken.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).1 = true;
        self.taken.notify_all();
    }
}

fn item_bytes(item: &RawItem) -> u64 {
    item.as_ref().map_or(0, |sample| sample.approx_bytes())
}

struct ChannelItems {
    rx: Receiver<RawItem>,
    read_ahead: Arc<ReadAhead>,
    reader: Option<JoinHandle<()>>,
}

impl Iterator for ChannelItems {
    type Item = RawItem;
    fn next(&mut self) -> Option<RawItem> {
        match self.rx.recv() {
            Ok(item) => {
                self.read_ahead.release(item_bytes(&item));
                Some(item)
            }
            Err(_) => {
                // The reader is done; if it died of a panic, carry the panic on to the
                // producer thread, whose stream reports it as an error.
                if let Some(Err(payload)) = self.reader.take().map(JoinHandle::join) {
                    std::panic::resume_unwind(payload);
                }
                None
            }
        }
    }
}

impl Drop for ChannelItems {
    fn drop(&mut self) {
        // A reader waiting for room stops instead of waiting forever.
        self.read_ahead.close();
    }
}

/// Splits a member path into (key, extension): `dir/abc.seg.jpg` -> (`dir/abc`, `seg.jpg`).
pub fn split_key(path: &str) -> Option<(&str, &str)> {
    let name_start = path.rfind('/').map_or(0, |i| i + 1);
    let dot = path[name_start..].find('.')? + name_start;
    Some((&path[..dot], &path[dot + 1..]))
}

/// What the reader thread needs besides the shard list.
struct ShardReader {
    layout: Arc<ShardLayout>,
    max_image_bytes: u64,
    /// (rank, world size) when every rank reads every shard and keeps its share of samples.
    stride: Option<(u64, u64)>,
    read_ahead: Arc<ReadAhead>,
}

impl ShardReader {
    fn read_all(&self, shards: &[String], tx: &Sender<RawItem>) {
        let mut counter = 0u64;
        for shard in shards {
            let mut emit = |item: RawItem| -> bool {
                let keep = match self.stride {
                    Some((rank, world)) => counter % world == rank,
                    None => true,
                };
                counter += 1;
                if !keep {
                    return true;
                }
                let bytes = item_bytes(&item);
                self.read_ahead.reserve(bytes) && tx.send(item).is_ok()
            };
            if !self.read_one(shard, &mut emit) {
                return; // the consumer went away
            }
        }
    }

    /// Reads one shard, calling `emit` per sample or skip; false from `emit` stops everything.
    fn read_one(&self, shard: &str, emit: &mut dyn FnMut(RawItem) -> bool) -> bool {
        let layout = &*self.layout;
        let at = |member: Option<String>| Location {
            source: shard.to_string(),
            member,
            index: None,
        };
        let file = match open_regular(Path::new(shard), u64::MAX) {
            Ok((f, _)) => f,
            Err(refusal) => {
                return emit(Err(Skip::new(
                    refusal.kind,
                    at(None),
                    format!("cannot open shard: {}", refusal.reason),
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
        // Keys whose group has started; whether the current group repeats one of them; whether
        // it lost a member to a size limit (already counted: the sample is dropped whole).
        let mut seen: HashSet<String> = HashSet::new();
        let (mut duplicate, mut dropped) = (false, false);
        let finish = |group: Group, duplicate: bool, dropped: bool| -> Option<RawItem> {
            if dropped {
                return None;
            }
            if duplicate {
                let reason = format!(
                    "key {} comes back after other samples (a sample's members must be \
                     consecutive); this second group is skipped",
                    group.key
                );
                return Some(Err(Skip::new("duplicate_key", at(Some(group.key)), reason)));
            }
            Some(finish_group(shard, group, layout))
        };
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
            if key != group.key {
                if !group.key.is_empty() {
                    let done = std::mem::take(&mut group);
                    if let Some(item) = finish(done, duplicate, dropped) {
                        if !emit(item) {
                            return false;
                        }
                    }
                }
                duplicate = !seen.insert(key.clone());
                dropped = false;
                group.key = key;
            }
            let is_image = IMAGE_EXTENSIONS.contains(&ext.as_str());
            let wanted = is_image || matches!(ext.as_str(), "json" | "txt" | "cls");
            if !wanted || duplicate || dropped {
                continue;
            }
            let size = entry.header().size().unwrap_or(u64::MAX);
            let limit = if is_image {
                self.max_image_bytes
            } else {
                MAX_TEXT_MEMBER_BYTES
            };
            let mut bytes = Vec::new();
            if size > limit || bytes.try_reserve_exact(size as usize).is_err() {
                let name = if is_image {
                    "max_image_bytes"
                } else {
                    "the caption limit"
                };
                let reason = format!("member is {size} bytes, above {name} ({limit})");
                dropped = true;
                if !emit(Err(Skip::new("too_large", at(Some(path)), reason))) {
                    return false;
                }
                continue;
            }
            if let Err(e) = entry.read_to_end(&mut bytes) {
                return emit(Err(Skip::new(
                    "truncated_shard",
                    at(Some(path)),
                    format!("tar ends inside this member: {e}; the rest of the shard is skipped"),
                )));
            }
            if is_image {
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
            if let Some(item) = finish(group, duplicate, dropped) {
                return emit(item);
            }
        }
        true
    }
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

    fn write_tar(name: &str, members: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path =
            std::env::temp_dir().join(format!("lightclip-{name}-{}.tar", std::process::id()));
        let mut builder = tar::Builder::new(std::fs::File::create(&path).unwrap());
        for (member, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_cksum();
            builder.append_data(&mut header, member, *data).unwrap();
        }
        builder.finish().unwrap();
        path
    }

    /// (key or skip kind) of every item the reader emits for `shard`.
    fn read(shard: &Path, max_image_bytes: u64) -> Vec<String> {
        let reader = ShardReader {
            layout: Arc::new(ShardLayout::default()),
            max_image_bytes,
            stride: None,
            read_ahead: Arc::new(ReadAhead::default()),
        };
        let mut out = Vec::new();
        reader.read_one(shard.to_str().unwrap(), &mut |item| {
            out.push(match item {
                Ok(sample) => sample.key,
                Err(skip) => skip.kind.to_string(),
            });
            true
        });
        out
    }

    #[test]
    fn a_key_that_comes_back_later_is_a_counted_skip() {
        let shard = write_tar(
            "dup",
            &[
                ("a.png", b"img"),
                ("a.txt", b"one"),
                ("b.png", b"img"),
                ("b.txt", b"two"),
                ("a.png", b"img"),
                ("a.txt", b"again"),
            ],
        );
        assert_eq!(read(&shard, 1 << 20), ["a", "b", "duplicate_key"]);
        std::fs::remove_file(shard).unwrap();
    }

    #[test]
    fn a_picture_over_the_limit_is_one_skip_and_never_read() {
        let big = vec![0u8; 1000];
        let shard = write_tar(
            "big",
            &[
                ("a.png", &big),
                ("a.txt", b"cap"),
                ("b.png", b"img"),
                ("b.txt", b"cap"),
            ],
        );
        assert_eq!(read(&shard, 999), ["too_large", "b"]);
        assert_eq!(read(&shard, 1000), ["a", "b"]);
        std::fs::remove_file(shard).unwrap();
    }

    #[test]
    fn read_ahead_waits_for_room_and_stops_when_the_consumer_leaves() {
        let budget = Arc::new(ReadAhead::default());
        assert!(budget.reserve(READ_AHEAD_BYTES + 5)); // one sample always fits
        let waiting = {
            let budget = Arc::clone(&budget);
            std::thread::spawn(move || budget.reserve(10))
        };
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(!waiting.is_finished(), "a second sample must wait for room");
        budget.release(READ_AHEAD_BYTES + 5);
        assert!(waiting.join().unwrap());
        budget.close();
        assert!(!budget.reserve(READ_AHEAD_BYTES)); // the consumer is gone: no wait
    }
}
