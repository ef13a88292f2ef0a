//! Image folders for evaluation: `root/<class>/<image>`, one class per sub-folder.
//!
//! Classes are the sub-folder names in sorted order (torchvision's ImageFolder rule), so label
//! i is `class_names[i]` on every machine; a class name is its folder name with underscores
//! read as spaces (`sea_lion` -> "sea lion"), as CLIP_benchmark's class lists spell them, so
//! prompts read as words. Files are filtered by extension; the caption is
//! "a photo of a <class>." so the folder also works as a (weak) caption source.

use std::path::{Path, PathBuf};

use super::raw::{Payload, RawItem, RawSample};
use crate::error::{CoreError, Location, Result};

const EXTENSIONS: [&str; 4] = ["jpg", "jpeg", "png", "webp"];

pub struct FolderSource {
    root: String,
    classes: Vec<String>,
    files: Vec<(PathBuf, i64)>,
    max_image_bytes: u64,
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let read = std::fs::read_dir(dir).map_err(|e| CoreError::Io {
        path: dir.to_path_buf(),
        source: e,
    })?;
    let mut out: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    out.sort();
    Ok(out)
}

/// A pointer to the shards when `root` is a CLIP_benchmark webdataset root (`<split>/` folders
/// holding `0.tar`.. and an `nshards.txt`), whose shards are the source to name.
fn webdataset_hint(root: &Path) -> String {
    let splits = sorted_entries(root).unwrap_or_default();
    for split in splits.iter().filter(|p| p.is_dir()) {
        let count = std::fs::read_to_string(split.join("nshards.txt"))
            .ok()
            .and_then(|t| t.trim().parse::<u64>().ok());
        if let Some(n) = count.filter(|&n| n > 0) {
            let shards = if n == 1 {
                format!("{}/0.tar", split.display())
            } else {
                format!("{}/{{0..{}}}.tar", split.display(), n - 1)
            };
            return format!(
                "; it looks like CLIP_benchmark's webdataset layout: pass its shards, {shards}"
            );
        }
    }
    String::new()
}

impl FolderSource {
    pub fn open(root: &Path, max_image_bytes: u64) -> Result<FolderSource> {
        let mut classes = Vec::new();
        let mut files = Vec::new();
        for dir in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
            let label = classes.len() as i64;
            let mut any = false;
            for file in sorted_entries(&dir)? {
                let ext = file
                    .extension()
                    .and_then(|e| e.to_str())
                    .map(str::to_ascii_lowercase);
                if file.is_file() && ext.is_some_and(|e| EXTENSIONS.contains(&e.as_str())) {
                    files.push((file, label));
                    any = true;
                }
            }
            if any {
                classes.push(
                    dir.file_name()
                        .map(|n| n.to_string_lossy().replace('_', " "))
                        .unwrap_or_default(),
                );
            }
        }
        if files.is_empty() {
            return Err(CoreError::data(
                Location {
                    source: root.display().to_string(),
                    member: None,
                    index: None,
                },
                format!(
                    "folder has no class sub-folder with .jpg/.jpeg/.png/.webp images (empty \
                     source){}",
                    webdataset_hint(root)
                ),
            ));
        }
        Ok(FolderSource {
            root: root.display().to_string(),
            classes,
            files,
            max_image_bytes,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn max_image_bytes(&self) -> u64 {
        self.max_image_bytes
    }

    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    pub fn sample(&self, i: usize) -> RawItem {
        let (path, label) = &self.files[i];
        let class = &self.classes[*label as usize];
        let name = path
            .strip_prefix(&self.root)
            .unwrap_or(path)
            .display()
            .to_string();
        Ok(RawSample {
            key: name.clone(),
            location: Location {
                source: self.root.clone(),
                member: Some(name),
                index: Some(i as u64),
            },
            payload: Payload::File(path.clone()),
            captions: vec![format!("a photo of a {class}.")],
            label: Some(*label),
        })
    }
}
